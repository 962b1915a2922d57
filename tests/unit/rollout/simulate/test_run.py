"""One rollout through the real core: skipping cycles changes no decision, stages in order,
an obvious regression caught where it starts, flag delays and metrics outages as the
controller sees them."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.plans import default_plan_path
from rollout.simulate.batch import unscaled
from rollout.simulate.run import Outcome, Rollout, RunSpec
from rollout.simulate.scenarios import ScenarioSpec, bind, scenario_spec
from rollout.simulate.traffic import Slices, Traffic, draw

HOUR = timedelta(hours=1)
OLD_PLAN = Path(__file__).parents[4] / "bench" / "decision_bench" / "old_default_plan.yaml"


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {"new": unscaled(load_plan(default_plan_path())),
            "old": unscaled(load_plan(OLD_PLAN))}


def run(plan: Plan, rate: float, spec: ScenarioSpec, seed: int, run_spec: RunSpec) -> Outcome:
    scenario = bind(spec, plan)
    slices = Slices.for_percents(s.flags.l1_percent for s in plan.stages)
    cycles = math.ceil(run_spec.cap / run_spec.cycle) + 2
    traffic = Traffic(rate)
    draws = draw(np.random.default_rng(seed), traffic, slices, cycles,
                 run_spec.cycle.total_seconds(), scenario.regression)
    return Rollout(plan, traffic, slices, draws, scenario, run_spec).run()


CASES = [
    pytest.param(scenario_spec("healthy"), RunSpec(HOUR, timedelta(days=40)), id="healthy"),
    pytest.param(scenario_spec("l1-error"),
                 RunSpec(HOUR, timedelta(days=8), start_at="l1-10", stop_when_left=True),
                 id="l1-error-promoted"),
    pytest.param(scenario_spec("stale", from_stage="l1-10", size=0.02),
                 RunSpec(HOUR, timedelta(days=35), flag_delay=2 * HOUR), id="stale-delayed"),
    pytest.param(scenario_spec("outage", from_stage="l2", after=HOUR, duration=5 * HOUR),
                 RunSpec(HOUR, timedelta(days=35)), id="outage"),
]


@pytest.mark.parametrize(("spec", "run_spec"), CASES)
def test_skipping_cycles_changes_no_decision(plans: dict[str, Plan], spec: ScenarioSpec,
                                             run_spec: RunSpec) -> None:
    """Every cycle handed to decide (and every verdict checked against the screens) gives the
    same transitions at the same times as the skipping run."""
    exact_spec = RunSpec(run_spec.cycle, run_spec.cap, run_spec.flag_delay, run_spec.start_at,
                         run_spec.stop_when_left, exact=True)
    for plan, rate in itertools.product(plans.values(), (0.5, 30.0)):
        quick = run(plan, rate, spec, 1, run_spec)
        exact = run(plan, rate, spec, 1, exact_spec)
        assert (quick.outcome, quick.stage, quick.seconds) == \
            (exact.outcome, exact.stage, exact.seconds)
        assert quick.transitions == exact.transitions
        assert quick.decide_calls <= exact.decide_calls


def test_a_healthy_run_walks_the_stages_in_order(plans: dict[str, Plan]) -> None:
    outcome = run(plans["new"], 30.0, scenario_spec("healthy"), 3,
                  RunSpec(HOUR, timedelta(days=40)))
    assert outcome.outcome == "completed"
    advances = [(f, t) for _, action, f, t in outcome.transitions if action == "advance"]
    assert advances == list(itertools.pairwise(plans["new"].stage_names))
    times = [seconds for seconds, *_ in outcome.transitions]
    assert times == sorted(times)
    bakes = sum((s.bake for s in plans["new"].stages), timedelta())
    assert bakes.total_seconds() <= outcome.seconds <= (bakes + 6 * 3 * HOUR).total_seconds()
    assert outcome.objectives  # reported at completion
    assert outcome.began is None
    assert all(past <= 3 * 3600 for past in outcome.overruns.values())  # a cycle or two


def test_an_obvious_cohort_regression_is_caught_where_it_starts(plans: dict[str, Plan]) -> None:
    """1 % -> 20 % errors in the L1 cohort from l1-10, over the whole rollout: rolled back
    from l1-10, one stage back, by the cohort guardrail, within hours of l1-10."""
    spec = scenario_spec("l1-error", size=0.20)
    for seed in (1, 2, 3):
        outcome = run(plans["new"], 30.0, spec, seed, RunSpec(HOUR, timedelta(days=40)))
        assert (outcome.outcome, outcome.stage, outcome.rollback_to) == \
            ("rolled_back", "l1-10", "l2"), outcome.reason
        # 20 % in a tenth of the traffic also lifts the overall rate 2 points over baseline.
        assert "l1_cohort_error_guardrail" in outcome.breached
        assert outcome.began is not None and outcome.since_began is not None
        assert 0 < outcome.since_began <= 6 * 3600


def test_stale_answers_roll_back_to_the_stage_that_serves_none(plans: dict[str, Plan]) -> None:
    outcome = run(plans["new"], 30.0, scenario_spec("stale", size=0.05), 1,
                  RunSpec(HOUR, timedelta(days=40)))
    assert (outcome.outcome, outcome.stage, outcome.rollback_to) == \
        ("rolled_back", "l1-50", "l2"), outcome.reason
    assert "cache_integrity_guardrail" in outcome.breached


def test_a_flag_delay_holds_with_the_old_flags_reported(plans: dict[str, Plan]) -> None:
    plan = plans["new"]
    prompt = run(plan, 30.0, scenario_spec("healthy"), 5, RunSpec(HOUR, timedelta(days=40)))
    late = run(plan, 30.0, scenario_spec("healthy"), 5,
               RunSpec(HOUR, timedelta(days=40), flag_delay=3 * HOUR, exact=True))
    assert late.outcome == prompt.outcome == "completed"
    # Bakes count from the transition; the evidence from the confirmation three cycles
    # later, so no stage can end sooner, and every transition costs three blind cycles.
    assert late.seconds >= prompt.seconds
    assert [t[1:] for t in late.transitions] == [t[1:] for t in prompt.transitions]


def test_a_metrics_outage_restarts_the_stage_evidence(plans: dict[str, Plan]) -> None:
    """20 hours without Prometheus from 3 days into l1-10's 4-day bake at 0.5 q/s: decide
    forgets the flags' confirmation, the counts start again after the outage, and l1-10 is
    held past its bake while its gates gather evidence again."""
    plan = plans["new"]
    run_spec = RunSpec(timedelta(minutes=30), timedelta(days=58))
    healthy = run(plan, 0.5, scenario_spec("healthy"), 7, run_spec)
    outage = run(plan, 0.5, scenario_spec("outage", after=timedelta(days=3),
                                                  duration=timedelta(hours=20)), 7, run_spec)
    assert healthy.outcome == "completed" and "l1-10" not in healthy.overruns
    assert outage.outcome == "completed"
    assert outage.overruns.get("l1-10", 0.0) > 4 * 3600
    assert outage.seconds > healthy.seconds
