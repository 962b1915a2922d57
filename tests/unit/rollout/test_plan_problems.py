"""How a broken plan reads: every problem of a file in one run, each with its field path."""

from __future__ import annotations

import textwrap

import pytest

from rollout.core.plan_loader import PlanError, parse_plan

VALID = textwrap.dedent("""\
    settings: {passes_to_advance: 2}
    checks:
      base: {kind: baseline, query: "sum(q[{window}])", window: 1d}
      gate_a: {kind: gate, query: "sum(q[{window}])", window: 1h, op: "<=", threshold: 1}
      guard:
        kind: guardrail
        query: "sum(q[{window}])"
        window: 10m
        op: "<"
        threshold: {baseline: base, factor: 1.2}
    guardrails: [guard]
    stages:
      - {name: "off", flags: {shadow: false, l2: false, l1_percent: 0}, bake: 1d,
         checks: [base]}
      - {name: l1, flags: {shadow: true, l2: true, l1_percent: 10}, bake: 4d,
         checks: [gate_a, {name: inline_gate, kind: gate, query: "q[{window}]",
                           window: 1h, op: ">", threshold: 0.3}]}
    """)


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(PlanError) as raised:
        parse_plan(text, source="plan.yaml")
    return raised.value.problems


def test_the_valid_text_loads() -> None:
    assert parse_plan(VALID).stage_names == ("off", "l1")


def test_independent_mistakes_all_come_back_in_one_run() -> None:
    text = textwrap.dedent("""\
        settings:
          passes_to_advance: 0
          cooldwn: 1h
        checks:
          base: {kind: baseline, query: "sum(q[{window}])", window: 1d}
          slow:
            kind: gate
            query: "sum(q[{window}])"
            window: 1h
            op: "<="
            threshold: {baseline: bse}
          guard: {kind: guardrail, query: "sum(q[5m])", window: 10m, op: "<", threshold: 1}
        guardrails: [guard, gaurd]
        stages:
          - {name: "off", flags: {shadow: false, l2: false, l1_percent: 0}, bake: 1d,
             checks: [base]}
          - {name: l2, flags: {shadow: "true", l2: true, l1_percent: 0}, bake: 7 days,
             checks: [slow, base]}
        """)
    # Shape problems first (pydantic, in file order), then the rules across entries,
    # which still run on every part of the file that passed the schema.
    assert problems_of(text) == (
        "settings.passes_to_advance: must be at least 1, got 0",
        "settings.cooldwn: unknown field (did you mean 'cooldown'?) (allowed: "
        "passes_to_advance, failures_to_rollback, cooldown, auto_resume_after_rollback, "
        "time_scale, min_window, evaluation_interval, hold_too_long, gate_alpha, "
        "guardrail_alpha_fail, objective_alpha)",
        "checks.guard.query: must use the {window} placeholder for its range, "
        "e.g. rate(metric[{window}])",
        "stages[1].flags.shadow: must be true or false",
        "stages[1].bake: must be a duration such as 30s, 10m, 1h, 7d, got '7 days'",
        "guardrails[1]: unknown check 'gaurd' (did you mean 'guard'?)",
        "stages[1].checks[1]: baseline check 'base' belongs in the first stage, where the "
        "baseline is recorded",
        "checks.slow.threshold.baseline: unknown baseline 'bse' (did you mean 'base'?) "
        "(baseline checks of stage 'off': base)",
    )


STAT = textwrap.dedent("""\
    checks:
      base:
        kind: baseline
        query: "sum(q[{window}])"
        window: 1d
        events: "sum(increase(e[{window}]))"
        trials: "sum(increase(t[{window}]))"
      errors:
        kind: guardrail
        test: non_inferiority
        events: "sum(increase(e[{window}]))"
        trials: "sum(increase(t[{window}]))"
        baseline: base
        margin: 0.01
      stale:
        kind: gate
        test: limit
        events: "sum(increase(s[{window}]))"
        trials: "sum(increase(a[{window}]))"
        limit: 0.01
        since: l1
    guardrails: [errors]
    stages:
      - {name: "off", flags: {shadow: false, l2: false, l1_percent: 0}, bake: 1d,
         checks: [base]}
      - {name: l1, flags: {shadow: true, l2: true, l1_percent: 10}, bake: 4d,
         checks: [stale]}
    """)


def test_the_statistical_text_loads() -> None:
    plan = parse_plan(STAT)
    assert [c.name for c in plan.checks_for(1)] == ["errors", "stale"]


def test_a_statistical_plan_with_several_mistakes_reports_each_once() -> None:
    text = (STAT.replace("test: non_inferiority", "test: non_inferority")
            .replace("limit: 0.01", "limit: 0.01\n    op: \"<\"")
            .replace("since: l1", "since: l11")
            .replace("baseline: base\n", "baseline: bsae\n"))
    assert problems_of(text) == (
        "checks.errors.test: must be one of non_inferiority, limit, got 'non_inferority'",
        "checks.stale.op: a statistical check takes no op: it is judged from its events and "
        "trials",
        "checks.errors.baseline: unknown baseline 'bsae' (did you mean 'base'?) (baseline "
        "checks of stage 'off' that record events and trials: base)",
        "checks.stale.since: unknown stage 'l11' (did you mean 'l1'?); stages: off, l1",
    )


