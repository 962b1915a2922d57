"""Controller metrics on an injected registry; the Controller's leadership rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.controller import Controller
from rollout.runtime_types import ManualCommand, NotLeader
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.fakes import T0, FakeLease


async def test_cycle_metrics(h: Harness) -> None:
    await h.walk_to_mid()
    h.source.values["latency"] = 0.25
    await h.cycle(timedelta(seconds=80))
    assert h.metric("rollout_stage_index") == 1
    assert h.metric("rollout_stage_info", stage="mid") == 1
    assert h.metric("rollout_stage_info", stage="off") == 0
    assert h.metric("rollout_stage_info", stage="top") == 0
    assert h.metric("rollout_paused") == 0
    assert h.metric("rollout_check_value", check="latency") == 0.25
    assert h.metric("rollout_check_threshold", check="latency") == 1.0
    assert h.metric("rollout_check_value", check="base") is None  # not this stage's check
    assert h.metric("rollout_checks_total", check="latency", verdict="pass") == 1
    assert h.metric("rollout_checks_total", check="base", verdict="pass") == 2
    assert h.metric("rollout_checks_total", check="gate", verdict="fail") == 0
    assert h.metric("rollout_last_evaluation_timestamp_seconds") == (
        T0 + timedelta(seconds=80)).timestamp()
    assert h.metric("rollout_stage_entered_timestamp_seconds") == (
        T0 + timedelta(seconds=70)).timestamp()


async def test_controller_acts_only_as_leader(h: Harness) -> None:
    lease = FakeLease(h.store, leader=False)
    controller = Controller(h.ports(), lease, clock=lambda: T0)
    assert await controller.refresh_lease() is False
    assert h.metric("rollout_is_leader") == 0
    assert await controller.tick() is None
    assert h.store.log == []
    with pytest.raises(NotLeader):
        await controller.command(ManualCommand("pause", "alice", "x"))


async def test_controller_runs_cycles_and_steps_down_when_fenced_out(h: Harness) -> None:
    lease = FakeLease(h.store)
    controller = Controller(h.ports(), lease, clock=lambda: T0)
    assert await controller.refresh_lease() is True
    assert h.metric("rollout_is_leader") == 1
    assert await controller.tick() is not None
    h.store.issue_token()  # a successor took over while this one was paused
    assert await controller.tick() is None
    assert not lease.is_leader and h.metric("rollout_is_leader") == 0
    assert controller.last_error is not None and "stale" in controller.last_error
    assert len(h.store.log) == 1


async def test_controller_releases_its_lease_on_shutdown(h: Harness) -> None:
    lease = FakeLease(h.store)
    controller = Controller(h.ports(), lease, clock=lambda: T0)
    await controller.shutdown()
    assert lease.released
