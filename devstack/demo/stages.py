"""Stage spans from the controller's decision log: the first cycle opens `off`, each transition
that changes the stage closes one span and opens the next, so a stage visited twice (after a
rollback) is two spans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STAGE_CHANGES = ("advance", "rollback", "manual-promote", "manual-rollback")


def iso_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class StageVisit:
    stage: str
    start: float  # epoch seconds
    end: float
    entered_by: str = "start"  # advance | rollback | manual-… | start

    @property
    def label(self) -> str:
        return f"{self.stage} (after rollback)" if "rollback" in self.entered_by else self.stage


def stage_visits(history_oldest_first: Sequence[Mapping[str, Any]], end: float) -> list[StageVisit]:
    """Stage spans from the decision log: the first cycle opens `off`, each transition that
    changes the stage closes one span and opens the next."""
    visits: list[StageVisit] = []
    current: tuple[str, float, str] | None = None
    for entry in history_oldest_first:
        if entry.get("kind") not in ("cycle", "command") or "at" not in entry:
            continue
        at = iso_ts(entry["at"])
        if current is None:
            current = (str(entry["from_stage"]), at, "start")
        kind = entry.get("transition")
        if kind in STAGE_CHANGES and entry.get("from_stage") != entry.get("to_stage"):
            visits.append(StageVisit(current[0], current[1], at, current[2]))
            current = (str(entry["to_stage"]), at, str(kind))
    if current is not None:
        visits.append(StageVisit(current[0], current[1], end, current[2]))
    return visits


def transitions(history_oldest_first: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(e) for e in history_oldest_first
            if e.get("transition") in (*STAGE_CHANGES, "complete")]
