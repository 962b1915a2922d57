"""Loopback ports: a free one, whether one answers, and starting on a free one despite races."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

from devstack.errors import ServiceError

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def on_a_free_port(start: Callable[[int], T], port: int | None = None, *,
                   in_use: tuple[str, ...] = ("address already in use", "EADDRINUSE"),
                   attempts: int = 3) -> T:
    """`start(port)` on `port`, or on a free one; free_port() can race with another process
    binding the port first, so a start that fails because the port is taken is retried on
    another (a given port is tried once)."""
    last: ServiceError | None = None
    for _ in range(1 if port else attempts):
        try:
            return start(port or free_port())
        except ServiceError as exc:
            last = exc
            if not any(marker in str(exc) for marker in in_use):
                raise
    assert last is not None
    raise last
