"""Shared plumbing for the service starters: ports, waiting, apt, pid files, stopping."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Self, TypeVar

T = TypeVar("T")

log = logging.getLogger("scripts.svc")

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("AI_CACHE_RUN_DIR", REPO_ROOT / ".run"))

_apt_updated = False


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached."""


@dataclass
class Service:
    """A running service: where it listens, and whether we own (and may stop) its process."""

    name: str
    url: str
    pid: int | None = None
    owned: bool = False
    data_dir: str | None = None
    port: int | None = None
    # The kernel's start time of `pid`: with pid_max at 32768 a busy machine reuses pids
    # within minutes, so a stop must check it still signals the process we started.
    pid_started: int | None = None

    def __post_init__(self) -> None:
        self.remember_pid_start()

    def remember_pid_start(self) -> None:
        if self.pid and self.pid_started is None:
            self.pid_started = _spawned.get(self.pid) or process_start_ticks(self.pid)

    def process_alive(self) -> bool:
        """Our process is still running (not merely some process with its old pid)."""
        return bool(self.pid) and _is_ours(self.pid or 0, self.pid_started)

    def stop_process(self, *, timeout: float = 10.0) -> None:
        """Stop our process if it is still the one we started; forget the pid either way."""
        if self.pid:
            stop_pid(self.pid, timeout=timeout, started=self.pid_started)
        self.pid = self.pid_started = None

    def save(self, state_file: Path) -> None:
        self.remember_pid_start()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_file: Path) -> Service | None:
        if not state_file.exists():
            return None
        return cls(**json.loads(state_file.read_text()))


SIDECAR = "service.json"


@dataclass
class DetailedService(Service):
    """A Service with fields of its own (tokens, config, database).

    `python -m scripts.svc` reads state files back as a plain Service, so only the base
    fields go to the state file; the whole record lives in a sidecar in the data dir.
    """

    # Whether saving may create the data dir (a stopped service's dir must stay gone).
    create_data_dir: ClassVar[bool] = True

    def save(self, state_file: Path) -> None:
        self.remember_pid_start()
        base = {f: getattr(self, f) for f in Service.__dataclass_fields__}
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(base, indent=2))
        self._save_sidecar()

    def _save_sidecar(self) -> None:
        self.remember_pid_start()
        if not self.data_dir:
            return
        folder = Path(self.data_dir)
        if self.create_data_dir:
            folder.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            (folder / SIDECAR).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_service(cls, service: Service) -> Self:
        if isinstance(service, cls):
            return service
        sidecar = Path(service.data_dir) / SIDECAR if service.data_dir else None
        if sidecar and sidecar.exists():
            return cls(**json.loads(sidecar.read_text()))
        return cls(**asdict(service))

    @classmethod
    def load(cls, state_file: Path) -> Self | None:
        base = Service.load(state_file)
        return cls.from_service(base) if base else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `predicate` until it is true; raise ServiceError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a process log ('' if it cannot be read), for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_start(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str,
                   where: str, log_file: Path, timeout: float, interval: float = 0.05) -> None:
    """Poll `ready()` (an OSError counts as not yet) until it is true. Raise ServiceError with
    the end of the process's log if the process exits first or the deadline passes: the log
    is what says why (a port taken, a bad flag), and on_a_free_port() reads it."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode} during start; log "
                               f"{log_file}:\n{log_tail(log_file)}")
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what} on {where}; "
                               f"log {log_file}:\n{log_tail(log_file)}")
        time.sleep(interval)


def ensure_apt(binary: str, package: str) -> str:
    """Return the path of `binary`, installing Debian `package` first if it is missing."""
    global _apt_updated  # noqa: PLW0603 - one apt-get update per process is enough
    as_path = Path(binary)
    found = shutil.which(binary) or (binary if as_path.is_absolute() and as_path.exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError(f"{binary} is missing; install the Debian package {package!r}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        _apt_updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        check=True,
        env=env,
        capture_output=True,
    )
    found = shutil.which(binary) or (binary if Path(binary).exists() else None)
    if not found:
        raise ServiceError(f"installed {package!r} but {binary} is still missing")
    return found


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count from the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


# pid -> start ticks of every process spawn() started in this process.
_spawned: dict[int, int] = {}
# Their Popen objects: kept so that only poll() reaps them (recording how they ended), not
# subprocess's own clean-up of dropped Popen objects, which frees the pid without a trace.
_children: dict[int, subprocess.Popen[bytes]] = {}


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


def _is_ours(pid: int, started: int | None) -> bool:
    """Alive, and (when we know its start time) still the process we started, not a new
    process that was given the same pid after ours exited."""
    if not pid_alive(pid):
        return False
    return started is None or process_start_ticks(pid) == started


def stop_pid(pid: int, *, timeout: float = 10.0, sig: int = signal.SIGTERM,
             started: int | None = None) -> None:
    """Stop one process we started: `sig`, then SIGKILL after `timeout`. Never by name.

    `started` is the process's start time (process_start_ticks) when it was started; for a
    process spawn() started in this Python process it is known without being passed. A pid
    that now belongs to another process is left alone."""
    started = started if started is not None else _spawned.get(pid)
    if not _is_ours(pid, started):
        if pid_alive(pid):
            log.warning("pid %d now belongs to another process: not signalled", pid)
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_ours(pid, started):
            return
        time.sleep(0.05)
    if _is_ours(pid, started):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _is_ours(pid, started), timeout=5, what=f"pid {pid} to exit")


def spawn(args: list[str], *, log_file: Path, env: dict[str, str] | None = None,
          user: str | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session, output to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["runuser", "-u", user, "--", *args] if user and os.geteuid() == 0 else args
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
    started = process_start_ticks(proc.pid)
    if started is not None:
        _spawned[proc.pid] = started
    _children[proc.pid] = proc
    return proc
