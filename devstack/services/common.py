"""What every starter shares: the record of a running service (saved to a state file, with
its process identity), and installing a missing Debian package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from devstack.errors import ServiceError
from devstack.processes import is_ours, process_start_ticks, spawned_start_ticks, stop_pid

_S = TypeVar("_S", bound="Service")

_apt_updated = False


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
            self.pid_started = spawned_start_ticks(self.pid) or process_start_ticks(self.pid)

    def process_alive(self) -> bool:
        """Our process is still running (not merely some process with its old pid)."""
        return bool(self.pid) and is_ours(self.pid or 0, self.pid_started)

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
        self.save_sidecar()

    def save_sidecar(self) -> None:
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


def stop_owned(service: Service, *, timeout: float = 10.0, also: Service | None = None) -> bool:
    """Stop a service we own: its process (only while still ours), then its data dir. False,
    and nothing touched, for a service we do not own. The pid is forgotten on `also` too (the
    caller's record, when `service` is a detailed copy of it): never signal whatever process
    is given that pid next. Idempotent."""
    if not service.owned:
        return False
    service.stop_process(timeout=timeout)
    if also is not None:
        also.pid = also.pid_started = None
    if service.data_dir:
        shutil.rmtree(service.data_dir, ignore_errors=True)
    return True


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


def stop_or_status(action: str, known: _S | None, *, state_file: Path,
                   stop: Callable[[_S], None], is_running: Callable[[_S], bool],
                   show: Callable[[_S], None]) -> int:
    """The `stop` and `status` actions every starter's command line shares. Exit status: 0
    stopped or running, 3 not running (as `systemctl status` answers)."""
    if action == "stop":
        if known:
            stop(known)
            state_file.unlink(missing_ok=True)
        return 0
    if known:
        show(known)
        return 0 if is_running(known) else 3
    return 3
