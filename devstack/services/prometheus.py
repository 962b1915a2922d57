"""A private Prometheus (Debian `prometheus`) on a loopback port, or the one PROMETHEUS_URL names.

The configuration is generated per start into the instance's data dir (scrape targets per job,
intervals, rule files, an optional Alertmanager), and can be rewritten and hot-reloaded
(`--web.enable-lifecycle`) while it runs:

    svc = start_private_prometheus(targets={"ai-agent": ["127.0.0.1:8000"]},
                                   scrape_interval=1.0, rule_files=[...])
    wait_for_series(svc.url, "up{job='ai-agent'} == 1", timeout=30)   # first scrape ~5 s
    reconfigure(svc, targets={...})                                    # rewrite + POST /-/reload
    stop(svc)                                                          # our pid only

Note: Prometheus applies new scrape targets on a 5 s tick of its scrape manager, so the first
samples of a new target (at start or after a reload) arrive ~5 s later; `wait_for_series` is
how callers wait for them, never a sleep.

`python -m scripts.svc.prometheus start|configure|stop|status [--target JOB=HOST:PORT ...]
[--rules FILE ...] [--alertmanager HOST:PORT] [--scrape-interval 15s]` is the same for people;
`python -m scripts.svc start|stop prometheus` starts one that scrapes only itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from scripts.svc.common import (
    RUN_DIR,
    DetailedService,
    Service,
    ServiceError,
    ensure_apt,
    on_a_free_port,
    pid_alive,
    spawn,
    stop_pid,
    wait_for_start,
)

BINARY = "/usr/bin/prometheus"
PACKAGE = "prometheus"
START_TIMEOUT = 30.0
STATE_FILE = RUN_DIR / "prometheus.json"
CONFIG_NAME = "prometheus.yml"

Targets = Mapping[str, Sequence[str]]


@dataclass
class PrometheusService(DetailedService):
    """A Service plus what it was configured with (so it can be reconfigured and reloaded)."""

    config_file: str | None = None
    log_file: str | None = None
    targets: dict[str, list[str]] = field(default_factory=dict)
    scrape_interval: float = 15.0
    evaluation_interval: float = 15.0
    rule_files: list[str] = field(default_factory=list)
    alertmanager: str | None = None

    create_data_dir: ClassVar[bool] = False  # reconfiguring a stopped server writes nothing

    def wait_for_series(self, expr: str, timeout: float = 30.0,
                        min_series: int = 1) -> list[dict[str, Any]]:
        """See the module-level `wait_for_series`."""
        return wait_for_series(self.url, expr, timeout=timeout, min_series=min_series)

    def query(self, expr: str) -> list[dict[str, Any]]:
        return query(self.url, expr)


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (`1s`, `250ms`, `15s`)."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_config(
    *, targets: Targets, scrape_interval: float = 15.0, evaluation_interval: float = 15.0,
    rule_files: Sequence[str | os.PathLike[str]] = (), alertmanager: str | None = None,
    self_port: int | None = None,
) -> str:
    """prometheus.yml text: one static job per entry of `targets` (job → ["host:port", ...])."""
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
    if rule_files:
        config["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [_host_port(alertmanager)]}]}]}
    jobs = dict(targets)
    if self_port is not None and "prometheus" not in jobs:
        jobs["prometheus"] = [f"127.0.0.1:{self_port}"]
    for job, addresses in jobs.items():
        config["scrape_configs"].append({
            "job_name": job,
            "static_configs": [{"targets": [_host_port(a) for a in addresses]}],
        })
    return yaml.safe_dump(config, sort_keys=False)


def _host_port(address: str) -> str:
    """Accept `host:port` or a URL (`http://host:port/...`); Prometheus wants `host:port`."""
    if "://" in address:
        parsed = urllib.parse.urlsplit(address)
        if not parsed.netloc:
            raise ServiceError(f"not a host:port or URL: {address!r}")
        return parsed.netloc
    return address


def _check_config(config_file: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        return
    out = subprocess.run([promtool, "check", "config", str(config_file)],
                         capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise ServiceError(f"generated Prometheus config is invalid:\n{out.stdout}{out.stderr}")


def _http(url: str, *, method: str = "GET", timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def is_ready(url: str) -> bool:
    try:
        return _http(f"{url.rstrip('/')}/-/ready")[0] == 200
    except OSError:
        return False



def start_private_prometheus(
    *, targets: Targets | None = None, scrape_interval: float = 15.0,
    evaluation_interval: float | None = None,
    rule_files: Sequence[str | os.PathLike[str]] = (), alertmanager: str | None = None,
    name: str = "prometheus", port: int | None = None, retention: str = "1d",
    alert_resend_delay: float | None = None, timeout: float = START_TIMEOUT,
) -> PrometheusService:
    """Start Prometheus on 127.0.0.1 with a generated config and a throwaway TSDB; we own it.

    `targets` maps a job name to `host:port` addresses. `evaluation_interval` defaults to the
    scrape interval. Prometheus scrapes itself as job `prometheus` unless a job of that name
    is given. `alert_resend_delay` (`--rules.alert.resend-delay`, Prometheus' default 1 m)
    defaults to the evaluation interval: an alert that fired before the Alertmanager was
    discovered (~5 s after start) is re-sent at the next evaluation, not a minute later.
    Raises ServiceError (with the log's tail) if it does not get ready in time.
    """
    binary = ensure_apt(BINARY, PACKAGE)
    ensure_apt("promtool", PACKAGE)
    return on_a_free_port(
        lambda free: _start_once(
            binary, name=name, port=free, targets=dict(targets or {}),
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval or scrape_interval,
            rule_files=[str(Path(p).resolve()) for p in rule_files],
            alertmanager=alertmanager, retention=retention, timeout=timeout,
            alert_resend_delay=alert_resend_delay or evaluation_interval or scrape_interval,
        ),
        port,
    )


def _start_once(
    binary: str, *, name: str, port: int, targets: dict[str, Sequence[str]],
    scrape_interval: float, evaluation_interval: float, rule_files: list[str],
    alertmanager: str | None, retention: str, timeout: float, alert_resend_delay: float,
) -> PrometheusService:
    data_dir = Path(tempfile.mkdtemp(prefix=f"aicache-{name}-"))
    log_file = RUN_DIR / "logs" / f"{name}-{port}.log"
    svc = PrometheusService(
        name=name, url=f"http://127.0.0.1:{port}", owned=True, data_dir=str(data_dir),
        port=port, config_file=str(data_dir / CONFIG_NAME), log_file=str(log_file),
        targets={job: list(addresses) for job, addresses in targets.items()},
        scrape_interval=scrape_interval, evaluation_interval=evaluation_interval,
        rule_files=rule_files, alertmanager=alertmanager,
    )
    try:
        _write_config(svc)
        proc = spawn([
            binary,
            f"--config.file={svc.config_file}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            f"--rules.alert.resend-delay={duration(alert_resend_delay)}",
            "--log.level=warn",
        ], log_file=log_file, cwd=data_dir)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    svc.pid = proc.pid
    try:
        wait_for_start(proc, lambda: is_ready(svc.url), what="prometheus", where=svc.url,
                       log_file=log_file, timeout=timeout)
        svc._save_sidecar()
    except BaseException:
        stop_pid(proc.pid)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return svc


def _write_config(svc: PrometheusService) -> None:
    assert svc.config_file is not None
    config_file = Path(svc.config_file)
    text = render_config(
        targets=svc.targets, scrape_interval=svc.scrape_interval,
        evaluation_interval=svc.evaluation_interval, rule_files=svc.rule_files,
        alertmanager=svc.alertmanager, self_port=svc.port,
    )
    candidate = config_file.with_suffix(".new.yml")
    candidate.write_text(text)
    try:
        _check_config(candidate)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    candidate.replace(config_file)


def reload(service: Service, *, timeout: float = 10.0) -> None:
    """POST /-/reload; raises ServiceError with Prometheus' message if the reload fails."""
    try:
        status, body = _http(f"{service.url.rstrip('/')}/-/reload", method="POST",
                             timeout=timeout)
    except OSError as exc:
        raise ServiceError(f"cannot reach prometheus at {service.url}: {exc}") from exc
    if status != 200:
        raise ServiceError(f"prometheus reload failed ({status}): "
                           f"{body.decode(errors='replace').strip()}")


def reconfigure(
    service: Service, *, targets: Targets | None = None, scrape_interval: float | None = None,
    evaluation_interval: float | None = None,
    rule_files: Sequence[str | os.PathLike[str]] | None = None,
    alertmanager: str | None = None,
) -> PrometheusService:
    """Rewrite the config of a Prometheus we started (only what is given) and reload it.

    New targets are scraped ~5 s later (see the module note): wait with `wait_for_series`.
    """
    svc = PrometheusService.from_service(service)
    if not svc.owned or not svc.config_file:
        raise ServiceError(f"prometheus at {svc.url} was not started here; not reconfiguring it")
    if targets is not None:
        svc.targets = {job: list(addresses) for job, addresses in targets.items()}
    if scrape_interval is not None:
        svc.scrape_interval = scrape_interval
    if evaluation_interval is not None:
        svc.evaluation_interval = evaluation_interval
    if rule_files is not None:
        svc.rule_files = [str(Path(p).resolve()) for p in rule_files]
    if alertmanager is not None:
        svc.alertmanager = alertmanager or None
    _write_config(svc)
    reload(svc)
    svc._save_sidecar()
    if isinstance(service, PrometheusService) and service is not svc:
        service.__dict__.update(svc.__dict__)
    return svc


def query(url: str, expr: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """One instant query over the HTTP API; the `result` list (a scalar comes back as one
    sample without labels). Raises ServiceError with Prometheus' message on failure."""
    params = urllib.parse.urlencode({"query": expr})
    try:
        status, body = _http(f"{url.rstrip('/')}/api/v1/query?{params}", timeout=timeout)
    except OSError as exc:
        raise ServiceError(f"cannot reach prometheus at {url}: {exc}") from exc
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise ServiceError(f"prometheus answered {status} with non-JSON: {body[:200]!r}") from exc
    if status != 200 or answer.get("status") != "success":
        raise ServiceError(f"prometheus query failed ({status} {answer.get('errorType')}): "
                           f"{answer.get('error')}")
    data = answer["data"]
    if data["resultType"] in {"scalar", "string"}:
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def wait_for_series(
    url: str, expr: str, *, timeout: float = 30.0, min_series: int = 1, interval: float = 0.2,
) -> list[dict[str, Any]]:
    """Poll `expr` until it returns at least `min_series` series; return them.

    Query errors other than "cannot connect" fail at once (a bad expression will not get
    better); at the deadline ServiceError says what was last seen.
    """
    deadline = time.monotonic() + timeout
    last: object = "nothing yet"
    while True:
        try:
            result = query(url, expr)
            if len(result) >= min_series:
                return result
            last = f"{len(result)} series"
        except ServiceError as exc:
            if "cannot reach" not in str(exc):
                raise
            last = exc
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {expr!r} to return "
                               f"{min_series}+ series (last: {last})")
        time.sleep(interval)


def ensure_prometheus(name: str = "prometheus", **kwargs: Any) -> Service:
    """The Prometheus named by PROMETHEUS_URL if set (never reconfigured or stopped here),
    otherwise a private one started with `kwargs` (see start_private_prometheus)."""
    url = os.environ.get("PROMETHEUS_URL")
    if url:
        return Service(name=name, url=url.rstrip("/"), owned=False)
    return start_private_prometheus(name=name, **kwargs)


def stop(service: Service) -> None:
    """Stop a Prometheus we started and delete its data; leave anything else alone.
    Idempotent: a second call does nothing (the pid is forgotten after the first)."""
    svc = PrometheusService.from_service(service)
    if not svc.owned:
        return
    # Forget the pid on both records: never signal whatever process gets it next.
    svc.stop_process(timeout=15)
    service.pid = service.pid_started = None
    if svc.data_dir:
        shutil.rmtree(svc.data_dir, ignore_errors=True)


def is_running(service: Service) -> bool:
    if service.owned and service.pid and not pid_alive(service.pid):
        return False
    return is_ready(service.url)


def _parse_targets(values: Sequence[str]) -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    for value in values:
        job, sep, address = value.partition("=")
        if not sep or not job or not address:
            raise SystemExit(f"--target wants JOB=HOST:PORT, got {value!r}")
        targets.setdefault(job, []).append(address)
    return targets


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    """`15s`, `500ms`, `1m`, or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise SystemExit(f"bad duration {text!r}: use e.g. 15s, 500ms, 1m")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.svc.prometheus",
                                     description="Start/stop/reconfigure a local Prometheus.")
    parser.add_argument("action", choices=["start", "configure", "stop", "status"])
    parser.add_argument("--target", action="append", default=[], metavar="JOB=HOST:PORT",
                        help="scrape target (repeatable; several per job allowed)")
    parser.add_argument("--rules", action="append", default=[], metavar="FILE",
                        help="rule file to load (repeatable)")
    parser.add_argument("--alertmanager", metavar="HOST:PORT")
    parser.add_argument("--scrape-interval", default="15s")
    parser.add_argument("--evaluation-interval")
    parser.add_argument("--format", choices=["json", "env"], default="json")
    args = parser.parse_args(argv)

    known = PrometheusService.load(STATE_FILE)
    try:
        if args.action == "start":
            if known and is_running(known):
                svc: Service = known
            else:
                if known:
                    stop(known)
                svc = ensure_prometheus(
                    targets=_parse_targets(args.target),
                    scrape_interval=_seconds(args.scrape_interval),
                    evaluation_interval=(_seconds(args.evaluation_interval)
                                         if args.evaluation_interval else None),
                    rule_files=args.rules, alertmanager=args.alertmanager,
                )
                svc.save(STATE_FILE)
            _print(svc, args.format)
        elif args.action == "configure":
            if not known or not is_running(known):
                print("error: no running prometheus started here", file=sys.stderr)
                return 1
            svc = reconfigure(
                known,
                targets=_parse_targets(args.target) if args.target else None,
                scrape_interval=_seconds(args.scrape_interval),
                evaluation_interval=(_seconds(args.evaluation_interval)
                                     if args.evaluation_interval else None),
                rule_files=args.rules or None, alertmanager=args.alertmanager,
            )
            _print(svc, args.format)
        elif args.action == "stop":
            if known:
                stop(known)
                STATE_FILE.unlink(missing_ok=True)
        elif known:
            _print(known, args.format)
            return 0 if is_running(known) else 3
        else:
            return 3
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(svc: Service, fmt: str) -> None:
    if fmt == "env":
        print(f"export PROMETHEUS_URL={svc.url}")
    else:
        print(json.dumps(asdict(svc), indent=2))


if __name__ == "__main__":
    sys.exit(main())
