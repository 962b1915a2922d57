"""RolloutState: immutable, each transition resets what it must, and it round-trips."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from rollout.core.state import CONTROLLER, PauseInfo, RollbackInfo, RolloutState

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def busy_state() -> RolloutState:
    return RolloutState(
        stage_index=2,
        stage_name="l2",
        entered_at=T0,
        pass_streak=4,
        failure_streaks={"error_rate_guardrail": 2},
        baseline={"baseline_p95_seconds": 1.75},
        flags_confirmed_at=T0 + timedelta(minutes=1),
        completed_at=T0 + timedelta(days=1),
        overdue_notified_at=T0 + timedelta(days=2),
    )


def test_state_is_immutable_including_its_mappings() -> None:
    state = busy_state()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.pass_streak = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.baseline["x"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        state.failure_streaks["x"] = 1  # type: ignore[index]


def test_a_dict_given_to_the_state_is_copied() -> None:
    baseline = {"a": 1.0}
    state = RolloutState(0, "off", T0, baseline=baseline)
    baseline["a"] = 2.0
    assert state.baseline["a"] == 1.0


@pytest.mark.parametrize(
    "field", ["entered_at", "cooldown_until", "flags_confirmed_at", "completed_at",
              "overdue_notified_at"],
)
def test_naive_datetimes_are_rejected(field: str) -> None:
    values: dict[str, object] = {"stage_index": 0, "stage_name": "off", "entered_at": T0}
    values[field] = datetime(2025, 3, 1, 12, 0)  # naive on purpose
    with pytest.raises(ValueError, match="timezone-aware"):
        RolloutState(**values)  # type: ignore[arg-type]


def test_negative_stage_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        RolloutState(-1, "off", T0)


def test_initial() -> None:
    state = RolloutState.initial("off", T0)
    assert (state.stage_index, state.stage_name, state.entered_at) == (0, "off", T0)
    assert not state.is_paused and not state.awaiting_resume


def test_advanced_resets_the_stage_visit_and_keeps_or_replaces_the_baseline() -> None:
    now = T0 + timedelta(days=3)
    state = dataclasses.replace(busy_state(), cooldown_until=now, awaiting_resume=True)
    moved = state.advanced(3, "l1-10", now)
    assert (moved.stage_index, moved.stage_name, moved.entered_at) == (3, "l1-10", now)
    assert moved.pass_streak == 0 and dict(moved.failure_streaks) == {}
    assert moved.flags_confirmed_at is None and moved.completed_at is None
    assert moved.overdue_notified_at is None
    assert moved.cooldown_until is None and not moved.awaiting_resume
    assert dict(moved.baseline) == {"baseline_p95_seconds": 1.75}
    assert dict(state.advanced(3, "l1-10", now, baseline={"b": 2.0}).baseline) == {"b": 2.0}


def test_rolled_back_records_why_and_starts_the_cooldown() -> None:
    now = T0 + timedelta(days=3)
    back = busy_state().rolled_back(
        1, "dark-launch", now, "p95 high: l2 → dark-launch",
        cooldown_until=now + timedelta(hours=1), await_resume=True,
    )
    assert (back.stage_index, back.stage_name, back.entered_at) == (1, "dark-launch", now)
    assert back.last_rollback == RollbackInfo("l2", "dark-launch", now,
                                              "p95 high: l2 → dark-launch", CONTROLLER)
    assert back.cooldown_until == now + timedelta(hours=1)
    assert back.awaiting_resume
    assert back.pass_streak == 0 and dict(back.failure_streaks) == {}
    assert back.flags_confirmed_at is None and back.completed_at is None
    assert back.in_cooldown(now) and not back.in_cooldown(now + timedelta(hours=1))


def test_paused_and_resumed() -> None:
    now = T0 + timedelta(hours=5)
    paused = busy_state().paused("alice", "incident 42", now)
    assert paused.is_paused and paused.pause_info == PauseInfo("alice", "incident 42", now)
    awaiting = dataclasses.replace(paused, awaiting_resume=True)
    resumed = awaiting.resumed()
    assert not resumed.is_paused and not resumed.awaiting_resume
    assert resumed.pass_streak == 0 and dict(resumed.failure_streaks) == {}


def test_with_cycle_drops_zero_streaks() -> None:
    state = busy_state().with_cycle(
        pass_streak=1, failure_streaks={"a": 0, "b": 2}, flags_confirmed_at=None
    )
    assert state.pass_streak == 1
    assert dict(state.failure_streaks) == {"b": 2}
    assert state.flags_confirmed_at is None


def test_small_transitions() -> None:
    now = T0 + timedelta(days=9)
    assert busy_state().completed(now).completed_at == now
    assert busy_state().overdue_notified(now).overdue_notified_at == now
    assert busy_state().with_flags_confirmed_at(now).flags_confirmed_at == now


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(RolloutState.initial("off", T0), id="initial"),
        pytest.param(busy_state(), id="busy"),
        pytest.param(
            busy_state().paused("bob", "why", T0).rolled_back(
                1, "dark-launch", T0, "r", cooldown_until=T0, await_resume=True, by="carol"
            ).paused("bob", "again", T0),
            id="paused-after-manual-rollback",
        ),
    ],
)
def test_round_trip_through_a_dict(state: RolloutState) -> None:
    assert RolloutState.from_dict(state.to_dict()) == state


def test_to_dict_is_json_ready() -> None:
    import json

    text = json.dumps(busy_state().to_dict())
    assert '"stage_name": "l2"' in text
