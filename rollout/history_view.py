"""The decision log as people skim it: transitions and manual actions, with the runs of
holds between them folded into one line ("held 11x at l1-10 for: …"). `rollout history
--transitions` and the status page show it this way; `rollout history` shows every entry.

Pure: entries in (newest first, as the store returns them), rows out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict

from rollout.records import LogEntry

TIMES: Final = "\u00d7"
# What a person or the controller changed: kept as a row of its own even among holds.
_KEPT_KINDS: Final = frozenset({"command", "flag-write-failed", "recovered",
                                "intent-abandoned", "recovery-blocked", "flags-set",
                                "unreadable"})


class HeldRun(BaseModel):
    """Consecutive holds at one stage, folded. `reason` is the newest hold's."""

    model_config = ConfigDict(frozen=True)

    count: int
    stage: str
    first_at: datetime | None
    last_at: datetime | None
    reason: str

    def text(self) -> str:
        return f"held {self.count}{TIMES} at {self.stage} for: {self.reason}"


HistoryRow = LogEntry | HeldRun


def is_kept(entry: LogEntry) -> bool:
    """A transition (a stage change or completion) or a manual action: never folded."""
    return entry.moved or entry.action in ("complete", "rollback", "advance") \
        or entry.kind in _KEPT_KINDS or entry.action in ("pause", "resume", "promote")


def fold_holds(entries: Sequence[LogEntry]) -> list[HistoryRow]:
    """The entries with every run of consecutive non-kept entries at one stage folded."""
    rows: list[HistoryRow] = []
    run: list[LogEntry] = []

    def flush() -> None:
        if run:
            newest = run[0]
            rows.append(HeldRun(count=len(run), stage=newest.from_stage or "?",
                                first_at=run[-1].at, last_at=newest.at,
                                reason=newest.reason or newest.note or ""))
            run.clear()

    for entry in entries:
        if is_kept(entry):
            flush()
            rows.append(entry)
            continue
        if run and run[0].from_stage != entry.from_stage:
            flush()
        run.append(entry)
    flush()
    return rows
