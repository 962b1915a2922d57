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
from rollout.core.plan import (
    CheckKind,
    CheckSpec,
    Counts,
    Plan,
    StatSpec,
    StatTest,
    Threshold,
)
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
    assert [c.name for c in off.checks] == [
        "baseline_error_rate", "baseline_p95_seconds", "baseline_slow_share",
        "baseline_cost_per_query_usd",
    ]
    assert all(c.kind is CheckKind.BASELINE and c.window == DAY for c in off.checks)
    assert default_plan.checks_for(0) == off.checks  # no guardrail in the baseline stage
    recorded = {c.name: c.counts for c in off.checks}
    # The counts the comparisons before L1 use: errors, slow answers, cost shares.
    assert recorded["baseline_p95_seconds"] is None
    error, slow, cost = (recorded[n] for n in ("baseline_error_rate", "baseline_slow_share",
                                               "baseline_cost_per_query_usd"))
    assert error is not None and 'outcome="error"' in error.events
    # slower_than 2.0 is placed when the plan loads: the 2.04 s bucket, in value and counts.
    assert slow is not None and 'le="2.04"' in slow.events
    assert 'le="2.04"' in off.checks[2].query
    assert cost is not None and cost.events.endswith("/ 0.05")  # a share of the $0.05 cap


def stat_of(check: CheckSpec) -> StatSpec:
    assert check.stat is not None, check.name
    return check.stat


def roles(checks: tuple[CheckSpec, ...]) -> dict[str, tuple[CheckKind, StatTest | None]]:
    return {c.name: (c.kind, c.stat.test if c.stat else None) for c in checks}


GATE, GUARD, OBJ = CheckKind.GATE, CheckKind.GUARDRAIL, CheckKind.OBJECTIVE
NI, LIMIT = StatTest.NON_INFERIORITY, StatTest.LIMIT


def test_default_plan_stages_have_the_roles_and_tests_of_the_design(default_plan: Plan) -> None:
    _, dark, l2, l1_10, l1_50, l1_100 = (roles(s.checks) for s in default_plan.stages)
    assert dark == {"error_rate_vs_baseline": (GATE, NI), "l2_shadow_hit_rate": (GATE, LIMIT),
                    "redis_no_oom_rejections": (GATE, None),
                    "redis_memory_below_limit": (GATE, None)}
    assert l2 == {"error_rate_vs_baseline": (GATE, NI),
                  "verification_mismatch_rate": (GATE, LIMIT),
                  "l2_served_hit_rate": (GATE, LIMIT),
                  "p95_20pct_below_baseline": (OBJ, LIMIT),
                  "cost_20pct_below_baseline": (OBJ, LIMIT)}
    assert l1_10 == {"l1_cohort_error_rate_vs_control": (GATE, NI),
                     "l1_cohort_slow_share_vs_control": (GATE, NI),
                     "l1_stale_rate_1pct": (GATE, LIMIT)}
    assert l1_50 == {"l1_cohort_error_rate_vs_control": (GATE, NI),
                     "l1_cohort_slow_share_vs_control": (GATE, NI),
                     "l1_stale_rate_0_3pct": (GATE, LIMIT)}
    assert l1_100 == {"error_rate_vs_baseline": (GATE, NI),
                      "l1_stale_rate_0_1pct": (GATE, LIMIT),
                      "p95_40pct_below_baseline": (OBJ, LIMIT),
                      "cost_50pct_below_baseline": (OBJ, LIMIT)}
    dry_runs = {c.name for c in default_plan.all_checks() if c.dry_run}
    assert dry_runs == {"l2_served_hit_rate", "redis_evictions_guardrail"}


