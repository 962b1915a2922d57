"""decide() with statistical checks (DESIGN.md §7): one row per role and verdict.

Observations are judged from counts by the real `judge_counts`, so each row also exercises
the bound behind its verdict: a gate must pass, inconclusive holds and says how much more it
needs, a guardrail's proven breach rolls back at once to its target, objectives never block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from rollout.core.checks import judge
from rollout.core.decide import decide
from rollout.core.decision import Action
from rollout.core.evidence import judge_counts, with_recorded_counts
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement, Observation, Observations, Verdict
from rollout.core.plan import (
    CheckKind,
    CheckSpec,
    Counts,
    Plan,
    PlanSettings,
    Stage,
    StatSpec,
    StatTest,
    Threshold,
    Unit,
)
from rollout.core.state import RolloutState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)
COUNTS = Counts("events[{window}]", "trials[{window}]")


def stat_check(name: str, kind: CheckKind, stat: StatSpec, **extra: object) -> CheckSpec:
    return CheckSpec(name=name, kind=kind, query="", window=timedelta(hours=1), stat=stat,
                     unit=Unit.RATIO, **extra)  # type: ignore[arg-type]


BASE_ERR = CheckSpec(name="base_err", kind=CheckKind.BASELINE, query="q", window=timedelta(1),
                     counts=COUNTS)
COHORT_GUARD = stat_check("cohort_err_guard", CheckKind.GUARDRAIL, StatSpec(
    StatTest.NON_INFERIORITY, COUNTS, control=COUNTS, margin=0.01))
STALE_GUARD = stat_check("stale_guard", CheckKind.GUARDRAIL, StatSpec(
    StatTest.LIMIT, COUNTS, limit=Threshold(absolute=0.005)), critical=True, rollback_to="l2")
ERR_VS_BASE = stat_check("err_vs_base", CheckKind.GATE, StatSpec(
    StatTest.NON_INFERIORITY, COUNTS, baseline="base_err", margin=0.005))
STALE_GATE = stat_check("stale_gate", CheckKind.GATE, StatSpec(
    StatTest.LIMIT, COUNTS, limit=Threshold(absolute=0.01), since="l1-10"))
COST = stat_check("cost_objective", CheckKind.OBJECTIVE, StatSpec(
    StatTest.LIMIT, COUNTS, limit=Threshold(absolute=0.2)))

PLAN = Plan(
    stages=(
        Stage("off", FlagSettings(), timedelta(days=1), (BASE_ERR,)),
        Stage("l2", FlagSettings(shadow=True, l2=True), timedelta(days=1), (ERR_VS_BASE,)),
        Stage("l1-10", FlagSettings(shadow=True, l2=True, l1_percent=10), timedelta(days=1),
              (STALE_GATE, COST)),
        Stage("l1-100", FlagSettings(l2=True, l1_percent=100), timedelta(days=1),
              (STALE_GATE, COST)),
    ),
    guardrails=(COHORT_GUARD, STALE_GUARD),
    settings=PlanSettings(passes_to_advance=1, failures_to_rollback=3,
                          min_window=timedelta(seconds=30), hold_too_long=None),
)
INDEX = {stage.name: i for i, stage in enumerate(PLAN.stages)}

# Counts (events, trials) and the control's, per situation.
HEALTHY_COHORT = ((3, 5_000), (15, 25_000))
REGRESSED_COHORT = ((300, 10_000), (500, 50_000))  # 3 % vs 1 %: proven beyond 1 pp
FEW = ((0, 40), (0, 200))
CLEAN_AUDITS = (0, 5_000)
STALE_AUDITS = (40, 1_000)
CHEAP = (500, 5_000)  # 10 % of the cap: the objective's 20 % is met
COSTLY = (2_000, 5_000)  # 40 %: missed


def observed(spec: CheckSpec, counts: tuple[float, float],
             control: tuple[float, float] | None = None, *, error: str | None = None,
             baseline_counts: dict[str, tuple[float, float]] | None = None) -> Observation:
    measurement = Measurement(
        value=counts[0], sample=counts[1], error=error, elapsed_seconds=3600.0,
        control=None if control is None else Measurement(value=control[0], sample=control[1]),
    )
    recorded = {"base_err": (10, 10_000)} if baseline_counts is None else baseline_counts
    return judge_counts(spec, measurement, PLAN, recorded)


def at(stage: str, **changes: object) -> RolloutState:
    state = RolloutState(stage_index=INDEX[stage], stage_name=stage, entered_at=T0,
                         flags_confirmed_at=T0, baseline_counts={"base_err": (10, 10_000)})
    return state if not changes else RolloutState.from_dict({**state.to_dict(), **changes})


def seen(*checks: Observation) -> Observations:
    return Observations(at=NOW, checks=checks, flags_match=True)


@dataclass(frozen=True)
class Case:
    id: str
    state: RolloutState
    observations: Observations
    action: Action
    target: str
    reason_has: tuple[str, ...] = ()


GUARDS_QUIET = (
    observed(COHORT_GUARD, *HEALTHY_COHORT),
    observed(STALE_GUARD, CLEAN_AUDITS),
)

CASES = [
    Case("gate inconclusive holds and says how much more it needs",
         at("l1-10"),
         seen(*GUARDS_QUIET, observed(STALE_GATE, (0, 100)), observed(COST, CHEAP)),
         Action.HOLD, "l1-10", ("stale_gate", "inconclusive, ~", "more (≈")),
    Case("every gate passes: advance, with the objectives and their intervals",
         at("l1-10"),
         seen(*GUARDS_QUIET, observed(STALE_GATE, CLEAN_AUDITS), observed(COST, CHEAP)),
         Action.ADVANCE, "l1-100", ("objectives: cost_objective", ": met")),
    Case("a missed objective never blocks",
         at("l1-10"),
         seen(*GUARDS_QUIET, observed(STALE_GATE, CLEAN_AUDITS), observed(COST, COSTLY)),
         Action.ADVANCE, "l1-100", (": missed",)),
    Case("a statistical guardrail without evidence either way does not block",
         at("l1-10"),
         seen(observed(COHORT_GUARD, *FEW), observed(STALE_GUARD, (0, 10)),
              observed(STALE_GATE, CLEAN_AUDITS), observed(COST, CHEAP)),
         Action.ADVANCE, "l1-100"),
    Case("a guardrail that cannot be measured holds",
         at("l1-10"),
         seen(observed(COHORT_GUARD, *HEALTHY_COHORT, error="connection refused"),
              observed(STALE_GUARD, CLEAN_AUDITS), observed(STALE_GATE, CLEAN_AUDITS),
              observed(COST, CHEAP)),
         Action.HOLD, "l1-10", ("query failed",)),
    Case("a proven cohort regression rolls back one stage at once (not after N cycles)",
         at("l1-10"),
         seen(observed(COHORT_GUARD, *REGRESSED_COHORT), observed(STALE_GUARD, CLEAN_AUDITS),
              observed(STALE_GATE, CLEAN_AUDITS), observed(COST, CHEAP)),
         Action.ROLLBACK, "l2", ("cohort_err_guard", ": fail", "vs control cohort")),
    Case("proven stale answers go to the stage that serves none",
         at("l1-100"),
         seen(observed(COHORT_GUARD, *FEW), observed(STALE_GUARD, STALE_AUDITS),
              observed(STALE_GATE, STALE_AUDITS), observed(COST, CHEAP)),
         Action.ROLLBACK, "l2", ("[critical]",)),
    Case("gate compared with the baseline counts passes",
         at("l2"),
         seen(*GUARDS_QUIET, observed(ERR_VS_BASE, (5, 20_000))),
         Action.ADVANCE, "l1-10", ("vs baseline (time-confounded)",)),
    Case("no baseline counts: no data, hold",
         at("l2"),
         seen(*GUARDS_QUIET, observed(ERR_VS_BASE, (5, 20_000), baseline_counts={})),
         Action.HOLD, "l2", ("no baseline counts",)),
    Case("completed keeps watching guardrails and reports the objectives",
         at("l1-100", completed_at=(T0 + timedelta(days=1)).isoformat()),
         seen(*GUARDS_QUIET, observed(STALE_GATE, CLEAN_AUDITS), observed(COST, COSTLY)),
         Action.HOLD, "l1-100", ("rollout complete", "objectives: cost_objective", "missed")),
    Case("completed still rolls back on a proven breach",
         at("l1-100", completed_at=(T0 + timedelta(days=1)).isoformat()),
         seen(observed(COHORT_GUARD, *FEW), observed(STALE_GUARD, STALE_AUDITS),
              observed(STALE_GATE, STALE_AUDITS), observed(COST, CHEAP)),
         Action.ROLLBACK, "l2"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decide_with_evidence(case: Case) -> None:
    decision = decide(case.state, case.observations, PLAN, NOW)
    assert (decision.action, decision.target_stage) == (case.action, case.target), \
        decision.reason
    for fragment in case.reason_has:
        assert fragment in decision.reason, (fragment, decision.reason)


def test_advancing_from_the_first_stage_records_the_baseline_counts() -> None:
    base = with_recorded_counts(
        judge(BASE_ERR, Measurement(value=0.001, sample=10_000), {}),
        Measurement(value=10, sample=10_000),
    )
    decision = decide(at("off"), seen(base), PLAN, NOW)
    assert decision.action is Action.ADVANCE
    assert decision.state.baseline_counts == {"base_err": (10, 10_000)}
    assert decision.state.baseline == {"base_err": 0.001}


@pytest.mark.parametrize(("counts", "verdict"), [
    (Measurement(value=10, sample=None), Verdict.NO_DATA),
    (Measurement(value=None, sample=None, error="timeout"), Verdict.ERROR),
])
def test_a_baseline_without_counts_is_not_recorded(counts: Measurement, verdict: Verdict) -> None:
    base = with_recorded_counts(
        judge(BASE_ERR, Measurement(value=0.001, sample=10_000), {}), counts)
    assert base.verdict is verdict and base.counts is None
    assert decide(at("off"), seen(base), PLAN, NOW).action is Action.HOLD


def test_a_statistical_check_is_judged_once_the_shortest_window_has_passed() -> None:
    """A threshold check waits for its whole window; a statistical one counts from the
    confirmation and is judged after min_window (its `window` of 1 h is irrelevant)."""
    confirmed = NOW - timedelta(minutes=1)
    state = RolloutState(stage_index=2, stage_name="l1-10", entered_at=T0,
                         flags_confirmed_at=confirmed)
    decision = decide(state, seen(*GUARDS_QUIET, observed(STALE_GATE, CLEAN_AUDITS),
                                  observed(COST, CHEAP)), PLAN, NOW)
    assert decision.action is Action.ADVANCE, decision.reason


def test_a_statistical_check_waiting_says_how_long_min_window_still_takes() -> None:
    """Before min_window has passed, the hold names the wait of the statistical checks
    (30 s from the confirmation), not their nominal window of 1 h."""
    confirmed = NOW - timedelta(seconds=10)
    state = RolloutState(stage_index=2, stage_name="l1-10", entered_at=T0,
                         flags_confirmed_at=confirmed)
    decision = decide(state, seen(*GUARDS_QUIET, observed(STALE_GATE, CLEAN_AUDITS),
                                  observed(COST, CHEAP)), PLAN, NOW)
    assert decision.action is Action.HOLD
    assert "for 20s more: a full window must follow" in decision.reason, decision.reason


def test_the_ascent_remembers_each_confirmation_and_a_rollback_forgets_what_it_leaves() -> None:
    state = RolloutState.initial("off", T0).with_flags_confirmed_at(T0)
    for index, name in enumerate(("l2", "l1-10", "l1-100"), start=1):
        moment = T0 + timedelta(hours=index)
        state = state.advanced(index, name, moment).with_flags_confirmed_at(moment)
    assert [name for name, _ in state.ascent] == ["off", "l2", "l1-10", "l1-100"]
    assert state.confirmed_at_of("l1-10") == T0 + timedelta(hours=2)
    back = state.rolled_back(1, "l2", NOW, "stale", cooldown_until=None, await_resume=False)
    assert [name for name, _ in back.ascent] == ["off"]
    assert back.confirmed_at_of("l1-10") is None
    assert RolloutState.from_dict(state.to_dict()) == state


def test_unreadable_metrics_keep_the_evidence_a_real_mismatch_restarts_it() -> None:
    """A scrape outage is not the service leaving the stage: the confirmation (and so the
    counts since it) is kept. Flags read and different do restart it."""
    down = observed(STALE_GATE, (0, 0), error="connection refused")
    unreadable = Observations(at=NOW, checks=(down,), flags_match=False, reported_flags=None)
    decision = decide(at("l1-10"), unreadable, PLAN, NOW)
    assert decision.action is Action.HOLD
    assert decision.state.flags_confirmed_at == T0
    assert "cannot read the metrics" in decision.reason and "is kept" in decision.reason

    other = Observations(at=NOW, checks=(observed(STALE_GATE, CLEAN_AUDITS),),
                         flags_match=False, reported_flags=FlagSettings())
    decision = decide(at("l1-10"), other, PLAN, NOW)
    assert decision.action is Action.HOLD and decision.state.flags_confirmed_at is None
    assert "waiting for the service to report" in decision.reason
