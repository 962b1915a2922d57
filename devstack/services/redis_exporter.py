"""redis_exporter (Debian `prometheus-redis-exporter`) for one Redis, on a loopback port.

    svc = start_private_redis_exporter("redis://127.0.0.1:6379/0")   # svc.url, svc.target
    ...
    stop(svc)                                                          # our pid only

Ready means /metrics answers and already reports `redis_up` (1 if it reached Redis).
`REDIS_EXPORTER_URL` names an existing exporter to reuse instead (never stopped here).
`python -m scripts.svc start redis_exporter` exports the Redis of REDIS_URL, else the one
`python -m scripts.svc start redis` started (.run/redis.json).

A Redis Cluster (issue 14) is exported by ONE exporter in multi-target mode, every node a
target of its own (`/scrape?target=redis://host:port`):

    exporter = start_cluster_exporter(["127.0.0.1:7000", ...])   # every node, masters and replicas
    start_private_prometheus(targets={"redis": exporter.scrape_targets})
    exporter.stop()

One exporter rather than one per node: a node is a target, not a process, so a cluster of
any size (and a node added by a reshard) costs one more line of scrape config, not one more
process to start, supervise and stop (six on this 2-core machine); Prometheus still scrapes
each node on its own, so `up`, `redis_up` and every series carry the node as `instance`
(prometheus_config renders the relabeling). What it does not buy: if the exporter dies all
nodes go dark at once — AIAgentRedisDown says so per node ("Prometheus cannot scrape").
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.errors import ServiceError
from devstack.network import on_a_free_port
from devstack.paths import LOG_DIR, RUN_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import wait_for_start
from devstack.services.common import Service, ensure_apt, stop_owned

BINARY = "/usr/bin/prometheus-redis-exporter"
PACKAGE = "prometheus-redis-exporter"
START_TIMEOUT = 20.0
SCRAPE_PATH = "/scrape"  # the exporter's multi-target endpoint
_REDIS_UP = re.compile(r"^redis_up(?:\{[^}]*\})?\s+(\S+)\s*$", re.MULTILINE)


def target_of(service: Service) -> str:
    """`host:port` for a Prometheus static config."""
    return urllib.parse.urlsplit(service.url).netloc


def scrape(url: str, *, timeout: float = 5.0) -> str:
    """The exposition text of `url` (an exporter base URL, its /metrics URL, or a
    multi-target `/scrape?target=...` URL)."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    metrics_url = (url if path.endswith(("/metrics", SCRAPE_PATH))
                   else f"{url.rstrip('/')}/metrics")
    response = httpx.get(metrics_url, timeout=timeout, trust_env=False)
    response.raise_for_status()
    return response.text


def redis_up(url: str) -> float | None:
    """The exporter's `redis_up` value, or None if it does not (yet) report one."""
    match = _REDIS_UP.search(scrape(url))
    return float(match.group(1)) if match else None


