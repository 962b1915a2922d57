"""The default plan through the pure core, on deterministic traffic: counts grow at the
expected rates (no noise; the bench measures error rates under noise), each check judged by
the real `judge_counts` / `judge`, each cycle by the real `decide`.

Rows: a healthy service completes every stage; an error regression confined to the L1
cohort rolls back one stage before the next; stale L1 answers go to `l2`; an unreadable
Prometheus holds forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from rollout.core.checks import judge
from rollout.core.decide import decide
from rollout.core.decision import Action, Decision
from rollout.core.evidence import judge_counts, with_recorded_counts
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement, Observation, Observations, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Plan
from rollout.core.plan_loader import load_default_plan
from rollout.core.state import RolloutState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=10)
RATE = 30.0  # queries per second over the whole service


@dataclass(frozen=True)
class Traffic:
    """What the service does, as rates: the shares below apply to every answer of a cohort."""

    error: float = 0.01
    cohort_error: float | None = None  # the L1 cohort's error rate, if it differs
    slow: float = 0.05  # slower than the 2.04 s boundary (about the baseline p95)
    stale: float = 0.0  # of audited L1 answers
    l2_hit: float = 0.45
    l1_hit: float = 0.30


HEALTHY = Traffic()


def _cost_share(flags: FlagSettings, traffic: Traffic, l1: bool) -> float:
    """Cost per answer as a share of the plan's $0.05 cap: $0.017 a miss, $0.015 when L2
    served the embedding, nothing when L1 served the answer."""
    miss = 0.017 / 0.05
    l2_hit = 0.015 / 0.05
    per_miss = (traffic.l2_hit * l2_hit + (1 - traffic.l2_hit) * miss) if flags.l2 else miss
    return (1 - traffic.l1_hit) * per_miss if l1 else per_miss


def _counts(  # noqa: PLR0911  (one return per kind of count, as a lookup table reads)
    check: CheckSpec, flags: FlagSettings, traffic: Traffic,
    seconds: float,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(events, trials) of a check and of its control, after `seconds` of traffic."""
    queries = RATE * seconds
    share = flags.l1_percent / 100
    cohort, control = queries * share, queries * (1 - share)
    cohort_error = traffic.error if traffic.cohort_error is None else traffic.cohort_error
    name = check.name
    if "cohort_error" in name:
        return ((cohort * cohort_error, cohort) if cohort else None,
                (control * traffic.error, control) if control else None)
    if "cohort_slow" in name:
        return ((cohort * traffic.slow * 0.5, cohort) if cohort else None,
                (control * traffic.slow, control) if control else None)
    if "stale" in name or name == "cache_integrity_guardrail":
        audits = cohort * traffic.l1_hit
        return ((audits * traffic.stale, audits) if audits else None), None
    if name == "l2_integrity_guardrail":
        return None, None  # no embedding audits once L2 serves (shadow checks: dark-launch)
    if name == "verification_mismatch_rate":
        return (0.0, queries * traffic.l2_hit), None
    if "hit_rate" in name:
        return (queries * traffic.l2_hit, queries), None
    if "cost" in name:
        both = share * _cost_share(flags, traffic, True) + (1 - share) * _cost_share(
            flags, traffic, False)
        return (queries * both, queries), None
    if "p95" in name:  # the share slower than a boundary well below the baseline p95
        served = share * traffic.l1_hit + (traffic.l2_hit if flags.l2 else 0) * 0.5
        return (queries * min(1.0, 1 - served), queries), None
    if "slow" in name:
        overall = traffic.slow * (1 - share * 0.5)
        return (queries * overall, queries), None
    if "error" in name:
        overall = traffic.error + share * (cohort_error - traffic.error)
        return (queries * overall, queries), None
    raise AssertionError(f"no traffic model for {name}")


def observe(plan: Plan, state: RolloutState, now: datetime, traffic: Traffic,
            broken: bool = False) -> Observations:
    """What Prometheus would answer this cycle, judged by the real verdict functions."""
    index = state.stage_index
    flags = plan.stages[index].flags
    checks: list[Observation] = []
    for check in plan.checks_for(index):
        if broken:
            failed = Measurement(None, None, "connection refused")
            checks.append(judge_counts(check, failed, plan, state.baseline_counts)
                          if check.stat else judge(check, failed, state.baseline))
            continue
        if check.stat is None:
            checks.append(_threshold(check, state, now, flags, traffic))
            continue
        start = state.flags_confirmed_at or now
        if check.stat.since is not None:
            start = state.confirmed_at_of(check.stat.since) or start
        seconds = max((now - start).total_seconds(), plan.settings.min_window.total_seconds())
        counts, control = _counts(check, flags, traffic, seconds)
        measurement = Measurement(
            value=None if counts is None else counts[0],
            sample=None if counts is None else counts[1],
            control=None if control is None else Measurement(*control),
            elapsed_seconds=seconds,
        )
        checks.append(judge_counts(check, measurement, plan, state.baseline_counts))
    return Observations(at=now, checks=tuple(checks), flags_match=True,
                        reported_flags=flags, flags_matching_since=state.flags_confirmed_at or now)


