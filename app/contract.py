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

# Buckets of ai_agent_query_duration_seconds: fine around an L1 hit (~ms) and around the
# seed's 1.75 s full RAG answer, so p95 gates are meaningful at both ends.
QUERY_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0,
)

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
