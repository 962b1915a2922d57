"""The slow-answer boundary: a real bucket of the service's histogram, labelled exactly as
the Prometheus client labels it (else `{le="2.04"}` would match no series)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.utils import floatToGoString

from app.contract import QUERY_DURATION_BUCKETS
from rollout.core.boundaries import (
    boundary_label,
    nearest_boundary,
    render_counts,
    resolve_boundary,
)
from rollout.core.plan import Counts, Threshold


@pytest.mark.parametrize("bound", QUERY_DURATION_BUCKETS)
def test_labels_match_the_prometheus_client(bound: float) -> None:
    assert boundary_label(bound) == floatToGoString(bound)


@pytest.mark.parametrize(("seconds", "expected"), [
    (2.0, 2.04), (1.75, 1.7), (0.0, 0.001), (99.0, 10.0), (1.4, 1.42),
])
def test_nearest_boundary(seconds: float, expected: float) -> None:
    assert nearest_boundary(seconds) == expected


def test_a_relative_boundary_waits_for_its_baseline() -> None:
    relative = Threshold(baseline="baseline_p95_seconds", factor=0.8)
    assert resolve_boundary(relative, {}) is None
    assert resolve_boundary(relative, {"baseline_p95_seconds": 1.78}) == 1.42  # 1.424 s


def test_render_counts_fills_window_and_boundary() -> None:
    counts = Counts('a{le="{le}"}[{window}]', "b[{window}]")
    assert render_counts(counts, timedelta(minutes=90), 2.04) == ('a{le="2.04"}[90m]', "b[90m]")
    assert render_counts(counts, timedelta(seconds=30), None) == ('a{le="{le}"}[30s]', "b[30s]")
