"""A private Alertmanager (Debian `prometheus-alertmanager`) on a loopback port.

The configuration is generated per start: one receiver that posts to the caller's webhook URL
(Alertmanager's webhook JSON, not Slack's), short grouping for tests, no clustering
(`--cluster.listen-address=` empty), storage in a throwaway dir.

    svc = start_private_alertmanager("http://127.0.0.1:8765/hook", group_wait=0.5)
    start_private_prometheus(..., alertmanager=target_of(svc))
    ...
    stop(svc)                                                          # our pid only

`ALERTMANAGER_URL` names an existing one to reuse instead (never stopped here).
`python -m scripts.svc start alertmanager` posts to ALERTMANAGER_WEBHOOK_URL if set, otherwise
it delivers nowhere (a receiver without integrations), which is still useful to see alerts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from devstack.errors import ServiceError
from devstack.network import on_a_free_port
from devstack.paths import LOG_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import http_ok, wait_for_start
from devstack.services.common import Service, ensure_apt, stop_owned
from devstack.services.prometheus_config import duration

BINARY = "/usr/bin/prometheus-alertmanager"
PACKAGE = "prometheus-alertmanager"
START_TIMEOUT = 20.0
RECEIVER = "webhook"


def target_of(service: Service) -> str:
    """`host:port` for Prometheus' `alerting.alertmanagers` static config."""
    return urllib.parse.urlsplit(service.url).netloc


def render_config(
    webhook_url: str | None, *, group_wait: float = 1.0, group_interval: float = 1.0,
    repeat_interval: float = 3600.0, send_resolved: bool = True,
) -> str:
    """alertmanager.yml text: every alert, grouped by alertname, to one webhook receiver."""
    receiver: dict[str, Any] = {"name": RECEIVER}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": send_resolved}]
    config = {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname"],
            "group_wait": duration(group_wait),
            "group_interval": duration(group_interval),
            "repeat_interval": duration(repeat_interval),
        },
        "receivers": [receiver],
    }
    return yaml.safe_dump(config, sort_keys=False)


def is_ready(url: str) -> bool:
    return http_ok(f"{url.rstrip('/')}/-/ready")


def _check_config(binary: str, config_file: Path) -> None:
    amtool = shutil.which("amtool") or shutil.which("prometheus-alertmanager-amtool")
    if not amtool:
        return
    out = subprocess.run([amtool, "check-config", str(config_file)], capture_output=True,
                         text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise ServiceError(f"generated Alertmanager config is invalid:\n{out.stdout}{out.stderr}")


def start_private_alertmanager(
    webhook_url: str | None = None, *, group_wait: float = 1.0, group_interval: float = 1.0,
    repeat_interval: float = 3600.0, name: str = "alertmanager", port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> Service:
    """Start Alertmanager on 127.0.0.1 (a free port unless given) with a generated config;
    we own it. Raises ServiceError with the log's tail if it is not ready in time."""
    binary = ensure_apt(BINARY, PACKAGE)
    config = render_config(webhook_url, group_wait=group_wait, group_interval=group_interval,
                           repeat_interval=repeat_interval)
    return on_a_free_port(
        lambda free: _start_once(binary, config, name=name, port=free, timeout=timeout), port
    )


def _start_once(binary: str, config_text: str, *, name: str, port: int,
                timeout: float) -> Service:
    data_dir = Path(tempfile.mkdtemp(prefix=f"aicache-{name}-"))
    log_file = LOG_DIR / f"{name}-{port}.log"
    config_file = data_dir / "alertmanager.yml"
    url = f"http://127.0.0.1:{port}"
    try:
        config_file.write_text(config_text)
        _check_config(binary, config_file)
        proc = spawn([
            binary,
            f"--config.file={config_file}",
            f"--storage.path={data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={url}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ], log_file=log_file, cwd=data_dir)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    svc = Service(name=name, url=url, pid=proc.pid, owned=True, data_dir=str(data_dir),
                  port=port)
    try:
        wait_for_start(proc, lambda: is_ready(url), what="alertmanager", where=url,
                       log_file=log_file, timeout=timeout)
    except BaseException:
        stop_pid(proc.pid)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return svc


def ensure_alertmanager(name: str = "alertmanager", webhook_url: str | None = None) -> Service:
    """ALERTMANAGER_URL if set (reused, never stopped here), else a private Alertmanager
    posting to `webhook_url` or ALERTMANAGER_WEBHOOK_URL (or nowhere if neither is set)."""
    existing = os.environ.get("ALERTMANAGER_URL")
    if existing:
        return Service(name=name, url=existing.rstrip("/"), owned=False)
    return start_private_alertmanager(
        webhook_url or os.environ.get("ALERTMANAGER_WEBHOOK_URL"), name=name,
        group_wait=10.0, group_interval=30.0,
    )


def stop(service: Service) -> None:
    """Stop an Alertmanager we started; idempotent, never signals a pid twice."""
    stop_owned(service)
