"""Simulated time: cycle i happens at T0 + i cycles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

T0: Final = datetime(2026, 1, 1, tzinfo=UTC)


def time_of(index: int, cycle: timedelta) -> datetime:
    return T0 + index * cycle


def index_of(moment: datetime, cycle: timedelta) -> int:
    return round((moment - T0) / cycle)
