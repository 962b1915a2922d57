"""The latency histogram resolves what the controller judges: buckets at most 10 % apart from
50 ms to 10 s, so a p95 read with Prometheus' histogram_quantile is within 10 % of the truth."""

from __future__ import annotations

import itertools
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from app import contract


def test_buckets_are_sorted_and_at_most_ten_percent_apart_from_50ms_to_10s() -> None:
    bounds = contract.QUERY_DURATION_BUCKETS
    assert list(bounds) == sorted(set(bounds))
    assert 0.05 in bounds and bounds[-1] == 10.0
    steps = [b / a for a, b in itertools.pairwise(bounds) if a >= 0.05]
    assert max(steps) <= contract.QUERY_DURATION_MAX_STEP
    assert len(bounds) == 65  # the series count the README states depends on it


def _histogram_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket that holds q."""
    total = counts[-1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return bounds[-1]


@pytest.mark.parametrize("median", [0.08, 0.4, 1.75, 6.0])
def test_a_p95_read_from_the_histogram_is_within_ten_percent(median: float) -> None:
    rng = random.Random(7)
    samples = sorted(median * rng.lognormvariate(0.0, 0.35) for _ in range(20_000))
    samples = [s for s in samples if 0.05 <= s <= 9.0]
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "test", buckets=contract.QUERY_DURATION_BUCKETS,
                          registry=registry)
    for value in samples:
        histogram.observe(value)
    bounds, counts = [], []
    for sample in next(iter(registry.collect())).samples:
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
            bounds.append(float(sample.labels["le"]))
            counts.append(sample.value)
    counts.append(float(len(samples)))
    bounds.append(float("inf"))
    exact = samples[int(0.95 * len(samples)) - 1]
    estimated = _histogram_quantile(0.95, bounds, counts)
    assert abs(estimated / exact - 1) <= 0.10, (estimated, exact)
