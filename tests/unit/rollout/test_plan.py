"""Plan types: invariants, time scaling, query rendering, which checks apply where."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.core.flags import FlagSettings
from rollout.core.plan import (
    CheckKind,
    CheckSpec,
    Comparator,
    Plan,
    PlanSettings,
    Stage,
    Threshold,
    human_duration,
    promql_duration,
)


def check(name: str, kind: CheckKind = CheckKind.GATE, window: timedelta = timedelta(hours=1),
          **extra: object) -> CheckSpec:
    fields: dict[str, object] = {
        "comparator": Comparator.LE, "threshold": Threshold(absolute=1.0)
    }
    if kind is CheckKind.BASELINE:
        fields = {}
    fields.update(extra)
    return CheckSpec(name=name, kind=kind, query="sum(rate(m{a=\"b\"}[{window}]))",
                     window=window, **fields)  # type: ignore[arg-type]


BASE = check("base", CheckKind.BASELINE, timedelta(days=1))
GATE = check("gate", window=timedelta(hours=1))
GUARD = check("guard", CheckKind.GUARDRAIL, timedelta(minutes=10))


def plan(**settings: object) -> Plan:
    return Plan(
        stages=(
            Stage("off", FlagSettings(), timedelta(days=1), (BASE,)),
            Stage("on", FlagSettings(shadow=True), timedelta(days=7), (GATE,)),
        ),
        guardrails=(GUARD,),
        settings=PlanSettings(**settings),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        pytest.param(timedelta(days=1), "1d", id="day"),
        pytest.param(timedelta(hours=1), "1h", id="hour"),
        pytest.param(timedelta(minutes=90), "90m", id="minutes-not-hours"),
        pytest.param(timedelta(seconds=30), "30s", id="seconds"),
        pytest.param(timedelta(milliseconds=1500), "1500ms", id="milliseconds"),
        pytest.param(timedelta(microseconds=10), "1ms", id="never-zero"),
    ],
)
def test_promql_duration(duration: timedelta, text: str) -> None:
    assert promql_duration(duration) == text


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        pytest.param(timedelta(days=2, hours=4, minutes=3), "2d 4h", id="two-units"),
        pytest.param(timedelta(minutes=12, seconds=30), "12m 30s", id="minutes-seconds"),
        pytest.param(timedelta(0), "0s", id="zero"),
        pytest.param(timedelta(seconds=0.5), "0.5s", id="fraction"),
        pytest.param(timedelta(minutes=-5), "-5m", id="negative"),
    ],
)
def test_human_duration(duration: timedelta, text: str) -> None:
    assert human_duration(duration) == text


def test_guardrails_apply_after_the_first_stage_only() -> None:
    p = plan()
    assert p.checks_for(0) == (BASE,)
    assert p.checks_for(1) == (GUARD, GATE)
    assert p.baseline_checks() == (BASE,)
    assert list(p.all_checks()) == [GUARD, BASE, GATE]


def test_stage_lookup() -> None:
    p = plan()
    assert p.stage_names == ("off", "on")
    assert p.index_of("on") == 1
    assert p.index_of("nope") is None
    assert p.last_index == 1


def test_time_scale_shrinks_bake_and_windows_but_not_below_min_window() -> None:
    p = plan(time_scale=1 / 86400, min_window=timedelta(seconds=10))
    assert p.bake_of(1) == timedelta(seconds=7)
    assert p.window_of(BASE) == timedelta(seconds=10)  # 1d → 1s, floored
    assert p.render_query(GATE) == 'sum(rate(m{a="b"}[10s]))'


def test_render_query_keeps_label_braces_and_fills_window() -> None:
    sampled = check("s", sample_query="sum(increase(n[{window}]))", min_sample=5)
    p = plan()
    assert p.render_query(GATE) == 'sum(rate(m{a="b"}[1h]))'
    assert p.render_sample_query(sampled) == "sum(increase(n[1h]))"
    assert p.render_sample_query(GATE) is None


def test_failures_to_rollback_is_one_for_critical() -> None:
    p = plan(failures_to_rollback=4)
    assert p.failures_to_rollback(GUARD) == 4
    assert p.failures_to_rollback(check("c", CheckKind.GUARDRAIL, critical=True)) == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(Threshold, "either absolute or relative", id="threshold-neither"),
        pytest.param(lambda: Threshold(absolute=1.0, baseline="b"), "either absolute",
                     id="threshold-both"),
        pytest.param(lambda: check("b", CheckKind.BASELINE, comparator=Comparator.LE),
                     "takes no comparator", id="baseline-with-comparator"),
        pytest.param(lambda: check("g", threshold=None), "needs a comparator and a threshold",
                     id="gate-without-threshold"),
        pytest.param(lambda: check("g", min_sample=5), "min_sample but no sample_query",
                     id="min-sample-without-query"),
        pytest.param(lambda: check("g", window=timedelta(0)), "positive window",
                     id="zero-window"),
        pytest.param(lambda: Plan(stages=()), "at least one stage", id="no-stages"),
        pytest.param(
            lambda: Plan(stages=(Stage("a", FlagSettings(), timedelta(0)),) * 2), "unique",
            id="duplicate-stages",
        ),
        pytest.param(lambda: PlanSettings(passes_to_advance=0), "at least 1", id="zero-passes"),
        pytest.param(lambda: PlanSettings(time_scale=0), "positive", id="zero-time-scale"),
    ],
)
def test_invariants(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_comparator_negation_describes_failure() -> None:
    assert [c.negated for c in Comparator] == [">=", ">", "<=", "<"]