def test_a_check_with_problems_of_its_own_raises_no_follow_up_problems() -> None:
    # `base` is broken, so whether `guard`'s baseline exists cannot be known: only the
    # broken field is reported, not a cascade of "unknown baseline"/"unknown check".
    text = VALID.replace("base: {kind: baseline, query:", "base: {kind: baseline, qurey:")
    assert problems_of(text) == (
        "checks.base.qurey: unknown field (did you mean 'query'?) (allowed: kind, query, "
        "window, op, threshold, sample_query, min_sample, test, events, trials, control, "
        "baseline, margin, limit, higher_is_worse, alpha, alpha_fail, since, slower_than, "
        "critical, dry_run, unit, label, description, rollback_to)",
        "checks.base.query: missing (a PromQL expression)",
    )


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param("settings: {passes_to_advance: 2}", "settings: {time_scal: 2}",
                     "settings.time_scal: unknown field (did you mean 'time_scale'?)",
                     id="setting"),
        pytest.param("threshold: 1}", "treshold: 1}",
                     "checks.gate_a.treshold: unknown field (did you mean 'threshold'?)",
                     id="check-field"),
        pytest.param("l1_percent: 10}", "l1_procent: 10}",
                     "stages[1].flags.l1_procent: unknown field (did you mean 'l1_percent'?)",
                     id="flag"),
        pytest.param("window: 1h, op: \">\"", "windw: 1h, op: \">\"",
                     "stages[1].checks[1].windw: unknown field (did you mean 'window'?)",
                     id="inline-check-field"),
        pytest.param("{baseline: base, factor: 1.2}", "{baseline: base, factr: 1.2}",
                     "checks.guard.threshold.factr: unknown field (did you mean 'factor'?)",
                     id="threshold-field"),
        pytest.param("guardrails: [guard]", "guardrail: [guard]",
                     "guardrail: unknown field (did you mean 'guardrails'?)", id="top-level"),
        pytest.param("op: \"<=\"", "op: \"=<\"",
                     "checks.gate_a.op: must be one of <, <=, >, >=, got '=<'", id="enum"),
        pytest.param("kind: gate, query: \"q", "kind: gates, query: \"q",
                     "stages[1].checks[1].kind: must be one of gate, guardrail, baseline, "
                     "objective, got 'gates'", id="inline-enum"),
        pytest.param("l1_percent: 10}", "l1_percent: 110}",
                     "stages[1].flags.l1_percent: must be within 0..100, got 110",
                     id="range"),
        pytest.param("threshold: 0.3}", "threshold: .inf}",
                     "stages[1].checks[1].threshold: must be a finite number", id="infinity"),
        pytest.param("checks: [base]}", "checks: [base, 3]}",
                     "stages[0].checks[1]: must be a check name or an inline check",
                     id="item-kind"),
        pytest.param("settings: {passes_to_advance: 2}", "settings: 2",
                     "settings: must be a mapping", id="settings-kind"),
        pytest.param("bake: 4d", "bake: 4d, flags: 1",
                     "stages[1].flags: must be a mapping", id="flags-kind"),
    ],
)
def test_one_mistake_names_its_path(old: str, new: str, problem: str) -> None:
    assert VALID.count(old) == 1, old
    problems = problems_of(VALID.replace(old, new))
    assert any(p.startswith(problem) for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param("margin: 0.01", "margn: 0.01",
                     "checks.errors.margn: unknown field (did you mean 'margin'?)",
                     id="stat-field"),
        pytest.param("trials: \"sum(increase(a", "trails: \"sum(increase(a",
                     "checks.stale.trails: unknown field (did you mean 'trials'?)",
                     id="trials-typo"),
        pytest.param("margin: 0.01", "margin: 1%",
                     "checks.errors.margin: must be a number", id="margin-text"),
        pytest.param("limit: 0.01", "limit: 0.01\n    alpha: .inf",
                     "checks.stale.alpha: must be a finite number", id="alpha-infinite"),
        pytest.param("limit: 0.01", "limit: {baseline: base, factr: 0.8}",
                     "checks.stale.limit.factr: unknown field (did you mean 'factor'?)",
                     id="relative-limit-field"),
        pytest.param("limit: 0.01", "limit: 0.01\n    control: 3",
                     "checks.stale.control: control must be a mapping", id="control-kind"),
        pytest.param("limit: 0.01", "limit: 0.01\n    slower_than: soon",
                     "checks.stale.slower_than: must be a number", id="slower-than-text"),
        pytest.param("kind: gate", "kind: objective",
                     "stages[1].checks[0]", id="objective-is-allowed-in-a-stage"),
    ],
)
def test_one_statistical_mistake_names_its_path(old: str, new: str, problem: str) -> None:
    assert STAT.count(old) == 1, old
    text = STAT.replace(old, new)
    if problem.startswith("stages[1].checks[0]"):  # not a mistake: the text must load
        assert parse_plan(text).stages[1].checks[0].name == "stale"
        return
    problems = problems_of(text)
    assert any(p.startswith(problem) for p in problems), problems
