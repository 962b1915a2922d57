"""The default plan's PromQL, checked by promtool: every query and every events/trials
template (with `{window}` and `{le}` rendered as the controller renders them) parses, and on
known series each gives the value or the counts the checks rely on (or the empty result
that means no data).

promtool ships with Prometheus (Debian `prometheus`); it evaluates offline, no server needed.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from app.contract import QUERY_DURATION_BUCKETS
from rollout.core.boundaries import boundary_label, render_counts, resolve_boundary
from rollout.core.plan import CheckSpec, Counts, Plan, promql_duration
from rollout.core.plan_loader import load_default_plan

WINDOW = timedelta(minutes=10)
EVAL_AT = "15m"
# What the baseline p95 of the seed's service records (~1.75 s an answer): it places the
# boundaries of the relative slow-answer objectives (0.8 x 1.78 s -> the 1.42 s bucket).
BASELINE = {"baseline_p95_seconds": 1.78}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian `prometheus` (scripts/ does it for CI)"
    return found


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_default_plan()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def boundary(check: CheckSpec, baseline: dict[str, float]) -> float | None:
    if check.stat is None or check.stat.slower_than is None:
        return None
    return resolve_boundary(check.stat.slower_than, baseline)


def parts(plan: Plan, check: CheckSpec, window: timedelta,
          baseline: dict[str, float]) -> dict[str, str]:
    """Every expression a check makes the controller run, by part: its value and sample
    queries, a baseline's recorded counts, a statistical check's counts and its control's."""
    found: dict[str, str] = {}
    if check.query:
        found["value"] = plan.render_query(check)
        sample = plan.render_sample_query(check)
        if sample is not None:
            found["sample"] = sample
    counted: list[tuple[str, Counts, float | None]] = []
    if check.counts is not None:
        counted.append(("", check.counts, None))
    if check.stat is not None:
        counted.append(("", check.stat.counts, boundary(check, baseline)))
        if check.stat.control is not None:
            counted.append(("control_", check.stat.control, boundary(check, baseline)))
    for prefix, counts, bound in counted:
        found[f"{prefix}events"], found[f"{prefix}trials"] = render_counts(counts, window, bound)
    return found


def all_expressions(plan: Plan, window: timedelta,
                    baseline: dict[str, float]) -> list[tuple[str, str]]:
    return [(f"{part}:{check.name}", expr) for check in plan.all_checks()
            for part, expr in parts(plan, check, window, baseline).items()]


def test_every_check_has_something_to_run(plan: Plan) -> None:
    for check in plan.all_checks():
        found = parts(plan, check, WINDOW, BASELINE)
        assert found, check.name
        assert not any("{" + "window}" in e or "{le}" in e for e in found.values()), found


