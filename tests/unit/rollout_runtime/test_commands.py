"""Manual commands go through the same apply-then-record path, logged with who and why."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.core.decision import CommandRejected
from rollout.ports import TemporaryFlagError
from rollout.records import CommandRecord
from rollout.runtime_types import CommandFailed
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.fakes import MID, OFF, TOP


async def test_pause_is_logged_notified_and_hands_off_the_flags(h: Harness) -> None:
    await h.walk_to_mid()
    h.notifier.sent.clear()
    report = await h.command("pause", after=timedelta(seconds=75), who="bob",
                             why="investigating INC-42")
    state = h.store.stored_state()
    assert state is not None and state.is_paused
    assert report.entry.command == CommandRecord(name="pause", who="bob",
                                                 why="investigating INC-42")
    assert h.store.log[-1].kind == "command" and h.store.log[-1].by == "bob"
    assert h.notifier.events() == ["pause"]
    assert "bob" in h.notifier.sent[0].title and "INC-42" in h.notifier.sent[0].reason
    assert h.metric("rollout_paused") == 1

    # While paused a person may steer the flags: the controller reports, never repairs.
    h.flags.settings = OFF
    report = await h.cycle(timedelta(seconds=90))
    assert h.flags.settings == OFF
    assert report.flags is not None and report.flags.drift and not report.flags.applied
    assert "paused" in report.flags.note
    assert h.notifier.events() == ["pause"]

    # Resuming hands the flags back: the stage's flags are restored, reported as drift.
    await h.command("resume", after=timedelta(seconds=100), why="done")
    assert h.flags.settings == MID
    assert h.notifier.events() == ["pause", "resume", "drift"]
    assert h.metric("rollout_paused") == 0


async def test_promote_writes_the_next_stage_and_counts_as_manual(h: Harness) -> None:
    await h.cycle(timedelta(0))
    report = await h.command("promote", after=timedelta(seconds=5), why="skip the baseline")
    assert h.stage() == "mid" and h.flags.settings == MID
    assert report.entry.transition == "manual-promote"
    assert h.metric("rollout_transitions_total", from_stage="off", to_stage="mid",
                    kind="manual-promote") == 1
    [sent] = h.notifier.sent
    assert sent.event == "transition" and sent.title.startswith("Rollout promoted by alice")


async def test_promote_full_goes_to_the_last_stage(h: Harness) -> None:
    await h.cycle(timedelta(0))
    await h.command("promote", after=timedelta(seconds=5), full=True)
    assert h.stage() == "top" and h.flags.settings == TOP


async def test_rollback_to_a_named_stage(h: Harness) -> None:
    await h.cycle(timedelta(0))
    await h.command("promote", after=timedelta(seconds=5), full=True)
    report = await h.command("rollback", after=timedelta(seconds=10), to="off", why="smoke")
    assert h.stage() == "off" and h.flags.settings == OFF
    assert report.entry.transition == "manual-rollback"
    state = h.store.stored_state()
    assert state is not None and state.last_rollback is not None
    assert state.last_rollback.by == "alice"
    assert h.metric("rollout_transitions_total", from_stage="top", to_stage="off",
                    kind="manual-rollback") == 1


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("resume", {}, "nothing to resume"),
    ("rollback", {}, "already at the first stage"),
    ("rollback", {"to": "nowhere"}, "unknown stage 'nowhere'"),
    ("pause", {"who": " "}, "say who you are"),
])
async def test_a_rejected_command_writes_nothing(
    h: Harness, name: str, kwargs: dict[str, str], message: str
) -> None:
    await h.cycle(timedelta(0))
    log_length, state = len(h.store.log), dict(h.store.state or {})
    with pytest.raises(CommandRejected, match=message):
        await h.command(name, after=timedelta(seconds=5), **kwargs)
    assert len(h.store.log) == log_length and h.store.state == state
    assert h.notifier.sent == []


async def test_a_command_whose_flags_fail_changes_nothing(h: Harness) -> None:
    await h.cycle(timedelta(0))
    h.flags.fail_with = TemporaryFlagError("redis timeout")  # type: ignore[assignment]
    with pytest.raises(CommandFailed, match="redis timeout") as failed:
        await h.command("promote", after=timedelta(seconds=5))
    assert h.stage() == "off"
    assert failed.value.report.entry.kind == "flag-write-failed"
    assert failed.value.report.entry.command.who == "alice"
    assert h.notifier.events() == ["flag-write-failed"]


async def test_pause_while_the_flag_store_is_down_still_pauses(h: Harness) -> None:
    await h.cycle(timedelta(0))
    h.flags.fail_reads_with = TemporaryFlagError("down")  # type: ignore[assignment]
    await h.command("pause", after=timedelta(seconds=5))
    state = h.store.stored_state()
    assert state is not None and state.is_paused
