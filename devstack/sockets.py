"""Which process holds which TCP connection: how the kernel spread a port's connections over
the worker processes that share it (SO_REUSEPORT), read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_ESTABLISHED = "01"
_LISTEN = "0A"


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the ESTABLISHED connections whose local port is `port`."""
    return _inodes(port, _ESTABLISHED)


def _inodes(port: int, wanted_state: str) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == wanted_state and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many of `port`'s established connections each of `pids` holds."""
    return _count_by_pid(established_inodes(port), pids)


def listeners_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many sockets listening on `port` each of `pids` holds (a worker on SO_REUSEPORT
    gets connections only once its socket listens, i.e. once its app has started)."""
    return _count_by_pid(_inodes(port, _LISTEN), pids)


def _count_by_pid(wanted: set[str], pids: list[int]) -> dict[int, int]:
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except (FileNotFoundError, PermissionError):
            continue
        counts[pid] = sum(1 for link in links
                          if link.startswith("socket:[") and link[8:-1] in wanted)
    return counts


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (its worker processes)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        listed = task / "children"
        if listed.exists():
            children += [int(p) for p in listed.read_text().split()]
    return children
