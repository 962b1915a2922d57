"""Stopping by pid must never signal a stranger that inherited the pid (pid_max is 32768 on
the CI machine, so pids come round within a test run)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import how_it_ended, pid_alive, process_start_ticks, spawn, stop_pid
from devstack.readiness import wait_until
from devstack.services.common import Service


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process this test did not start through spawn(): it stands for a pid's next owner."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_start_ticks_survive_a_command_name_with_parentheses_and_spaces(
    tmp_path: Path, stranger: subprocess.Popen[bytes],
) -> None:
    odd = tmp_path / "x) (y z"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "60"])
    try:
        ticks = process_start_ticks(proc.pid)
        assert ticks is not None and ticks > 0
        # Two processes started one after the other: both readable, never later than "now".
        other = process_start_ticks(stranger.pid)
        assert other is not None and other <= ticks
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_that_is_gone_has_no_start_time() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert process_start_ticks(proc.pid) is None


def test_stop_pid_stops_what_spawn_started(tmp_path: Path) -> None:
    proc = spawn(["sleep", "60"], log_file=tmp_path / "sleep.log")
    stop_pid(proc.pid, timeout=5)
    assert not pid_alive(proc.pid)


def test_stop_pid_leaves_a_process_alone_whose_start_time_is_not_ours(
    stranger: subprocess.Popen[bytes],
) -> None:
    ticks = process_start_ticks(stranger.pid)
    assert ticks is not None
    stop_pid(stranger.pid, timeout=1, started=ticks - 1)  # "ours" started earlier: reused pid
    assert pid_alive(stranger.pid)
    stop_pid(stranger.pid, timeout=5, started=ticks)  # the real owner's record stops it
    wait_until(lambda: not pid_alive(stranger.pid), timeout=5, what="the stopped process")


def test_a_saved_service_keeps_its_process_identity(tmp_path: Path,
                                                    stranger: subprocess.Popen[bytes]) -> None:
    proc = spawn(["sleep", "60"], log_file=tmp_path / "sleep.log")
    service = Service(name="sleeper", url="-", pid=proc.pid, owned=True)
    service.save(tmp_path / "sleeper.json")
    loaded = Service.load(tmp_path / "sleeper.json")
    assert loaded is not None and loaded.pid_started == process_start_ticks(proc.pid)

    # A state file whose pid now belongs to another process (another start time).
    stranger_ticks = process_start_ticks(stranger.pid)
    assert stranger_ticks is not None
    impostor = Service(name="sleeper", url="-", pid=stranger.pid, owned=True,
                       pid_started=stranger_ticks - 1)
    assert not impostor.process_alive() and loaded.process_alive()
    impostor.stop_process(timeout=1)
    assert pid_alive(stranger.pid)
    assert impostor.pid is None  # forgotten: a second stop signals nothing

    loaded.stop_process(timeout=5)
    assert not pid_alive(proc.pid) and loaded.pid is None


def test_how_a_spawned_process_ended_is_kept(tmp_path: Path) -> None:
    proc = spawn(["sleep", "60"], log_file=tmp_path / "sleep.log")
    assert how_it_ended(proc.pid) is None
    stop_pid(proc.pid, timeout=5)
    assert how_it_ended(proc.pid) == "killed by SIGTERM"
    quick = spawn(["sh", "-c", "exit 3"], log_file=tmp_path / "sh.log")
    wait_until(lambda: not pid_alive(quick.pid), timeout=5, what="sh to exit")
    assert how_it_ended(quick.pid) == "exited with 3"
    stop_pid(quick.pid, timeout=1)  # a second stop of an ended child signals nothing
    assert how_it_ended(quick.pid) == "exited with 3"
