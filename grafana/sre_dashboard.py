"""The on-call SRE's dashboard: is the service healthy, are the caches earning their keep,
is Redis coping, do the replicas agree on the flags."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from grafana import panels as p
from grafana.rollout_dashboard import (
    COHORT_ERROR_GAP,
    FINE_BUCKETS,
    L1_AUDIT_FAILURES,
    L1_AUDIT_FAILURES_IN_RANGE,
    L1_AUDITS_IN_RANGE,
    L2_MISMATCHES,
    L2_MISMATCHES_IN_RANGE,
    L2_VERIFICATIONS_IN_RANGE,
    SLOW_SHARE,
    SLOW_SHARE_BY_COHORT,
    STAGE_NAMES,
    transitions_annotation,
)

UID = "ai-cache-sre"
TITLE = "AI cache (SRE)"

# The seed's own queries, verbatim: they are the compatibility test of the metric names.
SEED_HIT_RATE = """sum(rate(ai_agent_cache_hits_total[5m])) by (cache_layer)
/
( sum(rate(ai_agent_cache_hits_total[5m])) by (cache_layer)
+ sum(rate(ai_agent_cache_misses_total[5m])) by (cache_layer) )"""
SEED_SAVINGS = 'sum(rate(ai_agent_cache_hits_total{cache_layer="query_result"}[5m])) * 0.017 * 3600'
SEED_P95 = "histogram_quantile(0.95, sum(rate(ai_agent_query_duration_seconds_bucket[5m])) by (le))"
# What AIAgentLowCacheHitRate evaluates (1 h window, all layers and modes, traffic-guarded).
ALERT_HIT_RATE = """(sum(rate(ai_agent_cache_hits_total[1h])) or vector(0))
/
((sum(rate(ai_agent_cache_hits_total[1h])) or vector(0))
  + (sum(rate(ai_agent_cache_misses_total[1h])) or vector(0)) > 0)"""
# The same, per workspace: the ten lowest (a tenant importing notes misses by design; the
# runbook's first question is "one workspace or all of them?").
WORKSPACE_HIT_RATE = """bottomk(10,
  (sum by (workspace_id) (rate(ai_agent_cache_hits_total[1h]))
    or sum by (workspace_id) (rate(ai_agent_cache_misses_total[1h])) * 0)
  /
  ((sum by (workspace_id) (rate(ai_agent_cache_hits_total[1h]))
    or sum by (workspace_id) (rate(ai_agent_cache_misses_total[1h])) * 0)
    + (sum by (workspace_id) (rate(ai_agent_cache_misses_total[1h]))
      or sum by (workspace_id) (rate(ai_agent_cache_hits_total[1h])) * 0) > 0)
)"""

UP_DOWN = {0: ("down", "red"), 1: ("up", "green")}
CLUSTER_STATE = {0: ("fail", "red"), 1: ("ok", "green")}
ROLES = {0: ("replica", "blue"), 1: ("master", "purple")}
# 1 on a master, 0 on a replica, per cluster node (redis_instance_info carries the role).
NODE_ROLE = """max by (instance) (
  redis_instance_info{role="master"} and on(job, instance) redis_cluster_enabled == 1)
