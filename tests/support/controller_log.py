"""Reading what a controller did: its cycle reports and the log entries it recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rollout.core.decision import Action
from rollout.core.observations import Observation, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Plan
from rollout.ports import StateStore
from rollout.records import CheckRecord, LogEntry
from rollout.runtime_types import CycleReport
from tests.support.controller_plan import judging_delay

# What a statistical guardrail may say without standing in the way of an advance: it only
# proves harm; nothing to count yet (no L1 cohort before l1-10) is the gates' business.
GUARDRAIL_CLEAR = frozenset({Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.NO_DATA})


def check_of(report: CycleReport, name: str) -> Any:
    assert report.observations is not None
    found = report.observations.get(name)
    assert found is not None, f"{name} not measured in {report.state_before.stage_name}"
    return found


def spec_of(plan: Plan, name: str) -> CheckSpec:
    found = next((spec for spec in plan.all_checks() if spec.name == name), None)
    assert found is not None, f"the plan has no check {name!r}"
    return found


def judged(report: CycleReport, plan: Plan) -> bool:
    """True when this cycle judged every check of its stage: the service reported the
    stage's flags long enough before it (a full window; counts: the shortest window)."""
    state = report.state_after
    confirmed = state.flags_confirmed_at
    if report.decision is None or report.decision.changes_stage or confirmed is None:
        return False
    return report.at - confirmed >= judging_delay(plan, state.stage_name)


def clears(plan: Plan, observation: Observation) -> bool:
    """Would this observation let the stage advance (decide's rule): an enforced gate or
    threshold guardrail passes, a statistical guardrail does not fail nor error;
    objectives and dry runs never stand in the way."""
    spec = spec_of(plan, observation.check)
    if not spec.is_enforced:
        return True
    if spec.kind is CheckKind.GUARDRAIL and spec.stat is not None:
        return observation.verdict in GUARDRAIL_CLEAR
    return observation.verdict is Verdict.PASS


def healthy(report: CycleReport, plan: Plan) -> bool:
    """Judged, and every check clears: the cycle counts toward an advance."""
    assert report.observations is not None
    return judged(report, plan) and all(clears(plan, o) for o in report.observations.checks)


def record_of(entry: LogEntry, name: str) -> CheckRecord:
    found = next((c for c in entry.checks if c.check == name), None)
    assert found is not None, f"{name} not recorded in {entry.from_stage} ({entry.reason})"
    return found


def entry_time(entry: LogEntry) -> datetime:
    assert entry.at is not None
    return entry.at


def transitions(entries: list[LogEntry]) -> list[tuple[str, str, str]]:
    """(from, to, kind) of every recorded transition, oldest first (`entries` oldest first)."""
    return [(str(e.from_stage), str(e.to_stage), str(e.transition))
            for e in entries if e.transition]


def visits(entries: list[LogEntry]) -> list[tuple[str, list[LogEntry]]]:
    """The log cut into stage visits: (stage, its entries), each ending with the entry
    that left the stage (the last visit may still be going on)."""
    cut: list[tuple[str, list[LogEntry]]] = []
    current: list[LogEntry] = []
    for entry in entries:
        current.append(entry)
        if entry.transition:
            cut.append((str(entry.from_stage), current))
            current = []
    if current:
        cut.append((str(current[0].from_stage), current))
    return cut


async def oldest_first(store: StateStore, limit: int = 2000) -> list[LogEntry]:
    return list(reversed(await store.history(limit)))


def is_action(action: Action) -> Callable[[CycleReport], bool]:
    return lambda report: report.decision is not None and report.decision.action is action
