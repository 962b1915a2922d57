"""Rounds, medians and spreads: absolute figures drift on a shared machine, so variants
alternate within each round and comparisons use the median of per-round ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    def text(self, digits: int = 0) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no values")
    return Spread(float(statistics.median(values)), min(values), max(values))


def ratios(values: Sequence[float], reference: Sequence[float]) -> Spread:
    """Median (and range) of the per-round ratios value/reference: both measured in the
    same round, so a slow round slows both."""
    if len(values) != len(reference):
        raise ValueError("rounds do not pair up")
    return spread([v / r for v, r in zip(values, reference, strict=True)])


def rotate(round_index: int, variants: Sequence[T]) -> list[T]:
    """Each round starts with another variant and odd rounds run backwards, so no variant
    always follows the same neighbour (or always runs first, cold)."""
    if not variants:
        return []
    shift = round_index // 2 % len(variants)
    order = list(variants[shift:]) + list(variants[:shift])
    return order if round_index % 2 == 0 else order[::-1]


def split_calls(total: int, tasks: int) -> list[int]:
    """Calls per task, as even as possible, adding up to `total`."""
    if tasks < 1 or total < tasks:
        raise ValueError("need at least one call per task")
    base, extra = divmod(total, tasks)
    return [base + (1 if i < extra else 0) for i in range(tasks)]