def _threshold(check: CheckSpec, state: RolloutState, now: datetime, flags: FlagSettings,
               traffic: Traffic) -> Observation:
    """Redis health and the baseline values: healthy numbers."""
    if check.kind is CheckKind.BASELINE:
        value = {"baseline_error_rate": traffic.error, "baseline_p95_seconds": 1.78,
                 "baseline_slow_share": traffic.slow,
                 "baseline_cost_per_query_usd": 0.017}[check.name]
        observed = judge(check, Measurement(value, 1e6), state.baseline)
        if check.counts is None:
            return observed
        seconds = (now - (state.flags_confirmed_at or now)).total_seconds() or 1.0
        share = {"baseline_error_rate": traffic.error, "baseline_slow_share": traffic.slow,
                 "baseline_cost_per_query_usd": 0.017 / 0.05}[check.name]
        return with_recorded_counts(observed, Measurement(RATE * seconds * share,
                                                          RATE * seconds))
    value = {"redis_memory_below_limit": 0.4}.get(check.name, 0.0)
    return judge(check, Measurement(value, 100.0), state.baseline)


def run(plan: Plan, state: RolloutState, traffic: Callable[[str], Traffic],
        until: Callable[[Decision], bool], cycles: int = 20_000) -> list[Decision]:
    now, decisions = state.entered_at, []
    for _ in range(cycles):
        decision = decide(state, observe(plan, state, now, traffic(state.stage_name)), plan, now)
        decisions.append(decision)
        state = decision.state
        if until(decision):
            return decisions
        now += STEP
    raise AssertionError(f"not reached in {cycles} cycles; last: {decisions[-1].reason}")


def transitions(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.from_stage, d.target_stage) for d in decisions
            if d.action in {Action.ADVANCE, Action.COMPLETE, Action.ROLLBACK}]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_default_plan()


def test_a_healthy_service_completes_the_default_plan(plan: Plan) -> None:
    decisions = run(plan, RolloutState.initial("off", T0), lambda _: HEALTHY,
                    lambda d: d.action is Action.COMPLETE)
    assert transitions(decisions) == [
        ("off", "dark-launch"), ("dark-launch", "l2"), ("l2", "l1-10"), ("l1-10", "l1-50"),
        ("l1-50", "l1-100"), ("l1-100", "l1-100"),
    ]
    assert not any(d.action is Action.ROLLBACK for d in decisions)
    final = decisions[-1]
    assert "objectives:" in final.reason and "cost" in final.reason, final.reason
    # The baseline counts were recorded when leaving `off`, for the comparisons before L1.
    assert set(final.state.baseline_counts) >= {"baseline_error_rate", "baseline_slow_share"}
    # Done after the bakes (29 plan days) and not much later at 30 queries/s.
    took = final.state.completed_at - T0 if final.state.completed_at else None
    assert took is not None and timedelta(days=29) <= took <= timedelta(days=31), took
    # The completed state keeps judging the guardrails and reports the objectives.
    after = decide(final.state, observe(plan, final.state, T0 + timedelta(days=40), HEALTHY),
                   plan, T0 + timedelta(days=40))
    assert after.action is Action.HOLD and "rollout complete" in after.reason


def _at(plan: Plan, stage: str, previous: tuple[str, ...] = ()) -> RolloutState:
    """Mid-ascent at `stage`, a day in, with the earlier L1 stages in the ascent."""
    index = plan.index_of(stage)
    assert index is not None
    entered = T0 + timedelta(days=1)
    ascent = tuple((name, T0 + timedelta(hours=i)) for i, name in enumerate(previous))
    return RolloutState(
        stage_index=index, stage_name=stage, entered_at=entered, flags_confirmed_at=entered,
        baseline={"baseline_error_rate": 0.01, "baseline_p95_seconds": 1.78,
                  "baseline_slow_share": 0.05, "baseline_cost_per_query_usd": 0.017},
        baseline_counts={"baseline_error_rate": (25_920.0, 2_592_000.0),
                         "baseline_slow_share": (129_600.0, 2_592_000.0),
                         "baseline_cost_per_query_usd": (881_280.0, 2_592_000.0)},
        ascent=(*ascent, (stage, entered)),
    )


def test_an_l1_cohort_error_regression_rolls_back_before_the_next_stage(plan: Plan) -> None:
    regressed = replace(HEALTHY, cohort_error=0.03)
    decisions = run(plan, _at(plan, "l1-10"), lambda _: regressed,
                    lambda d: d.action is not Action.HOLD)
    last = decisions[-1]
    assert (last.action, last.target_stage) == (Action.ROLLBACK, "l2"), last.reason
    assert "L1" in last.reason and ": fail" in last.reason
    # Proven within the stage's bake (4 days) at 30 queries/s: before it could advance.
    assert len(decisions) * STEP < timedelta(days=4)


def test_stale_l1_answers_at_l1_50_roll_back_to_l2(plan: Plan) -> None:
    stale = replace(HEALTHY, stale=0.02)
    decisions = run(plan, _at(plan, "l1-50", ("l1-10",)), lambda _: stale,
                    lambda d: d.action is not Action.HOLD)
    last = decisions[-1]
    assert (last.action, last.target_stage) == (Action.ROLLBACK, "l2"), last.reason
    assert "[critical]" in last.reason


def test_prometheus_down_holds_forever(plan: Plan) -> None:
    state = _at(plan, "l1-50", ("l1-10",))
    now = state.entered_at + timedelta(days=30)
    for _ in range(10):
        decision = decide(state, observe(plan, state, now, HEALTHY, broken=True), plan, now)
        assert decision.action is Action.HOLD, decision.reason
        state, now = decision.state, now + STEP
    assert "query failed: connection refused" in decision.reason
    assert all(o.verdict is Verdict.ERROR for o in observe(plan, state, now, HEALTHY, True).checks)
