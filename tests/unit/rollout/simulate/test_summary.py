"""From outcomes to figures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.core.plan_loader import load_plan
from rollout.plans import default_plan_path
from rollout.simulate.run import Outcome, RunSpec
from rollout.simulate.scenarios import bind, scenario_spec
from rollout.simulate.summary import quantiles, ratio, summarise, wilson

DAY = 86400.0


def test_wilson_interval() -> None:
    low, high = wilson(0, 1000)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.00383, abs=1e-4)
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_quantiles_and_ratio() -> None:
    q = quantiles([float(v) for v in range(1, 101)])
    assert (q.count, q.median, q.p95) == (100, 50.0, 95.0)
    assert quantiles([]).median is None
    assert ratio(3.0, 2.0) == 1.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_a_harmful_scenario_splits_false_and_true_rollbacks() -> None:
    plan = load_plan(default_plan_path())
    scenario = bind(scenario_spec("l1-error"), plan)
    spec = RunSpec(timedelta(minutes=10), timedelta(days=58))
    began = 16 * DAY
    outcomes = [
        Outcome("rolled_back", "dark-launch", 3 * DAY, rollback_to="off",
                breached=("error_rate_guardrail",)),  # before the harm: false
        Outcome("rolled_back", "l1-10", began + 3600, began=began, rollback_to="l2",
                breached=("l1_cohort_error_guardrail",)),
        Outcome("rolled_back", "l1-50", began + 5 * DAY, began=began, rollback_to="l1-10"),
        Outcome("completed", "l1-100", 29 * DAY, began=began),
        Outcome("held", "l2", 58 * DAY, overruns={"l2": 30 * DAY}),
    ]
    summary = summarise("default", outcomes, plan, scenario, spec)
    assert (summary.rolled_back.count, summary.false_rollback.count,
            summary.true_rollback.count) == (3, 1, 2)
    assert summary.caught_in_stage is not None and summary.caught_in_stage.count == 1
    assert summary.missed is not None and summary.missed.count == 1
    assert summary.never_reached is not None and summary.never_reached.count == 2
    assert summary.time_to_detect.median == 3600
    assert summary.rollbacks == {"dark-launch -> off": 1, "l1-10 -> l2": 1, "l1-50 -> l1-10": 1}
    assert summary.breached["l1_cohort_error_guardrail"] == 1
    assert summary.past_bake.count == 1 and summary.past_bake_at == {"l2": 1}
    assert summary.held_at == {"l2": 1}
    assert summary.bakes_seconds == 29 * DAY


def test_a_stage_that_ends_just_after_its_bake_is_not_held_past_it() -> None:
    plan = load_plan(default_plan_path())
    spec = RunSpec(timedelta(minutes=10), timedelta(days=58))
    outcomes = [Outcome("completed", "l1-100", 29 * DAY, overruns={"l2": 1800.0}),
                Outcome("completed", "l1-100", 30 * DAY, overruns={"l2": DAY})]
    summary = summarise("p", outcomes, plan, bind(scenario_spec("healthy"), plan), spec)
    assert summary.past_bake.count == 1 and summary.caught_in_stage is None
    assert summary.time_past_bake.median == DAY
