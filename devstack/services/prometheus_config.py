"""The configuration a private Prometheus is started with: prometheus.yml from scrape targets,
intervals, rule files and an optional Alertmanager, checked by promtool before it is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
        config["scrape_configs"].append({
            "job_name": job,
            "static_configs": [{"targets": [host_port(a) for a in addresses]}],
        })
    return yaml.safe_dump(config, sort_keys=False)


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
