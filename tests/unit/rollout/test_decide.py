"""decide() and the manual commands: one table row per branch, time always passed in."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from rollout.core.commands import pause, promote, resume, rollback
from rollout.core.decide import decide, overdue_after
from rollout.core.decision import Action, CommandRejected, Decision
from rollout.core.flags import FlagSettings
from rollout.core.observations import Observation, Observations, Verdict
from rollout.core.plan import (
    CheckKind,
    CheckSpec,
    Comparator,
    Plan,
    PlanSettings,
    Stage,
    Threshold,
)
from rollout.core.state import CONTROLLER, RollbackInfo, RolloutState

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)  # past the 1-day bakes and every window
TEN_MINUTES = timedelta(minutes=10)


def spec(name: str, kind: CheckKind = CheckKind.GATE, *, window: timedelta = TEN_MINUTES,
         critical: bool = False, dry_run: bool = False) -> CheckSpec:
    rule: dict[str, object] = {}
    if kind is not CheckKind.BASELINE:
        rule = {"comparator": Comparator.LE, "threshold": Threshold(absolute=1.0)}
    return CheckSpec(name=name, kind=kind, query="q[{window}]", window=window,
                     critical=critical, dry_run=dry_run, **rule)  # type: ignore[arg-type]


BASE = spec("base_p95", CheckKind.BASELINE)
GR_ERR = spec("gr_err", CheckKind.GUARDRAIL)
GR_OOM = spec("gr_oom", CheckKind.GUARDRAIL, critical=True)
GR_DRY = spec("gr_dry", CheckKind.GUARDRAIL, dry_run=True)
GATE = spec("gate_hit")
GATE_DRY = spec("gate_dry", dry_run=True)
GATE_SLOW = spec("gate_slow", window=timedelta(hours=1))
GATE_TOP = spec("gate_top")

MID_FLAGS = FlagSettings(shadow=True)


def make_plan(**settings: object) -> Plan:
    values: dict[str, object] = {
        "passes_to_advance": 2, "failures_to_rollback": 3, "cooldown": timedelta(hours=1),
        "auto_resume_after_rollback": False, "min_window": timedelta(seconds=1),
        "hold_too_long": timedelta(days=1),
    }
    values.update(settings)
    return Plan(
        stages=(
            Stage("off", FlagSettings(), timedelta(days=1), (BASE,)),
            Stage("mid", MID_FLAGS, timedelta(days=1), (GATE, GATE_DRY, GATE_SLOW)),
            Stage("top", FlagSettings(shadow=True, l2=True, l1_percent=100), timedelta(days=1),
                  (GATE_TOP,)),
        ),
        guardrails=(GR_ERR, GR_OOM, GR_DRY),
        settings=PlanSettings(**values),  # type: ignore[arg-type]
    )


PLAN = make_plan()
INDEX = {"off": 0, "mid": 1, "top": 2}


def at(stage: str = "mid", *, entered: datetime = T0, confirmed: datetime | None = T0,
       **changes: object) -> RolloutState:
    state = RolloutState(stage_index=INDEX.get(stage, 0), stage_name=stage, entered_at=entered,
                         flags_confirmed_at=confirmed, baseline={"base_p95": 1.5})
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def seen(stage: str = "mid", verdicts: Mapping[str, Verdict | None] | None = None, *,
         flags_match: bool = True, since: datetime | None = None,
         reported: FlagSettings | None = MID_FLAGS, plan: Plan = PLAN) -> Observations:
    """Every check of the stage passes unless `verdicts` says otherwise (None: not measured)."""
    verdicts = verdicts or {}
    checks = []
    for check in plan.checks_for(INDEX[stage]):
        verdict = verdicts.get(check.name, Verdict.PASS)
        if verdict is None:
            continue
        checks.append(Observation(check=check.name, verdict=verdict, value=1.75, sample=500,
                                  limit=1.0, message=f"{check.name} {verdict}"))
    return Observations(at=NOW, checks=tuple(checks), flags_match=flags_match,
                        reported_flags=reported, flags_matching_since=since)


# The loader rejects this; a plan built in code could still do it, and must not crash decide.
FIRST_STAGE_GUARDED = Plan(
    stages=(
        Stage("off", FlagSettings(), timedelta(0),
              (spec("gr_first", CheckKind.GUARDRAIL, critical=True),)),
        Stage("mid", MID_FLAGS, timedelta(0)),
    ),
)
ROLLED_BACK = RollbackInfo("top", "mid", T0, "gr_err fail for 3 cycles: top \u2192 mid")


@dataclass(frozen=True)
class Case:
    id: str
    state: RolloutState
    observations: Observations
    action: Action
    target: str
    reason: tuple[str, ...] = ()
    now: datetime = NOW
    plan: Plan = PLAN
    then: Callable[[Decision], bool] = field(default=lambda d: True)


CASES = [
    # --- the state does not fit the plan ------------------------------------------------------
    Case("unknown-stage-holds", at("gone"), seen(), Action.HOLD, "gone",
         ("stage 'gone', which the plan does not have", "rollout rollback --to"),
         then=lambda d: d.state == at("gone")),
    Case("index-is-resynced-by-name", at("mid", stage_index=7, pass_streak=1), seen(),
         Action.ADVANCE, "top", then=lambda d: d.state.stage_index == 2),
    # --- paused -------------------------------------------------------------------------------
    Case("paused-never-acts", at(pass_streak=5).paused("alice", "incident 42", T0), seen(),
         Action.HOLD, "mid", ("paused by alice at 2025-01-01T00:00:00+00:00: incident 42",),
         then=lambda d: d.state.pass_streak == 5 and d.state.is_paused),
    Case("paused-even-with-a-critical-breach", at().paused("alice", "x", T0),
         seen(verdicts={"gr_oom": Verdict.FAIL}), Action.HOLD, "mid", ("paused by alice",)),
    Case("paused-still-tracks-flags", at().paused("alice", "x", T0),
         seen(flags_match=False), Action.HOLD, "mid", ("paused",),
         then=lambda d: d.state.flags_confirmed_at is None),
    # --- cooldown -----------------------------------------------------------------------------
    Case("cooldown-holds",
         at(cooldown_until=NOW + TEN_MINUTES, last_rollback=ROLLED_BACK, pass_streak=1),
         seen(verdicts={"gr_oom": Verdict.FAIL}), Action.HOLD, "mid",
         ("cooling down after top \u2192 mid (gr_err fail for 3 cycles: top \u2192 mid) until",
          "(10m left)"),
         then=lambda d: d.state.pass_streak == 0 and dict(d.state.failure_streaks) == {}),
    Case("cooldown-without-rollback-info", at(cooldown_until=NOW + TEN_MINUTES), seen(),
         Action.HOLD, "mid", ("cooling down until 2025-01-03T00:10:00+00:00",)),
    Case("cooldown-over-and-auto-resume-advances",
         at(cooldown_until=NOW - timedelta(seconds=1), pass_streak=1), seen(),
         Action.ADVANCE, "top"),
    # --- the service does not report the stage's flags yet ------------------------------------
    Case("flags-not-reported-holds", at(pass_streak=1, failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.FAIL}, flags_match=False, reported=FlagSettings()),
         Action.HOLD, "mid",
         ("waiting for the service to report mid's flags (shadow on \u00b7 L2 off \u00b7 L1 0 %); "
          "it reports shadow off \u00b7 L2 off \u00b7 L1 0 %",),
         then=lambda d: (d.state.flags_confirmed_at is None and d.state.pass_streak == 0
                         and dict(d.state.failure_streaks) == {"gr_err": 2})),
    Case("flags-unknown", at(), seen(flags_match=False, reported=None), Action.HOLD, "mid",
         ("it reports nothing",)),
    # --- a full window must follow the flags --------------------------------------------------
    Case("no-window-complete-yet", at(confirmed=None, entered=NOW - timedelta(days=3)),
         seen(verdicts={"gr_oom": Verdict.FAIL}, since=NOW - timedelta(minutes=5)),
         Action.HOLD, "mid",
         ("not judging gr_err, gr_oom, gate_hit and 1 more for 55m more: a full window must "
          "follow the service reporting the flags at 2025-01-02T23:55:00+00:00",),
         then=lambda d: dict(d.state.failure_streaks) == {} and d.state.pass_streak == 0),
    Case("short-windows-judged-long-one-waits", at(confirmed=NOW - timedelta(minutes=30)),
         seen(verdicts={"gr_err": Verdict.FAIL}), Action.HOLD, "mid",
         ("gr_err fail [1/3 failing cycles]", "not judging gate_slow for 30m more"),
         then=lambda d: dict(d.state.failure_streaks) == {"gr_err": 1}),
    # --- guardrails ---------------------------------------------------------------------------
    Case("guardrail-first-failure-holds", at(pass_streak=1),
         seen(verdicts={"gr_err": Verdict.FAIL}), Action.HOLD, "mid",
         ("gr_err fail [1/3 failing cycles]", "0/2 passing cycles"),
         then=lambda d: dict(d.state.failure_streaks) == {"gr_err": 1}),
    Case("guardrail-nth-failure-rolls-back", at(failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.FAIL}), Action.ROLLBACK, "off",
         ("gr_err fail for 3 cycles: mid \u2192 off",),
         then=lambda d: (d.state.stage_name == "off" and d.state.awaiting_resume
                         and d.state.cooldown_until == NOW + timedelta(hours=1)
                         and d.state.last_rollback is not None
                         and d.state.last_rollback.reason == d.reason
                         and d.state.last_rollback.by == CONTROLLER)),
    Case("critical-guardrail-rolls-back-at-once", at(), seen(verdicts={"gr_oom": Verdict.FAIL}),
         Action.ROLLBACK, "off", ("gr_oom fail [critical]: mid \u2192 off",)),
    Case("two-breaches-both-named", at(failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.FAIL, "gr_oom": Verdict.FAIL}), Action.ROLLBACK, "off",
         ("gr_err fail for 3 cycles; gr_oom fail [critical]: mid \u2192 off",)),
    Case("guardrail-no-data-keeps-streak", at(failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.NO_DATA}), Action.HOLD, "mid",
         ("no_data: gr_err no_data",),
         then=lambda d: dict(d.state.failure_streaks) == {"gr_err": 2}),
    Case("guardrail-error-keeps-streak", at(failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.ERROR}), Action.HOLD, "mid", ("error: gr_err error",),
         then=lambda d: dict(d.state.failure_streaks) == {"gr_err": 2}),
    Case("guardrail-pass-clears-streak", at(failure_streaks={"gr_err": 2}), seen(),
         Action.HOLD, "mid", ("1/2 passing cycles",),
         then=lambda d: dict(d.state.failure_streaks) == {}),
    Case("gate-failure-never-rolls-back", at(pass_streak=1, failure_streaks={"gate_hit": 5}),
         seen(verdicts={"gate_hit": Verdict.FAIL}), Action.HOLD, "mid", ("gate_hit fail",),
         then=lambda d: d.state.pass_streak == 0),
    Case("guardrail-in-first-stage-cannot-roll-back", at("off"),
         seen("off", verdicts={"gr_first": Verdict.FAIL}, plan=FIRST_STAGE_GUARDED),
         Action.HOLD, "off", ("gr_first fail [1/1 failing cycles]",), plan=FIRST_STAGE_GUARDED),
    # --- dry run ------------------------------------------------------------------------------
    Case("dry-run-guardrail-never-rolls-back", at(failure_streaks={"gr_dry": 9}),
         seen(verdicts={"gr_dry": Verdict.FAIL}), Action.HOLD, "mid",
         ("dry-run fail: gr_dry fail", "1/2 passing cycles")),
    Case("dry-run-gate-never-blocks", at(pass_streak=1),
         seen(verdicts={"gate_dry": Verdict.FAIL, "gr_dry": Verdict.ERROR}),
         Action.ADVANCE, "top"),
    # --- no data, errors, missing measurements ------------------------------------------------
    Case("gate-no-data-holds-and-resets", at(pass_streak=1),
         seen(verdicts={"gate_hit": Verdict.NO_DATA}), Action.HOLD, "mid",
         ("no_data: gate_hit no_data", "0/2 passing cycles"),
         then=lambda d: d.state.pass_streak == 0),
    Case("gate-error-holds", at(pass_streak=1), seen(verdicts={"gate_hit": Verdict.ERROR}),
         Action.HOLD, "mid", ("error: gate_hit error",)),
    Case("missing-measurement-is-no-data", at(pass_streak=1), seen(verdicts={"gate_hit": None}),
         Action.HOLD, "mid", ("no_data: gate_hit: not measured this cycle",)),
    # --- bake, streak, advance, complete ------------------------------------------------------
    Case("baking", at(entered=NOW - timedelta(hours=2), confirmed=NOW - timedelta(hours=2),
                      pass_streak=3), seen(), Action.HOLD, "mid",
         ("baking 2h of 1d; 4/2 passing cycles",), then=lambda d: d.state.pass_streak == 4),
    Case("baked-streak-too-short", at(), seen(), Action.HOLD, "mid", ("1/2 passing cycles",),
         then=lambda d: d.state.pass_streak == 1),
    Case("advance", at(pass_streak=1), seen(), Action.ADVANCE, "top",
         ("after the 1d bake, all checks passed 2 cycles in a row; gate_hit pass; "
          "gate_slow pass: mid \u2192 top",),
         then=lambda d: (d.state.stage_index == 2 and d.state.entered_at == NOW
                         and d.state.pass_streak == 0 and d.state.flags_confirmed_at is None
                         and dict(d.state.baseline) == {"base_p95": 1.5})),
    Case("advance-from-off-records-baseline", at("off", pass_streak=1, baseline={}),
         seen("off"), Action.ADVANCE, "mid",
         ("in a row; baseline recorded: base_p95 pass: off \u2192 mid",),
         then=lambda d: dict(d.state.baseline) == {"base_p95": 1.75}),
    Case("off-without-baseline-data-holds", at("off", pass_streak=1),
         seen("off", verdicts={"base_p95": Verdict.NO_DATA}), Action.HOLD, "off",
         ("no_data: base_p95 no_data",)),
    Case("last-stage-completes", at("top", pass_streak=1), seen("top"), Action.COMPLETE, "top",
         ("in a row; gate_top pass: top is the last stage, rollout complete",),
         then=lambda d: d.state.completed_at == NOW and d.state.stage_name == "top"),
    Case("completed-holds", at("top", completed_at=T0, pass_streak=3), seen("top"),
         Action.HOLD, "top",
         ("rollout complete since 2025-01-01T00:00:00+00:00; guardrails still watched",)),
    Case("completed-still-rolls-back", at("top", completed_at=T0),
         seen("top", verdicts={"gr_oom": Verdict.FAIL}), Action.ROLLBACK, "mid",
         then=lambda d: d.state.completed_at is None),
    # --- after a rollback ---------------------------------------------------------------------
    Case("awaiting-resume-holds-although-all-pass",
         at(awaiting_resume=True, last_rollback=ROLLED_BACK, pass_streak=5), seen(),
         Action.HOLD, "mid",
         ("holding at mid after the rollback from top (gr_err fail for 3 cycles: top \u2192 mid) "
          "until a person resumes",)),
    Case("awaiting-resume-without-info", at(awaiting_resume=True), seen(), Action.HOLD, "mid",
         ("holding at mid after the rollback until a person resumes",)),
    Case("awaiting-resume-still-rolls-back", at(awaiting_resume=True),
         seen(verdicts={"gr_oom": Verdict.FAIL}), Action.ROLLBACK, "off"),
    Case("auto-resume-and-no-cooldown", at(failure_streaks={"gr_err": 2}),
         seen(verdicts={"gr_err": Verdict.FAIL}), Action.ROLLBACK, "off",
         plan=make_plan(auto_resume_after_rollback=True, cooldown=timedelta(0)),
         then=lambda d: d.state.cooldown_until is None and not d.state.awaiting_resume),
    # --- hold too long ------------------------------------------------------------------------
    Case("overdue-notified-once", at(), seen(verdicts={"gate_hit": Verdict.FAIL}),
         Action.HOLD, "mid", ("held 1d past the bake (hold-too-long)",),
         then=lambda d: d.overdue and d.state.overdue_notified_at == NOW),
    Case("overdue-already-notified", at(overdue_notified_at=T0),
         seen(verdicts={"gate_hit": Verdict.FAIL}), Action.HOLD, "mid",
         then=lambda d: not d.overdue and "hold-too-long" not in d.reason),
    Case("overdue-disabled", at(), seen(verdicts={"gate_hit": Verdict.FAIL}), Action.HOLD, "mid",
         plan=make_plan(hold_too_long=None), then=lambda d: not d.overdue),
    Case("overdue-not-yet", at(), seen(verdicts={"gate_hit": Verdict.FAIL}), Action.HOLD, "mid",
         now=NOW - timedelta(seconds=1), then=lambda d: not d.overdue),
    Case("overdue-while-paused", at().paused("bob", "waiting for legal", T0), seen(),
         Action.HOLD, "mid", ("waiting for legal; held 1d past the bake",),
         then=lambda d: d.overdue),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decide(case: Case) -> None:
    decision = decide(case.state, case.observations, case.plan, case.now)
    assert (decision.action, decision.target_stage) == (case.action, case.target), decision.reason
    assert decision.from_stage == case.state.stage_name
    for fragment in case.reason:
        assert fragment in decision.reason
    assert decision.by == CONTROLLER and not decision.is_manual
    assert decision.changes_stage == (case.action in (Action.ADVANCE, Action.ROLLBACK))
    assert case.then(decision), decision.state


@pytest.mark.parametrize(
    ("state", "since", "confirmed"),
    [
        pytest.param(at(confirmed=None), None, NOW, id="first-match-counts-from-now"),
        pytest.param(at(confirmed=None, entered=T0 + timedelta(hours=1)), T0,
                     T0 + timedelta(hours=1), id="never-before-the-stage-began"),
        pytest.param(at(confirmed=None), T0 + timedelta(hours=3), T0 + timedelta(hours=3),
                     id="runner-knows-when"),
        pytest.param(at(confirmed=T0 + timedelta(hours=1)), None, T0 + timedelta(hours=1),
                     id="kept-across-cycles"),
        pytest.param(at(confirmed=T0 + timedelta(hours=1)), T0 + timedelta(hours=5),
                     T0 + timedelta(hours=5), id="later-report-wins"),
        pytest.param(at(confirmed=None), NOW + timedelta(hours=1), NOW, id="never-in-the-future"),
    ],
)
def test_flags_confirmed_at(state: RolloutState, since: datetime | None,
                            confirmed: datetime) -> None:
    decision = decide(state, seen(since=since), PLAN, NOW)
    assert decision.state.flags_confirmed_at == confirmed


def test_decide_is_pure() -> None:
    state, observations = at(pass_streak=1), seen()
    first = decide(state, observations, PLAN, NOW)
    assert decide(state, observations, PLAN, NOW) == first
    assert state == at(pass_streak=1)


# --- manual commands ------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    id: str
    run: Callable[[], Decision]
    action: Action
    target: str
    reason: tuple[str, ...] = ()
    then: Callable[[Decision], bool] = field(default=lambda d: True)


COMMANDS = [
    Command("pause", lambda: pause(at(), PLAN, NOW, "alice", "incident 42"), Action.PAUSE, "mid",
            ("paused by alice: incident 42",),
            then=lambda d: d.state.pause_info is not None and d.state.pause_info.at == NOW),
    Command("pause-without-why", lambda: pause(at(), PLAN, NOW, "alice", "  "), Action.PAUSE,
            "mid", ("paused by alice: no reason given",)),
    Command("resume-a-pause", lambda: resume(at(pass_streak=3).paused("a", "b", T0), PLAN, NOW,
                                             "bob", "fixed"),
            Action.RESUME, "mid", ("resumed by bob: fixed",),
            then=lambda d: not d.state.is_paused and d.state.pass_streak == 0),
    Command("resume-after-rollback", lambda: resume(at(awaiting_resume=True), PLAN, NOW, "bob",
                                                    "root cause fixed"),
            Action.RESUME, "mid", then=lambda d: not d.state.awaiting_resume),
    Command("resume-in-cooldown-says-so",
            lambda: resume(at(awaiting_resume=True, cooldown_until=NOW + TEN_MINUTES), PLAN, NOW,
                           "bob", "ok"),
            Action.RESUME, "mid", ("the cooldown still runs until 2025-01-03T00:10:00+00:00",),
            then=lambda d: d.state.cooldown_until == NOW + TEN_MINUTES),
    Command("promote-one-stage", lambda: promote(at("off"), PLAN, NOW, "carol", "demo"),
            Action.ADVANCE, "mid", ("promoted by carol: demo: off \u2192 mid",),
            then=lambda d: d.by == "carol" and d.is_manual and d.state.entered_at == NOW),
    Command("promote-full", lambda: promote(at("off"), PLAN, NOW, "carol", "x", full=True),
            Action.ADVANCE, "top", ("off \u2192 top",)),
    Command("promote-without-baseline-warns",
            lambda: promote(at("off", baseline={}), PLAN, NOW, "carol", "x"),
            Action.ADVANCE, "mid",
            ("no baseline recorded for base_p95: checks relative to it report no_data",)),
    Command("promote-while-paused-stays-paused",
            lambda: promote(at().paused("a", "b", T0), PLAN, NOW, "carol", "x"),
            Action.ADVANCE, "top", ("the rollout stays paused",),
            then=lambda d: d.state.is_paused),
    Command("promote-ends-post-rollback-hold",
            lambda: promote(at(awaiting_resume=True, cooldown_until=NOW + TEN_MINUTES), PLAN, NOW,
                            "carol", "x"),
            Action.ADVANCE, "top",
            then=lambda d: not d.state.awaiting_resume and d.state.cooldown_until is None),
    Command("rollback-to-previous", lambda: rollback(at("top"), PLAN, NOW, "dave", "pager"),
            Action.ROLLBACK, "mid", ("rolled back by dave: pager: top \u2192 mid",),
            then=lambda d: (d.state.last_rollback is not None
                            and d.state.last_rollback.by == "dave"
                            and d.state.cooldown_until == NOW + timedelta(hours=1)
                            and d.state.awaiting_resume)),
    Command("rollback-to-named-stage",
            lambda: rollback(at("top"), PLAN, NOW, "dave", "pager", to="off"),
            Action.ROLLBACK, "off", ("top \u2192 off",)),
    Command("rollback-from-a-stage-the-plan-lost",
            lambda: rollback(at("gone", stage_index=9), PLAN, NOW, "dave", "x", to="top"),
            Action.ROLLBACK, "top", ("gone \u2192 top",),
            then=lambda d: d.state.stage_index == 2),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[command.id for command in COMMANDS])
def test_manual_command(command: Command) -> None:
    decision = command.run()
    assert (decision.action, decision.target_stage) == (command.action, command.target)
    assert decision.is_manual
    for fragment in command.reason:
        assert fragment in decision.reason
    assert command.then(decision), decision.state


@pytest.mark.parametrize(
    ("run", "message"),
    [
        pytest.param(lambda: pause(at().paused("alice", "x", T0), PLAN, NOW, "bob", "y"),
                     re.escape("already paused by alice since 2025-01-01T00:00:00+00:00: x"),
                     id="pause-twice"),
        pytest.param(lambda: pause(at(), PLAN, NOW, " ", "y"), "say who you are",
                     id="pause-anonymous"),
        pytest.param(lambda: resume(at(), PLAN, NOW, "bob", "y"), "nothing to resume",
                     id="resume-nothing"),
        pytest.param(lambda: promote(at("top"), PLAN, NOW, "bob", "y"),
                     "already at the last stage 'top'", id="promote-at-last"),
        pytest.param(lambda: rollback(at("off"), PLAN, NOW, "bob", "y"),
                     "already at the first stage 'off': nothing to roll back to",
                     id="rollback-from-off"),
        pytest.param(lambda: rollback(at("mid"), PLAN, NOW, "bob", "y", to="top"),
                     "only roll back to a stage before 'mid', not 'top'", id="rollback-forward"),
        pytest.param(lambda: rollback(at("mid"), PLAN, NOW, "bob", "y", to="mid"),
                     "before 'mid', not 'mid'", id="rollback-to-itself"),
        pytest.param(lambda: rollback(at("top"), PLAN, NOW, "bob", "y", to="l9"),
                     r"unknown stage 'l9' \(stages: off, mid, top\)", id="rollback-unknown"),
        pytest.param(lambda: rollback(at("gone"), PLAN, NOW, "bob", "y"),
                     "name a target with --to", id="rollback-lost-stage-needs-target"),
        pytest.param(lambda: pause(at("gone"), PLAN, NOW, "bob", "y"),
                     "which the plan does not have", id="pause-lost-stage"),
    ],
)
def test_rejected_command(run: Callable[[], Decision], message: str) -> None:
    with pytest.raises(CommandRejected, match=message):
        run()


# --- rollback targets by kind of breach (DESIGN.md §7) -----------------------------------------

GR_STALE = dataclasses.replace(spec("gr_stale", CheckKind.GUARDRAIL, critical=True),
                               rollback_to="l2")
STAGED = Plan(
    stages=tuple(
        Stage(name, flags, timedelta(days=1), (BASE,) if i == 0 else ())
        for i, (name, flags) in enumerate((
            ("off", FlagSettings()), ("l2", FlagSettings(shadow=True, l2=True)),
            ("l1-10", FlagSettings(shadow=True, l2=True, l1_percent=10)),
            ("l1-50", FlagSettings(shadow=True, l2=True, l1_percent=50)),
        ))
    ),
    guardrails=(GR_ERR, GR_STALE),
    settings=PlanSettings(failures_to_rollback=1, min_window=timedelta(seconds=1)),
)


@pytest.mark.parametrize(("stage", "failing", "target"), [
    ("l1-50", {"gr_stale"}, "l2"),  # a stale L1 answer skips l1-10, which serves L1 too
    ("l1-10", {"gr_stale"}, "l2"),
    ("l2", {"gr_stale"}, "off"),  # already at its target: one stage back
    ("l1-50", {"gr_err"}, "l1-10"),  # no rollback_to: one stage back
    ("l1-50", {"gr_err", "gr_stale"}, "l2"),  # the most cautious target wins
])
def test_a_breach_rolls_back_to_its_guardrails_target(stage: str, failing: set[str],
                                                      target: str) -> None:
    index = STAGED.index_of(stage)
    assert index is not None
    flags = STAGED.stages[index].flags
    state = RolloutState(stage_index=index, stage_name=stage, entered_at=T0,
                         flags_confirmed_at=T0, baseline={"base_p95": 1.5})
    checks = tuple(
        Observation(check=c.name, verdict=Verdict.FAIL if c.name in failing else Verdict.PASS,
                    value=2.0, sample=500, limit=1.0, message=f"{c.name} breached")
        for c in STAGED.checks_for(index))
    observations = Observations(at=NOW, checks=checks, flags_match=True, reported_flags=flags)
    decision = decide(state, observations, STAGED, NOW)
    assert (decision.action, decision.target_stage) == (Action.ROLLBACK, target), decision.reason
    assert decision.reason.endswith(f"{stage} \u2192 {target}")
    assert decision.state.stage_name == target


def test_only_a_guardrail_has_a_rollback_target() -> None:
    with pytest.raises(ValueError, match="only a guardrail"):
        dataclasses.replace(GATE, rollback_to="off")


@pytest.mark.parametrize(("past_bake", "overdue"), [
    (timedelta(minutes=5), False),  # the scaled 1 d is 1 s, but ten cycles have not passed
    (timedelta(minutes=10), False),
    (timedelta(minutes=10, seconds=1), True),  # min_window (1 s) + 10 x 1 min
])
def test_hold_too_long_is_scaled_but_never_shorter_than_ten_cycles(
    past_bake: timedelta, overdue: bool
) -> None:
    """Issue 13: a scaled plan (a day is a second) must not call every stage held too long:
    judging a stage takes real evaluations, which no time scale shortens."""
    plan = make_plan(time_scale=1 / 86400, evaluation_interval=timedelta(minutes=1))
    assert overdue_after(plan) == timedelta(minutes=10, seconds=1)
    assert overdue_after(PLAN) == timedelta(days=1)  # unscaled: the plan's hold_too_long
    bake = plan.bake_of(INDEX["mid"])
    decision = decide(at(entered=T0), seen(verdicts={"gate_hit": Verdict.FAIL}), plan,
                      T0 + bake + past_bake)
    assert decision.overdue is overdue
