"""The PromQL subset the simulator reads its counters with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.simulate.promql import Frame, PromQLError, histogram_quantile, metric, single


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
    assert single('sum(rate(q{l1=~"o.*"}[1m]))', frame).tolist() == [2 / 60, 5 / 60]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 answers: 50 at or below 1 s, 90 at or below 2 s, all at or below 4 s.
    buckets = {frozenset({("le", le)}): np.array([count]) for le, count in
               (("1.0", 50.0), ("2.0", 90.0), ("4.0", 100.0), ("+Inf", 100.0))}
    (value,) = histogram_quantile(0.95, buckets).values()
    assert value[0] == pytest.approx(2.0 + 2.0 * (95 - 90) / 10)


def test_queries_outside_the_subset_are_refused() -> None:
    frame = _frame(on=[0.0, 1.0, 2.0])
    with pytest.raises(PromQLError):
        single("sum(q[5m])", frame)  # a range selector outside a function
    with pytest.raises(PromQLError):
        single("sum by (l1) (increase(q[1m])) + ", frame)
