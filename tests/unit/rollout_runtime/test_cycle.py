"""run_cycle with in-memory ports: apply-then-record, failed writes, drift, recovery, and the
notifications of transitions with their evidence and objectives."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.core.decision import Action
from rollout.core.observations import Verdict
from rollout.cycle import run_cycle
from rollout.ports import FencedOut, PermanentFlagError, ReportedFlags, TemporaryFlagError
from rollout.status import build_status
from rollout.status_page import render_status_page
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.evidence_fixtures import evidence_plan
from tests.unit.rollout_runtime.fakes import MID, OFF, TOP, RecordingNotifier, SimulatedCrash


async def test_first_cycle_creates_the_state_and_initialises_the_flags(h: Harness) -> None:
    h.flags.settings = MID  # whatever was there before the controller ever ran
    report = await h.cycle(timedelta(0))
    assert h.stage() == "off"
    assert report.committed and report.decision is not None
    assert report.decision.action is Action.HOLD
    assert h.flags.settings == OFF
    assert report.flags is not None and not report.flags.drift
    assert "initialised" in report.flags.note
    assert h.store.kinds() == ["cycle"]
    assert h.notifier.sent == []  # initialising is not drift


async def test_advance_writes_the_flags_then_records_the_stage(h: Harness) -> None:
    seen_at_commit: list[object] = []
    h.store.before_commit = lambda entry, state: seen_at_commit.append(h.flags.settings)
    await h.walk_to_mid()
    assert h.flags.settings == MID
    assert seen_at_commit[-1] == MID  # the flags were in before the state was written
    entry = h.store.log[-1]
    assert entry.action == "advance" and entry.from_stage == "off"
    assert entry.to_stage == "mid" and entry.transition == "advance"
    assert entry.flags is not None and entry.flags.result == "written"
    assert {c.check for c in entry.checks} == {"base"}
    assert h.store.intent is None
    state = h.store.stored_state()
    assert state is not None and state.baseline == {"base": 0.5}
    assert h.notifier.events() == ["transition"]
    assert "off \u2192 mid" in h.notifier.sent[0].reason
    assert h.metric("rollout_transitions_total", from_stage="off", to_stage="mid",
                    kind="advance") == 1


async def test_every_check_is_logged_with_value_limit_sample_and_verdict(h: Harness) -> None:
    await h.walk_to_mid()
    h.source.values["latency"] = 3.0
    await h.cycle(timedelta(seconds=80))
    report = await h.cycle(timedelta(seconds=95))
    checks = {c.check: c for c in report.entry.checks}
    assert set(checks) == {"errors", "latency", "gate"}
    assert checks["latency"].verdict == "fail"
    assert checks["latency"].value == 3.0 and checks["latency"].limit == 1.0
    assert checks["latency"].sample == 1000.0
    assert checks["gate"].verdict == "pass"
    assert "[1/2 failing cycles]" in (report.entry.reason or "")


@pytest.mark.parametrize("error", [
    TemporaryFlagError("connection refused"),
    PermanentFlagError("401 unauthorized", status=401),
])
async def test_a_failed_flag_write_leaves_the_state_and_is_retried(
    h: Harness, error: Exception
) -> None:
    await h.cycle(timedelta(0))
    before = dict(h.store.state or {})
    h.flags.fail_with = error  # type: ignore[assignment]
    report = await h.cycle(timedelta(seconds=70))
    assert not report.committed
    assert h.store.state == before  # not even the streaks moved
    assert h.stage() == "off" and h.flags.settings == OFF
    assert h.store.kinds()[-1] == "flag-write-failed"
    assert h.store.log[-1].flags is not None and h.store.log[-1].flags.error == str(error)
    assert h.store.intent is None
    assert h.notifier.events() == ["flag-write-failed"]
    assert h.notifier.sent[0].severity == "critical"
    assert h.metric("rollout_transitions_total", from_stage="off", to_stage="mid",
                    kind="advance") is None

    h.flags.fail_with = None
    await h.cycle(timedelta(seconds=80))
    assert h.stage() == "mid" and h.flags.settings == MID


async def test_drift_is_repaired_and_reported(h: Harness) -> None:
    await h.walk_to_mid()
    h.notifier.sent.clear()
    h.flags.settings = TOP  # someone turned everything on by hand
    report = await h.cycle(timedelta(seconds=80))
    assert h.flags.settings == MID
    assert report.flags is not None and report.flags.drift and report.flags.applied
    assert report.entry.flags is not None and report.entry.flags.drift is True
    assert h.notifier.events() == ["drift"]
    assert h.stage() == "mid"


async def test_no_drift_no_writes(h: Harness) -> None:
    await h.walk_to_mid()
    writes = len(h.flags.applied)
    report = await h.cycle(timedelta(seconds=80))
    assert len(h.flags.applied) == writes
    assert report.flags is not None and report.flags.result == "unchanged"


async def test_critical_guardrail_rolls_back_with_the_values_in_the_reason(h: Harness) -> None:
    await h.walk_to_mid()
    h.notifier.sent.clear()
    h.source.values["errors"] = 2.0
    await h.cycle(timedelta(seconds=80))  # flags confirmed now: not judged yet
    report = await h.cycle(timedelta(seconds=91))
    assert report.decision is not None and report.decision.action is Action.ROLLBACK
    assert h.stage() == "off" and h.flags.settings == OFF
    [sent] = h.notifier.sent
    assert sent.event == "transition" and sent.severity == "critical"
    assert "errors 2 > 1 (n=1 000)" in sent.reason and sent.reason.endswith("mid \u2192 off")
    assert h.metric("rollout_transitions_total", from_stage="mid", to_stage="off",
                    kind="rollback") == 1


async def test_prometheus_down_holds_and_records_error_verdicts(h: Harness) -> None:
    await h.walk_to_mid()
    h.source.error = "connection refused"
    for seconds in (80, 95, 200, 400):
        report = await h.cycle(timedelta(seconds=seconds))
        assert report.decision is not None and report.decision.action is Action.HOLD
    assert h.stage() == "mid"
    assert h.metric("rollout_checks_total", check="errors", verdict="error") == 4


async def test_a_metrics_source_that_raises_is_an_error_verdict(h: Harness) -> None:
    h.source.raise_on_measure = True
    report = await h.cycle(timedelta(0))
    assert report.observations is not None
    assert [o.verdict for o in report.observations.checks] == [Verdict.ERROR]


async def test_a_failing_notifier_never_breaks_the_cycle(h: Harness) -> None:
    h.notifier = RecordingNotifier(fail=True)
    await h.walk_to_mid()
    assert h.stage() == "mid"


async def test_a_stale_token_writes_nothing(h: Harness) -> None:
    await h.cycle(timedelta(0))
    log_length = len(h.store.log)
    h.store.issue_token()  # another controller took over
    with pytest.raises(FencedOut):
        await h.cycle(timedelta(seconds=70))
    assert len(h.store.log) == log_length
    assert h.flags.settings == OFF and h.stage() == "off"


async def test_fenced_out_between_decide_and_apply_writes_no_flags(h: Harness) -> None:
    await h.cycle(timedelta(0))
    original = h.store.begin_transition

    async def taken_over(intent: object, token: int) -> None:
        h.store.issue_token()  # the successor's INCR lands while we were deciding
        await original(intent, token)  # type: ignore[arg-type]

    h.store.begin_transition = taken_over  # type: ignore[method-assign]
    with pytest.raises(FencedOut):
        await h.cycle(timedelta(seconds=70))
    assert h.flags.settings == OFF and h.stage() == "off"


async def test_dry_run_writes_nothing(h: Harness) -> None:
    await h.cycle(timedelta(0))
    h.flags.settings = TOP  # drifted, but the service has not picked it up yet
    h.source.reported = ReportedFlags(settings=OFF, instances=1)
    log_length, state = len(h.store.log), dict(h.store.state or {})
    report = await run_cycle(h.ports(), now=h.now.replace(minute=5), token=0, dry_run=True)
    assert report.kind == "dry-run"
    assert report.decision is not None and report.decision.action is Action.ADVANCE
    assert report.flags is not None and report.flags.drift and not report.flags.applied
    assert h.flags.settings == TOP
    assert len(h.store.log) == log_length and h.store.state == state
    assert h.notifier.sent == []


async def test_hold_too_long_notifies_once(h: Harness) -> None:
    await h.walk_to_mid()
    h.source.values["gate"] = 5.0  # never passes
    h.notifier.sent.clear()
    for minutes in (2, 30, 62, 63, 64):
        await h.cycle(timedelta(minutes=minutes))
    assert h.notifier.events() == ["overdue"]
    assert "hold-too-long" in h.notifier.sent[0].reason


async def test_unconfirmed_flags_hold(h: Harness) -> None:
    await h.walk_to_mid()
    h.source.reported = ReportedFlags(settings=OFF, instances=2)  # service still on old flags
    report = await h.cycle(timedelta(minutes=10))
    assert report.decision is not None
    assert "waiting for the service to report mid's flags" in report.decision.reason
    assert h.stage() == "mid"


# --- crash between the flag write and the state write ------------------------------------


def crash_when_recording_a_stage_change(h: Harness) -> None:
    def before_commit(entry: object, state: object) -> None:
        stored = h.store.stored_state()
        if state is not None and stored is not None and state.stage_name != stored.stage_name:  # type: ignore[attr-defined]
            raise SimulatedCrash("killed between the flag write and the state write")
    h.store.before_commit = before_commit


async def test_crash_after_an_advance_is_recorded_once_on_restart(h: Harness) -> None:
    await h.cycle(timedelta(0))
    crash_when_recording_a_stage_change(h)
    with pytest.raises(SimulatedCrash):
        await h.cycle(timedelta(seconds=70))
    assert h.flags.settings == MID and h.stage() == "off"  # the world moved, the state not
    assert h.store.intent is not None and h.store.intent.to_stage == "mid"

    h.store.before_commit = None
    h.restart()
    writes_before = list(h.flags.applied)
    report = await h.cycle(timedelta(seconds=75))

    assert h.stage() == "mid"
    assert h.flags.applied == writes_before  # no flap back to off, no second write
    assert h.store.intent is None
    assert h.store.kinds()[-2:] == ["recovered", "cycle"]
    assert report.recovery is not None and "recording the transition once" in report.recovery
    assert report.decision is not None and report.decision.action is Action.HOLD
    assert h.metric("rollout_transitions_total", from_stage="off", to_stage="mid",
                    kind="advance") == 1
    assert h.notifier.events() == ["recovered"]
    transitions = [e for e in h.store.log if e.to_stage == "mid"
                   and e.kind in ("cycle", "recovered") and e.from_stage == "off"]
    assert len(transitions) == 1

    # Later cycles carry on from mid as if nothing happened.
    await h.cycle(timedelta(seconds=90))
    await h.cycle(timedelta(seconds=140))
    assert h.stage() == "top"


async def test_crash_after_a_rollback_never_re_exposes_the_rolled_back_stage(
    h: Harness,
) -> None:
    await h.walk_to_mid()
    await h.cycle(timedelta(seconds=80))
    h.source.values["errors"] = 2.0
    crash_when_recording_a_stage_change(h)
    with pytest.raises(SimulatedCrash):
        await h.cycle(timedelta(seconds=91))
    assert h.flags.settings == OFF and h.stage() == "mid"

    h.store.before_commit = None
    h.restart()
    await h.cycle(timedelta(seconds=100))
    assert h.stage() == "off"
    assert MID not in h.flags.applied[h.flags.applied.index(OFF, 1):]  # mid never rewritten
    state = h.store.stored_state()
    assert state is not None and state.last_rollback is not None
    assert state.cooldown_until is not None
    assert h.metric("rollout_transitions_total", from_stage="mid", to_stage="off",
                    kind="rollback") == 1


async def test_crash_before_the_flags_were_written_drops_the_intent(h: Harness) -> None:
    await h.cycle(timedelta(0))
    h.flags.crash_on_apply = True
    with pytest.raises(SimulatedCrash):
        await h.cycle(timedelta(seconds=70))
    assert h.store.intent is not None and h.flags.settings == OFF

    h.flags.crash_on_apply = False
    h.restart()
    await h.cycle(timedelta(seconds=75))
    assert h.store.kinds()[-2:] == ["intent-abandoned", "cycle"]
    assert h.stage() == "mid"  # decided again, and advanced exactly once
    advances = [e for e in h.store.log if e.transition == "advance"]
    assert len(advances) == 1


async def test_an_unreadable_flag_store_blocks_recovery_and_keeps_the_intent(
    h: Harness,
) -> None:
    await h.cycle(timedelta(0))
    crash_when_recording_a_stage_change(h)
    with pytest.raises(SimulatedCrash):
        await h.cycle(timedelta(seconds=70))
    h.store.before_commit = None
    h.restart()
    h.flags.fail_reads_with = TemporaryFlagError("unleash down")
    writes = list(h.flags.applied)
    report = await h.cycle(timedelta(seconds=75))
    assert report.decision is None and not report.committed
    assert h.store.intent is not None and h.stage() == "off"
    assert h.flags.applied == writes
    assert h.store.kinds()[-1] == "recovery-blocked"

    h.flags.fail_reads_with = None
    await h.cycle(timedelta(seconds=80))
    assert h.stage() == "mid" and h.store.intent is None


# --- a transition's notice lists its evidence and the objectives (DESIGN.md §7) ---------------


async def _walk_with_evidence() -> Harness:
    """To `top` on the evidence plan: a clean stale-rate gate, a quiet cohort guardrail (too
    few errors to decide), and a cost objective that is met."""
    h = Harness(plan=evidence_plan())
    h.source.values.update({"stale": 0, "cohort": 3, "control": 3, "cost": 100})
    await h.walk_to_mid()
    h.notifier.sent.clear()
    await h.cycle(timedelta(seconds=80))  # the service reports mid's flags: evidence starts
    report = await h.cycle(timedelta(seconds=131))
    assert h.stage() == "top", report.entry.reason
    return h


async def test_an_advance_notice_lists_the_deciding_checks_and_the_objectives() -> None:
    h = await _walk_with_evidence()
    [sent] = h.notifier.sent
    assert sent.event == "transition" and sent.title == "Rollout advanced: mid \u2192 top"
    heading, gate, objectives, objective, what_next, *waiting = sent.details
    # ... and what happens next: the new stage's bake, and its checks waiting for the flags
    assert what_next.startswith("What happens next: completes when the bake ends in 1 min "
                                "and after 1 more passing cycle; blocked by ")
    assert waiting and all(line.startswith("\u2022 ") and ": waiting \u2014 judged once the "
                           "service reports this stage's flags" in line for line in waiting)
    assert heading == "Decided by:"
    assert gate.startswith("\u2022 L1 stale rate 0 %, \u2264 ")
    assert gate.endswith(" (95 %); limit \u2264 1 % (n=1 000): pass")
    # the guardrail was inconclusive (3 vs 3 errors in 1 000): it decided nothing
    assert not any("cohort" in line for line in sent.details)
    assert objectives == "Objectives (reported, never blocking):"
    assert objective.startswith("\u2022 cost share 10 %, ") and " to " in objective
    assert objective.endswith("; limit \u2264 20 % (n=1 000): met")
    # the log entry behind it keeps the same evidence
    entry = h.store.log[-1]
    stale = next(c for c in entry.checks if c.check == "stale")
    assert stale.evidence is not None and stale.evidence.trials == 1000


async def test_a_rollback_notice_lists_the_breach_with_its_bound() -> None:
    h = await _walk_with_evidence()
    h.notifier.sent.clear()
    h.source.values["cohort"] = 300  # 30 % errors in the cohort against 0.3 %
    await h.cycle(timedelta(seconds=140))
    report = await h.cycle(timedelta(seconds=150))
    assert report.decision is not None and report.decision.action is Action.ROLLBACK
    [sent] = h.notifier.sent
    assert sent.severity == "critical"
    assert sent.details[0] == "Decided by:"
    [breach] = [line for line in sent.details if "cohort error" in line]
    assert breach.startswith("\u2022 L1 cohort error rate +29.7 pp, \u2265 +")
    assert breach.endswith("(99.95 %); margin \u2264 +1 pp vs control cohort "
                           "(n=1 000 vs 1 000): fail")
    assert not any("stale rate" in line for line in sent.details)  # passing gates: not why
    assert any(line.endswith(": met") for line in sent.details)  # the objectives, as always


async def test_the_completion_notice_and_status_report_the_objectives() -> None:
    h = await _walk_with_evidence()
    h.notifier.sent.clear()
    h.source.values["cost"] = 400  # 40 % of the cap: the objective is missed, yet completes
    await h.cycle(timedelta(seconds=140))
    report = await h.cycle(timedelta(seconds=200))
    assert report.decision is not None and report.decision.action is Action.COMPLETE
    [sent] = h.notifier.sent
    assert sent.title == "Rollout complete: top"
    assert "Objectives (reported, never blocking):" in sent.details
    assert sent.details[-1] == ("What happens next: complete: nothing more to do; the "
                                "guardrails are still watched")
    assert sent.details[-2].startswith("\u2022 cost share 40 %, ")
    assert sent.details[-2].endswith(": missed")
    status = build_status(h.plan, h.store.stored_state(), h.store.last, h.now)
    assert status.completed_at is not None
    [objective] = status.objectives
    assert objective.verdict == "fail" and objective.evidence is not None
    assert objective.evidence.lower > 0.2  # the interval lies above the 20 % limit
    page = render_status_page(status, await h.store.history())
    assert "Objectives at completion" in page and "Objectives: cost share missed." in page


async def test_a_manual_transition_lists_no_evidence(h: Harness) -> None:
    await h.command("promote")
    [sent] = h.notifier.sent
    # no evidence: only what happens next
    assert sent.event == "transition" and sent.details[0].startswith("What happens next: ")
    assert "Decided by:" not in sent.details