def test_default_plan_gates_compare_as_the_design_says(default_plan: Plan) -> None:
    checks = {c.name: c for c in default_plan.all_checks()}
    error = stat_of(checks["error_rate_vs_baseline"])
    assert (error.baseline, error.control, error.margin) == ("baseline_error_rate", None, 0.005)
    hit = stat_of(checks["l2_shadow_hit_rate"])
    assert hit.limit == Threshold(absolute=0.30) and not hit.higher_is_worse
    assert 'mode="shadow"' in hit.counts.events
    served = stat_of(checks["l2_served_hit_rate"])
    assert served.limit == Threshold(absolute=0.30) and not served.higher_is_worse
    assert stat_of(checks["verification_mismatch_rate"]).limit == Threshold(absolute=0.01)
    for name, margin in (("l1_cohort_error_rate_vs_control", 0.01),
                         ("l1_cohort_slow_share_vs_control", 0.02)):
        cohort = stat_of(checks[name])
        assert cohort.control is not None and cohort.baseline is None and cohort.margin == margin
        assert 'l1="on"' in cohort.counts.trials and 'l1="off"' in cohort.control.trials
    assert stat_of(checks["l1_cohort_slow_share_vs_control"]).slower_than == Threshold(
        absolute=2.0)
    # Integrity evidence accumulates across the L1 stages, each stage a tighter limit.
    for name, limit in (("l1_stale_rate_1pct", 0.01), ("l1_stale_rate_0_3pct", 0.003),
                        ("l1_stale_rate_0_1pct", 0.001)):
        stale = stat_of(checks[name])
        assert (stale.since, stale.limit) == ("l1-10", Threshold(absolute=limit))
        assert "stale|mismatch" in stale.counts.events
        assert 'cache_layer="query_result"' in stale.counts.trials


def test_default_plan_objectives_are_the_seed_targets(default_plan: Plan) -> None:
    checks = {c.name: c for c in default_plan.all_checks()}
    for name, factor in (("p95_20pct_below_baseline", 0.8), ("p95_40pct_below_baseline", 0.6)):
        p95 = stat_of(checks[name])
        assert p95.slower_than == Threshold(baseline="baseline_p95_seconds", factor=factor)
        assert p95.limit == Threshold(absolute=0.05) and "{le}" in p95.counts.events
    for name, factor in (("cost_20pct_below_baseline", 0.8), ("cost_50pct_below_baseline", 0.5)):
        cost = stat_of(checks[name])
        assert cost.limit == Threshold(baseline="baseline_cost_per_query_usd", factor=factor)
    assert all(not c.is_enforced for c in checks.values() if c.kind is CheckKind.OBJECTIVE)


def test_default_plan_guardrails_match_the_design(default_plan: Plan) -> None:
    guardrails = {c.name: c for c in default_plan.guardrails}
    assert list(guardrails) == [
        "error_rate_guardrail", "l1_cohort_error_guardrail", "l1_cohort_slow_guardrail",
        "slow_answers_guardrail", "redis_oom_guardrail", "cache_integrity_guardrail",
        "l2_integrity_guardrail", "redis_evictions_guardrail",
    ]
    error = stat_of(guardrails["error_rate_guardrail"])
    assert (error.test, error.baseline, error.margin) == (NI, "baseline_error_rate", 0.01)
    cohort = stat_of(guardrails["l1_cohort_error_guardrail"])
    assert (cohort.test, cohort.margin) == (NI, 0.01) and cohort.control is not None
    cohort_slow = stat_of(guardrails["l1_cohort_slow_guardrail"])
    assert (cohort_slow.test, cohort_slow.margin) == (NI, 0.03)
    assert cohort_slow.control is not None
    assert cohort_slow.slower_than == Threshold(absolute=2.0)
    slow = stat_of(guardrails["slow_answers_guardrail"])
    assert (slow.test, slow.baseline, slow.margin) == (NI, "baseline_slow_share", 0.02)
    assert slow.slower_than == Threshold(absolute=2.0)
    oom = guardrails["redis_oom_guardrail"]
    assert oom.stat is None and oom.critical and 'err="OOM"' in oom.query
    # DESIGN.md §7: a stale L1 answer goes to the last stage that serves none, an L2
    # mismatch to dark-launch; the others step back one stage.
    integrity = guardrails["cache_integrity_guardrail"]
    assert (stat_of(integrity).test, stat_of(integrity).limit) == (LIMIT, Threshold(absolute=0.005))
    assert "stale|mismatch" in stat_of(integrity).counts.events
    assert integrity.critical and integrity.rollback_to == "l2"
    l2 = guardrails["l2_integrity_guardrail"]
    assert (stat_of(l2).test, stat_of(l2).limit) == (LIMIT, Threshold(absolute=0.005))
    assert 'cache_layer="embedding"' in stat_of(l2).counts.events
    assert l2.critical and l2.rollback_to == "dark-launch"
    targets = {name: c.rollback_to for name, c in guardrails.items()}
    assert {n for n, t in targets.items() if t is None} == {
        "error_rate_guardrail", "l1_cohort_error_guardrail", "l1_cohort_slow_guardrail",
        "slow_answers_guardrail", "redis_oom_guardrail", "redis_evictions_guardrail"}
    assert guardrails["redis_evictions_guardrail"].dry_run
    for stage_index in range(1, len(default_plan.stages)):
        assert set(guardrails) <= {c.name for c in default_plan.checks_for(stage_index)}


