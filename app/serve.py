"""Serving an ASGI app with uvicorn: in this process, or in N worker processes that share the
port through SO_REUSEPORT (issue 15: one Python process uses one core).

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
connections over the workers by a hash of their addresses — evenly, unlike one shared
socket, where the worker that last went back to waiting takes most of them. The parent only
supervises: it starts the workers (spawned, not forked: nothing of the parent's state is
shared), forwards SIGTERM/SIGINT to them, restarts one that dies, and removes a dead
worker's metric files.

Metrics across workers use prometheus_client's multiprocess mode: the parent points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start (unless one is
given), every worker writes its values there, and /metrics adds them up
(`ServiceMetrics.exposed`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from app.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

_RESTART_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int


def run_uvicorn(app: ASGIApp, listen: Listen, sock: socket.socket | None = None) -> None:
    """uvicorn as the service runs it: uvloop, httptools, no access log (the audit log says
    who asked what), no proxy-header rewriting (nothing here reads the client address)."""
    config = uvicorn.Config(app, host=listen.host, port=listen.port, log_config=None,
                            access_log=False, loop="uvloop", http="httptools",
                            proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def reuse_port_socket(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    sock.set_inheritable(False)
    return sock


def serve_workers(worker: Callable[[Listen], None], listen: Listen, workers: int) -> int:
    """Run `worker(listen)` in `workers` spawned processes until SIGTERM/SIGINT; each must
    serve on `reuse_port_socket(listen)`. Returns the exit status."""
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="ai-cache-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    # Bound here first: a port in use is reported once, before any worker starts.
    probe = reuse_port_socket(listen)
    context = multiprocessing.get_context("spawn")
    running: list[BaseProcess] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for _ in range(workers):
            running.append(_start(context, worker, listen))
        probe.close()
        log.info("serving on %s:%d with %d workers (SO_REUSEPORT), pids %s", listen.host,
                 listen.port, workers, [p.pid for p in running])
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(running):
                if process.is_alive() or stopping:
                    continue
                log.error("worker %s exited with %s; starting another", process.pid,
                          process.exitcode)
                _mark_dead(process)
                time.sleep(_RESTART_BACKOFF_SECONDS)
                running[i] = _start(context, worker, listen)
    finally:
        for process in running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in running:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def _start(context: multiprocessing.context.SpawnContext, worker: Callable[[Listen], None],
           listen: Listen) -> BaseProcess:
    process = context.Process(target=worker, args=(listen,), daemon=False)
    process.start()
    return process


def _mark_dead(process: BaseProcess) -> None:
    if process.pid is None:
        return
    from prometheus_client import multiprocess  # noqa: PLC0415 - only in that mode

    multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
