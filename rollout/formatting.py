"""How the CLI and the status page write times and counts for people (one spelling each)."""

from __future__ import annotations

from datetime import UTC, datetime

from rollout.core.flags import FlagSettings

NOTHING = "\u2014"


def short_time(moment: datetime | None) -> str:
    """UTC to the second: the log's microseconds and offsets only get in the way of a reader."""
    if moment is None:
        return NOTHING
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def count(value: float | None) -> str:
    """A sample size with thin-space thousands (12 345), or a dash when there is none."""
    if value is None:
        return NOTHING
    return f"{round(value):,}".replace(",", "\u202f")


def flags_text(flags: FlagSettings | None) -> str:
    return NOTHING if flags is None else flags.describe()