def test_default_plan_settings(default_plan: Plan) -> None:
    settings = default_plan.settings
    assert (settings.passes_to_advance, settings.failures_to_rollback) == (2, 3)
    assert settings.time_scale == 1
    assert not settings.auto_resume_after_rollback
    assert settings.cooldown > timedelta(0)
    assert (settings.gate_alpha, settings.guardrail_alpha_fail, settings.objective_alpha) == (
        0.05, 0.00045, 0.05)
    # DESIGN.md §7: a healthy rollout rolls back with probability <= 1 %, by a union bound
    # over the statistical guardrail sequences of a healthy ascent (21, see the plan).
    statistical = [c for c in default_plan.guardrails if c.stat is not None]
    stages = len(default_plan.stages) - 1
    assert len(statistical) * stages * settings.guardrail_alpha_fail <= 0.014
    assert 21 * settings.guardrail_alpha_fail <= 0.01


def test_every_check_counts_its_traffic(default_plan: Plan) -> None:
    for check in default_plan.all_checks():
        if check.stat is None:
            assert check.sample_query is not None and check.min_sample > 0, check.name
        else:  # judged from counts: the trials are the traffic
            assert check.sample_query is None and check.stat.counts.trials, check.name


def test_statistical_checks_without_a_query_have_the_minimum_window(default_plan: Plan) -> None:
    for check in default_plan.all_checks():
        if check.stat is not None:
            assert check.query == "" and check.window == default_plan.settings.min_window


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
        texts = [check.query, check.sample_query or ""]
        counted = [check.counts] if check.counts else []
        if check.stat is not None:
            counted += [check.stat.counts] + ([check.stat.control] if check.stat.control else [])
        texts += [t for counts in counted for t in (counts.events, counts.trials)]
        used = set(re.findall(r"\b(ai_agent_\w+|redis_\w+)", " ".join(texts)))
        assert used, check.name
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


# --- statistical checks ---------------------------------------------------------------------
EV = "sum(increase(e[{window}]))"
TR = "sum(increase(t[{window}]))"
SLOW = 'sum(increase(t[{window}])) - sum(increase(b{le="{le}"}[{window}]))'


def stat_valid() -> dict[str, Any]:
    """A plan with every kind of statistical check (DESIGN.md §7) and the baselines they use."""
    flags = {"shadow": True, "l2": True}
    return {
        "settings": {"gate_alpha": 0.1, "guardrail_alpha_fail": 0.001,
                     "objective_alpha": 0.2, "min_window": "1m"},
        "checks": {
            "base_rate": {"kind": "baseline", "query": "sum(rate(m[{window}]))", "window": "1d",
                          "events": EV, "trials": TR},
            "base_p95": {"kind": "baseline", "query": "sum(rate(p[{window}]))", "window": "1d"},
            "base_slow": {"kind": "baseline", "query": 'sum(increase(b{le="{le}"}[{window}]))',
                          "window": "1d", "slower_than": 2.0, "events": SLOW, "trials": TR},
            "errors_vs_base": {"kind": "guardrail", "test": "non_inferiority", "events": EV,
                               "trials": TR, "baseline": "base_rate", "margin": 0.01},
            "slow_vs_base": {"kind": "guardrail", "test": "non_inferiority", "events": SLOW,
                             "trials": TR, "baseline": "base_slow", "slower_than": 2.0,
                             "margin": 0.02, "alpha_fail": 0.0001},
            "cohort_errors": {"kind": "gate", "test": "non_inferiority", "events": EV,
                              "trials": TR, "control": {"events": EV, "trials": TR},
                              "margin": 0.01},
            "stale": {"kind": "gate", "test": "limit", "events": EV, "trials": TR,
                      "limit": 0.01, "since": "l1-10"},
            "faster": {"kind": "objective", "test": "limit", "events": SLOW, "trials": TR,
                       "slower_than": {"baseline": "base_p95", "factor": 0.8}, "limit": 0.05},
            "cheaper": {"kind": "objective", "test": "limit", "events": EV, "trials": TR,
                        "limit": {"baseline": "base_rate", "factor": 0.8}},
            "redis": {"kind": "gate", "query": "max(r[{window}])", "window": "1h", "op": "<",
                      "threshold": 0.9},
        },
        "guardrails": ["errors_vs_base", "slow_vs_base"],
        "stages": [
            {"name": "off", "flags": {"shadow": False, "l2": False, "l1_percent": 0},
             "bake": "1d", "checks": ["base_rate", "base_p95", "base_slow"]},
            {"name": "l2", "flags": {**flags, "l1_percent": 0}, "bake": "7d",
             "checks": ["redis", "faster", "cheaper"]},
            {"name": "l1-10", "flags": {**flags, "l1_percent": 10}, "bake": "4d",
             "checks": ["cohort_errors", "stale"]},
            {"name": "l1-50", "flags": {**flags, "l1_percent": 50}, "bake": "5d",
             "checks": ["cohort_errors", "stale"]},
        ],
    }


