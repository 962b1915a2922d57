"""The release manager's dashboard: where the rollout is, why it is (not) moving."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

from app import contract
from grafana import panels as p

UID = "ai-cache-rollout"
TITLE = "AI cache rollout"

STAGE_NAMES = {
    i: (name, color)
    for i, (name, color) in enumerate(
        zip(contract.STAGES, ("text", "purple", "blue", "yellow", "orange", "green"), strict=True)
    )
}
# Worst verdict of an interval, as a number a state timeline can colour. `inconclusive`
# (evidence still accumulating: holds the stage, never rolls back) ranks just above pass.
VERDICTS = {
    0: ("pass", "green"),
    1: ("inconclusive", "blue"),
    2: ("no_data", "gray"),
    3: ("error", "orange"),
    4: ("fail", "red"),
}
# The controller's checks, as the recording rules give them over 5 min
# (alerts/rules/ai-cache-recording.rules.yml). The controller itself counts since the stage's
# flags were confirmed; these show where the rates are now.
COHORT_ERROR_GAP = (
    'job_l1:ai_agent_queries_error_ratio:rate5m{l1="on"}\n'
    '  - ignoring (l1) job_l1:ai_agent_queries_error_ratio:rate5m{l1="off"}'
)
SLOW_SHARE_BY_COHORT = "job_l1:ai_agent_queries_slow_ratio:rate5m"
SLOW_SHARE = "job:ai_agent_queries_slow_ratio:rate5m"
L1_AUDIT_FAILURES = "job:ai_agent_cache_l1_audits_stale_or_mismatch:ratio_rate5m"
L2_MISMATCHES = "job:ai_agent_cache_l2_verifications_mismatch:ratio_rate5m"
VERIFICATIONS = "ai_agent_cache_verifications_total"
# Counts over the dashboard's range: the evidence behind the integrity bounds grows with it.
L1_AUDITS_IN_RANGE = f'sum(increase({VERIFICATIONS}{{cache_layer="query_result"}}[$__range]))'
L1_AUDIT_FAILURES_IN_RANGE = (
    f'sum(increase({VERIFICATIONS}{{cache_layer="query_result",result=~"stale|mismatch"}}'
    "[$__range]))"
)
L2_VERIFICATIONS_IN_RANGE = f'sum(increase({VERIFICATIONS}{{cache_layer="embedding"}}[$__range]))'
L2_MISMATCHES_IN_RANGE = (
    f'sum(increase({VERIFICATIONS}{{cache_layer="embedding",result="mismatch"}}[$__range]))'
)
FINE_BUCKETS = (
    "The histogram's buckets are at most 10 % apart from 50 ms to 10 s (app/contract.py), "
    "so a p95 read from them is within 10 % of the truth."
)

# The controller exports when the current stage was entered (it survives restarts: the
# controller restores it from its state in Redis).
TIME_IN_STAGE = "time() - max(rollout_stage_entered_timestamp_seconds)"
# Worst first: `or` keeps the first arm that has a sample for a check.
VERDICT_TIMELINE = (
    "max by (check) (\n    "
    + "\n  or ".join(
        f'(sum by (check) (increase(rollout_checks_total{{verdict="{name}"}}'
        f"[$__rate_interval])) > 0) * 0 + {code}"
        for code, (name, _) in sorted(VERDICTS.items(), reverse=True)
    )
    + "\n)"
)
# New transition series are born at 1 (first use of a from/to/kind), which increase() cannot
# see; `unless ... offset` catches those.
TRANSITIONS = """sum by (from_stage, to_stage, kind) (
    (rollout_transitions_total unless rollout_transitions_total offset 2m)
  or increase(rollout_transitions_total[2m])
) > 0"""


def transitions_annotation() -> dash.AnnotationQuery:
    return p.annotation("Rollout transitions", TRANSITIONS, "purple")


def build() -> dash.Dashboard:
    check_variable = (
        dash.QueryVariable("check")
        .label("Gate")
        .datasource(p.DATASOURCE)
        .query({"query": "label_values(rollout_check_value, check)", "refId": "check"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    return (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description("Staged rollout of the AI answer caches: stage, gates, transitions.")
        .tags(["ai-cache", "rollout"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(p.datasource_variable())
        .with_variable(check_variable)
        .annotation(transitions_annotation())
        .annotation(p.annotation("Rollout paused", "max(rollout_paused) > 0", "orange"))
        .with_row(dash.Row("Now").id(100))
        .with_panel(
            p.stat_panel(
                1,
                "Current stage",
                "Stage the controller has applied (rollout_stage_index).",
                [("max(rollout_stage_index)", "stage")],
                mapping=STAGE_NAMES,
                width=6,
            )
        )
        .with_panel(
            p.stat_panel(
                2,
                "Paused",
                "1 while an operator paused the controller (rollout pause).",
                [("max(rollout_paused)", "paused")],
                mapping={0: ("running", "green"), 1: ("PAUSED", "orange")},
                width=4,
            )
        )
        .with_panel(
            p.stat_panel(
                3,
                "Time in stage",
                "Since the controller entered the current stage; compare with the stage's bake.",
                [(TIME_IN_STAGE, "in stage")],
                unit="dtdurations",
                width=5,
            )
        )
        .with_panel(
            p.stat_panel(
                4,
                "Controllers up / leaders",
                "Exactly one leader is healthy; 0 means nobody acts.",
                [
                    ('sum(up{job="rollout-controller"})', "up"),
                    ("sum(rollout_is_leader)", "leaders"),
                ],
                steps=((None, "red"), (1, "green"), (2, "red")),
                width=5,
            )
        )
        .with_panel(
            p.stat_panel(
                5,
                "Last evaluation",
                "Age of the controller's last evaluation cycle.",
                [("time() - max(rollout_last_evaluation_timestamp_seconds)", "age")],
                unit="s",
                steps=((None, "green"), (300, "orange"), (600, "red")),
                width=4,
            )
        )
        .with_row(dash.Row("Stages and gates").id(101))
        .with_panel(
            p.state_panel(
                6,
                "Stage timeline",
                "Stage over time; transitions are also drawn as annotations.",
                [("max(rollout_stage_index)", "stage")],
                STAGE_NAMES,
                height=4,
            )
        )
        .with_panel(
            p.state_panel(
                7,
                "Gate verdicts",
                "Worst verdict per check in each interval. A gate must pass to advance: "
                "inconclusive (evidence still accumulating), no_data and error hold the stage. "
                "A guardrail's fail rolls back; objectives are only reported.",
                [(VERDICT_TIMELINE, "{{check}}")],
                VERDICTS,
                height=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                8,
                "Gate value: $check",
                "The value the controller measured for this check (rollout_check_value) and "
                "the limit it was judged against (rollout_check_threshold, relative limits "
                "already multiplied out by the baseline). For a statistical check the value "
                "is the point estimate of its counts since the stage's flags were confirmed "
                "(a rate, or cohort minus control) and the threshold its limit; the verdict "
                "comes from the confidence bound, not from this line. Gaps: no_data.",
                [
                    ('rollout_check_value{check=~"$check"}', "value"),
                    ('rollout_check_threshold{check=~"$check"}', "threshold"),
                ],
                width=24,
                min_value=None,
            )
            .repeat("check")
            .repeat_direction("h")
        )
        .with_panel(
            p.table_panel(
                9,
                "Gates over the selected range",
                "Latest value and threshold, and verdict counts per check.",
                [
                    ("max by (check) (rollout_check_value)", ""),
                    ("max by (check) (rollout_check_threshold)", ""),
                    (
                        'sum by (check) (increase(rollout_checks_total{verdict="pass"}[$__range]))',
                        "",
                    ),
                    (
                        'sum by (check) (increase(rollout_checks_total{verdict="fail"}[$__range]))',
                        "",
                    ),
                    (
                        'sum by (check) (increase(rollout_checks_total{verdict="no_data"}'
                        "[$__range]))",
                        "",
                    ),
                    (
                        'sum by (check) (increase(rollout_checks_total{verdict="error"}'
                        "[$__range]))",
                        "",
                    ),
                    (
                        'sum by (check) (increase(rollout_checks_total{verdict="inconclusive"}'
                        "[$__range]))",
                        "",
                    ),
                ],
                rename={
                    "Value #A": "value",
                    "Value #B": "threshold",
                    "Value #C": "pass",
                    "Value #D": "fail",
                    "Value #E": "no_data",
                    "Value #F": "error",
                    "Value #G": "inconclusive",
                },
            )
        )
        .with_panel(
            p.table_panel(
                11,
                "Transitions counted by the running controller",
                "Counters restart with the "
                "process; the event log (rollout history) has the full record.",
                [("sum by (from_stage, to_stage, kind) (rollout_transitions_total)", "")],
                rename={"Value": "count"},
            )
        )
        .with_panel(
            p.timeseries_panel(
                10,
                "Evaluations that hold the stage",
                "inconclusive (evidence still accumulating; the status says how much more it "
                "needs), no_data (no traffic, no cohort, no baseline yet) and error "
                "(Prometheus unreachable) per check and minute.",
                [
                    (
                        "sum by (check, verdict) ("
                        'rate(rollout_checks_total{verdict=~"inconclusive|no_data|error"}'
                        "[$__rate_interval])) * 60",
                        "{{check}} {{verdict}}",
                    )
                ],
                unit="short",
                width=24,
            )
        )
        .with_row(dash.Row("What the gates look at").id(102))
        .with_panel(
            p.timeseries_panel(
                12,
                "Error ratio per L1 cohort",
                "L1 cohort (on) against its concurrent control (off), and the gap: "
                "l1_cohort_error_guardrail rolls back once the gap is proven above 1 point, "
                "l1_cohort_error_rate_vs_control must show it within 1 point to advance.",
                [
                    ("job_l1:ai_agent_queries_error_ratio:rate5m", "L1 {{l1}}"),
                    (COHORT_ERROR_GAP, "on \u2212 off"),
                ],
                unit="percentunit",
                width=8,
                min_value=None,
            )
        )
        .with_panel(
            p.timeseries_panel(
                17,
                "Slow answers (> 2.04 s) per L1 cohort",
                "Share of answers slower than the le=2.04 bucket, the boundary nearest 2.0 s: "
                "how the controller judges latency. l1_cohort_slow_share_vs_control compares "
                "the cohorts (margin 2 points); slow_answers_guardrail compares the stage with "
                "the share recorded in off.",
                [
                    (SLOW_SHARE_BY_COHORT, "L1 {{l1}}"),
                    (SLOW_SHARE, "all"),
                ],
                unit="percentunit",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                13,
                "p95 and mean latency per L1 cohort",
                "From the service histogram, 5 m window. " + FINE_BUCKETS + " The p95 "
                "objectives (20 % and 40 % below the baseline) are reported, never enforced.",
                [
                    (
                        'job_l1:ai_agent_query_duration_seconds:quantile_rate5m{quantile="0.95"}',
                        "p95 L1 {{l1}}",
                    ),
                    ("job_l1:ai_agent_query_duration_seconds:mean_rate5m", "mean L1 {{l1}}"),
                ],
                unit="s",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                14,
                "Hit ratio per layer and mode",
                "shadow = would-be hits (dark launch).",
                [
                    (
                        "job_cache_layer_mode:ai_agent_cache_hit_ratio:rate5m",
                        "{{cache_layer}} {{mode}}",
                    )
                ],
                unit="percentunit",
                width=8,
                max_value=1,
            )
        )
        .with_panel(
            p.timeseries_panel(
                15,
                "Cost per query",
                "Upstream spend divided by queries answered.",
                [("job:ai_agent_cost_per_query_usd:rate5m", "USD per query")],
                unit="currencyUSD",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                16,
                "Integrity: stale or mismatched cache values",
                "L1: audits of answers found stale or mismatched, among all L1 audits "
                "(cache_integrity_guardrail, rolls back to l2; gates l1_stale_rate_1pct / "
                "0_3pct / 0_1pct, evidence since l1-10). L2: embeddings that mismatched, "
                "among embedding verifications (l2_integrity_guardrail, rolls back to "
                "dark-launch). Dashed: the guardrails' 0.5 % limit.",
                [
                    (L1_AUDIT_FAILURES, "L1 audits stale or mismatched"),
                    (L2_MISMATCHES, "L2 embeddings mismatched"),
                ],
                unit="percentunit",
                threshold=0.005,
                width=8,
            )
        )
        .with_panel(
            p.stat_panel(
                18,
                "L1 audits in range",
                "Audited L1 answers and how many were stale or mismatched, over the "
                "dashboard's range. The stale-rate bounds tighten with the audit count: "
                "showing < 0.1 % takes a few thousand clean audits.",
                [
                    (L1_AUDITS_IN_RANGE, "audits"),
                    (L1_AUDIT_FAILURES_IN_RANGE, "stale or mismatched"),
                ],
                unit="short",
                width=12,
            )
        )
        .with_panel(
            p.stat_panel(
                19,
                "L2 embedding verifications in range",
                "Cached embeddings compared with fresh ones (shadow mode, L2 not serving) and "
                "how many mismatched, over the dashboard's range.",
                [
                    (L2_VERIFICATIONS_IN_RANGE, "verifications"),
                    (L2_MISMATCHES_IN_RANGE, "mismatched"),
                ],
                unit="short",
                width=12,
            )
        )
    )
