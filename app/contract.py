"""The service's public contract: names shared with the controller, alerts and dashboards.

`rollout` may import this module and nothing else from `app` (enforced by import-linter).
Changing a name here is a breaking change for alerts/, grafana/ and the rollout plan.
"""

from __future__ import annotations

from typing import Final

# --- Flags (Unleash toggle names) -------------------------------------------------------
FLAG_SHADOW_MODE: Final = "ai-cache-shadow-mode"
FLAG_L2_EMBEDDINGS: Final = "ai-cache-l2-embeddings"
FLAG_L1_QUERY_RESULTS: Final = "ai-cache-l1-query-results"
ALL_FLAGS: Final = (FLAG_SHADOW_MODE, FLAG_L2_EMBEDDINGS, FLAG_L1_QUERY_RESULTS)

# The L1 flag's flexibleRollout strategy: its groupId feeds the murmur3 bucketing, so it is
# part of the contract (a workspace in the 10 % stays in the 50 % only if it never changes).
L1_ROLLOUT_GROUP_ID: Final = FLAG_L1_QUERY_RESULTS
DEFAULT_STICKINESS: Final = "userId"  # Unleash context field that carries the workspace id

# --- Local flag store (Redis hash) -----------------------------------------------------
LOCAL_FLAGS_KEY: Final = "ai-cache:flags"
LOCAL_FIELD_SHADOW: Final = "shadow"  # "0" | "1"
LOCAL_FIELD_L2: Final = "l2"  # "0" | "1"
LOCAL_FIELD_L1_PERCENT: Final = "l1_percent"  # "0".."100"
LOCAL_FIELD_BY_FLAG: Final = {
    FLAG_SHADOW_MODE: LOCAL_FIELD_SHADOW,
    FLAG_L2_EMBEDDINGS: LOCAL_FIELD_L2,
    FLAG_L1_QUERY_RESULTS: LOCAL_FIELD_L1_PERCENT,
}

# --- Metric names and label values -------------------------------------------------------
METRIC_CACHE_HITS: Final = "ai_agent_cache_hits_total"
METRIC_CACHE_MISSES: Final = "ai_agent_cache_misses_total"
METRIC_CACHE_INVALIDATIONS: Final = "ai_agent_cache_invalidations_total"
METRIC_QUERY_DURATION: Final = "ai_agent_query_duration_seconds"
METRIC_QUERIES: Final = "ai_agent_queries_total"
METRIC_UPSTREAM_REQUESTS: Final = "ai_agent_upstream_requests_total"
METRIC_UPSTREAM_COST: Final = "ai_agent_upstream_cost_usd_total"
METRIC_CACHE_ERRORS: Final = "ai_agent_cache_errors_total"
METRIC_CACHE_VERIFICATIONS: Final = "ai_agent_cache_verifications_total"
METRIC_FLAG_STATE: Final = "ai_agent_flag_state"
METRIC_CACHE_CIRCUIT_OPEN: Final = "ai_agent_cache_circuit_open"  # added: 1 while Redis is bypassed
# Durable invalidation (the outbox, issue 11): intents pending as of this replica's last read,
# intents applied (`via` = write: by the writer right after its commit | relay: retried by
# any replica), relay attempts by outcome, outbox reads by outcome, and 1 while this replica
# serves no L1 at all because its last read of the outbox is older than the lease.
METRIC_INVALIDATION_PENDING: Final = "ai_agent_cache_invalidation_intents_pending"
METRIC_INVALIDATION_APPLIED: Final = "ai_agent_cache_invalidation_intents_applied_total"
METRIC_INVALIDATION_RETRIES: Final = "ai_agent_cache_invalidation_retries_total"
METRIC_INVALIDATION_READS: Final = "ai_agent_cache_invalidation_outbox_reads_total"
METRIC_INVALIDATION_VIEW_STALE: Final = "ai_agent_cache_invalidation_view_stale"
# Cache fills run after the response is sent (issue 15); one that found CACHE_FILL_MAX_RUNNING
# fills running already (Redis slow) is dropped and counted here: a later miss, not an error.
METRIC_CACHE_FILLS_DROPPED: Final = "ai_agent_cache_fills_dropped_total"
APPLIED_VIA_WRITE: Final = "write"
APPLIED_VIA_RELAY: Final = "relay"
OUTCOME_TIMEOUT: Final = "timeout"  # an outbox read that did not answer within half a lease

LAYER_EMBEDDING: Final = "embedding"  # L2
LAYER_QUERY_RESULT: Final = "query_result"  # L1
MODE_SERVE: Final = "serve"
MODE_SHADOW: Final = "shadow"
COHORT_ON: Final = "on"
COHORT_OFF: Final = "off"
OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
VERIFY_MATCH: Final = "match"
VERIFY_MISMATCH: Final = "mismatch"
VERIFY_STALE: Final = "stale"
UPSTREAM_EMBED: Final = "embed"
UPSTREAM_CHAT: Final = "chat"

# Buckets of ai_agent_query_duration_seconds: coarse below 50 ms (L1 hits, only counted), then
# at most 10 % apart up to 10 s (DESIGN.md §7), so a p95 read from the histogram is within
# 10 % of the truth and "slower than a bucket boundary" can be judged near any latency.
# 65 boundaries: with `+Inf`, `_sum` and `_count` and the `l1` label (on/off), a replica
# exports 2 x (65 + 3) = 136 series of this histogram.
QUERY_DURATION_MAX_STEP: Final = 1.10


def _query_duration_buckets() -> tuple[float, ...]:
    bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05]
    while bounds[-1] < 10.0:
        # Three significant digits keep the `le` labels readable; 1.095 leaves room for the
        # rounding under the 10 % step.
        step = float(f"{bounds[-1] * 1.095:.3g}")
        bounds.append(min(step, 10.0))
    return tuple(bounds)


QUERY_DURATION_BUCKETS: Final = _query_duration_buckets()

# --- Controller metrics ----------------------------------------------------------------
METRIC_ROLLOUT_STAGE_INDEX: Final = "rollout_stage_index"
METRIC_ROLLOUT_STAGE_INFO: Final = "rollout_stage_info"
METRIC_ROLLOUT_PAUSED: Final = "rollout_paused"
METRIC_ROLLOUT_TRANSITIONS: Final = "rollout_transitions_total"
METRIC_ROLLOUT_CHECKS: Final = "rollout_checks_total"
METRIC_ROLLOUT_CHECK_VALUE: Final = "rollout_check_value"
METRIC_ROLLOUT_LAST_EVALUATION: Final = "rollout_last_evaluation_timestamp_seconds"
METRIC_ROLLOUT_IS_LEADER: Final = "rollout_is_leader"

# --- Stages (DESIGN.md §7) ----------------------------------------------------------------
STAGES: Final = ("off", "dark-launch", "l2", "l1-10", "l1-50", "l1-100")
