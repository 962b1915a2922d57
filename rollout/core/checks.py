"""The verdict of one check: a pure function of its measurement, its spec and the baseline.

As in argo-rollouts' analysis, "could not tell" is an outcome of its own: a broken or
thin measurement yields `error` or `no_data`, never `pass` or `fail`, so that Prometheus
being down can neither promote nor roll back a stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

from rollout.core.observations import Measurement, Observation, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Unit

TIMES: Final = "\u00d7"  # the multiplication sign, escaped because it looks like an x


def judge(  # noqa: PLR0911  (one return per verdict, in the order the docstring gives)
    spec: CheckSpec, measurement: Measurement, baseline: Mapping[str, float]
) -> Observation:
    """Turn a raw measurement into an Observation with its verdict and a reason line.

    Order matters: an error wins over everything (the numbers next to it are not to be
    trusted), then missing data, then too little traffic, then a missing baseline.
    """
    label = spec.display_name
    value, sample = measurement.value, measurement.sample

    def observed(verdict: Verdict, message: str, limit: float | None = None) -> Observation:
        return Observation(
            check=spec.name,
            verdict=verdict,
            value=value,
            sample=sample,
            limit=limit,
            message=message,
            error=measurement.error,
        )

    if measurement.error is not None:
        return observed(Verdict.ERROR, f"{label}: query failed: {measurement.error}")
    if value is None or not math.isfinite(value):
        shown = "empty result" if value is None else f"value {value}"
        return observed(Verdict.NO_DATA, f"{label}: no data ({shown})")
    if spec.min_sample > 0:
        if sample is None or not math.isfinite(sample):
            return observed(Verdict.NO_DATA, f"{label}: no data (traffic count unavailable)")
        if sample < spec.min_sample:
            return observed(
                Verdict.NO_DATA,
                f"{label}: too little traffic (n={format_count(sample)} "
                f"< {format_count(spec.min_sample)})",
            )
    shown_value = format_value(value, spec.unit)
    if spec.kind is CheckKind.BASELINE:
        return observed(Verdict.PASS, f"{label} {shown_value}{_details(None, sample)}")

    assert spec.threshold is not None and spec.comparator is not None  # guaranteed by CheckSpec
    limit = spec.threshold.limit(baseline)
    if limit is None:
        return observed(
            Verdict.NO_DATA, f"{label}: no baseline {spec.threshold.baseline!r} recorded yet"
        )
    details = _details(_limit_origin(spec, baseline), sample)
    shown_limit = format_value(limit, spec.unit)
    if spec.comparator.holds(value, limit):
        return observed(
            Verdict.PASS, f"{label} {shown_value} {spec.comparator.value} {shown_limit}{details}",
            limit,
        )
    return observed(
        Verdict.FAIL,
        f"{label} {shown_value} {spec.comparator.negated} {shown_limit}{details}",
        limit,
    )


def _limit_origin(spec: CheckSpec, baseline: Mapping[str, float]) -> str | None:
    """Where a relative limit came from (`baseline 225 ms x 0.8`), for the reader."""
    threshold = spec.threshold
    if threshold is None or threshold.baseline is None:
        return None
    origin = f"baseline {format_value(baseline[threshold.baseline], spec.unit)}"
    if threshold.factor != 1.0:
        origin += f" {TIMES} {threshold.factor:g}"
    if threshold.margin != 0.0:
        sign = "+" if threshold.margin > 0 else "-"
        origin += f" {sign} {format_value(abs(threshold.margin), spec.unit)}"
    return origin


def _details(origin: str | None, sample: float | None) -> str:
    parts = [origin] if origin else []
    if sample is not None and math.isfinite(sample):
        parts.append(f"n={format_count(sample)}")
    return f" ({', '.join(parts)})" if parts else ""


def format_count(count: float) -> str:
    """Whole numbers with a space between thousands (`4 120`). `increase()` extrapolates, so
    small counts can be fractional: keep one decimal below 10 so `0.5 > 0` never reads as
    `0 > 0`."""
    if abs(count) < 10 and count != round(count):
        return f"{count:.1f}"
    return f"{round(count):,}".replace(",", " ")


def format_value(value: float, unit: Unit) -> str:
    if not math.isfinite(value):
        return str(value)
    return _FORMATS.get(unit, _significant)(value)


def _seconds(value: float) -> str:
    if abs(value) < 1:
        return f"{_significant(value * 1000)} ms"
    return f"{_significant(value)} s"


def _significant(value: float) -> str:
    """Three significant digits without scientific notation for everyday magnitudes."""
    magnitude = abs(value)
    if magnitude >= 100:
        return format_count(value)
    if magnitude == 0:
        return "0"
    if magnitude < 0.0001:
        return f"{value:.2e}"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:f}".rstrip("0").rstrip(".")


def _bytes(value: float) -> str:
    size = value
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{_significant(size)} {suffix}"
        size /= 1024
    return f"{_significant(size)} TiB"


_FORMATS: Final[Mapping[Unit, Callable[[float], str]]] = {
    Unit.RATIO: lambda value: f"{_significant(value * 100)} %",
    Unit.SECONDS: _seconds,
    Unit.USD: lambda value: f"${_significant(value)}",
    Unit.BYTES: _bytes,
    Unit.FACTOR: lambda value: f"{_significant(value)}{TIMES}",
    Unit.COUNT: format_count,
}
