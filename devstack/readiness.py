"""Waiting with a deadline: for a condition, for a process we started to get ready (or to
die trying), for an HTTP endpoint such as /healthz to answer 200.

Polling, never a sleep: a slow machine waits longer, a fast one does not wait at all, and
a process that exits during its start fails at once with the end of its log, which is what
says why (a port taken, a bad flag).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from devstack.errors import ServiceError
from devstack.processes import log_tail


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `predicate` until it is true (an exception counts as not yet); raise ServiceError
    naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass  # not yet: the deadline reports it
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_status(url: str, *, headers: Mapping[str, str] | None = None,
                timeout: float = 2.0) -> int:
    """The status code of GET `url`; raises httpx.HTTPError when nothing answers.

    trust_env=False: these are loopback services of ours, never reached through a proxy
    that a developer's HTTP_PROXY names."""
    response = httpx.get(url, headers=dict(headers or {}), timeout=timeout, trust_env=False)
    return response.status_code


def http_ok(url: str, *, headers: Mapping[str, str] | None = None,
            timeout: float = 2.0) -> bool:
    """GET `url` answers 200 (False when nothing answers yet)."""
    try:
        return http_status(url, headers=headers, timeout=timeout) == 200
    except httpx.HTTPError:
        return False


def wait_for_start(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str,
                   where: str, log_file: Path, timeout: float, interval: float = 0.05) -> None:
    """Poll `ready()` (an OSError or HTTP error counts as not yet) until it is true. Raise
    ServiceError with the end of the process's log if the process exits first or the
    deadline passes; network.on_a_free_port() reads that log for a port already taken."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode} during start; log "
                               f"{log_file}:\n{log_tail(log_file)}")
        try:
            if ready():
                return
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what} on {where}; "
                               f"log {log_file}:\n{log_tail(log_file)}")
        time.sleep(interval)


def wait_for_http(proc: subprocess.Popen[bytes], url: str, *, what: str, log_file: Path,
                  timeout: float, interval: float = 0.1) -> None:
    """wait_for_start() until GET `url` (a /healthz or /readyz) answers 200."""
    wait_for_start(proc, lambda: http_ok(url, timeout=1.0), what=what, where=url,
                   log_file=log_file, timeout=timeout, interval=interval)
