"""Interleaving compared variants over rounds, and the medians the verdicts use: absolute
figures drift on a shared machine, per-round comparisons much less."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypeVar

from bench.service_bench.wrk import WrkResult

T = TypeVar("T")


def alternate(round_index: int, variants: Sequence[T]) -> list[T]:
    """ABBA: even rounds in order, odd rounds reversed, so drift hits both variants alike."""
    return list(variants) if round_index % 2 == 0 else list(reversed(variants))


def rotate(round_index: int, variants: Sequence[T]) -> list[T]:
    """Each round starts with another variant and odd rounds run backwards (ABBA for two)."""
    shift = round_index // 2 % len(variants)
    order = list(variants[shift:]) + list(variants[:shift])
    return order if round_index % 2 == 0 else order[::-1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def medians(runs: dict[str, list[WrkResult]]) -> dict[str, dict[str, float]]:
    return {name: {"rps": median([x.rps for x in rs]), "p50_ms": median([x.p50_ms for x in rs]),
                   "p99_ms": median([x.p99_ms for x in rs]),
                   "cpu_us": median([x.cpu_us_per_request or 0.0 for x in rs])}
            for name, rs in runs.items()}


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max: what a figure of interleaved rounds is quoted with."""
    return median(values), min(values), max(values)


def ratio_text(values: Sequence[float], unit: str = "x") -> str:
    mid, low, high = spread(values)
    return f"{mid:.2f}{unit} ({low:.2f}-{high:.2f})"
