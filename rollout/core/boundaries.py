"""The histogram boundary a latency check counts from (DESIGN.md §7: latency judged as the
share of answers slower than a bucket boundary, so its statistics are exact counts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from app.contract import QUERY_DURATION_BUCKETS
from rollout.core.plan import (
    BOUNDARY_PLACEHOLDER,
    WINDOW_PLACEHOLDER,
    Counts,
    Threshold,
    promql_duration,
)


def nearest_boundary(seconds: float, buckets: Sequence[float] = QUERY_DURATION_BUCKETS) -> float:
    """The bucket upper bound nearest `seconds` (ties go to the larger, the stricter test
    of slowness being the more lenient one for the service)."""
    return min(buckets, key=lambda bound: (abs(bound - seconds), -bound))


def boundary_label(bound: float) -> str:
    """The `le` label value the Prometheus client writes for a bucket bound: Go's float
    formatting, which for the service's buckets is Python's shortest repr (`2.04`, `10.0`)."""
    return repr(float(bound))


def resolve_boundary(slower_than: Threshold, baseline: Mapping[str, float]) -> float | None:
    """The boundary for a check's `slower_than`, or None while its baseline is missing."""
    seconds = slower_than.limit(baseline)
    return None if seconds is None else nearest_boundary(seconds)


def render_counts(
    counts: Counts, window: timedelta, boundary: float | None
) -> tuple[str, str]:
    """The events and trials queries of a statistical check over `window`, with `{le}`
    filled in when the check counts slow answers."""

    def render(template: str) -> str:
        text = template.replace(WINDOW_PLACEHOLDER, promql_duration(window))
        if boundary is not None:
            text = text.replace(BOUNDARY_PLACEHOLDER, boundary_label(boundary))
        return text

    return render(counts.events), render(counts.trials)