def test_the_statistical_fixture_loads_into_stat_specs() -> None:
    plan = plan_from_mapping(stat_valid())
    checks = {c.name: c for c in plan.all_checks()}
    assert checks["errors_vs_base"].stat == StatSpec(
        test=StatTest.NON_INFERIORITY, counts=Counts(EV, TR), baseline="base_rate", margin=0.01)
    assert checks["cohort_errors"].stat == StatSpec(
        test=StatTest.NON_INFERIORITY, counts=Counts(EV, TR), control=Counts(EV, TR),
        margin=0.01)
    assert checks["stale"].stat == StatSpec(
        test=StatTest.LIMIT, counts=Counts(EV, TR), limit=Threshold(absolute=0.01),
        since="l1-10")
    faster = stat_of(checks["faster"])
    assert faster.slower_than == Threshold(baseline="base_p95", factor=0.8)
    assert faster.counts.events == SLOW  # `{le}` stays: placed each cycle, once recorded
    assert stat_of(checks["cheaper"]).limit == Threshold(baseline="base_rate", factor=0.8)
    slow = checks["slow_vs_base"]
    assert stat_of(slow).slower_than == Threshold(absolute=2.0)
    assert plan.alphas(slow) == (0.1, 0.0001)  # its own alpha_fail, the gate alpha
    assert plan.alphas(checks["errors_vs_base"]) == (0.1, 0.001)
    assert plan.alphas(checks["faster"]) == (0.2, 0.2)
    assert plan.alphas(checks["stale"]) == (0.1, 0.1)
    # No query, no window given: the point estimate is empty, the window the minimum.
    assert (checks["stale"].query, checks["stale"].window) == ("", timedelta(minutes=1))
    # A baseline's counts, and its value query, with the absolute boundary placed.
    base_slow = checks["base_slow"]
    assert base_slow.stat is None and base_slow.counts is not None
    assert 'le="2.04"' in base_slow.counts.events and 'le="2.04"' in base_slow.query
    assert checks["base_rate"].counts == Counts(EV, TR) and checks["base_p95"].counts is None


def test_an_absolute_boundary_is_placed_in_a_statistical_point_estimate() -> None:
    data = stat_valid()
    check(data, "slow_vs_base")["query"] = 'sum(rate(b{le="{le}"}[{window}]))'
    slow = next(c for c in plan_from_mapping(data).guardrails if c.name == "slow_vs_base")
    assert slow.query == 'sum(rate(b{le="2.04"}[{window}]))'
    assert stat_of(slow).counts.events == SLOW  # placed each cycle, like a relative one


def stat_edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = stat_valid()
    change(data)
    return data


