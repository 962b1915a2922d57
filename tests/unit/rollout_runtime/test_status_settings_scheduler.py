"""The status snapshot and page (with each check's evidence and the objectives), the settings'
fallbacks, and the scheduler's job options."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from rollout.controller import Controller
from rollout.core.observations import Observation
from rollout.core.state import RolloutState
from rollout.records import CheckRecord, CycleSummary, LogEntry
from rollout.scheduler import build_scheduler
from rollout.settings import RolloutSettings
from rollout.status import StatusView, build_status
from rollout.status_page import render_status_page
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.evidence_fixtures import (
    GATE_INCONCLUSIVE,
    GATE_PASSES,
    GUARD_BREACH,
    GUARD_HEALTHY,
    OBJECTIVE_MET,
    OBJECTIVE_MISSED,
    OBJECTIVE_OPEN,
    PLAN,
    record,
)
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
                                                by="<b>mallory</b>", reason="<script>")],
                              nonce="n0nce")
    assert "<script>" not in page and "&lt;script&gt;" in page
    # the page's own script and style only, each with the nonce the CSP allows
    assert page.count("<script") == 1 and '<script nonce="n0nce">' in page
    assert page.count("<style") == 1 and '<style nonce="n0nce">' in page
    assert "<b>mallory</b>" not in page
    assert "Paused by" in page and "fetch('api/status'" in page


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


# --- the evidence behind each verdict, and the objectives --------------------------------------


def _at(stage: str, *, completed: bool = False) -> RolloutState:
    state = replace(RolloutState.initial("off", T0), stage_index=PLAN.index_of(stage),
                    stage_name=stage,
                    # judged: the service reported the flags an hour ago
                    flags_confirmed_at=T0 - timedelta(hours=1))
    return state.completed(T0) if completed else state


def _cycle(stage: str, *observations: Observation, action: str = "hold") -> CycleSummary:
    return CycleSummary(kind="cycle", at=T0, action=action, from_stage=stage, to_stage=stage,
                        reason=f"{action} at {stage}",
                        checks=tuple(record(o) for o in observations))


def test_status_carries_each_checks_evidence_and_the_objectives_apart() -> None:
    cycle = _cycle("mid", GUARD_HEALTHY, GATE_INCONCLUSIVE, OBJECTIVE_OPEN)
    status = build_status(PLAN, _at("mid"), cycle, T0)
    assert [c.check for c in status.enforced_checks] == ["cohort", "stale"]
    [objective] = status.objectives
    assert objective.check == "cost" and objective.verdict == "inconclusive"
    gate = status.enforced_checks[1]
    assert gate.evidence is not None and gate.evidence.needed_more is not None
    # /api/status serves the evidence, and a client reads it back
    data = json.loads(status.model_dump_json())
    assert data["checks"][1]["evidence"]["upper"] == gate.evidence.upper
    assert data["checks"][2]["kind"] == "objective"
    assert StatusView.model_validate_json(status.model_dump_json()) == status


def test_the_page_shows_estimate_bound_limit_n_and_how_much_more() -> None:
    cycle = _cycle("mid", GUARD_HEALTHY, GATE_INCONCLUSIVE, OBJECTIVE_OPEN)
    page = render_status_page(build_status(PLAN, _at("mid"), cycle, T0), [])
    gate = _row(page, "stale")
    for shown in ("inconclusive", "0.667 %", "\u2264 4.36 % (95 %)", "limit \u2264 1 %",
                  "<td>150</td>", "~8 771 more (\u22489h 44m at the current rate)",
                  "1 of 150"):
        assert shown in gate, (shown, gate)
    assert 'class="verdict inconclusive"' in gate
    guard = _row(page, "cohort")
    for shown in ("+0 pp", "\u2264 +0.327 pp (95 %)", "margin \u2264 +1 pp vs control cohort",
                  "5 000 vs 25 000", "3 of 5 000 vs 15 of 25 000 (control cohort)"):
        assert shown in guard, (shown, guard)
    assert "<th>bound</th>" in page
    objectives = page[page.index('<section id="objectives">'):]
    objective = _row(objectives, "cost")
    for shown in ("18 %", "8.11 % to 32 % (95 %)", "limit \u2264 20 %", "~5 363 more"):
        assert shown in objective, (shown, objective)
    assert "<h2>Objectives</h2>" in objectives and "never block" in objectives
    # an objective is not a gate: it is not in the gates' table
    assert 'data-check="cost"' not in page[:page.index('<section id="objectives">')]


def test_at_completion_the_status_shows_the_objectives_with_their_intervals() -> None:
    cycle = _cycle("top", GUARD_HEALTHY, GATE_PASSES, OBJECTIVE_MET, action="complete")
    status = build_status(PLAN, _at("top", completed=True), cycle, T0)
    assert status.headline() == "complete"
    assert [(c.check, c.verdict) for c in status.objectives] == [("cost", "pass")]
    page = render_status_page(status, [])
    assert "Objectives at completion" in page
    assert "Objectives: cost share met." in page  # in the completion banner
    objective = _row(page[page.index('<section id="objectives">'):], "cost")
    assert "8.5 % to 11.6 % (95 %)" in objective and 'class="verdict pass">met<' in objective
    missed = build_status(PLAN, _at("top", completed=True),
                          _cycle("top", OBJECTIVE_MISSED, action="complete"), T0)
    page = render_status_page(missed, [])
    assert 'class="verdict missed">missed<' in page and "37.4 % to 42.7 % (95 %)" in page


def test_the_history_lists_what_a_transition_rests_on() -> None:
    checks = tuple(record(o) for o in (GUARD_BREACH, GATE_PASSES, OBJECTIVE_OPEN))
    rollback = LogEntry(kind="cycle", at=T0, action="rollback", from_stage="top",
                        to_stage="mid", by="controller", reason="breach: top \u2192 mid",
                        checks=checks)
    advance = LogEntry(kind="cycle", at=T0, action="advance", from_stage="mid",
                       to_stage="top", by="controller", reason="passed: mid \u2192 top",
                       checks=checks[1:])
    hold = LogEntry(kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
                    reason="holding", checks=checks)
    page = render_status_page(build_status(PLAN, _at("mid"), None, T0),
                              [rollback, advance, hold])
    history = page[page.index("<h2>Last decisions</h2>"):]
    rows = history.split("<tr")[2:]
    assert len(rows) == 3
    assert rows[2].startswith(' class="held">')  # a hold is folded: "held 1x at mid"
    breach = ("L1 cohort error rate +2 pp, \u2265 +1.2 pp (99.95 %); margin \u2264 +1 pp vs "
              "control cohort (n=10 000 vs 50 000): fail")
    assert "Decided by:" in rows[0] and breach in rows[0]
    assert "L1 stale rate" not in rows[0]  # a rollback is decided by its breaches
    assert "cost share 18 %, 8.11 % to 32 % (95 %)" in rows[0]  # objectives, every transition
    assert "L1 stale rate 0 %, \u2264 0.108 % (95 %); limit \u2264 1 % (n=5 000): pass" in rows[1]
    assert "Decided by:" not in rows[2]  # a hold's reason says what is missing


def test_the_page_shows_old_checks_without_evidence_and_escapes_labels() -> None:
    old = CheckRecord(check="p95", label="p95 latency", kind="gate", verdict="pass",
                      value_text="212 ms", limit_text="1 s", comparator="<=", sample=4120,
                      message="p95 212 ms <= 1 s (n=4 120)")
    page = render_status_page(build_status(PLAN, _at("mid"), CycleSummary(
        kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
        checks=(old,)), T0), [])
    row = _row(page, "p95")
    assert "212 ms" in row and "&lt;= 1 s" in row and "4 120" in row
    assert "<th>bound</th>" not in page and 'id="objectives"' not in page
    hostile = record(GATE_INCONCLUSIVE).model_copy(update={"label": "<script>x()</script>"})
    page = render_status_page(build_status(PLAN, _at("mid"), CycleSummary(
        kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
        checks=(hostile,)), T0), [LogEntry(kind="cycle", at=T0, action="advance",
                                           from_stage="mid", to_stage="top",
                                           checks=(hostile,))], nonce="n")
    assert "<script>" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page


def _row(page: str, check: str) -> str:
    start = page.index(f'<tr data-check="{check}">')
    return page[start:page.index("</tr>", start)]
