"""Every PromQL query pair a plan's check makes the controller run, rendered as observe
renders them: a threshold check's value and sample queries over its window; a statistical
check's events/trials (and its control cohort's) over a window since the evidence began,
with the slow-answer boundary placed from a plausible baseline p95."""

from __future__ import annotations

from datetime import timedelta

from rollout.core.boundaries import render_counts, resolve_boundary
from rollout.core.plan import CheckSpec, Plan

# What the baseline p95 of the seed's service (~1.75 s an answer) records: enough to place
# the boundaries of the relative slow-answer objectives.
PLAUSIBLE_BASELINE = {"baseline_p95_seconds": 1.78}


def query_pairs(
    plan: Plan, check: CheckSpec, since_confirmed: timedelta = timedelta(minutes=5)
) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    if check.query:
        pairs.append((plan.render_query(check), plan.render_sample_query(check)))
    window = max(since_confirmed, plan.settings.min_window)
    if check.counts is not None:
        pairs.append(render_counts(check.counts, window, None))
    if check.stat is not None:
        stat = check.stat
        boundary = (
            None if stat.slower_than is None
            else resolve_boundary(stat.slower_than, PLAUSIBLE_BASELINE)
        )
        pairs.append(render_counts(stat.counts, window, boundary))
        if stat.control is not None:
            pairs.append(render_counts(stat.control, window, boundary))
    return pairs
