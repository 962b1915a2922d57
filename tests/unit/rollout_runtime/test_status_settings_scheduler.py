"""The status snapshot and page, the settings' fallbacks, and the scheduler's job options."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.controller import Controller
from rollout.core.state import RolloutState
from rollout.records import LogEntry
from rollout.scheduler import build_scheduler
from rollout.settings import RolloutSettings
from rollout.status import build_status
from rollout.status_page import render_status_page
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.fakes import T0, FakeLease, small_plan


async def test_status_shows_the_current_stage_checks_only(h: Harness) -> None:
    await h.walk_to_mid()
    state = h.store.stored_state()
    # The last cycle judged `off` and advanced: its checks say nothing about `mid`.
    status = build_status(h.plan, state, h.store.last, T0 + timedelta(seconds=75))
    assert status.stage == "mid" and status.checks == ()
    assert [s.position for s in status.stages] == ["done", "current", "pending"]
    assert status.time_in_stage_seconds == 5.0 and status.bake_remaining_seconds == 55.0

    await h.cycle(timedelta(seconds=80))
    status = build_status(h.plan, h.store.stored_state(), h.store.last,
                          T0 + timedelta(seconds=80))
    assert {c.check for c in status.checks} == {"errors", "latency", "gate"}
    latency = next(c for c in status.checks if c.check == "latency")
    assert latency.limit == 1.0 and latency.comparator == "<="


def test_the_page_escapes_what_people_typed() -> None:
    plan = small_plan()
    state = RolloutState.initial("off", T0).paused("<b>mallory</b>", "<script>x()</script>", T0)
    status = build_status(plan, state, None, T0, instance_id="i", is_leader=True, holder="i")
    page = render_status_page(status, [LogEntry(kind="command", at=T0, action="pause",
                                                by="<b>mallory</b>", reason="<script>")])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>mallory</b>" not in page
    assert "Paused by" in page and 'http-equiv="refresh"' in page


def test_settings_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in ("ROLLOUT_REDIS_URL", "ROLLOUT_URL", "ROLLOUT_HOST", "ROLLOUT_PORT",
                 "ROLLOUT_API_TOKEN", "ROLLOUT_PLAN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("ROLLOUT_PLAN", "")
    settings = RolloutSettings()
    assert settings.state_redis_url == "redis://cache:6379/0"
    assert settings.controller_url == "http://127.0.0.1:8090"
    assert settings.rollout_plan is None and settings.api_token is None
    monkeypatch.setenv("ROLLOUT_REDIS_URL", "redis://state:6379/0")
    monkeypatch.setenv("ROLLOUT_HOST", "0.0.0.0")
    monkeypatch.setenv("ROLLOUT_API_TOKEN", "x")
    settings = RolloutSettings()
    assert settings.state_redis_url == "redis://state:6379/0"
    assert settings.controller_url == "http://127.0.0.1:8090"
    assert settings.api_token == "x"
    assert RolloutSettings().rollout_instance_id != settings.rollout_instance_id


async def test_scheduler_jobs_never_overlap_and_coalesce(h: Harness) -> None:
    controller = Controller(h.ports(), FakeLease(h.store))
    scheduler = build_scheduler(controller, interval_seconds=30, lease_seconds=15)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"lease", "cycle"}
    for job in jobs.values():
        assert job.max_instances == 1 and job.coalesce is True
    assert jobs["cycle"].trigger.interval == timedelta(seconds=30)
    assert jobs["lease"].trigger.interval == timedelta(seconds=5)
