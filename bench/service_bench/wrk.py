"""Driving wrk: one run against one URL, its output parsed, the server's CPU per request."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.service_bench.plan import BenchError
from devstack.sockets import child_pids

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_WRK_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_WRK_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_us_per_request: float | None = None  # of the server process, all threads


def cpu_ticks(pid: int) -> int:
    """utime + stime of a server (all its threads, and its worker processes if it has any),
    in clock ticks, from /proc."""
    return sum(_own_ticks(p) for p in (pid, *child_pids(pid)))


def _own_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # a helper process that has just exited
        return 0
    return int(fields[11]) + int(fields[12])


def parse_wrk(output: str) -> WrkResult:
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in _WRK_PERCENTILE.findall(output)}
    rps, total = _WRK_RPS.search(output), _WRK_TOTAL.search(output)
    if rps is None or total is None or 50 not in percentiles or 99 not in percentiles:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    non_2xx = _WRK_NON_2XX.search(output)
    sockets = _WRK_SOCKET.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


def run_wrk(url: str, script: Path, env: dict[str, str], *, seconds: int,
            connections: int, pid: int | None = None,
            midway: Callable[[], None] | None = None) -> WrkResult:
    """One wrk run; `midway` is called halfway through it (to look at the server under
    load, e.g. how its connections are spread over its workers)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (scripts/bootstrap installs it, or: "
                         "apt-get install wrk)")
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
           "-s", str(script), url]
    ticks = cpu_ticks(pid) if pid else 0
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if midway is not None:
            time.sleep(seconds / 2)
            midway()
        stdout, stderr = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
    result = parse_wrk(stdout)
    if pid and result.requests:
        used = (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
        result = replace(result, cpu_us_per_request=used * 1e6 / result.requests)
    if result.non_2xx or result.socket_errors:
        raise BenchError(f"wrk saw {result.non_2xx} non-2xx responses and "
                         f"{result.socket_errors} socket errors against {url}:\n{stdout}")
    return result
