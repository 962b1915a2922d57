"""A private Prometheus (Debian `prometheus`) on a loopback port, or the one PROMETHEUS_URL names.

The configuration (prometheus_config.py) is generated per start into the instance's data
dir, and can be rewritten and hot-reloaded (`--web.enable-lifecycle`) while it runs:

    svc = start_private_prometheus(targets={"ai-agent": ["127.0.0.1:8000"]},
                                   scrape_interval=1.0, rule_files=[...])
    svc.wait_for_series("up{job='ai-agent'} == 1", timeout=30)        # first scrape ~5 s
    reconfigure(svc, targets={...})                                    # rewrite + POST /-/reload
    stop(svc)                                                          # our pid only

Note: Prometheus applies new scrape targets on a 5 s tick of its scrape manager, so the first
samples of a new target (at start or after a reload) arrive ~5 s later; `wait_for_series`
(devstack.promql) is how callers wait for them, never a sleep.

`python -m scripts.svc.prometheus` (prometheus_cli.py) is the same for people;
`python -m scripts.svc start|stop prometheus` starts one that scrapes only itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from devstack import promql
from devstack.errors import ServiceError
from devstack.network import on_a_free_port
from devstack.paths import LOG_DIR, RUN_DIR
from devstack.processes import pid_alive, spawn, stop_pid
from devstack.readiness import http_ok, wait_for_start
from devstack.services.common import DetailedService, Service, ensure_apt, stop_owned
from devstack.services.prometheus_config import Targets, duration, render_config, write_config

BINARY = "/usr/bin/prometheus"
PACKAGE = "prometheus"
START_TIMEOUT = 30.0
STATE_FILE = RUN_DIR / "prometheus.json"
CONFIG_NAME = "prometheus.yml"


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
    external_labels: dict[str, str] = field(default_factory=dict)

    create_data_dir: ClassVar[bool] = False  # reconfiguring a stopped server writes nothing

    def wait_for_series(self, expr: str, timeout: float = 30.0,
                        min_series: int = 1) -> list[promql.Series]:
        """See devstack.promql.wait_for_series."""
        return promql.wait_for_series(self.url, expr, timeout=timeout, min_series=min_series)

    def query(self, expr: str, *, timeout: float = 5.0) -> list[promql.Series]:
        return promql.query(self.url, expr, timeout=timeout)


def is_ready(url: str) -> bool:
    return http_ok(f"{url.rstrip('/')}/-/ready")



def start_private_prometheus(
    *, targets: Targets | None = None, scrape_interval: float = 15.0,
    evaluation_interval: float | None = None,
    rule_files: Sequence[str | os.PathLike[str]] = (), alertmanager: str | None = None,
    name: str = "prometheus", port: int | None = None, retention: str = "1d",
    alert_resend_delay: float | None = None, timeout: float = START_TIMEOUT,
    tsdb_from: str | os.PathLike[str] | None = None,
    external_labels: Mapping[str, str] | None = None,
) -> PrometheusService:
    """Start Prometheus on 127.0.0.1 with a generated config and a throwaway TSDB; we own it.

    `targets` maps a job name to `host:port` addresses. `evaluation_interval` defaults to the
    scrape interval. Prometheus scrapes itself as job `prometheus` unless a job of that name
    is given. `alert_resend_delay` (`--rules.alert.resend-delay`, Prometheus' default 1 m)
    defaults to the evaluation interval: an alert that fired before the Alertmanager was
    discovered (~5 s after start) is re-sent at the next evaluation, not a minute later.
    `tsdb_from`: start on a copy of that TSDB directory (a recording kept from an earlier run,
    for `rollout replay`) instead of an empty one; the copy is deleted with the instance.
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
            tsdb_from=tsdb_from, external_labels=dict(external_labels or {}),
        ),
        port,
    )


def _start_once(
    binary: str, *, name: str, port: int, targets: dict[str, Sequence[str]],
    scrape_interval: float, evaluation_interval: float, rule_files: list[str],
    alertmanager: str | None, retention: str, timeout: float, alert_resend_delay: float,
    tsdb_from: str | os.PathLike[str] | None = None,
    external_labels: dict[str, str] | None = None,
) -> PrometheusService:
    data_dir = Path(tempfile.mkdtemp(prefix=f"aicache-{name}-"))
    log_file = LOG_DIR / f"{name}-{port}.log"
    svc = PrometheusService(
        name=name, url=f"http://127.0.0.1:{port}", owned=True, data_dir=str(data_dir),
        port=port, config_file=str(data_dir / CONFIG_NAME), log_file=str(log_file),
        targets={job: list(addresses) for job, addresses in targets.items()},
        scrape_interval=scrape_interval, evaluation_interval=evaluation_interval,
        rule_files=rule_files, alertmanager=alertmanager,
        external_labels=dict(external_labels or {}),
    )
    try:
        if tsdb_from is not None:
            # A copy: the recording stays as it was (Prometheus compacts and writes its WAL).
            shutil.copytree(tsdb_from, data_dir / "tsdb", ignore=shutil.ignore_patterns("lock"))
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
        svc.save_sidecar()
    except BaseException:
        stop_pid(proc.pid)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return svc


def _write_config(svc: PrometheusService) -> None:
    assert svc.config_file is not None
    write_config(Path(svc.config_file), render_config(
        targets=svc.targets, scrape_interval=svc.scrape_interval,
        evaluation_interval=svc.evaluation_interval, rule_files=svc.rule_files,
        alertmanager=svc.alertmanager, self_port=svc.port,
        external_labels=svc.external_labels,
    ))


def reload(service: Service, *, timeout: float = 10.0) -> None:
    """POST /-/reload; raises ServiceError with Prometheus' message if the reload fails."""
    try:
        response = httpx.post(f"{service.url.rstrip('/')}/-/reload", timeout=timeout,
                              trust_env=False)
    except httpx.TransportError as exc:
        raise ServiceError(f"cannot reach prometheus at {service.url}: {exc}") from exc
    if response.status_code != 200:
        raise ServiceError(f"prometheus reload failed ({response.status_code}): "
                           f"{response.text.strip()}")


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
    svc.save_sidecar()
    if isinstance(service, PrometheusService) and service is not svc:
        service.__dict__.update(svc.__dict__)
    return svc


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
    stop_owned(PrometheusService.from_service(service), timeout=15, also=service)


def is_running(service: Service) -> bool:
    if service.owned and service.pid and not pid_alive(service.pid):
        return False
    return is_ready(service.url)