or max by (instance) (
  redis_instance_info{role="slave"} and on(job, instance) redis_cluster_enabled == 1) * 0"""
# What AIAgentRedisClusterMasterWithoutReplica reads, without its == 0.
REPLICAS_PER_MASTER = """redis_connected_slaves
and on(job, instance) redis_instance_info{role="master"}
and on(job, instance) redis_cluster_enabled == 1"""


def build() -> dash.Dashboard:
    return (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description("Service, caches, cost, Redis and flags of the AI answer caches.")
        .tags(["ai-cache", "sre"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(p.datasource_variable())
        .annotation(transitions_annotation())
        .with_row(dash.Row("Overview").id(100))
        .with_panel(
            p.stat_panel(
                1,
                "Queries/s",
                "All replicas, 5 m rate.",
                [("sum(job:ai_agent_queries:rate5m)", "queries/s")],
                unit="reqps",
            )
        )
        .with_panel(
            p.stat_panel(
                2,
                "Error ratio",
                "AIAgentHighErrorRate pages above 5 %.",
                [("max(job:ai_agent_queries_error_ratio:rate5m)", "errors")],
                unit="percentunit",
                steps=((None, "green"), (0.01, "orange"), (0.05, "red")),
            )
        )
        .with_panel(
            p.stat_panel(
                3,
                "p95 latency",
                "AIAgentLatencyP95High fires above 2.5 s. " + FINE_BUCKETS,
                [
                    (
                        'max(job:ai_agent_query_duration_seconds:quantile_rate5m{quantile="0.95"})',
                        "p95",
                    )
                ],
                unit="s",
                steps=((None, "green"), (1.75, "orange"), (2.5, "red")),
            )
        )
        .with_panel(
            p.stat_panel(
                4,
                "Cost per query",
                "Upstream spend per answered query (seed: $0.017 uncached).",
                [("max(job:ai_agent_cost_per_query_usd:rate5m)", "USD")],
                unit="currencyUSD",
            )
        )
        .with_panel(
            p.stat_panel(
                5,
                "Hit rate, all layers (1 h)",
                "Exactly what AIAgentLowCacheHitRate evaluates; "
                "below 30 % for 2 h it fires. No data = no cache lookups.",
                [(ALERT_HIT_RATE, "hit rate")],
                unit="percentunit",
                steps=((None, "red"), (0.3, "green")),
            )
        )
        .with_panel(
            p.stat_panel(
                6,
                "Scrape targets",
                "up per target: the service replicas, the controller, "
                "redis_exporter. Missing here = not scraped at all.",
                [('up{job=~"ai-cache-service|rollout-controller|redis"}', "{{job}} {{instance}}")],
                mapping=UP_DOWN,
                steps=((None, "red"), (1, "green")),
            )
        )
        .with_row(dash.Row("Traffic and errors").id(101))
        .with_panel(
            p.timeseries_panel(
                10,
                "Queries by outcome and L1 cohort",
                "l1=on: the request's workspace is in the L1 rollout percentage.",
                [
                    (
                        "sum by (outcome, l1) (rate(ai_agent_queries_total[$__rate_interval]))",
                        "{{outcome}} L1 {{l1}}",
                    )
                ],
                unit="reqps",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                11,
                "Error ratio per L1 cohort",
                "Dashed line: AIAgentHighErrorRate threshold (5 %). on \u2212 off is the L1 "
                "cohort's gap to its control: AIAgentL1CohortErrorRateAboveControl fires above "
                "1 point, the controller's l1_cohort_error_guardrail margin.",
                [
                    ("job_l1:ai_agent_queries_error_ratio:rate5m", "L1 {{l1}}"),
                    ("job:ai_agent_queries_error_ratio:rate5m", "all"),
                    (COHORT_ERROR_GAP, "on \u2212 off"),
                ],
                unit="percentunit",
                threshold=0.05,
                width=8,
                min_value=None,
            )
        )
        .with_panel(
            p.timeseries_panel(
                12,
                "Latency p50 / p95 / p99 per L1 cohort",
                "Dashed line: the 2.5 s p95 target. " + FINE_BUCKETS,
                [
                    (
                        "job_l1:ai_agent_query_duration_seconds:quantile_rate5m",
                        "p{{quantile}} L1 {{l1}}",
                    ),
                    (SEED_P95, "p95 all (seed query)"),
                ],
                unit="s",
                threshold=2.5,
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                13,
                "Slow answers (> 2.04 s) per L1 cohort",
                "Share of answers slower than the le=2.04 bucket (the boundary nearest 2.0 s): "
                "what the controller's slow_answers_guardrail and "
                "l1_cohort_slow_share_vs_control count (margin 2 points).",
                [(SLOW_SHARE_BY_COHORT, "L1 {{l1}}"), (SLOW_SHARE, "all")],
                unit="percentunit",
            )
        )
        .with_panel(
            p.timeseries_panel(
                14,
                "Mean latency per L1 cohort",
                "Sum over count of the histogram, 5 m window: the seed's average row.",
                [
                    ("job_l1:ai_agent_query_duration_seconds:mean_rate5m", "L1 {{l1}}"),
                    ("job:ai_agent_query_duration_seconds:mean_rate5m", "all"),
                ],
                unit="s",
            )
        )
        .with_row(dash.Row("Caches").id(102))
        .with_panel(
            p.timeseries_panel(
                20,
                "Hit ratio per layer and mode",
                "embedding = L2, query_result = L1; shadow = "
                "would-be hits. Dashed: the seed's 30 %.",
                [
                    (
                        "job_cache_layer_mode:ai_agent_cache_hit_ratio:rate5m",
                        "{{cache_layer}} {{mode}}",
                    )
                ],
                unit="percentunit",
                threshold=0.3,
                width=8,
                max_value=1,
            )
        )
        .with_panel(
            p.timeseries_panel(
                21,
                "Hit rate per layer (seed query)",
                "The seed design's query, unchanged.",
                [(SEED_HIT_RATE, "{{cache_layer}}")],
                unit="percentunit",
                width=8,
                max_value=1,
            )
        )
        .with_panel(
            p.timeseries_panel(
                22,
                "Lookups per layer and mode",
                "Cache reads; zero while flags are on means the "
                "cache path is bypassed (AIAgentCacheLookupsMissing).",
                [
                    (
                        "job_cache_layer_mode:ai_agent_cache_lookups:rate5m",
                        "{{cache_layer}} {{mode}}",
                    )
                ],
                unit="reqps",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                23,
                "Invalidations by reason",
                "Generation bumps from session writes and operators.",
                [
                    (
                        "sum by (reason) ("
                        "rate(ai_agent_cache_invalidations_total[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                unit="ops",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                24,
                "Verification results",
                "Shadow checks and sampled audits of served L1 hits.",
                [
                    (
                        "sum by (cache_layer, result) (rate(ai_agent_cache_verifications_total"
                        "[$__rate_interval]))",
                        "{{cache_layer}} {{result}}",
                    )
                ],
                unit="ops",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                25,
                "Stale or mismatched share",
                "What AIAgentCacheStaleOrMismatch evaluates (dashed: 0.1 %): L1 audits found "
                "stale or mismatched among L1 audits, L2 embeddings mismatched among embedding "
                "verifications. The controller's integrity guardrails roll back once the "
                "same counts prove more than 0.5 %.",
                [
                    (L1_AUDIT_FAILURES, "L1 audits stale or mismatched"),
                    (L2_MISMATCHES, "L2 embeddings mismatched"),
                ],
                unit="percentunit",
                threshold=0.001,
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                26,
                "Redis errors on the cache path",
                "Fail-open errors per layer and operation. Dashed: AIAgentCacheErrors (0.1/s).",
                [
                    (
                        "sum by (cache_layer, op) ("
                        "rate(ai_agent_cache_errors_total[$__rate_interval]))",
                        "{{cache_layer}} {{op}}",
                    )
                ],
                unit="ops",
                threshold=0.1,
            )
        )
        .with_panel(
            p.state_panel(
                27,
                "Circuit breaker per replica",
                "open = the replica bypasses Redis.",
                [("max by (instance) (ai_agent_cache_circuit_open)", "{{instance}}")],
                {0: ("closed", "green"), 1: ("open", "red")},
                width=12,
                height=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                53,
                "Hit rate per workspace (1 h, the 10 lowest)",
                "What AIAgentLowCacheHitRate evaluates, per workspace: one tenant low "
                "(new notes, a bulk import) or all of them? Dashed: the alert's 30 %.",
                [(WORKSPACE_HIT_RATE, "{{workspace_id}}")],
                unit="percentunit",
                threshold=0.3,
                width=24,
                max_value=1,
            )
        )
        .with_panel(
            p.stat_panel(
                28,
                "Audits and verifications in range",
                "Over the dashboard's range: audited L1 answers and how many were stale or "
                "mismatched; cached embeddings verified (shadow mode, L2 not serving) and how "
                "many mismatched. A ratio on a handful of audits means little.",
                [
                    (L1_AUDITS_IN_RANGE, "L1 audits"),
                    (L1_AUDIT_FAILURES_IN_RANGE, "L1 stale or mismatched"),
                    (L2_VERIFICATIONS_IN_RANGE, "L2 verifications"),
                    (L2_MISMATCHES_IN_RANGE, "L2 mismatched"),
                ],
                width=24,
            )
        )
        .with_row(dash.Row("Cost").id(103))
        .with_panel(
            p.timeseries_panel(
                30,
                "Upstream spend per hour",
                "AI provider cost by call kind.",
                [
                    (
                        "sum by (kind) ("
                        "rate(ai_agent_upstream_cost_usd_total[$__rate_interval])) * 3600",
                        "{{kind}}",
                    )
                ],
                unit="currencyUSD",
                width=6,
            )
        )
        .with_panel(
            p.timeseries_panel(
                31,
                "Cost per query",
                "Seed anchor: $0.017 uncached.",
                [("job:ai_agent_cost_per_query_usd:rate5m", "USD per query")],
                unit="currencyUSD",
                width=6,
            )
        )
        .with_panel(
            p.timeseries_panel(
                32,
                "Savings estimate per hour",
                "The seed's estimate ($0.017 per L1 hit) counts "
                "shadow hits too; split by mode, serve is money saved, shadow what L1 would save.",
                [
                    (SEED_SAVINGS, "seed estimate (all L1 hits)"),
                    ("job_mode:ai_agent_cache_l1_savings_usd_per_hour:rate5m", "{{mode}}"),
                ],
                unit="currencyUSD",
                width=6,
            )
        )
        .with_panel(
            p.timeseries_panel(
                33,
                "Upstream calls",
                "Calls to the AI provider by kind and outcome.",
                [
                    (
                        "sum by (kind, outcome) ("
                        "rate(ai_agent_upstream_requests_total[$__rate_interval]))",
                        "{{kind}} {{outcome}}",
                    )
                ],
                unit="reqps",
                width=6,
            )
        )
        .with_row(dash.Row("Redis").id(104))
        .with_panel(
            p.timeseries_panel(
                40,
                "Memory used and maxmemory",
                "maxmemory 0 = unlimited (AIAgentRedisMaxmemoryUnset).",
                [
                    ("redis_memory_used_bytes", "used {{instance}}"),
                    ("redis_memory_max_bytes", "maxmemory {{instance}}"),
                ],
                unit="bytes",
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                41,
                "Memory used / maxmemory",
                "Dashed: AIAgentRedisMemoryNearMax (90 %).",
                [("redis_memory_used_bytes / (redis_memory_max_bytes > 0)", "{{instance}}")],
                unit="percentunit",
                threshold=0.9,
                width=8,
                max_value=1,
            )
        )
        .with_panel(
            p.timeseries_panel(
                42,
                "Evictions",
                "Keys evicted before their TTL. Dashed: AIAgentRedisEvictions.",
                [("rate(redis_evicted_keys_total[$__rate_interval])", "{{instance}}")],
                unit="ops",
                threshold=1,
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                43,
                "OOM rejections",
                "Commands refused with OOM (errorstats), and all rejected "
                "calls (OOM, ACL, arity) for comparison.",
                [
                    ('rate(redis_errors_total{err="OOM"}[$__rate_interval])', "OOM {{instance}}"),
                    (
                        "sum by (instance) ("
                        "rate(redis_commands_rejected_calls_total[$__rate_interval]))",
                        "rejected calls {{instance}}",
                    ),
                ],
                unit="ops",
            )
        )
        .with_panel(
            p.state_panel(
                44,
                "Redis and exporter up",
                "redis_up: the exporter reaches Redis; up: Prometheus reaches the exporter.",
                [("redis_up", "redis {{instance}}"), ('up{job="redis"}', "exporter {{instance}}")],
                UP_DOWN,
                width=12,
                height=8,
            )
        )
        # A Redis Cluster: one series a node (instance = node host:port); empty on a
        # single Redis (redis_cluster_* exist only on cluster-enabled nodes).
        .with_panel(
            p.state_panel(
                45,
                "Cluster state per node",
                "CLUSTER INFO cluster_state as each node sees it. fail for 1 min: "
                "AIAgentRedisClusterDegraded (a failover with a replica ready passes in seconds).",
                [("redis_cluster_state", "{{instance}}")],
                CLUSTER_STATE,
                width=8,
                height=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                46,
                "Cluster slots per node",
                "Slots ok / in PFAIL / in FAIL of 16384, as each node sees them. "
                "Below 16384 ok for 1 min: AIAgentRedisClusterDegraded.",
                [
                    ("redis_cluster_slots_ok", "ok {{instance}}"),
                    ("redis_cluster_slots_pfail", "pfail {{instance}}"),
                    ("redis_cluster_slots_fail", "fail {{instance}}"),
                ],
                stepped=True,
                width=8,
            )
        )
        .with_panel(
            p.timeseries_panel(
                47,
                "Replicas per master",
                "Connected replicas of each master node. 0 for 5 min: "
                "AIAgentRedisClusterMasterWithoutReplica (its slots survive no further failure).",
                [(REPLICAS_PER_MASTER, "{{instance}}")],
                stepped=True,
                width=8,
            )
        )
        .with_panel(
            p.state_panel(
                48,
                "Role per node",
                "master or replica, per cluster node: a failover shows as a replica "
                "turning master (and the old master gone, then back as a replica).",
                [(NODE_ROLE, "{{instance}}")],
                ROLES,
                width=24,
                height=6,
            )
        )
        .with_row(dash.Row("Flags").id(105))
        .with_panel(
            p.timeseries_panel(
                50,
                "Flag state per replica",
                "What each replica applies (0/1; L1 in percent). "
                "Lines that differ for more than a few seconds: AIAgentFlagStateDisagreement.",
                [("ai_agent_flag_state", "{{flag}} @ {{instance}}")],
                stepped=True,
                width=12,
            )
        )
        .with_panel(
            p.timeseries_panel(
                51,
                "Flag spread between replicas",
                "max - min per flag; anything above 0 means replicas disagree.",
                [
                    (
                        "max by (flag) (ai_agent_flag_state) - min by (flag) (ai_agent_flag_state)",
                        "{{flag}}",
                    )
                ],
                stepped=True,
                width=6,
            )
        )
        .with_panel(
            p.state_panel(
                52,
                "Rollout stage",
                "The controller's stage, to read the flags against.",
                [("max(rollout_stage_index)", "stage")],
                STAGE_NAMES,
                width=6,
                height=8,
            )
        )
    )
