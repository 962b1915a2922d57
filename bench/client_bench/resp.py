"""RESP2 command encoding, for the calls that send pre-packed bytes (the floor and the
pre-packed direct redis-py variant)."""

from __future__ import annotations

from collections.abc import Iterable


def _bulk(part: bytes | str | int) -> bytes:
    data = part if isinstance(part, bytes) else str(part).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack(parts: Iterable[bytes | str | int]) -> bytes:
    """One command as a RESP array of bulk strings (what every client sends)."""
    items = [_bulk(p) for p in parts]
    return b"*%d\r\n" % len(items) + b"".join(items)
