"""Many runs: reproducible from the seed, the same draws for every plan, and the default
plan's error levels where the statistics put them (few runs, bounds from the binomial)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.plans import default_plan_path
from rollout.simulate.batch import Batch, run_batch, unscaled
from rollout.simulate.run import RunSpec
from rollout.simulate.scenarios import scenario_spec
from rollout.simulate.traffic import Traffic

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return unscaled(load_plan(default_plan_path()))


def _key(outcome: object) -> tuple[object, ...]:
    return (getattr(outcome, "outcome"), getattr(outcome, "stage"),  # noqa: B009
            getattr(outcome, "seconds"), tuple(getattr(outcome, "transitions")))  # noqa: B009


def test_a_fixed_seed_gives_the_same_runs_however_they_are_spread(plan: Plan) -> None:
    batch = Batch((("p", plan),), scenario_spec("l1-error"), Traffic(0.5),
                  RunSpec(HOUR, timedelta(days=25), start_at="l1-10"), runs=12, key=(5,))
    once = [_key(o) for o in run_batch(batch)[0]]
    again = [_key(o) for o in run_batch(batch, processes=2)[0]]
    assert once == again
    other = [_key(o) for o in run_batch(replace(batch, key=(6,)))[0]]
    assert other != once  # the seed matters: detection times differ


def test_plans_compared_see_the_same_draws(plan: Plan) -> None:
    batch = Batch((("a", plan), ("b", plan)), scenario_spec("l1-error"), Traffic(0.5),
                  RunSpec(HOUR, timedelta(days=25), start_at="l1-10"), runs=6, key=(1,))
    first, second = run_batch(batch)
    assert [_key(o) for o in first] == [_key(o) for o in second]


@pytest.mark.parametrize("rate", [0.5, 30.0])
def test_a_healthy_rollout_rarely_rolls_back(plan: Plan, rate: float) -> None:
    """The plan spends guardrail_alpha_fail = 0.045 % on at most 21 sequences: a healthy
    rollout rolls back with probability <= 0.945 %. Of 100 runs, 5 or more rollbacks would
    happen with probability < 0.4 % if that holds."""
    batch = Batch((("p", plan),), scenario_spec("healthy"), Traffic(rate),
                  RunSpec(HOUR, timedelta(days=35)), runs=100, key=(11,))
    (outcomes,) = run_batch(batch)
    rolled = sum(1 for o in outcomes if o.outcome == "rolled_back")
    assert rolled <= 4
    assert sum(1 for o in outcomes if o.outcome == "completed") >= 96


@pytest.mark.parametrize("rate", [0.5, 30.0])
def test_a_planted_cohort_regression_is_caught_before_the_next_stage(plan: Plan,
                                                                     rate: float) -> None:
    """1 % -> 3 % in the L1 cohort from l1-10: plan check times the cohort guardrail within
    l1-10's 4-day bake at both rates, so it should catch nearly every run there (target
    >= 95 %). Of 50 runs, 42 or fewer caught would happen with probability < 0.4 % at 95 %. (The
    cohort gate cannot pass such a regression either: l1-10 holds until it is proven.)"""
    batch = Batch((("p", plan),), scenario_spec("l1-error"), Traffic(rate),
                  RunSpec(HOUR, timedelta(days=12), start_at="l1-10"), runs=50, key=(12,))
    (outcomes,) = run_batch(batch)
    caught = [o for o in outcomes if o.outcome == "rolled_back" and o.stage == "l1-10"]
    assert len(caught) >= 43
    times = sorted(o.since_began or 0.0 for o in caught)
    assert times[len(times) // 2] < 4 * 86400  # most within the bake
