"""Reading the world for one cycle: every check of the current stage measured and judged,
and the flags the service instances report compared with the stage's."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from rollout.core.checks import judge
from rollout.core.observations import Measurement, Observations
from rollout.core.plan import Plan
from rollout.core.state import RolloutState
from rollout.ports import MetricsSource, ReportedFlags

log = logging.getLogger("rollout.observe")


async def observe(
    plan: Plan, state: RolloutState, source: MetricsSource, now: datetime
) -> tuple[Observations, ReportedFlags]:
    """Measure every check of the state's stage (guardrails included; the baseline checks in
    the first stage) and compare the flags the service reports with the stage's flags."""
    index = plan.index_of(state.stage_name)
    specs = plan.checks_for(index) if index is not None else ()
    # Identical queries (the same p95 for a gate and a guardrail of one window) run once.
    pending: dict[tuple[str, str | None], asyncio.Task[Measurement]] = {}
    async with asyncio.TaskGroup() as group:
        for spec in specs:
            key = (plan.render_query(spec), plan.render_sample_query(spec))
            if key not in pending:
                pending[key] = group.create_task(_measure(source, *key))
        flags_task = group.create_task(_reported_flags(source))
    checks = tuple(
        judge(
            spec,
            pending[(plan.render_query(spec), plan.render_sample_query(spec))].result(),
            state.baseline,
        )
        for spec in specs
    )
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
