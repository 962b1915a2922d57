"""Our own processes: spawned with their kernel start time, stopped by pid only while the pid
still names the process we started.

With pid_max at 32768 a busy machine hands pids out again within minutes, so a pid alone
does not say whose a process is: the start time (field 22 of /proc/PID/stat) does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from devstack.errors import ServiceError

log = logging.getLogger("devstack.processes")

# pid -> start ticks of every process spawn() started in this process.
_spawned: dict[int, int] = {}
# Their Popen objects: kept so that only poll() reaps them (recording how they ended), not
# subprocess's own clean-up of dropped Popen objects, which frees the pid without a trace.
_children: dict[int, subprocess.Popen[bytes]] = {}


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count from the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawned_start_ticks(pid: int) -> int | None:
    """The start time spawn() recorded for `pid`, if this Python process spawned it."""
    return _spawned.get(pid)


def spawn(args: list[str], *, log_file: Path, env: dict[str, str] | None = None,
          user: str | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session, output to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["runuser", "-u", user, "--", *args] if user and os.geteuid() == 0 else args
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
    started = process_start_ticks(proc.pid)
    if started is not None:
        _spawned[proc.pid] = started
    _children[proc.pid] = proc
    return proc


def how_it_ended(pid: int, *, wait: float = 0.0) -> str | None:
    """For a process spawn() started here that has ended: its exit code or killing signal.
    `wait`: give a process that is dying (its sockets already closed) this long to end."""
    child = _children.get(pid)
    if child is None:
        return None
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=wait)
    code = child.returncode
    if code is None:
        return None
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"


def pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def is_ours(pid: int, started: int | None) -> bool:
    """Alive, and (when we know its start time) still the process we started, not a new
    process that was given the same pid after ours exited."""
    if not pid_alive(pid):
        return False
    return started is None or process_start_ticks(pid) == started


def _gone_within(pid: int, started: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_ours(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, *, timeout: float = 10.0, sig: int = signal.SIGTERM,
             started: int | None = None) -> None:
    """Stop one process we started: `sig`, then SIGKILL after `timeout`. Never by name.

    `started` is the process's start time (process_start_ticks) when it was started; for a
    process spawn() started in this Python process it is known without being passed. A pid
    that now belongs to another process is left alone."""
    started = started if started is not None else _spawned.get(pid)
    if not is_ours(pid, started):
        if pid_alive(pid):
            log.warning("pid %d now belongs to another process: not signalled", pid)
        return
    os.kill(pid, sig)
    if _gone_within(pid, started, timeout):
        return
    os.kill(pid, signal.SIGKILL)
    if not _gone_within(pid, started, 5.0):
        raise ServiceError(f"timed out after 5s waiting for pid {pid} to exit")


def our_children() -> list[int]:
    """Live direct children of this process (everything spawn() starts is one), from /proc:
    also those whose pid we never learnt (a Ctrl-C inside Popen, after the fork)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == me and state != "Z":
            found.append(int(stat.parent.name))
    return found


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a process log ('' if it cannot be read), for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
