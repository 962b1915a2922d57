"""A private Redis on a loopback port, or the one `REDIS_URL` names."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from devstack.errors import ServiceError
from devstack.network import free_port
from devstack.paths import LOG_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import wait_for_start
from devstack.services.common import Service, ensure_apt


def _answers_as(port: int, pid: int) -> bool:
    """The Redis on `port` answers and is process `pid`: a PONG alone could come from
    another server that already held the port while ours is failing to bind it."""
    try:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "info", "server"],
            capture_output=True, text=True, timeout=2, check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return f"process_id:{pid}" in out.stdout.split()


def start_private_redis(
    *, port: int | None = None, maxmemory: str | None = None,
    maxmemory_policy: str = "allkeys-lru", name: str = "redis",
) -> Service:
    """Start redis-server bound to 127.0.0.1 on a free port, without persistence."""
    binary = ensure_apt("redis-server", "redis-server")
    ensure_apt("redis-cli", "redis-tools")
    port = port or free_port()
    data_dir = tempfile.mkdtemp(prefix=f"aicache-{name}-")
    args = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", data_dir, "--daemonize", "no", "--protected-mode", "yes",
        "--maxmemory-policy", maxmemory_policy,
    ]
    if maxmemory:
        args += ["--maxmemory", maxmemory]
    log_file = LOG_DIR / f"{name}-{port}.log"
    proc = spawn(args, log_file=log_file)
    try:
        wait_for_start(proc, lambda: _answers_as(port, proc.pid), what="redis",
                       where=f"port {port}", log_file=log_file, timeout=15)
    except ServiceError:
        stop_pid(proc.pid)
        raise
    return Service(name=name, url=f"redis://127.0.0.1:{port}/0", pid=proc.pid, owned=True,
                   data_dir=data_dir, port=port)


def restart_on_same_port(service: Service) -> Service:
    """Start a fresh private Redis where a stopped one listened (for Redis-down tests)."""
    assert service.port is not None
    return start_private_redis(port=service.port, name=service.name)


def ensure_redis(name: str = "redis") -> Service:
    """The Redis named by REDIS_URL if set, otherwise a private one we own."""
    url = os.environ.get("REDIS_URL")
    if url:
        return Service(name=name, url=url, owned=False)
    return start_private_redis(name=name)


def stop(service: Service) -> None:
    if service.owned and service.pid:
        service.stop_process()
        if service.data_dir:
            for leftover in Path(service.data_dir).glob("*"):
                leftover.unlink(missing_ok=True)
            Path(service.data_dir).rmdir()
