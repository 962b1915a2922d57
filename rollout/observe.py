"""Reading the world for one cycle: every check of the current stage measured and judged,
and the flags the service instances report compared with the stage's.

A threshold check reads its value over its window. A statistical check reads counts —
events and trials, and the control cohort's — accumulated since its evidence began: the
confirmation of this stage's flags, or of an earlier stage of the ascent (`since`), so that
evidence grows over the stage instead of sliding away (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from rollout.core.boundaries import render_counts, resolve_boundary
from rollout.core.checks import judge
from rollout.core.evidence import judge_counts, with_recorded_counts
from rollout.core.observations import Measurement, Observation, Observations, Verdict
from rollout.core.plan import CheckSpec, Counts, Plan
from rollout.core.state import RolloutState
from rollout.ports import MetricsSource, ReportedFlags

log = logging.getLogger("rollout.observe")

_QueryPair = tuple[str, str | None]


class _Queries:
    """Every query pair of a cycle, each run once (a gate and a guardrail often share one)."""

    def __init__(self, source: MetricsSource, group: asyncio.TaskGroup) -> None:
        self._source, self._group = source, group
        self._tasks: dict[_QueryPair, asyncio.Task[Measurement]] = {}

    def ask(self, pair: _QueryPair) -> _QueryPair:
        if pair not in self._tasks:
            self._tasks[pair] = self._group.create_task(_measure(self._source, *pair))
        return pair

    def answer(self, pair: _QueryPair) -> Measurement:
        return self._tasks[pair].result()


async def observe(
    plan: Plan, state: RolloutState, source: MetricsSource, now: datetime
) -> tuple[Observations, ReportedFlags]:
    """Measure every check of the state's stage (guardrails included; the baseline checks in
    the first stage) and compare the flags the service reports with the stage's flags."""
    index = plan.index_of(state.stage_name)
    specs = plan.checks_for(index) if index is not None else ()
    async with asyncio.TaskGroup() as group:
        queries = _Queries(source, group)
        pending = [_plan_check(plan, state, spec, queries, now) for spec in specs]
        flags_task = group.create_task(_reported_flags(source))
    checks = tuple(finish() for finish in pending)
    reported = flags_task.result()
    desired = plan.stages[index].flags if index is not None else None
    match = desired is not None and reported.consistent and reported.settings == desired
    # The state remembers since when the flags have matched (decide keeps it in
    # flags_confirmed_at); a mismatch seen now starts the count again.
    since = (state.flags_confirmed_at or now) if match else None
    observations = Observations(
        at=now, checks=checks, flags_match=match, reported_flags=reported.settings,
        flags_matching_since=since,
    )
    return observations, reported


def _plan_check(
    plan: Plan, state: RolloutState, spec: CheckSpec, queries: _Queries, now: datetime
) -> Callable[[], Observation]:
    """Ask for a check's queries now; return how to judge it once they are answered."""
    if spec.stat is None:
        value = queries.ask((plan.render_query(spec), plan.render_sample_query(spec)))
        if spec.counts is None:
            return lambda: judge(spec, queries.answer(value), state.baseline)
        counted = queries.ask(_counts_pair(spec.counts, _elapsed(plan, state, None, now), None))
        return lambda: with_recorded_counts(
            judge(spec, queries.answer(value), state.baseline), queries.answer(counted)
        )

    stat = spec.stat
    boundary = None
    if stat.slower_than is not None:
        boundary = resolve_boundary(stat.slower_than, state.baseline)
        if boundary is None:
            missing = Observation(
                check=spec.name, verdict=Verdict.NO_DATA, value=None, sample=None, limit=None,
                message=f"{spec.display_name}: no baseline {stat.slower_than.baseline!r} "
                "recorded yet to place the slow-answer boundary",
            )  # fmt: skip
            return lambda: missing
    elapsed = _elapsed(plan, state, stat.since, now)
    treatment = queries.ask(_counts_pair(stat.counts, elapsed, boundary))
    control = (
        queries.ask(_counts_pair(stat.control, elapsed, boundary))
        if stat.control is not None else None
    )

    def finish() -> Observation:
        counts = queries.answer(treatment)
        measurement = Measurement(
            value=counts.value, sample=counts.sample, error=counts.error,
            control=None if control is None else queries.answer(control),
            elapsed_seconds=elapsed.total_seconds(),
        )  # fmt: skip
        return judge_counts(spec, measurement, plan, state.baseline_counts)

    return finish


def _elapsed(plan: Plan, state: RolloutState, since: str | None, now: datetime) -> timedelta:
    """How long the evidence has been accumulating: from the named stage's confirmation in
    this ascent, else this stage's; never shorter than Prometheus can take an increase over."""
    start = (state.confirmed_at_of(since) if since is not None else None) \
        or state.flags_confirmed_at or now
    return max(now - start, plan.settings.min_window)


def _counts_pair(counts: Counts, window: timedelta, boundary: float | None) -> _QueryPair:
    events, trials = render_counts(counts, window, boundary)
    return events, trials


async def _measure(source: MetricsSource, query: str, sample_query: str | None) -> Measurement:
    try:
        return await source.measure(query, sample_query)
    except Exception as exc:  # the port promises not to raise; a bug must not stop the cycle
        log.exception("metrics source raised instead of reporting an error")
        return Measurement(value=None, error=f"{type(exc).__name__}: {exc}")


async def _reported_flags(source: MetricsSource) -> ReportedFlags:
    try:
        return await source.reported_flags()
    except Exception as exc:
        log.exception("metrics source raised while reading the reported flags")
        return ReportedFlags(settings=None, error=f"{type(exc).__name__}: {exc}")
