"""The verdict of one check: every branch of `judge`, and how values are shown."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from rollout.core.checks import format_count, format_value, judge
from rollout.core.observations import Measurement, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Comparator, Threshold, Unit

QUERY = "sum(rate(m[{window}]))"
SAMPLE = "sum(increase(n[{window}]))"


def spec(
    *,
    kind: CheckKind = CheckKind.GATE,
    comparator: Comparator | None = Comparator.LE,
    threshold: Threshold | None = None,
    min_sample: float = 100,
    unit: Unit = Unit.NUMBER,
    label: str = "",
) -> CheckSpec:
    if kind is CheckKind.BASELINE:
        comparator, threshold = None, None
    elif threshold is None:
        threshold = Threshold(absolute=10.0)
    return CheckSpec(
        name="metric_check",
        kind=kind,
        query=QUERY,
        window=timedelta(minutes=10),
        comparator=comparator,
        threshold=threshold,
        sample_query=SAMPLE if min_sample else None,
        min_sample=min_sample,
        unit=unit,
        label=label,
    )


RELATIVE = Threshold(baseline="base", factor=0.8)
BASELINE = {"base": 100.0}


@pytest.mark.parametrize(
    ("check", "measurement", "baseline", "verdict"),
    [
        pytest.param(spec(), Measurement(5.0, 500, "connection refused"), {}, Verdict.ERROR,
                     id="error-wins-over-a-good-value"),
        pytest.param(spec(), Measurement(None, None, "HTTP 503"), {}, Verdict.ERROR,
                     id="error-without-value"),
        pytest.param(spec(), Measurement(None, 500), {}, Verdict.NO_DATA, id="empty-result"),
        pytest.param(spec(), Measurement(math.nan, 500), {}, Verdict.NO_DATA, id="nan"),
        pytest.param(spec(), Measurement(math.inf, 500), {}, Verdict.NO_DATA, id="plus-inf"),
        pytest.param(spec(), Measurement(-math.inf, 500), {}, Verdict.NO_DATA, id="minus-inf"),
        pytest.param(spec(), Measurement(5.0, None), {}, Verdict.NO_DATA,
                     id="sample-unknown-with-a-minimum"),
        pytest.param(spec(), Measurement(5.0, math.nan), {}, Verdict.NO_DATA, id="sample-nan"),
        pytest.param(spec(), Measurement(5.0, 99.9), {}, Verdict.NO_DATA,
                     id="sample-below-minimum"),
        pytest.param(spec(), Measurement(5.0, 100), {}, Verdict.PASS,
                     id="sample-at-minimum-is-enough"),
        pytest.param(spec(min_sample=0), Measurement(5.0, None), {}, Verdict.PASS,
                     id="no-minimum-no-sample-needed"),
        pytest.param(spec(threshold=RELATIVE), Measurement(5.0, 500), {}, Verdict.NO_DATA,
                     id="relative-without-baseline"),
        pytest.param(spec(threshold=RELATIVE), Measurement(5.0, 500), {"base": math.nan},
                     Verdict.NO_DATA, id="relative-with-nan-baseline"),
        pytest.param(spec(threshold=RELATIVE), Measurement(80.0, 500), BASELINE, Verdict.PASS,
                     id="relative-at-limit-passes"),
        pytest.param(spec(threshold=RELATIVE), Measurement(80.1, 500), BASELINE, Verdict.FAIL,
                     id="relative-above-limit-fails"),
        pytest.param(spec(threshold=Threshold(baseline="base", margin=0.5)),
                     Measurement(100.5, 500), BASELINE, Verdict.PASS, id="baseline-plus-margin"),
        pytest.param(spec(threshold=Threshold(baseline="base", margin=0.5)),
                     Measurement(100.6, 500), BASELINE, Verdict.FAIL,
                     id="baseline-plus-margin-exceeded"),
        pytest.param(spec(comparator=Comparator.LT), Measurement(10.0, 500), {}, Verdict.FAIL,
                     id="lt-equal-fails"),
        pytest.param(spec(comparator=Comparator.LT), Measurement(9.9, 500), {}, Verdict.PASS,
                     id="lt-below-passes"),
        pytest.param(spec(comparator=Comparator.LE), Measurement(10.0, 500), {}, Verdict.PASS,
                     id="le-equal-passes"),
        pytest.param(spec(comparator=Comparator.LE), Measurement(10.1, 500), {}, Verdict.FAIL,
                     id="le-above-fails"),
        pytest.param(spec(comparator=Comparator.GT), Measurement(10.0, 500), {}, Verdict.FAIL,
                     id="gt-equal-fails"),
        pytest.param(spec(comparator=Comparator.GT), Measurement(10.1, 500), {}, Verdict.PASS,
                     id="gt-above-passes"),
        pytest.param(spec(comparator=Comparator.GE), Measurement(10.0, 500), {}, Verdict.PASS,
                     id="ge-equal-passes"),
        pytest.param(spec(comparator=Comparator.GE), Measurement(9.9, 500), {}, Verdict.FAIL,
                     id="ge-below-fails"),
        pytest.param(spec(kind=CheckKind.BASELINE), Measurement(1.75, 500), {}, Verdict.PASS,
                     id="baseline-measured"),
        pytest.param(spec(kind=CheckKind.BASELINE), Measurement(1.75, 5), {}, Verdict.NO_DATA,
                     id="baseline-too-little-traffic"),
        pytest.param(spec(kind=CheckKind.BASELINE), Measurement(None, 500), {}, Verdict.NO_DATA,
                     id="baseline-empty"),
    ],
)
def test_verdict(
    check: CheckSpec, measurement: Measurement, baseline: dict[str, float], verdict: Verdict
) -> None:
    observation = judge(check, measurement, baseline)
    assert observation.verdict is verdict
    assert observation.check == check.name
    assert (observation.value, observation.sample) == (measurement.value, measurement.sample)
    assert observation.error == measurement.error


@pytest.mark.parametrize(
    ("check", "measurement", "baseline", "message", "limit"),
    [
        pytest.param(
            spec(label="p95", unit=Unit.SECONDS, threshold=Threshold(absolute=0.180)),
            Measurement(0.212, 4120), {}, "p95 212 ms > 180 ms (n=4 120)", 0.180,
            id="fail-line-as-in-the-design",
        ),
        pytest.param(
            spec(label="p95", unit=Unit.SECONDS, threshold=Threshold(baseline="base", factor=0.8)),
            Measurement(0.212, 4120), {"base": 0.225},
            "p95 212 ms > 180 ms (baseline 225 ms \u00d7 0.8, n=4 120)", pytest.approx(0.180),
            id="relative-limit-shows-its-origin",
        ),
        pytest.param(
            spec(label="error rate", unit=Unit.RATIO,
                 threshold=Threshold(baseline="base", margin=0.01)),
            Measurement(0.005, 2000), {"base": 0.004},
            "error rate 0.5 % <= 1.4 % (baseline 0.4 % + 1 %, n=2 000)", pytest.approx(0.014),
            id="pass-line-with-margin",
        ),
        pytest.param(
            spec(label="hit rate", unit=Unit.RATIO, comparator=Comparator.GT,
                 threshold=Threshold(absolute=0.3)),
            Measurement(0.22, 1204), {}, "hit rate 22 % <= 30 % (n=1 204)", 0.3,
            id="fail-of-a-greater-than-check",
        ),
        pytest.param(
            spec(label="p95", min_sample=200), Measurement(1.0, 12), {},
            "p95: too little traffic (n=12 < 200)", None, id="too-little-traffic",
        ),
        pytest.param(
            spec(label="p95", threshold=Threshold(baseline="base_p95")), Measurement(1.0, 500),
            {}, "p95: no baseline 'base_p95' recorded yet", None, id="no-baseline",
        ),
        pytest.param(
            spec(label="p95"), Measurement(None, None, "timed out after 2s"), {},
            "p95: query failed: timed out after 2s", None, id="error-line",
        ),
        pytest.param(
            spec(label="p95"), Measurement(math.nan, 500), {}, "p95: no data (value nan)", None,
            id="nan-line",
        ),
        pytest.param(
            spec(), Measurement(None, 500), {}, "metric_check: no data (empty result)", None,
            id="name-when-no-label",
        ),
        pytest.param(
            spec(kind=CheckKind.BASELINE, label="baseline p95", unit=Unit.SECONDS),
            Measurement(1.75, 86000), {}, "baseline p95 1.75 s (n=86 000)", None,
            id="baseline-line",
        ),
        pytest.param(
            spec(label="x", min_sample=0), Measurement(3.0, None), {}, "x 3 <= 10", 10.0,
            id="no-sample-no-n",
        ),
    ],
)
def test_message_names_value_limit_and_sample(
    check: CheckSpec,
    measurement: Measurement,
    baseline: dict[str, float],
    message: str,
    limit: object,
) -> None:
    observation = judge(check, measurement, baseline)
    assert observation.message == message
    assert observation.limit == limit


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        pytest.param(0.0123, Unit.RATIO, "1.23 %", id="ratio"),
        pytest.param(0.0, Unit.RATIO, "0 %", id="ratio-zero"),
        pytest.param(0.212, Unit.SECONDS, "212 ms", id="seconds-below-one"),
        pytest.param(0.0042, Unit.SECONDS, "4.2 ms", id="milliseconds-small"),
        pytest.param(1.75, Unit.SECONDS, "1.75 s", id="seconds"),
        pytest.param(0.017, Unit.USD, "$0.017", id="usd"),
        pytest.param(3 * 1024 * 1024, Unit.BYTES, "3 MiB", id="bytes"),
        pytest.param(512, Unit.BYTES, "512 B", id="bytes-small"),
        pytest.param(5 * 1024**4, Unit.BYTES, "5 TiB", id="bytes-huge"),
        pytest.param(1.05, Unit.FACTOR, "1.05\u00d7", id="factor"),
        pytest.param(4120.4, Unit.COUNT, "4 120", id="count"),
        pytest.param(123456.0, Unit.NUMBER, "123 456", id="number-large"),
        pytest.param(0.00001234, Unit.NUMBER, "1.23e-05", id="number-tiny"),
        pytest.param(0.000123, Unit.NUMBER, "0.000123", id="number-small"),
        pytest.param(math.inf, Unit.NUMBER, "inf", id="infinite"),
    ],
)
def test_format_value(value: float, unit: Unit, shown: str) -> None:
    assert format_value(value, unit) == shown


def test_format_count_rounds_fractional_increase() -> None:
    assert format_count(4119.6) == "4 120"
