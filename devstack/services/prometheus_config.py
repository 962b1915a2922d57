"""The configuration a private Prometheus is started with: prometheus.yml from scrape targets,
intervals, rule files and an optional Alertmanager, checked by promtool before it is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from devstack.errors import ServiceError

Targets = Mapping[str, Sequence[str]]


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (`1s`, `250ms`, `15s`)."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_config(
    *, targets: Targets, scrape_interval: float = 15.0, evaluation_interval: float = 15.0,
    rule_files: Sequence[str | os.PathLike[str]] = (), alertmanager: str | None = None,
    self_port: int | None = None, external_labels: Mapping[str, str] | None = None,
) -> str:
    """prometheus.yml text: one static job per entry of `targets` (job → ["host:port", ...]);
    a job whose addresses are exporter scrape URLs (`http://exporter/scrape?target=redis://
    host:port`, redis_exporter.scrape_url) becomes one multi-target job (see scrape_job);
    `external_labels` as in deploy/prometheus.yml (the alerts build their links from them)."""
    interval = duration(scrape_interval)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            # Never longer than the interval (Prometheus rejects that).
            "scrape_timeout": duration(min(scrape_interval, 10.0)),
            "evaluation_interval": duration(evaluation_interval),
        },
        "scrape_configs": [],
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if rule_files:
        config["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [host_port(alertmanager)]}]}]}
    jobs = dict(targets)
    if self_port is not None and "prometheus" not in jobs:
        jobs["prometheus"] = [f"127.0.0.1:{self_port}"]
    for job, addresses in jobs.items():
        config["scrape_configs"].append(scrape_job(job, addresses))
    return yaml.safe_dump(config, sort_keys=False)


def scrape_job(job: str, addresses: Sequence[str]) -> dict[str, Any]:
    """One scrape config. Plain addresses: a static job. Multi-target scrape URLs (all
    through one exporter): the targets are the nodes, and relabeling sends each scrape to
    the exporter with `?target=<scheme>://node` while `instance` stays the node's
    `host:port` — so every series, and every alert, names the node, not the exporter."""
    relayed = [_relayed(address) for address in addresses]
    if not any(relayed):
        return {"job_name": job,
                "static_configs": [{"targets": [host_port(a) for a in addresses]}]}
    if not all(relayed):
        raise ServiceError(f"job {job}: mixes exporter scrape URLs and plain targets")
    exporters = {(r.exporter, r.path, r.scheme) for r in relayed if r}
    if len(exporters) != 1:
        raise ServiceError(f"job {job}: its scrape URLs go through several exporters "
                           f"or schemes: {sorted(exporters)}")
    exporter, path, scheme = exporters.pop()
    return {
        "job_name": job,
        "metrics_path": path,
        "static_configs": [{"targets": [r.node for r in relayed if r]}],
        "relabel_configs": multi_target_relabeling(exporter, scheme),
    }


def multi_target_relabeling(exporter: str, scheme: str = "redis") -> list[dict[str, Any]]:
    """redis_exporter's multi-target recipe: __address__ (a node) → ?target= and instance,
    then __address__ → the exporter. deploy/prometheus.yml writes the same by hand."""
    return [
        {"source_labels": ["__address__"], "target_label": "__param_target",
         "replacement": f"{scheme}://$1"},
        {"source_labels": ["__address__"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": exporter},
    ]


class _Relayed(NamedTuple):
    exporter: str  # host:port of the exporter
    path: str  # its multi-target path (/scrape)
    scheme: str  # the node's scheme (redis / rediss)
    node: str  # host:port of the node


def _relayed(address: str) -> _Relayed | None:
    """The parts of a multi-target scrape URL, or None for a plain target."""
    if "://" not in address:
        return None
    parsed = urllib.parse.urlsplit(address)
    target = urllib.parse.parse_qs(parsed.query).get("target")
    if not target:
        return None
    node = urllib.parse.urlsplit(target[0])
    if not node.hostname or not node.port or node.password:
        raise ServiceError(f"not a node to scrape (host:port, no credentials): {target[0]!r}")
    return _Relayed(exporter=parsed.netloc, path=parsed.path or "/scrape",
                    scheme=node.scheme or "redis", node=f"{node.hostname}:{node.port}")


def host_port(address: str) -> str:
    """Accept `host:port` or a URL (`http://host:port/...`); Prometheus wants `host:port`."""
    if "://" in address:
        parsed = urllib.parse.urlsplit(address)
        if not parsed.netloc:
            raise ServiceError(f"not a host:port or URL: {address!r}")
        return parsed.netloc
    return address


def check_config(config_file: Path) -> None:
    """`promtool check config` (rule files included); ServiceError with promtool's words."""
    promtool = shutil.which("promtool")
    if not promtool:
        return
    out = subprocess.run([promtool, "check", "config", str(config_file)],
                         capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise ServiceError(f"generated Prometheus config is invalid:\n{out.stdout}{out.stderr}")


def write_config(config_file: Path, text: str) -> None:
    """Replace `config_file` with `text` only once promtool accepts it: a running server
    that is reloaded never reads a broken file."""
    candidate = config_file.with_suffix(".new.yml")
    candidate.write_text(text)
    try:
        check_config(candidate)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    candidate.replace(config_file)
