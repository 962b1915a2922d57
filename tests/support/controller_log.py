"""Reading what a controller did: its cycle reports and the log entries it recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rollout.core.decision import Action
from rollout.core.plan import Plan
from rollout.ports import StateStore
from rollout.records import LogEntry
from rollout.runtime_types import CycleReport
from tests.support.controller_plan import longest_window


def check_of(report: CycleReport, name: str) -> Any:
    assert report.observations is not None
    found = report.observations.get(name)
    assert found is not None, f"{name} not measured in {report.state_before.stage_name}"
    return found


def judged(report: CycleReport, plan: Plan) -> bool:
    """True when this cycle judged every check of its stage: the service reported the
    stage's flags at least one full window before it."""
    state = report.state_after
    confirmed = state.flags_confirmed_at
    if report.decision is None or report.decision.changes_stage or confirmed is None:
        return False
    return report.at - confirmed >= longest_window(plan, state.stage_name)


def entry_time(entry: LogEntry) -> datetime:
    assert entry.at is not None
    return entry.at


def transitions(entries: list[LogEntry]) -> list[tuple[str, str, str]]:
    """(from, to, kind) of every recorded transition, oldest first (`entries` oldest first)."""
    return [(str(e.from_stage), str(e.to_stage), str(e.transition))
            for e in entries if e.transition]


async def oldest_first(store: StateStore, limit: int = 2000) -> list[LogEntry]:
    return list(reversed(await store.history(limit)))


def is_action(action: Action) -> Callable[[CycleReport], bool]:
    return lambda report: report.decision is not None and report.decision.action is action