def check(data: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = data["checks"][name]
    return result


STAT_BAD_PLANS = [
    # what a test needs
    pytest.param(lambda d: check(d, "stale").pop("events"), "checks.stale.events: missing (a "
                 "PromQL template counting the events", id="test-without-events"),
    pytest.param(lambda d: check(d, "cohort_errors").pop("trials"),
                 "checks.cohort_errors.trials: missing", id="test-without-trials"),
    pytest.param(lambda d: check(d, "stale").update(test="t_test"),
                 "checks.stale.test: must be one of non_inferiority, limit, got 't_test'",
                 id="unknown-test"),
    pytest.param(lambda d: check(d, "cohort_errors").update(baseline="base_rate"),
                 "checks.cohort_errors.baseline: a non_inferiority test compares with a "
                 "control cohort or a baseline, not both", id="control-and-baseline"),
    pytest.param(lambda d: check(d, "cohort_errors").pop("control"),
                 "checks.cohort_errors: a non_inferiority test needs control",
                 id="neither-control-nor-baseline"),
    pytest.param(lambda d: check(d, "cohort_errors").pop("margin"),
                 "checks.cohort_errors.margin: missing (the harm tolerated", id="no-margin"),
    pytest.param(lambda d: check(d, "cohort_errors").update(margin=-0.01),
                 "checks.cohort_errors.margin: must not be negative", id="negative-margin"),
    pytest.param(lambda d: check(d, "cohort_errors").update(limit=0.1),
                 "checks.cohort_errors.limit: a non_inferiority test has a margin, not a limit",
                 id="non-inferiority-with-limit"),
    pytest.param(lambda d: check(d, "stale").pop("limit"), "checks.stale.limit: missing",
                 id="limit-test-without-limit"),
    pytest.param(lambda d: check(d, "stale").update(control={"events": EV, "trials": TR}),
                 "checks.stale.control: a limit test compares the rate with its limit; it "
                 "takes no control", id="limit-test-with-control"),
    pytest.param(lambda d: check(d, "stale").update(baseline="base_rate"),
                 "checks.stale.baseline: a limit test compares the rate with its limit",
                 id="limit-test-with-baseline"),
    pytest.param(lambda d: check(d, "stale").update(limit=5),
                 "checks.stale.limit: must be a rate strictly between 0 and 1 (0.001 = 0.1 %), "
                 "got 5", id="limit-not-a-rate"),
    pytest.param(lambda d: check(d, "cohort_errors")["control"].pop("trials"),
                 "checks.cohort_errors.control.trials: missing", id="control-without-trials"),
    pytest.param(lambda d: check(d, "cohort_errors")["control"].update(event=EV),
                 "checks.cohort_errors.control.event: unknown field (did you mean 'events'?)",
                 id="control-unknown-field"),
    pytest.param(lambda d: check(d, "stale").update(events="sum(e)"),
                 "checks.stale.events: must use the {window} placeholder", id="events-fixed"),
    pytest.param(lambda d: check(d, "stale").update(higher_is_worse="yes"),
                 "checks.stale.higher_is_worse: must be true or false", id="direction-text"),
    # which keys go with which kind of check
    pytest.param(lambda d: check(d, "stale").update(op="<"),
                 "checks.stale.op: a statistical check takes no op", id="stat-with-op"),
    pytest.param(lambda d: check(d, "stale").update(threshold=0.01),
                 "checks.stale.threshold: a statistical check takes no threshold",
                 id="stat-with-threshold"),
    pytest.param(lambda d: check(d, "stale").update(sample_query=TR, min_sample=10),
                 "checks.stale.min_sample: a statistical check takes no min_sample",
                 id="stat-with-min-sample"),
    pytest.param(lambda d: check(d, "redis").update(margin=0.1),
                 "checks.redis.margin: only a statistical check (with test) has margin",
                 id="threshold-with-stat-key"),
    pytest.param(lambda d: check(d, "stale").pop("test"),
                 "checks.stale.test: missing (one of non_inferiority, limit): events, trials, "
                 "limit, since belong to a statistical check", id="stat-keys-without-test"),
    pytest.param(lambda d: check(d, "faster").pop("test"),
                 "checks.faster.test: missing (one of non_inferiority, limit): an objective is "
                 "measured with a statistical test", id="objective-without-test"),
    pytest.param(lambda d: check(d, "redis").pop("query"),
                 "checks.redis.query: missing (a PromQL expression)", id="threshold-no-query"),
    pytest.param(lambda d: check(d, "base_rate").update(test="limit"),
                 "checks.base_rate.test: a baseline check records a value (and its events and "
                 "trials); it takes no test", id="baseline-with-test"),
    pytest.param(lambda d: check(d, "base_rate").pop("trials"),
                 "checks.base_rate.trials: missing: a baseline check records events and trials "
                 "together", id="baseline-events-without-trials"),
    pytest.param(lambda d: check(d, "base_rate").pop("window"),
                 "checks.base_rate.window: missing", id="baseline-without-window"),
    pytest.param(lambda d: check(d, "base_slow").update(slower_than={"baseline": "base_p95"}),
                 "checks.base_slow.slower_than: a baseline check's slower_than is a number of "
                 "seconds", id="baseline-relative-slower-than"),
    # the error levels
    pytest.param(lambda d: check(d, "stale").update(alpha=0.5),
                 "checks.stale.alpha: must lie between 0 and 0.5 (exclusive), got 0.5",
                 id="alpha-half"),
    pytest.param(lambda d: check(d, "stale").update(alpha_fail=0),
                 "checks.stale.alpha_fail: must lie between 0 and 0.5 (exclusive), got 0",
                 id="alpha-fail-zero"),
    pytest.param(lambda d: check(d, "stale").update(alpha="5%"),
                 "checks.stale.alpha: must be a number", id="alpha-text"),
    pytest.param(lambda d: d["settings"].update(gate_alpha=0.7),
                 "settings.gate_alpha: must lie between 0 and 0.5 (exclusive), got 0.7",
                 id="settings-gate-alpha"),
    pytest.param(lambda d: d["settings"].update(guardrail_alpha_fail=-1),
                 "settings.guardrail_alpha_fail: must lie between 0 and 0.5", id="settings-fail"),
    pytest.param(lambda d: d["settings"].update(objective_alpha=None),
                 "settings.objective_alpha: must be a number", id="settings-objective-null"),
    # names the checks refer to
    pytest.param(lambda d: check(d, "errors_vs_base").update(baseline="base_rte"),
                 "checks.errors_vs_base.baseline: unknown baseline 'base_rte' (did you mean "
                 "'base_rate'?) (baseline checks of stage 'off' that record events and trials: "
                 "base_rate, base_slow)", id="unknown-counts-baseline"),
    pytest.param(lambda d: check(d, "errors_vs_base").update(baseline="base_p95"),
                 "checks.errors_vs_base.baseline: baseline 'base_p95' records no counts: give "
                 "it events and trials", id="baseline-without-counts"),
    pytest.param(lambda d: check(d, "errors_vs_base").update(baseline="redis"),
                 "checks.errors_vs_base.baseline: unknown baseline 'redis'",
                 id="baseline-names-a-gate"),
    pytest.param(lambda d: check(d, "cheaper").update(limit={"baseline": "base_p95"}),
                 "checks.cheaper.limit.baseline: baseline 'base_p95' records no counts",
                 id="relative-limit-without-counts"),
    pytest.param(lambda d: check(d, "cheaper").update(limit={"baseline": "bse_rate"}),
                 "checks.cheaper.limit.baseline: unknown baseline 'bse_rate' (did you mean "
                 "'base_rate'?)", id="relative-limit-unknown"),
    pytest.param(lambda d: check(d, "faster").update(slower_than={"baseline": "base_p59"}),
                 "checks.faster.slower_than.baseline: unknown baseline 'base_p59' (did you mean "
                 "'base_p95'?) (baseline checks of stage 'off': base_p95, base_rate, base_slow)",
                 id="slower-than-unknown-baseline"),
    pytest.param(lambda d: check(d, "stale").update(since="l1-1O"),
                 "checks.stale.since: unknown stage 'l1-1O' (did you mean 'l1-10'?); stages: "
                 "off, l2, l1-10, l1-50", id="since-unknown-stage"),
    pytest.param(lambda d: check(d, "stale").update(since="l1-50"),
                 "checks.stale.since: stage 'l1-50' comes after 'l1-10', where the check is "
                 "used", id="since-after-a-use"),
    pytest.param(lambda d: check(d, "errors_vs_base").update(since="l1-10"),
                 "checks.errors_vs_base.since: stage 'l1-10' comes after 'l2'",
                 id="guardrail-since-after-its-first-stage"),
    # the slow-answer boundary
    pytest.param(lambda d: check(d, "cohort_errors").update(events=SLOW),
                 "checks.cohort_errors.events: uses {le}, but the check has no slower_than",
                 id="boundary-without-slower-than"),
    pytest.param(lambda d: check(d, "faster").update(events=EV),
                 "checks.faster.events: must count answers slower than {le}: slower_than is "
                 "set, but none of events, trials uses it", id="slower-than-without-boundary"),
    pytest.param(lambda d: check(d, "cohort_errors").update(
                     slower_than=2.0, events=SLOW, control={"events": EV, "trials": TR}),
                 "checks.cohort_errors.control.events: must count answers slower than {le}",
                 id="control-without-boundary"),
    pytest.param(lambda d: check(d, "faster").update(query='b{le="{le}"}[{window}]'),
                 "checks.faster.query: cannot use {le}: the boundary depends on baseline "
                 "'base_p95'", id="relative-boundary-in-query"),
    pytest.param(lambda d: check(d, "stale").update(query='b{le="{le}"}[{window}]'),
                 "checks.stale.query: uses {le}, but the check has no slower_than",
                 id="stat-query-boundary-without-slower-than"),
    pytest.param(lambda d: check(d, "base_rate").update(query='b{le="{le}"}[{window}]'),
                 "checks.base_rate.query: uses {le}, but the check has no slower_than",
                 id="baseline-boundary-without-slower-than"),
    pytest.param(lambda d: check(d, "slow_vs_base").update(slower_than=-1),
                 "checks.slow_vs_base.slower_than: must be a number of seconds above 0, got -1",
                 id="negative-slower-than"),
    pytest.param(lambda d: check(d, "slow_vs_base").update(slower_than=1.5),
                 "checks.slow_vs_base.slower_than: places the boundary at 1.55 s, baseline "
                 "'base_slow' at 2.04 s: compare like with like", id="boundaries-differ"),
    pytest.param(lambda d: check(d, "slow_vs_base").update(
                     slower_than={"baseline": "base_p95"}),
                 "checks.slow_vs_base.slower_than: must be a number of seconds: compared with "
                 "baseline 'base_slow'", id="relative-boundary-vs-baseline-counts"),
    pytest.param(lambda d: check(d, "slow_vs_base").update(baseline="base_rate"),
                 "checks.slow_vs_base.baseline: baseline 'base_rate' counts no slow answers",
                 id="slow-answers-vs-errors"),
    pytest.param(lambda d: check(d, "errors_vs_base").update(baseline="base_slow"),
                 "checks.errors_vs_base.slower_than: missing: baseline 'base_slow' counts "
                 "answers slower than 2 s", id="errors-vs-slow-answers"),
    # where a check may go
    pytest.param(lambda d: d["guardrails"].append("faster"),
                 "guardrails[2]: check 'faster' is an objective; only guardrails belong here",
                 id="objective-as-guardrail"),
    pytest.param(lambda d: check(d, "faster").update(rollback_to="off"),
                 "checks.faster.rollback_to: only a guardrail rolls back",
                 id="objective-rollback-to"),
    pytest.param(lambda d: check(d, "faster").update(critical=True),
                 "checks.faster.critical: only a guardrail can be critical",
                 id="critical-objective"),
]


@pytest.mark.parametrize(("change", "problem"), STAT_BAD_PLANS)
def test_bad_statistical_check_names_the_field(change: Callable[[dict[str, Any]], object],
                                               problem: str) -> None:
    with pytest.raises(PlanError) as raised:
        plan_from_mapping(stat_edit(change), source="plan.yaml")
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_statistical_problems_all_come_back_at_once() -> None:
    def break_five(d: dict[str, Any]) -> None:
        check(d, "stale").update(op="<", since="l1-1O")
        check(d, "cohort_errors").pop("margin")
        check(d, "errors_vs_base").update(baseline="base_p95")
        d["settings"].update(gate_alpha=1)

    with pytest.raises(PlanError) as raised:
        plan_from_mapping(stat_edit(break_five))
    assert sorted(p.split(":")[0] for p in raised.value.problems) == [
        "checks.cohort_errors.margin", "checks.errors_vs_base.baseline", "checks.stale.op",
        "checks.stale.since", "settings.gate_alpha",
    ]


def test_an_inline_statistical_check_is_checked_like_a_library_one() -> None:
    def inline(d: dict[str, Any]) -> None:
        stage(d, 2)["checks"].append({"name": "inline_stale", "kind": "gate", "test": "limit",
                                      "events": EV, "trials": TR, "since": "l1-50"})

    with pytest.raises(PlanError) as raised:
        plan_from_mapping(stat_edit(inline))
    assert set(raised.value.problems) == {
        "stages[2].checks[2].limit: missing (a rate between 0 and 1, or {baseline: NAME, "
        "factor, margin})",
        "stages[2].checks[2].since: stage 'l1-50' comes after 'l1-10', where the check is "
        "used: the evidence must start at or before every stage that uses it",
    }


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