@pytest.mark.parametrize(
    ("time_scale", "baseline_p95"),
    [(1.0, 1.78), (1 / 86400, 1.78), (1.0, 0.02), (1.0, 30.0)],
    ids=["as-written", "demo-scaled", "fast-baseline", "slow-baseline"],
)
def test_every_query_parses(plan: Plan, time_scale: float, baseline_p95: float,
                            tmp_path: Path) -> None:
    # Scaled windows and the lowest and highest boundaries a baseline can place.
    scaled = Plan(stages=plan.stages, guardrails=plan.guardrails,
                  settings=type(plan.settings)(time_scale=time_scale,
                                               min_window=timedelta(seconds=5)))
    window = max(WINDOW * time_scale, scaled.settings.min_window)
    rules = [{"record": record, "expr": expr} for record, expr in
             all_expressions(scaled, window, {"baseline_p95_seconds": baseline_p95})]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "plan", "rules": rules}]}))
    result = run("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_slow_answer_boundaries_are_bucket_labels(plan: Plan) -> None:
    """`{le}` becomes a label the histogram really has: 2.0 s is the 2.04 s bucket, and the
    baseline checks' counts and value place the same one as the guardrail's."""
    checks = {c.name: c for c in plan.all_checks()}
    guardrail = parts(plan, checks["slow_answers_guardrail"], WINDOW, BASELINE)
    baseline = parts(plan, checks["baseline_slow_share"], WINDOW, BASELINE)
    for expr in (guardrail["events"], baseline["events"], baseline["value"]):
        assert 'le="2.04"' in expr, expr
    objective = parts(plan, checks["p95_20pct_below_baseline"], WINDOW, BASELINE)
    assert 'le="1.42"' in objective["events"]
    labels = {boundary_label(b) for b in QUERY_DURATION_BUCKETS}
    assert {"2.04", "1.42"} <= labels


def counter(series: str, per_minute: float) -> dict[str, str]:
    return {"series": series, "values": f"0+{per_minute}x20"}


def gauge(series: str, value: float) -> dict[str, str]:
    return {"series": series, "values": f"{value}x20"}


def histogram(cohort: str) -> list[dict[str, str]]:
    # 100 answers a minute: 60 under 50 ms (L1 hits), 80 under 1.42 s, 95 under 2.04 s
    name = "ai_agent_query_duration_seconds"
    return [
        counter(f'{name}_bucket{{l1="{cohort}",le="0.05"}}', 60),
        counter(f'{name}_bucket{{l1="{cohort}",le="1.42"}}', 80),
        counter(f'{name}_bucket{{l1="{cohort}",le="2.04"}}', 95),
        counter(f'{name}_bucket{{l1="{cohort}",le="+Inf"}}', 100),
        counter(f'{name}_count{{l1="{cohort}"}}', 100),
    ]


def slow_cohort() -> list[dict[str, str]]:
    # The L1 cohort: 90 of 100 answers under 2.04 s (10 slow a minute)
    name = "ai_agent_query_duration_seconds"
    return [
        counter(f'{name}_bucket{{l1="on",le="2.04"}}', 90),
        counter(f'{name}_bucket{{l1="on",le="+Inf"}}', 100),
        counter(f'{name}_count{{l1="on"}}', 100),
    ]


Q = "ai_agent_queries_total"
HITS, MISSES = "ai_agent_cache_hits_total", "ai_agent_cache_misses_total"
VERIFY = "ai_agent_cache_verifications_total"
COST = "ai_agent_upstream_cost_usd_total"
EMBED_SHADOW = 'cache_layer="embedding",mode="shadow",workspace_id="w1"'
ERRORS = [counter(f'{Q}{{outcome="ok",l1="off"}}', 90),
          counter(f'{Q}{{outcome="error",l1="off"}}', 10)]
COHORTS = [counter(f'{Q}{{outcome="ok",l1="on"}}', 95),
           counter(f'{Q}{{outcome="error",l1="on"}}', 5),
           counter(f'{Q}{{outcome="ok",l1="off"}}', 98),
           counter(f'{Q}{{outcome="error",l1="off"}}', 2)]
AUDITS = [counter(f'{VERIFY}{{cache_layer="query_result",result="stale"}}', 1),
          counter(f'{VERIFY}{{cache_layer="query_result",result="mismatch"}}', 1),
          counter(f'{VERIFY}{{cache_layer="query_result",result="match"}}', 98),
          counter(f'{VERIFY}{{cache_layer="embedding",result="mismatch"}}', 3),
          counter(f'{VERIFY}{{cache_layer="embedding",result="match"}}', 47)]
SPEND = [counter(f'{Q}{{outcome="ok",l1="off"}}', 10),
         counter(f'{COST}{{kind="chat"}}', 0.15), counter(f'{COST}{{kind="embed"}}', 0.02)]

# (scenario id, input series, check name, part, expected value or None for empty);
# counts are over the 10-minute window, evaluated at 15 minutes.
SCENARIOS: list[tuple[str, list[dict[str, str]], str, str, float | None]] = [
    # errors among queries: the guardrail, the gate and the baseline count the same
    ("errors", ERRORS, "error_rate_guardrail", "events", 100.0),
    ("queries", ERRORS, "error_rate_guardrail", "trials", 1000.0),
    ("gate-errors", ERRORS, "error_rate_vs_baseline", "events", 100.0),
    ("baseline-errors", ERRORS, "baseline_error_rate", "events", 100.0),
    ("baseline-queries", ERRORS, "baseline_error_rate", "trials", 1000.0),
    ("baseline-error-rate", ERRORS, "baseline_error_rate", "value", 0.1),
    ("no-error-ever-counted-is-zero", [counter(f'{Q}{{outcome="ok",l1="off"}}', 90)],
     "error_rate_guardrail", "events", 0.0),
    ("no-traffic-is-zero-trials", [gauge(f'{Q}{{outcome="ok",l1="off"}}', 5)],
     "error_rate_guardrail", "trials", 0.0),
    ("no-queries-metric-is-empty", [gauge('redis_memory_used_bytes{instance="r"}', 1)],
     "error_rate_guardrail", "trials", None),
    # the L1 cohort against the control cohort
    ("cohort-errors", COHORTS, "l1_cohort_error_guardrail", "events", 50.0),
    ("cohort-queries", COHORTS, "l1_cohort_error_guardrail", "trials", 1000.0),
    ("control-errors", COHORTS, "l1_cohort_error_guardrail", "control_events", 20.0),
    ("control-queries", COHORTS, "l1_cohort_error_guardrail", "control_trials", 1000.0),
    ("gate-cohort-errors", COHORTS, "l1_cohort_error_rate_vs_control", "events", 50.0),
    ("no-control-cohort-is-empty", [counter(f'{Q}{{outcome="ok",l1="on"}}', 95)],
     "l1_cohort_error_rate_vs_control", "control_trials", None),
    # slow answers: answers minus those within the boundary's bucket
    ("slow-answers", histogram("off"), "slow_answers_guardrail", "events", 50.0),
    ("answers", histogram("off"), "slow_answers_guardrail", "trials", 1000.0),
    ("baseline-slow-answers", histogram("off"), "baseline_slow_share", "events", 50.0),
    ("baseline-slow-share", histogram("off"), "baseline_slow_share", "value", 0.05),
    ("baseline-p95", histogram("off"), "baseline_p95_seconds", "value", 2.04),
    ("cohort-slow-answers", slow_cohort() + histogram("off"),
     "l1_cohort_slow_share_vs_control", "events", 100.0),
    ("control-slow-answers", slow_cohort() + histogram("off"),
     "l1_cohort_slow_share_vs_control", "control_events", 50.0),
    ("control-answers", slow_cohort() + histogram("off"),
     "l1_cohort_slow_share_vs_control", "control_trials", 1000.0),
    ("objective-slow-answers", histogram("off"), "p95_20pct_below_baseline", "events", 200.0),
    ("objective-answers", histogram("off"), "p95_40pct_below_baseline", "trials", 1000.0),
    # cost as a share of the $0.05 cap per answer: $1.70 over 100 answers
    ("cost-shares", SPEND, "cost_20pct_below_baseline", "events", 34.0),
    ("cost-queries", SPEND, "cost_50pct_below_baseline", "trials", 100.0),
    ("baseline-cost-shares", SPEND, "baseline_cost_per_query_usd", "events", 34.0),
    ("baseline-cost-per-query", SPEND, "baseline_cost_per_query_usd", "value", 0.017),
    ("no-cost-yet-is-zero", [counter(f'{Q}{{outcome="ok",l1="off"}}', 10)],
     "cost_20pct_below_baseline", "events", 0.0),
    # hit rates: hits among lookups of one layer and mode
    ("shadow-hits", [counter(f"{HITS}{{{EMBED_SHADOW}}}", 45),
                     counter(f"{MISSES}{{{EMBED_SHADOW}}}", 55)],
     "l2_shadow_hit_rate", "events", 450.0),
    ("shadow-lookups", [counter(f"{HITS}{{{EMBED_SHADOW}}}", 45),
                        counter(f"{MISSES}{{{EMBED_SHADOW}}}", 55)],
     "l2_shadow_hit_rate", "trials", 1000.0),
    ("shadow-lookups-with-no-hit-yet", [counter(f"{MISSES}{{{EMBED_SHADOW}}}", 55)],
     "l2_shadow_hit_rate", "trials", 550.0),
    ("shadow-hits-ignore-served-lookups",
     [counter(f'{HITS}{{cache_layer="embedding",mode="serve",workspace_id="w1"}}', 45)],
     "l2_shadow_hit_rate", "trials", 0.0),
    ("served-hits", [counter(f'{HITS}{{cache_layer="embedding",mode="serve"}}', 45),
                     counter(f'{MISSES}{{cache_layer="embedding",mode="serve"}}', 55)],
     "l2_served_hit_rate", "events", 450.0),
    # integrity: stale or mismatched L1 answers among L1 audits; L2 mismatches apart
    ("l1-bad-audits", AUDITS, "cache_integrity_guardrail", "events", 20.0),
    ("l1-audits", AUDITS, "cache_integrity_guardrail", "trials", 1000.0),
    ("l1-stale-gate", AUDITS, "l1_stale_rate_1pct", "events", 20.0),
    ("l1-stale-gate-audits", AUDITS, "l1_stale_rate_0_1pct", "trials", 1000.0),
    ("l2-mismatches", AUDITS, "l2_integrity_guardrail", "events", 30.0),
    ("l2-verifications", AUDITS, "l2_integrity_guardrail", "trials", 500.0),
    ("all-mismatches", AUDITS, "verification_mismatch_rate", "events", 40.0),
    ("all-verifications", AUDITS, "verification_mismatch_rate", "trials", 1500.0),
    ("no-audit-ever-is-empty", [counter(f'{Q}{{outcome="ok",l1="on"}}', 9)],
     "cache_integrity_guardrail", "trials", None),
    # Redis health (threshold checks)
    ("redis-oom-never-seen-is-zero", [gauge('redis_memory_used_bytes{instance="r"}', 1)],
     "redis_oom_guardrail", "value", 0.0),
    ("redis-oom-counted", [counter('redis_errors_total{err="OOM",instance="r"}', 1)],
     "redis_oom_guardrail", "value", 10.0),
    ("redis-scrapes-count-the-sample", [gauge('redis_memory_used_bytes{instance="r"}', 1)],
     "redis_no_oom_rejections", "sample", 11.0),
    ("redis-memory-ratio", [gauge('redis_memory_used_bytes{instance="r"}', 900),
                            gauge('redis_memory_max_bytes{instance="r"}', 1000)],
     "redis_memory_below_limit", "value", 0.9),
    ("redis-without-maxmemory-is-empty", [gauge('redis_memory_used_bytes{instance="r"}', 900),
                                          gauge('redis_memory_max_bytes{instance="r"}', 0)],
     "redis_memory_below_limit", "value", None),
]


@pytest.mark.parametrize(
    ("series", "check_name", "part", "expected"),
    [pytest.param(*rest, id=scenario) for scenario, *rest in SCENARIOS],
)
def test_query_computes_what_the_check_expects(
    plan: Plan,
    tmp_path: Path,
    series: list[dict[str, str]],
    check_name: str,
    part: str,
    expected: float | None,
) -> None:
    check = next(c for c in plan.all_checks() if c.name == check_name)
    # The threshold checks' own windows (5m, 1h) are replaced by the scenario's 10 minutes.
    expr = parts(plan, check, WINDOW, BASELINE)[part]
    expr = expr.replace(f"[{promql_duration(plan.window_of(check))}]", "[10m]")
    test = {
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [{
            # promtool compares floats exactly; a micro-unit is far below any threshold
            "expr": f"round(({expr}), 0.000001)",
            "eval_time": EVAL_AT,
            "exp_samples": [] if expected is None else [{"labels": "{}", "value": expected}],
        }],
    }
    path = tmp_path / "plan_test.yml"
    path.write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": [test]}))
    result = run("test", "rules", str(path))
    assert result.returncode == 0, f"{expr}\n{result.stdout}{result.stderr}"

