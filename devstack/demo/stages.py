"""Stage spans from the controller's decision log: the first cycle opens `off`, each transition
that changes the stage closes one span and opens the next, so a stage visited twice (after a
rollback) is two spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rollout.records import LogEntry

STAGE_CHANGES = ("advance", "rollback", "manual-promote", "manual-rollback")


@dataclass(frozen=True)
class StageVisit:
    stage: str
    start: float  # epoch seconds
    end: float
    entered_by: str = "start"  # advance | rollback | manual-… | start

    @property
    def label(self) -> str:
        return f"{self.stage} (after rollback)" if "rollback" in self.entered_by else self.stage


def stage_visits(history_oldest_first: Sequence[LogEntry], end: float) -> list[StageVisit]:
    """Stage spans from the decision log: the first cycle opens `off`, each transition that
    changes the stage closes one span and opens the next."""
    visits: list[StageVisit] = []
    current: tuple[str, float, str] | None = None
    for entry in history_oldest_first:
        if entry.kind not in ("cycle", "command") or entry.at is None:
            continue
        at = entry.at.timestamp()
        if current is None:
            current = (str(entry.from_stage), at, "start")
        kind = entry.transition
        if kind in STAGE_CHANGES and entry.moved:
            visits.append(StageVisit(current[0], current[1], at, current[2]))
            current = (str(entry.to_stage), at, str(kind))
    if current is not None:
        visits.append(StageVisit(current[0], current[1], end, current[2]))
    return visits


def transitions(history_oldest_first: Sequence[LogEntry]) -> list[LogEntry]:
    return [e for e in history_oldest_first if e.transition in (*STAGE_CHANGES, "complete")]


def entry_ts(entry: LogEntry) -> float:
    """An entry's time in epoch seconds (entries without one sort first)."""
    return entry.at.timestamp() if entry.at is not None else 0.0
