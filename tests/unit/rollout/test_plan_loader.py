"""Plan loading: the default plan is DESIGN.md §7, and bad plans name the field at fault."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app import contract
from rollout.core.flags import FlagSettings
from rollout.core.plan import CheckKind, CheckSpec, Comparator, Plan, Threshold
from rollout.core.plan_loader import (
    PlanError,
    load_default_plan,
    load_plan,
    parse_duration,
    parse_plan,
    plan_from_mapping,
)
from rollout.plans import default_plan_path

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def default_plan() -> Plan:
    return load_default_plan()


def enforced(checks: tuple[CheckSpec, ...]) -> dict[str, CheckSpec]:
    return {c.name: c for c in checks if not c.dry_run}


# --- the default plan ---------------------------------------------------------------------------
def test_default_plan_has_the_stages_flags_and_bakes_of_the_design(default_plan: Plan) -> None:
    assert default_plan.stage_names == contract.STAGES
    table = [
        (FlagSettings(shadow=False, l2=False, l1_percent=0), 1 * DAY),
        (FlagSettings(shadow=True, l2=False, l1_percent=0), 7 * DAY),
        (FlagSettings(shadow=True, l2=True, l1_percent=0), 7 * DAY),
        (FlagSettings(shadow=True, l2=True, l1_percent=10), 4 * DAY),
        (FlagSettings(shadow=True, l2=True, l1_percent=50), 5 * DAY),
        (FlagSettings(shadow=False, l2=True, l1_percent=100), 5 * DAY),
    ]
    assert [(s.flags, s.bake) for s in default_plan.stages] == table


def test_default_plan_records_the_baseline_in_off(default_plan: Plan) -> None:
    off = default_plan.stages[0]
    assert {c.name for c in off.checks} == {
        "baseline_error_rate", "baseline_p95_seconds", "baseline_cost_per_query_usd"
    }
    assert all(c.kind is CheckKind.BASELINE and c.window == DAY for c in off.checks)
    assert default_plan.checks_for(0) == off.checks  # no guardrail in the baseline stage


def rule(check: CheckSpec) -> tuple[Comparator | None, Threshold | None]:
    return check.comparator, check.threshold


def test_default_plan_gates_match_the_design(default_plan: Plan) -> None:
    _, dark, l2, l1_10, l1_50, l1_100 = (enforced(s.checks) for s in default_plan.stages)
    le, gt, lt = Comparator.LE, Comparator.GT, Comparator.LT

    # dark-launch: error rate not above baseline; L2 would-be hit rate > 30 %; Redis healthy
    assert rule(dark["error_rate_not_above_baseline"]) == (
        le, Threshold(baseline="baseline_error_rate"))
    assert rule(dark["l2_shadow_hit_rate"]) == (gt, Threshold(absolute=0.30))
    assert 'mode="shadow"' in dark["l2_shadow_hit_rate"].query
    assert rule(dark["redis_no_oom_rejections"]) == (le, Threshold(absolute=0))
    assert rule(dark["redis_memory_below_limit"])[0] is lt
    assert set(dark) == {"error_rate_not_above_baseline", "l2_shadow_hit_rate",
                         "redis_no_oom_rejections", "redis_memory_below_limit"}

    # l2: p95 and cost per query at least 20 % below baseline; no verification mismatch
    assert rule(l2["p95_20pct_below_baseline"]) == (
        le, Threshold(baseline="baseline_p95_seconds", factor=0.8))
    assert rule(l2["cost_20pct_below_baseline"]) == (
        le, Threshold(baseline="baseline_cost_per_query_usd", factor=0.8))
    assert rule(l2["no_verification_mismatches"]) == (le, Threshold(absolute=0))
    assert set(l2) == {"p95_20pct_below_baseline", "cost_20pct_below_baseline",
                       "no_verification_mismatches"}

    # l1-10 and l1-50: the same cohort-vs-control gates, and the stale rate
    assert l1_10 == l1_50
    assert set(l1_10) == {"l1_cohort_error_rate_vs_control", "l1_cohort_p95_vs_control",
                          "l1_stale_rate"}
    for name in ("l1_cohort_error_rate_vs_control", "l1_cohort_p95_vs_control"):
        query = l1_10[name].query
        assert 'l1="on"' in query and 'l1="off"' in query

    # l1-100: p95 ≥ 40 % below, cost ≥ 50 % below, stale rate below limit
    assert rule(l1_100["p95_40pct_below_baseline"]) == (
        le, Threshold(baseline="baseline_p95_seconds", factor=0.6))
    assert rule(l1_100["cost_50pct_below_baseline"]) == (
        le, Threshold(baseline="baseline_cost_per_query_usd", factor=0.5))
    assert set(l1_100) == {"p95_40pct_below_baseline", "cost_50pct_below_baseline",
                           "l1_stale_rate"}


def test_default_plan_guardrails_match_the_design(default_plan: Plan) -> None:
    guardrails = enforced(default_plan.guardrails)
    assert set(guardrails) == {"error_rate_guardrail", "p95_guardrail", "redis_oom_guardrail",
                               "cache_integrity_guardrail"}
    error = guardrails["error_rate_guardrail"].threshold
    assert error is not None and error.baseline == "baseline_error_rate" and error.margin > 0
    p95 = guardrails["p95_guardrail"].threshold
    assert p95 is not None and p95.baseline == "baseline_p95_seconds"
    assert guardrails["redis_oom_guardrail"].critical
    assert 'err="OOM"' in guardrails["redis_oom_guardrail"].query
    integrity = guardrails["cache_integrity_guardrail"]
    assert "stale|mismatch" in integrity.query and 'cache_layer="query_result"' in integrity.query
    # DESIGN.md §7: a stale L1 answer goes to the last stage that serves none.
    assert integrity.critical and integrity.rollback_to == "l2"
    for stage_index in range(1, len(default_plan.stages)):
        assert set(guardrails) <= {c.name for c in default_plan.checks_for(stage_index)}


def test_default_plan_settings(default_plan: Plan) -> None:
    settings = default_plan.settings
    assert settings.passes_to_advance >= 1 and settings.failures_to_rollback >= 1
    assert settings.time_scale == 1
    assert not settings.auto_resume_after_rollback
    assert settings.cooldown > timedelta(0)


def test_every_check_counts_its_traffic(default_plan: Plan) -> None:
    for check in default_plan.all_checks():
        assert check.sample_query is not None and check.min_sample > 0, check.name


def test_default_plan_queries_use_only_contract_metric_names(default_plan: Plan) -> None:
    contract_metrics = {
        value for name, value in vars(contract).items()
        if name.startswith("METRIC_") and isinstance(value, str)
    }
    histogram_series = {
        f"{contract.METRIC_QUERY_DURATION}_bucket", f"{contract.METRIC_QUERY_DURATION}_count"
    }
    redis_exporter_1_45 = {"redis_memory_used_bytes", "redis_memory_max_bytes",
                           "redis_evicted_keys_total", "redis_errors_total"}
    allowed = contract_metrics | histogram_series | redis_exporter_1_45
    for check in default_plan.all_checks():
        text = f"{check.query} {check.sample_query}"
        used = set(re.findall(r"\b(ai_agent_\w+|redis_\w+)", text))
        assert used <= allowed, (check.name, used - allowed)


def test_default_plan_path_is_in_the_package() -> None:
    assert default_plan_path().name == "default.yaml"
    assert load_plan(default_plan_path()) == load_default_plan()


# --- bad plans ----------------------------------------------------------------------------------
def valid() -> dict[str, Any]:
    query = "sum(rate(m[{window}]))"
    sample = "sum(increase(n[{window}]))"
    return {
        "version": 1,
        "settings": {"passes_to_advance": 2, "cooldown": "30m", "hold_too_long": None},
        "checks": {
            "base": {"kind": "baseline", "query": query, "window": "1d",
                     "sample_query": sample, "min_sample": 100},
            "gate_a": {"kind": "gate", "query": query, "window": "1h", "op": "<=",
                       "threshold": 1},
            "guard": {"kind": "guardrail", "query": query, "window": "10m", "op": "<=",
                      "threshold": {"baseline": "base", "factor": 1.2}, "critical": True},
        },
        "guardrails": ["guard"],
        "stages": [
            {"name": "off", "flags": {"shadow": False, "l2": False, "l1_percent": 0},
             "bake": "1d", "checks": ["base"]},
            {"name": "l1", "flags": {"shadow": True, "l2": True, "l1_percent": 10},
             "bake": "4d", "checks": [
                 "gate_a",
                 {"name": "inline_gate", "kind": "gate", "query": query, "window": "1h",
                  "op": ">", "threshold": 0.3},
             ]},
        ],
    }


def test_the_valid_fixture_loads() -> None:
    plan = plan_from_mapping(valid())
    assert plan.stage_names == ("off", "l1")
    assert [c.name for c in plan.checks_for(1)] == ["guard", "gate_a", "inline_gate"]
    assert plan.settings.hold_too_long is None
    assert plan.settings.cooldown == timedelta(minutes=30)


def edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = valid()
    change(data)
    return data


def stage(data: dict[str, Any], index: int) -> dict[str, Any]:
    result: dict[str, Any] = data["stages"][index]
    return result


BAD_PLANS = [
    pytest.param(lambda d: stage(d, 1).update(bake_time="1d"),
                 "stages[1].bake_time: unknown field (did you mean 'bake'?)",
                 id="unknown-stage-field"),
    pytest.param(lambda d: stage(d, 1).update(bake="-1d"),
                 "stages[1].bake: must not be negative, got '-1d'", id="negative-bake"),
    pytest.param(lambda d: stage(d, 1).update(bake=-3600),
                 "stages[1].bake: must not be negative", id="negative-bake-seconds"),
    pytest.param(lambda d: d["checks"]["gate_a"].pop("threshold"),
                 "checks.gate_a.threshold: missing", id="missing-threshold"),
    pytest.param(lambda d: stage(d, 1).update(name="off"),
                 "stages[1].name: duplicate stage name 'off' (also stages[0])",
                 id="duplicate-stage-names"),
    pytest.param(lambda d: stage(d, 1)["checks"].append("gate_b"),
                 "stages[1].checks[2]: unknown check 'gate_b' (did you mean 'gate_a'?)",
                 id="unknown-check-referenced"),
    pytest.param(lambda d: stage(d, 1)["checks"].append("zzz"),
                 "stages[1].checks[2]: unknown check 'zzz' (defined: base, gate_a, guard)",
                 id="unknown-check-lists-defined"),
    pytest.param(lambda d: stage(d, 1)["flags"].update(l1_percent=150),
                 "stages[1].flags.l1_percent: must be within 0..100, got 150",
                 id="percentage-over-100"),
    pytest.param(lambda d: stage(d, 1)["flags"].update(l1_percent=12.5),
                 "stages[1].flags.l1_percent: must be a whole number", id="percentage-fraction"),
    pytest.param(lambda d: stage(d, 1)["checks"][1].update(threshold="30%"),
                 "stages[1].checks[1].threshold: must be a number", id="inline-threshold-text"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(threshold=True),
                 "checks.gate_a.threshold: must be a number", id="threshold-bool"),
    pytest.param(lambda d: d["checks"]["guard"].update(threshold={"baseline": "nope"}),
                 "checks.guard.threshold.baseline: unknown baseline 'nope' "
                 "(baseline checks of stage 'off': base)", id="unknown-baseline"),
    pytest.param(lambda d: d["checks"]["guard"].update(threshold={"factor": 2}),
                 "checks.guard.threshold.baseline: missing",
                 id="relative-without-baseline-name"),
    pytest.param(lambda d: d["checks"]["guard"].update(threshold={"baseline": "base",
                                                                  "factr": 2}),
                 "checks.guard.threshold.factr: unknown field (did you mean 'factor'?)",
                 id="threshold-unknown-field"),
    pytest.param(lambda d: d["checks"]["guard"].update(threshold={"baseline": "base",
                                                                  "margin": "1%"}),
                 "checks.guard.threshold.margin: must be a number", id="margin-text"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(op="=<"),
                 "checks.gate_a.op: must be one of <, <=, >, >=, got '=<'", id="bad-op"),
    pytest.param(lambda d: d["checks"]["gate_a"].pop("op"),
                 "checks.gate_a.op: missing (one of <, <=, >, >=)", id="missing-op"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(kind="check"),
                 "checks.gate_a.kind: must be one of gate, guardrail, baseline",
                 id="bad-kind"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(unit=5),
                 "checks.gate_a.unit: must be one of ratio", id="bad-unit"),
    pytest.param(lambda d: d["checks"]["gate_a"].pop("window"),
                 "checks.gate_a.window: missing", id="missing-window"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(window="0s"),
                 "checks.gate_a.window: must be greater than 0", id="zero-window"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(window="soon"),
                 "checks.gate_a.window: must be a duration such as 30s, 10m, 1h, 7d, "
                 "got 'soon'", id="bad-duration"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(query="sum(rate(m[5m]))"),
                 "checks.gate_a.query: must use the {window} placeholder", id="fixed-window"),
    pytest.param(lambda d: d["checks"]["gate_a"].pop("query"),
                 "checks.gate_a.query: missing", id="missing-query"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(query=""),
                 "checks.gate_a.query: must be a non-empty PromQL expression", id="empty-query"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(min_sample=10),
                 "checks.gate_a.min_sample: needs a sample_query", id="min-sample-no-query"),
    pytest.param(lambda d: d["checks"]["base"].update(min_sample=-1),
                 "checks.base.min_sample: must not be negative", id="negative-min-sample"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(critical=True),
                 "checks.gate_a.critical: only a guardrail can be critical", id="critical-gate"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(dry_run="yes"),
                 "checks.gate_a.dry_run: must be true or false", id="dry-run-text"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(label=3),
                 "checks.gate_a.label: must be a string", id="label-number"),
    pytest.param(lambda d: d["checks"]["base"].update(op="<"),
                 "checks.base.op: a baseline check only measures", id="baseline-with-op"),
    pytest.param(lambda d: d["checks"]["base"].update(dry_run=True),
                 "checks.base: a baseline check cannot be critical or dry_run",
                 id="baseline-dry-run"),
    pytest.param(lambda d: d["checks"].update({"Bad-Name": d["checks"]["gate_a"]}),
                 "checks.Bad-Name: a check name is lower_snake_case", id="bad-check-name"),
    pytest.param(lambda d: d.update(checks=[]), "checks: must be a mapping",
                 id="checks-not-mapping"),
    pytest.param(lambda d: d["checks"].update(gate_b=[1]),
                 "checks.gate_b: a check definition must be a mapping", id="check-not-mapping"),
    pytest.param(lambda d: stage(d, 1)["checks"].append("base"),
                 "stages[1].checks[2]: baseline check 'base' belongs in the first stage",
                 id="baseline-in-later-stage"),
    pytest.param(lambda d: stage(d, 0)["checks"].append(
                     {"name": "early", "kind": "guardrail", "query": "q[{window}]",
                      "window": "1m", "op": "<", "threshold": 1}),
                 "stages[0].checks[1]: guardrail 'early' cannot apply in the first stage",
                 id="guardrail-in-first-stage"),
    pytest.param(lambda d: d["guardrails"].append("gate_a"),
                 "guardrails[1]: check 'gate_a' is a gate; only guardrails belong here",
                 id="gate-listed-as-guardrail"),
    pytest.param(lambda d: d["guardrails"].append("guard"),
                 "guardrails[1]: guardrail 'guard' is listed twice", id="guardrail-twice"),
    pytest.param(lambda d: d.update(guardrails="guard"),
                 "guardrails: must be a list", id="guardrails-not-list"),
    pytest.param(lambda d: stage(d, 1)["checks"].append("guard"),
                 "stages[1].checks[2]: 'guard' is already a global guardrail",
                 id="global-guardrail-in-stage"),
    pytest.param(lambda d: stage(d, 1)["checks"].append("gate_a"),
                 "stages[1].checks[2]: check 'gate_a' is listed twice in this stage",
                 id="check-twice-in-stage"),
    pytest.param(lambda d: stage(d, 1)["checks"].append({"name": "gate_a", "kind": "gate"}),
                 "stages[1].checks[2].name: check 'gate_a' is already defined at "
                 "checks.gate_a", id="inline-shadows-library"),
    pytest.param(lambda d: stage(d, 1)["checks"].append({"kind": "gate"}),
                 "stages[1].checks[2].name: missing",
                 id="inline-without-name"),
    pytest.param(lambda d: stage(d, 1)["checks"].append(7),
                 "stages[1].checks[2]: must be a check name or an inline check",
                 id="check-item-number"),
    pytest.param(lambda d: stage(d, 1).update(checks="gate_a"),
                 "stages[1].checks: must be a list", id="stage-checks-not-list"),
    pytest.param(lambda d: stage(d, 1).update(name=False),
                 "stages[1].name: must be a non-empty string (quote it: YAML reads "
                 "off/no/yes/on as booleans)", id="unquoted-off"),
    pytest.param(lambda d: stage(d, 1).pop("bake"), "stages[1].bake: missing",
                 id="missing-bake"),
    pytest.param(lambda d: stage(d, 1).pop("flags"),
                 "stages[1].flags: missing", id="missing-flags"),
    pytest.param(lambda d: stage(d, 1)["flags"].pop("l2"),
                 "stages[1].flags.l2: missing (every stage states all flags)",
                 id="missing-flag"),
    pytest.param(lambda d: stage(d, 1)["flags"].update(l3=True),
                 "stages[1].flags.l3: unknown field (allowed: shadow, l2, l1_percent)",
                 id="unknown-flag"),
    pytest.param(lambda d: stage(d, 1)["flags"].update(shadow="on"),
                 "stages[1].flags.shadow: must be true or false", id="flag-text"),
    pytest.param(lambda d: d["stages"].append("l2"), "stages[2]: a stage must be a mapping",
                 id="stage-not-mapping"),
    pytest.param(lambda d: d.update(stages=[]), "stages: must be a non-empty list",
                 id="no-stages"),
    pytest.param(lambda d: d.pop("stages"), "stages: missing", id="missing-stages"),
    pytest.param(lambda d: d.update(version=2), "version: unsupported plan version 2",
                 id="future-version"),
    pytest.param(lambda d: d.update(stagse=[]),
                 "stagse: unknown field (did you mean 'stages'?)", id="unknown-top-field"),
    pytest.param(lambda d: d["settings"].update(passes_to_advance=0),
                 "settings.passes_to_advance: must be at least 1, got 0", id="zero-passes"),
    pytest.param(lambda d: d["settings"].update(failures_to_rollback="3"),
                 "settings.failures_to_rollback: must be a whole number", id="failures-text"),
    pytest.param(lambda d: d["settings"].update(time_scale=0),
                 "settings.time_scale: must be greater than 0", id="zero-time-scale"),
    pytest.param(lambda d: d["settings"].update(time_scale="fast"),
                 "settings.time_scale: must be a number", id="time-scale-text"),
    pytest.param(lambda d: d["settings"].update(cooldown=True),
                 "settings.cooldown: must be a duration", id="cooldown-bool"),
    pytest.param(lambda d: d["settings"].update(evaluation_interval=0),
                 "settings.evaluation_interval: must be greater than 0", id="zero-interval"),
    pytest.param(lambda d: d["settings"].update(auto_resume_after_rollback="no"),
                 "settings.auto_resume_after_rollback: must be true or false",
                 id="auto-resume-text"),
    pytest.param(lambda d: d["settings"].update(cooldwn="1h"),
                 "settings.cooldwn: unknown field (did you mean 'cooldown'?)",
                 id="unknown-setting"),
    pytest.param(lambda d: d.update(settings=[]), "settings: must be a mapping",
                 id="settings-not-mapping"),
    pytest.param(lambda d: d["checks"]["guard"].update(rollback_to="of"),
                 "checks.guard.rollback_to: unknown stage 'of' (did you mean 'off'?)",
                 id="rollback-to-unknown-stage"),
    pytest.param(lambda d: d["checks"]["guard"].update(rollback_to="l1"),
                 "checks.guard.rollback_to: 'l1' is the last stage", id="rollback-to-last"),
    pytest.param(lambda d: d["checks"]["gate_a"].update(rollback_to="off"),
                 "checks.gate_a.rollback_to: only a guardrail rolls back",
                 id="rollback-to-on-a-gate"),
]


def test_a_guardrail_names_where_its_breach_rolls_back_to() -> None:
    plan = plan_from_mapping(edit(lambda d: d["checks"]["guard"].update(rollback_to="off")))
    assert plan.guardrails[0].rollback_to == "off"


@pytest.mark.parametrize(("change", "problem"), BAD_PLANS)
def test_bad_plan_names_the_field(change: Callable[[dict[str, Any]], object],
                                  problem: str) -> None:
    with pytest.raises(PlanError) as raised:
        plan_from_mapping(edit(change), source="plan.yaml")
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
    assert str(raised.value).startswith("plan.yaml: invalid rollout plan")


def test_all_problems_are_reported_at_once() -> None:
    def break_three(d: dict[str, Any]) -> None:
        stage(d, 1).update(bake="-1d")
        stage(d, 1)["flags"].update(l1_percent=101)
        d["checks"]["gate_a"].pop("threshold")

    with pytest.raises(PlanError) as raised:
        plan_from_mapping(edit(break_three))
    assert len(raised.value.problems) == 3
    assert "(3 problems)" in str(raised.value)


def test_not_a_mapping() -> None:
    with pytest.raises(PlanError, match="must be a mapping with `stages`"):
        plan_from_mapping(["stages"])


def test_yaml_reads_bare_off_as_false_and_the_error_says_so() -> None:
    text = "stages:\n  - name: off\n    flags: {shadow: false, l2: false, l1_percent: 0}\n" \
           "    bake: 1d\n"
    with pytest.raises(PlanError, match=re.escape("stages[0].name: must be a non-empty "
                                                  "string (quote it")):
        parse_plan(text)


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(PlanError, match="line 2, column"):
        parse_plan("stages:\n  - name: [off\n", source="x.yaml")


def test_empty_file() -> None:
    with pytest.raises(PlanError, match="must be a mapping"):
        parse_plan("")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read the file"):
        load_plan(tmp_path / "absent.yaml")


def test_load_plan_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("stages:\n  - name: 'off'\n    flags: {shadow: false, l2: false, "
                    "l1_percent: 0}\n    bake: 0\n", encoding="utf-8")
    plan = load_plan(path)
    assert plan.stage_names == ("off",) and plan.stages[0].bake == timedelta(0)


def test_library_check_with_bad_baseline_is_reported_even_if_unused() -> None:
    def add_unused(d: dict[str, Any]) -> None:
        d["checks"]["spare"] = {"kind": "gate", "query": "q[{window}]", "window": "1h",
                                "op": "<", "threshold": {"baseline": "ghost"}}

    with pytest.raises(PlanError, match=re.escape("checks.spare.threshold.baseline: unknown")):
        plan_from_mapping(edit(add_unused))


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        pytest.param("30s", timedelta(seconds=30), id="seconds"),
        pytest.param("1h30m", timedelta(minutes=90), id="compound"),
        pytest.param("7d", timedelta(days=7), id="days"),
        pytest.param("2w", timedelta(weeks=2), id="weeks"),
        pytest.param("500ms", timedelta(milliseconds=500), id="milliseconds"),
        pytest.param("1.5h", timedelta(minutes=90), id="fraction"),
        pytest.param(90, timedelta(seconds=90), id="number-of-seconds"),
        pytest.param("-1d", -timedelta(days=1), id="negative-parsed-then-rejected-by-caller"),
    ],
)
def test_parse_duration(text: object, duration: timedelta) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "1x", "d", "1 d", None, float("inf"), True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
