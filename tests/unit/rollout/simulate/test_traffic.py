"""The traffic model: what a stage's flags and a scenario's effects put into the counters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app import contract as c
from rollout.core.flags import FlagSettings
from rollout.simulate.promql import Array, Metric, metric
from rollout.simulate.traffic import (
    HEALTHY,
    Effects,
    Emission,
    Regression,
    Slices,
    Traffic,
    draw,
    emit,
)

SLICES = Slices.for_percents((0, 10, 50, 100))
L1_10 = FlagSettings(shadow=True, l2=True, l1_percent=10)
CYCLE = 600.0


def _total(out: dict[Metric, Array], name: str, **labels: str) -> float:
    return float(out[metric(name, **labels)].sum())


def _verified(out: dict[Metric, Array], result: str) -> float:
    return _total(out, c.METRIC_CACHE_VERIFICATIONS, cache_layer=c.LAYER_QUERY_RESULT,
                  result=result)


def test_slowed_latency_keeps_the_spread_and_moves_the_share() -> None:
    healthy = Traffic(1.0)
    slowed = healthy.slowed(0.10)
    assert healthy.slower_than(2.04) == pytest.approx(0.05, abs=1e-6)
    assert slowed.slower_than(2.04) == pytest.approx(0.10, abs=1e-6)
    assert slowed.sigma == pytest.approx(healthy.sigma)
    assert slowed.latency_median > healthy.latency_median


def test_errors_rise_in_the_cohort_only_unless_the_whole_service() -> None:
    traffic = Traffic(30.0)
    draws = draw(np.random.default_rng(1), traffic, SLICES, 50, CYCLE, Regression(error=0.05))
    base = emit(draws, traffic, SLICES, Emission(L1_10, HEALTHY, 1, 50, CYCLE))
    cohort = emit(draws, traffic, SLICES, Emission(L1_10, Effects(errors=True), 1, 50, CYCLE))
    whole = emit(draws, traffic, SLICES,
                 Emission(L1_10, Effects(errors=True, whole_service=True), 1, 50, CYCLE))

    def rate(out: dict[Metric, Array], l1: str) -> float:
        errors = _total(out, c.METRIC_QUERIES, outcome=c.OUTCOME_ERROR, l1=l1)
        return errors / (errors + _total(out, c.METRIC_QUERIES, outcome=c.OUTCOME_OK, l1=l1))

    assert rate(base, "on") == pytest.approx(0.01, abs=0.004)
    assert rate(cohort, "on") == pytest.approx(0.05, abs=0.008)
    assert rate(cohort, "off") == rate(base, "off")  # the same draws, untouched
    assert rate(whole, "off") == pytest.approx(0.05, abs=0.004)


def test_stale_hits_show_in_audits_and_shadow_verifications_within_the_audit_cap() -> None:
    traffic = Traffic(30.0)
    draws = draw(np.random.default_rng(2), traffic, SLICES, 30, CYCLE, Regression(stale=0.02))
    healthy = emit(draws, traffic, SLICES, Emission(L1_10, HEALTHY, 1, 30, CYCLE))
    stale = emit(draws, traffic, SLICES, Emission(L1_10, Effects(stale=True), 1, 30, CYCLE))
    assert _verified(healthy, c.VERIFY_STALE) == 0
    found = _verified(stale, c.VERIFY_STALE)
    checked = found + _verified(stale, c.VERIFY_MATCH)
    assert checked == _verified(healthy, c.VERIFY_MATCH)  # the same audits, some now stale
    assert found / checked == pytest.approx(0.02, abs=0.005)
    # l1-100 without shadow at 30 q/s: ~9 served hits a second, audited up to 5 a second.
    full = FlagSettings(shadow=False, l2=True, l1_percent=100)
    audited = emit(draws, traffic, SLICES, Emission(full, Effects(stale=True), 1, 30, CYCLE))
    per_cycle = (audited[metric(c.METRIC_CACHE_VERIFICATIONS, cache_layer=c.LAYER_QUERY_RESULT,
                                result=c.VERIFY_MATCH)]
                 + audited[metric(c.METRIC_CACHE_VERIFICATIONS,
                                  cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_STALE)])
    assert per_cycle.max() == 5 * CYCLE


def test_low_traffic_reads_the_second_set_of_draws() -> None:
    traffic = Traffic(10.0)
    draws = draw(np.random.default_rng(3), traffic, SLICES, 20, CYCLE,
                 Regression(traffic_factor=0.1))
    assert draws.low is not None
    normal = emit(draws, traffic, SLICES, Emission(L1_10, HEALTHY, 1, 20, CYCLE))
    low = emit(draws, traffic, SLICES, Emission(L1_10, Effects(low_traffic=True), 1, 20, CYCLE))

    def answers(out: dict[Metric, Array]) -> float:
        return sum(_total(out, f"{c.METRIC_QUERY_DURATION}_count", l1=k) for k in ("on", "off"))

    assert answers(normal) == pytest.approx(10.0 * CYCLE * 19, rel=0.02)
    assert answers(low) == pytest.approx(1.0 * CYCLE * 19, rel=0.05)


def test_the_healthy_draws_do_not_depend_on_the_scenario() -> None:
    """Common random numbers: a scenario that adds its own draws after the healthy ones
    leaves a run's healthy traffic as it was."""
    traffic = Traffic(5.0)
    plain = draw(np.random.default_rng(4), traffic, SLICES, 10, CYCLE)
    for regression in (Regression(stale=0.1), Regression(slow_share=0.2),
                       Regression(traffic_factor=0.5)):
        other = draw(np.random.default_rng(4), traffic, SLICES, 10, CYCLE, regression)
        assert np.array_equal(plain.answers, other.answers)
        assert np.array_equal(plain.slower, other.slower)
        assert not math.isnan(float(other.answers.sum()))
