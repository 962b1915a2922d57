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
# Worst verdict of an interval, as a number a state timeline can colour.
VERDICTS = {
    0: ("pass", "green"),
    1: ("no_data", "gray"),
    2: ("error", "orange"),
    3: ("fail", "red"),
}

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
                "Worst verdict per check in each interval. no_data and error "
                "hold the stage; fail counts toward rollback.",
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
                "already multiplied out by the baseline). Gaps: no_data.",
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
                ],
                rename={
                    "Value #A": "value",
                    "Value #B": "threshold",
                    "Value #C": "pass",
                    "Value #D": "fail",
                    "Value #E": "no_data",
                    "Value #F": "error",
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
                "Inconclusive evaluations",
                "no_data (too little traffic) and error (Prometheus "
                "unreachable) per check and minute.",
                [
                    (
                        "sum by (check, verdict) ("
                        'rate(rollout_checks_total{verdict=~"no_data|error"}[$__rate_interval])'
                        ") * 60",
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
                "L1 cohort (on) against its control (off).",
                [("job_l1:ai_agent_queries_error_ratio:rate5m", "L1 {{l1}}")],
                unit="percentunit",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                13,
                "p95 latency per L1 cohort",
                "From the service histogram, 5 m window.",
                [
                    (
                        'job_l1:ai_agent_query_duration_seconds:quantile_rate5m{quantile="0.95"}',
                        "L1 {{l1}}",
                    )
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
            )
        )
        .with_panel(
            p.timeseries_panel(
                16,
                "Stale or mismatched cache values",
                "Share of verifications per layer.",
                [
                    (
                        "job_cache_layer_result:ai_agent_cache_verifications:ratio_rate5m"
                        '{result=~"stale|mismatch"}',
                        "{{cache_layer}} {{result}}",
                    )
                ],
                unit="percentunit",
                threshold=0.001,
            )
        )
    )