def _redact(redis_url: str) -> str:
    parts = urllib.parse.urlsplit(redis_url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}:{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return redis_url


def start_private_redis_exporter(
    redis_url: str, *, name: str = "redis-exporter", port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> Service:
    """Start redis_exporter for `redis_url` on 127.0.0.1 (a free port unless given); we own it.

    The Redis URL (password included) goes to the exporter through its environment, never
    its command line. Raises ServiceError with the log's tail if it is not ready in time.
    """
    binary = ensure_apt(BINARY, PACKAGE)
    return on_a_free_port(
        lambda free: _start_once(binary, redis_url, name=name, port=free, timeout=timeout), port
    )


def _start_once(binary: str, redis_url: str, *, name: str, port: int,
                timeout: float) -> Service:
    return _spawn_exporter(binary, name=name, port=port, redis_addr=redis_url,
                           probe=lambda url: url,
                           what=f"redis_exporter ({_redact(redis_url)})", timeout=timeout)


def ensure_redis_exporter(name: str = "redis-exporter", redis_url: str | None = None) -> Service:
    """REDIS_EXPORTER_URL if set (reused, never stopped here), else a private exporter for
    `redis_url`, REDIS_URL, or the Redis that `python -m scripts.svc start redis` started."""
    existing = os.environ.get("REDIS_EXPORTER_URL")
    if existing:
        return Service(name=name, url=existing.rstrip("/"), owned=False)
    url = redis_url or os.environ.get("REDIS_URL")
    if not url:
        started = Service.load(RUN_DIR / "redis.json")
        url = started.url if started else None
    if not url:
        raise ServiceError("no Redis to export: set REDIS_URL or run "
                           "`python -m scripts.svc start redis` first")
    return start_private_redis_exporter(url, name=name)


def stop(service: Service) -> None:
    """Stop an exporter we started; idempotent, never signals a pid twice."""
    stop_owned(service)


# --- a Redis Cluster: one exporter, every node a target -------------------------------------

def node_address(node: str) -> str:
    """`host:port` of a cluster node given as `host:port` or `redis://host:port`.

    A node URL with credentials is refused: the address becomes a scrape URL and the
    `instance` label; a password-protected cluster needs the exporter's --redis.password-file.
    """
    if "://" not in node:
        return node
    parts = urllib.parse.urlsplit(node)
    if parts.username or parts.password:
        raise ServiceError("a cluster node for the exporter must not carry credentials "
                           "(they would land in the scrape config and labels)")
    if not parts.hostname or not parts.port:
        raise ServiceError(f"not a Redis node address: {_redact(node)}")
    return f"{parts.hostname}:{parts.port}"


def scrape_url(exporter_url: str, node: str) -> str:
    """What Prometheus (or curl) fetches for one node through a multi-target exporter;
    prometheus_config turns a job of these into one multi-target scrape config."""
    return f"{exporter_url.rstrip('/')}{SCRAPE_PATH}?target=redis://{node_address(node)}"


@dataclass
class ClusterExporter:
    """One redis_exporter in multi-target mode and the cluster nodes it exports."""

    service: Service
    nodes: list[str]  # host:port of every node

    @property
    def scrape_targets(self) -> list[str]:
        """One scrape URL per node: pass as a Prometheus job's targets
        (`start_private_prometheus(targets={"redis": exporter.scrape_targets})`)."""
        return [scrape_url(self.service.url, node) for node in self.nodes]

    def redis_up(self, node: str) -> float | None:
        """The exporter's `redis_up` for one node (0 once the node is down)."""
        return redis_up(scrape_url(self.service.url, node))

    def stop(self) -> None:
        """Stop the exporter (our pid only); idempotent."""
        stop(self.service)


def start_cluster_exporter(
    nodes: Sequence[str], *, name: str = "redis-cluster-exporter", port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> ClusterExporter:
    """Start one redis_exporter on 127.0.0.1 that exports every node of a running Redis
    Cluster (`nodes`: `host:port` or `redis://host:port`, masters and replicas alike).

    Returns a ClusterExporter: `.scrape_targets` for Prometheus' `redis` job (each node
    becomes its own target, `instance="host:port"` of the node), `.stop()` by pid.
    Ready once it answers for the first node. Raises ServiceError if it is not.
    """
    addresses = [node_address(node) for node in nodes]
    if not addresses:
        raise ServiceError("start_cluster_exporter needs at least one node")
    binary = ensure_apt(BINARY, PACKAGE)
    service = on_a_free_port(
        lambda free: _start_multi_target(binary, addresses[0], name=name, port=free,
                                         timeout=timeout), port)
    return ClusterExporter(service=service, nodes=addresses)


def _start_multi_target(binary: str, probe_node: str, *, name: str, port: int,
                        timeout: float) -> Service:
    # An empty REDIS_ADDR: /metrics exports no Redis of its own, only /scrape does.
    return _spawn_exporter(binary, name=name, port=port, redis_addr="",
                           probe=lambda url: scrape_url(url, probe_node),
                           what=f"redis_exporter (multi-target, {probe_node})", timeout=timeout)


def _spawn_exporter(binary: str, *, name: str, port: int, redis_addr: str,
                    probe: Callable[[str], str], what: str, timeout: float) -> Service:
    """One redis_exporter process we own, ready when `probe(its url)` reports redis_up."""
    data_dir = tempfile.mkdtemp(prefix=f"aicache-{name}-")
    log_file = LOG_DIR / f"{name}-{port}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_ADDR": redis_addr,  # read by redis_exporter like --redis.addr
    }
    proc = spawn([
        binary, f"--web.listen-address=127.0.0.1:{port}", "--connection-timeout=2s",
        "--redis-only-metrics", "--set-client-name",
    ], log_file=log_file, env=env, cwd=Path(data_dir))
    svc = Service(name=name, url=f"http://127.0.0.1:{port}", pid=proc.pid, owned=True,
                  data_dir=data_dir, port=port)
    try:
        wait_for_start(proc, lambda: redis_up(probe(svc.url)) is not None, what=what,
                       where=svc.url, log_file=log_file, timeout=timeout)
        return svc
    except BaseException:
        stop_pid(proc.pid)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
