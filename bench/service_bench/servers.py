"""The processes the benchmark owns, and how it is made to stop them all on any exit."""

from __future__ import annotations

import signal
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.service_bench.plan import BenchError
from devstack.errors import ServiceError
from devstack.paths import RUN_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import wait_for_http, wait_until
from devstack.services.common import Service
from devstack.services.redis import start_private_redis, stop
from devstack.sockets import child_pids, listeners_by_pid


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    url: str
    pid: int
    log: Path


def start_server(stack: ExitStack, name: str, args: list[str], *, env: dict[str, str],
                 cwd: Path, port: int, workers: int = 1) -> Server:
    """Start an HTTP server we own (stopped by `stack`), and wait for its /healthz and, with
    several workers, for every worker to listen (one that does not gets no connections)."""
    log = RUN_DIR / "logs" / f"bench-{name}-{port}.log"
    proc = spawn(args, log_file=log, env=env, cwd=cwd)
    stack.callback(stop_pid, proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, f"{url}/healthz", what=name, log_file=log, timeout=60)
        if workers > 1:
            wait_until(lambda: sum(1 for n in listeners_by_pid(port, child_pids(proc.pid))
                                   .values() if n) == workers,
                       timeout=60, what=f"{name}'s {workers} workers to listen")
    except ServiceError as exc:
        raise BenchError(str(exc)) from exc
    return Server(name=name, url=url, pid=proc.pid, log=log)


def start_redis(stack: ExitStack, name: str) -> Service:
    service = start_private_redis(name=name)
    stack.callback(stop, service)
    return service


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM and Ctrl-C raise KeyboardInterrupt wherever the benchmark is, so it unwinds.

    Not asyncio.run's default (cancel the main task): with a socket timeout set, redis-py 8.1
    on Python 3.11 swallows a good share of cancellations (the awaited command just returns),
    so a cancelled measurement loop would carry on. An exception cannot be swallowed that way.
    """
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored
        signal.signal(signal.SIGINT, _on_signal)
