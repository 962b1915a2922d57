"""The decision benchmark's simulator (bench/decision_bench): its PromQL subset, a handful of
whole rollouts through the real core, skipping cycles changes no decision, and a regression
no plan can miss is caught. Figures are the benchmark's business, not asserted here."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bench.decision_bench.batch import Config, load_plans, run_task, tasks
from bench.decision_bench.cli import OLD_PLAN
from bench.decision_bench.promql import Frame, histogram_quantile, metric, single
from bench.decision_bench.report import lines, summarise, table
from bench.decision_bench.simulate import Outcome, Rollout, Scenario
from bench.decision_bench.traffic import Slices, Traffic, draw
from rollout.core.plan import Plan
from rollout.plans import default_plan_path

HOUR = timedelta(hours=1)


def _frame(**counters: list[float]) -> Frame:
    series = {metric("q", l1=name): np.array(values) for name, values in counters.items()}
    ends = np.arange(1, 3, dtype=np.int64)
    return Frame(series, {}, np.zeros(2, dtype=np.int64), ends, np.full(2, 60.0))


def test_promql_sums_filters_and_falls_back() -> None:
    frame = _frame(on=[0.0, 2.0, 5.0], off=[0.0, 0.0, 0.0])
    assert single('sum(increase(q{l1="on"}[{window}]))', frame).tolist() == [2.0, 5.0]
    assert single('sum(increase(q[5m]))', frame).tolist() == [2.0, 5.0]
    # `> 0` drops the sample, `or vector(0)` stands in for a missing one.
    empty = single('sum(increase(q{l1="off"}[1m])) > 0', frame)
    assert all(math.isnan(v) for v in empty)
    assert single('(sum(increase(q{l1="off"}[1m])) > 0) or vector(0)', frame).tolist() == [0, 0]
    assert single('min(sum by (l1) (increase(q[1m])))', frame).tolist() == [0.0, 0.0]
    assert single('sum(increase(q[1m])) / 0.5 - 1', frame).tolist() == [3.0, 9.0]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 answers: 50 at or below 1 s, 90 at or below 2 s, all at or below 4 s.
    buckets = {frozenset({("le", le)}): np.array([count]) for le, count in
               (("1.0", 50.0), ("2.0", 90.0), ("4.0", 100.0), ("+Inf", 100.0))}
    (value,) = histogram_quantile(0.95, buckets).values()
    assert value[0] == pytest.approx(2.0 + 2.0 * (95 - 90) / 10)


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    config = Config(plans=(("new", default_plan_path()), ("old", OLD_PLAN)), runs=1,
                    rates=(30.0,), cycle=HOUR, seed=1, healthy_cap=timedelta(days=40),
                    regression_cap=timedelta(days=5), regression_stage="l1-10")
    return load_plans(config)


def _run(plan: Plan, plans: dict[str, Plan], traffic: Traffic, scenario: Scenario, seed: int,
         exact: bool = False) -> Outcome:
    slices = Slices.for_percents(s.flags.l1_percent for p in plans.values() for s in p.stages)
    cycles = int(scenario.cap / HOUR) + 2
    draws = draw(np.random.default_rng(seed), traffic, slices, cycles, 3600.0,
                 scenario.regression)
    return Rollout(plan, traffic, slices, draws, HOUR, scenario, exact=exact).run()


@pytest.mark.parametrize("seed", [1, 2])
def test_skipping_cycles_changes_no_decision(plans: dict[str, Plan], seed: int) -> None:
    """Every cycle handed to decide (and every verdict checked against the screens) gives the
    same transitions at the same times as the benchmark's skipping run."""
    scenarios = (Scenario("healthy", timedelta(days=40)),
                 Scenario("regression", timedelta(days=8), "l1-10"))
    for plan, scenario, rate in itertools.product(plans.values(), scenarios, (0.5, 30.0)):
        quick = _run(plan, plans, Traffic(rate), scenario, seed)
        exact = _run(plan, plans, Traffic(rate), scenario, seed, exact=True)
        assert (quick.outcome, quick.stage, quick.seconds) == \
            (exact.outcome, exact.stage, exact.seconds)
        assert quick.transitions == exact.transitions
        assert quick.decide_calls <= exact.decide_calls


def test_a_healthy_run_walks_the_stages_in_order(plans: dict[str, Plan]) -> None:
    outcome = _run(plans["new"], plans, Traffic(30.0), Scenario("healthy", timedelta(days=40)),
                   seed=3)
    assert outcome.outcome in {"completed", "rolled_back"}
    advances = [(f, t) for _, action, f, t in outcome.transitions if action == "advance"]
    names = plans["new"].stage_names
    assert advances == list(itertools.pairwise(names))[: len(advances)]
    times = [seconds for seconds, *_ in outcome.transitions]
    assert times == sorted(times)
    if outcome.outcome == "completed":
        bakes = sum((s.bake for s in plans["new"].stages), timedelta())
        assert outcome.seconds >= bakes.total_seconds()
        assert outcome.objectives  # reported at completion


def test_an_obvious_cohort_regression_is_caught_at_l1_10(plans: dict[str, Plan]) -> None:
    """1 % -> 20 % errors in the L1 cohort: rolled back from l1-10, one stage back, before
    l1-10's bake could end."""
    traffic = replace(Traffic(30.0), regression_error=0.20)
    scenario = Scenario("regression", timedelta(days=7), "l1-10")
    for seed in (1, 2, 3):
        outcome = _run(plans["new"], plans, traffic, scenario, seed)
        assert (outcome.outcome, outcome.stage, outcome.rollback_to) == \
            ("rolled_back", "l1-10", "l2"), outcome.reason
        assert "cohort" in outcome.reason
        assert outcome.seconds < timedelta(days=4).total_seconds()


def test_a_batch_summarises_into_the_side_by_side_table(tmp_path: Path) -> None:
    config = Config(plans=(("new", default_plan_path()), ("old", OLD_PLAN)), runs=2,
                    rates=(30.0,), cycle=HOUR, seed=7, healthy_cap=timedelta(days=35),
                    regression_cap=timedelta(days=3), regression_stage="l1-10")
    rows = [row for task in tasks(config) for row in run_task(config, task)]
    assert len(rows) == 2 * 2 * 2  # runs x scenarios x plans
    assert {(r["scenario"], r["plan"]) for r in rows} == {
        (s, p) for s in ("healthy", "regression") for p in ("new", "old")}
    summaries = summarise(rows, horizon_days=29)
    assert {s["scenario"] for s in summaries} == {"healthy", "regression"}
    for summary in summaries:
        assert summary["runs"] == 2
        assert 0 <= summary["rolled_back"]["share"] <= 1
    text = table(lines(summaries, 29))
    assert "A/A: runs with any rollback" in text and "rolled back before advancing" in text
