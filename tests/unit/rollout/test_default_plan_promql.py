"""The default plan's PromQL, checked by promtool: it parses, and on known series it yields
the numbers (or the empty result) the checks rely on.

promtool ships with Prometheus (Debian `prometheus`); it evaluates offline, no server needed.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from rollout.core.plan import CheckSpec, Plan
from rollout.core.plan_loader import load_default_plan

WINDOW = "10m"
EVAL_AT = "15m"


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


def all_queries(plan: Plan) -> list[tuple[str, str]]:
    queries = []
    for check in plan.all_checks():
        queries.append((f"check:{check.name}", plan.render_query(check)))
        sample = plan.render_sample_query(check)
        if sample is not None:
            queries.append((f"sample:{check.name}", sample))
    return queries


@pytest.mark.parametrize("time_scale", [1.0, 1 / 86400], ids=["as-written", "demo-scaled"])
def test_every_query_parses(plan: Plan, time_scale: float, tmp_path: Path) -> None:
    scaled = Plan(stages=plan.stages, guardrails=plan.guardrails,
                  settings=type(plan.settings)(time_scale=time_scale,
                                               min_window=timedelta(seconds=5)))
    rules = [{"record": record, "expr": expr} for record, expr in all_queries(scaled)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "plan", "rules": rules}]}))
    result = run("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def query(plan: Plan, name: str, *, sample: bool = False) -> str:
    check: CheckSpec = next(c for c in plan.all_checks() if c.name == name)
    template = check.sample_query if sample else check.query
    assert template is not None
    return template.replace("{window}", WINDOW)


def counter(series: str, per_minute: float) -> dict[str, str]:
    return {"series": series, "values": f"0+{per_minute}x20"}


def gauge(series: str, value: float) -> dict[str, str]:
    return {"series": series, "values": f"{value}x20"}


def histogram(cohort: str) -> list[dict[str, str]]:
    # 100 requests a minute: 60 under 50 ms (L1 hits), 95 under 1.75 s, all under 2 s
    name = "ai_agent_query_duration_seconds"
    return [
        counter(f'{name}_bucket{{l1="{cohort}",le="0.05"}}', 60),
        counter(f'{name}_bucket{{l1="{cohort}",le="1.75"}}', 95),
        counter(f'{name}_bucket{{l1="{cohort}",le="2"}}', 100),
        counter(f'{name}_bucket{{l1="{cohort}",le="+Inf"}}', 100),
        counter(f'{name}_count{{l1="{cohort}"}}', 100),
    ]


Q = "ai_agent_queries_total"
HITS, MISSES = "ai_agent_cache_hits_total", "ai_agent_cache_misses_total"
VERIFY = "ai_agent_cache_verifications_total"
EMBED_SHADOW = 'cache_layer="embedding",mode="shadow",workspace_id="w1"'

# (scenario id, input series, check name, sample query?, expected value or None for empty)
SCENARIOS: list[tuple[str, list[dict[str, str]], str, bool, float | None]] = [
    ("error-rate", [counter(f'{Q}{{outcome="ok",l1="off"}}', 90),
                    counter(f'{Q}{{outcome="error",l1="off"}}', 10)],
     "error_rate_guardrail", False, 0.1),
    ("error-rate-when-no-error-was-ever-counted", [counter(f'{Q}{{outcome="ok",l1="off"}}', 90)],
     "error_rate_guardrail", False, 0.0),
    ("error-rate-without-traffic-is-empty", [gauge(f'{Q}{{outcome="ok",l1="off"}}', 5)],
     "error_rate_guardrail", False, None),
    ("error-rate-sample", [counter(f'{Q}{{outcome="ok",l1="off"}}', 90),
                           counter(f'{Q}{{outcome="error",l1="off"}}', 10)],
     "error_rate_guardrail", True, 1000.0),
    ("cost-per-query", [counter(f'{Q}{{outcome="ok",l1="off"}}', 10),
                        counter('ai_agent_upstream_cost_usd_total{kind="chat"}', 0.15),
                        counter('ai_agent_upstream_cost_usd_total{kind="embed"}', 0.02)],
     "cost_20pct_below_baseline", False, 0.017),
    ("cohort-error-rate-difference",
     [counter(f'{Q}{{outcome="ok",l1="on"}}', 95), counter(f'{Q}{{outcome="error",l1="on"}}', 5),
      counter(f'{Q}{{outcome="ok",l1="off"}}', 98), counter(f'{Q}{{outcome="error",l1="off"}}', 2)],
     "l1_cohort_error_rate_vs_control", False, 0.03),
    ("cohort-error-rate-without-control-is-empty",
     [counter(f'{Q}{{outcome="ok",l1="on"}}', 95)],
     "l1_cohort_error_rate_vs_control", False, None),
    ("cohort-sample-is-the-smaller-cohort",
     [counter(f'{Q}{{outcome="ok",l1="on"}}', 10), counter(f'{Q}{{outcome="ok",l1="off"}}', 90)],
     "l1_cohort_error_rate_vs_control", True, 100.0),
    ("cohort-p95-same-distribution", histogram("on") + histogram("off"),
     "l1_cohort_p95_vs_control", False, 1.0),
    ("p95", histogram("off"), "p95_guardrail", False, 1.75),
    ("l2-shadow-hit-rate", [counter(f"{HITS}{{{EMBED_SHADOW}}}", 45),
                            counter(f"{MISSES}{{{EMBED_SHADOW}}}", 55)],
     "l2_shadow_hit_rate", False, 0.45),
    ("l2-shadow-hit-rate-with-no-hit-yet", [counter(f"{MISSES}{{{EMBED_SHADOW}}}", 55)],
     "l2_shadow_hit_rate", False, 0.0),
    ("l2-shadow-hit-rate-ignores-served-lookups",
     [counter(f'{HITS}{{cache_layer="embedding",mode="serve",workspace_id="w1"}}', 45)],
     "l2_shadow_hit_rate", False, None),
    ("redis-oom-never-seen-is-zero", [gauge('redis_memory_used_bytes{instance="r"}', 1)],
     "redis_oom_guardrail", False, 0.0),
    ("redis-oom-counted", [counter('redis_errors_total{err="OOM",instance="r"}', 1)],
     "redis_oom_guardrail", False, 10.0),
    ("redis-scrapes-count-the-sample", [gauge('redis_memory_used_bytes{instance="r"}', 1)],
     "redis_oom_guardrail", True, 11.0),
    ("redis-memory-ratio", [gauge('redis_memory_used_bytes{instance="r"}', 900),
                            gauge('redis_memory_max_bytes{instance="r"}', 1000)],
     "redis_memory_below_limit", False, 0.9),
    ("redis-without-maxmemory-is-empty", [gauge('redis_memory_used_bytes{instance="r"}', 900),
                                          gauge('redis_memory_max_bytes{instance="r"}', 0)],
     "redis_memory_below_limit", False, None),
    ("l1-stale-rate", [counter(f'{VERIFY}{{cache_layer="query_result",result="stale"}}', 1),
                       counter(f'{VERIFY}{{cache_layer="query_result",result="match"}}', 99),
                       counter(f'{VERIFY}{{cache_layer="embedding",result="mismatch"}}', 50)],
     "l1_stale_rate", False, 0.01),
    ("l1-integrity-counts-only-l1-answers",
     [counter(f'{VERIFY}{{cache_layer="query_result",result="stale"}}', 1),
      counter(f'{VERIFY}{{cache_layer="query_result",result="mismatch"}}', 1),
      counter(f'{VERIFY}{{cache_layer="query_result",result="match"}}', 98),
      counter(f'{VERIFY}{{cache_layer="embedding",result="mismatch"}}', 50)],
     "cache_integrity_guardrail", False, 0.02),
    ("l1-integrity-sample-is-l1-verifications",
     [counter(f'{VERIFY}{{cache_layer="query_result",result="match"}}', 7),
      counter(f'{VERIFY}{{cache_layer="embedding",result="match"}}', 30)],
     "cache_integrity_guardrail", True, 70.0),
    ("mismatches-none-is-zero", [counter(f'{VERIFY}{{cache_layer="embedding",result="match"}}', 9)],
     "no_verification_mismatches", False, 0.0),
]


@pytest.mark.parametrize(
    ("series", "check_name", "sample", "expected"),
    [pytest.param(*rest, id=scenario) for scenario, *rest in SCENARIOS],
)
def test_query_computes_what_the_check_expects(
    plan: Plan,
    tmp_path: Path,
    series: list[dict[str, str]],
    check_name: str,
    sample: bool,
    expected: float | None,
) -> None:
    test = {
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [{
            # promtool compares floats exactly; a micro-unit is far below any threshold
            "expr": f"round(({query(plan, check_name, sample=sample)}), 0.000001)",
            "eval_time": EVAL_AT,
            "exp_samples": [] if expected is None else [{"labels": "{}", "value": expected}],
        }],
    }
    path = tmp_path / "plan_test.yml"
    path.write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": [test]}))
    result = run("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
