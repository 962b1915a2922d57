"""The service's Prometheus metrics, registered on an injected registry (fresh per test).

With several worker processes (app/serve.py) prometheus_client runs in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR set before the workers start): values live in files shared by the
workers, and /metrics exposes their sum (`exposed`); gauges then report the largest value
among live workers.
"""

from __future__ import annotations

import os
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app import contract as c

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# For gauges across workers: the largest value of a live worker (a flag, a breaker open, an
# intent pending anywhere in the process group is what an alert must see).
_ACROSS_WORKERS: Final = "livemax"


class ServiceMetrics:
    """All metrics of DESIGN.md §6 that the service exports; names come from `app.contract`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.exposed = _exposed(registry)
        self.cache_hits = Counter(
            c.METRIC_CACHE_HITS.removesuffix("_total"), "Cache hits.",
            ["workspace_id", "cache_layer", "mode"], registry=registry,
        )
        self.cache_misses = Counter(
            c.METRIC_CACHE_MISSES.removesuffix("_total"), "Cache misses.",
            ["workspace_id", "cache_layer", "mode"], registry=registry,
        )
        self.cache_invalidations = Counter(
            c.METRIC_CACHE_INVALIDATIONS.removesuffix("_total"),
            "Generation bumps that invalidated cached answers.",
            ["workspace_id", "reason"], registry=registry,
        )
        self.query_duration = Histogram(
            c.METRIC_QUERY_DURATION, "Time to answer a query, by the request's L1 cohort.",
            ["l1"], buckets=c.QUERY_DURATION_BUCKETS, registry=registry,
        )
        self.queries = Counter(
            c.METRIC_QUERIES.removesuffix("_total"), "Queries answered, by outcome and L1 cohort.",
            ["outcome", "l1"], registry=registry,
        )
        self.upstream_requests = Counter(
            c.METRIC_UPSTREAM_REQUESTS.removesuffix("_total"), "Calls to the AI provider.",
            ["kind", "outcome"], registry=registry,
        )
        self.upstream_cost = Counter(
            c.METRIC_UPSTREAM_COST.removesuffix("_total"), "Estimated provider spend in USD.",
            ["kind"], registry=registry,
        )
        self.cache_errors = Counter(
            c.METRIC_CACHE_ERRORS.removesuffix("_total"),
            "Redis failures on the cache path (the request fell back to the fresh path).",
            ["cache_layer", "op"], registry=registry,
        )
        self.cache_verifications = Counter(
            c.METRIC_CACHE_VERIFICATIONS.removesuffix("_total"),
            "Cached values checked against fresh ones (shadow mode and sampled L1 audits).",
            ["cache_layer", "result"], registry=registry,
        )
        self.cache_fills_dropped = Counter(
            c.METRIC_CACHE_FILLS_DROPPED.removesuffix("_total"),
            "Cache fills skipped because too many were running (Redis slow); a later miss.",
            registry=registry,
        )
        self.flag_state = Gauge(
            c.METRIC_FLAG_STATE,
            "Flag value this instance applies (0/1; percentage for the L1 rollout).",
            ["flag"], registry=registry, multiprocess_mode=_ACROSS_WORKERS,
        )
        self.cache_circuit_open = Gauge(
            c.METRIC_CACHE_CIRCUIT_OPEN, "1 while the Redis circuit breaker is open.",
            registry=registry, multiprocess_mode=_ACROSS_WORKERS,
        )
        self.invalidation_pending = Gauge(
            c.METRIC_INVALIDATION_PENDING,
            "Invalidation intents pending in the outbox, as of this replica's last read.",
            registry=registry, multiprocess_mode=_ACROSS_WORKERS,
        )
        self.invalidation_applied = Counter(
            c.METRIC_INVALIDATION_APPLIED.removesuffix("_total"),
            "Invalidation intents applied to Redis and removed from the outbox.",
            ["via"], registry=registry,
        )
        self.invalidation_retries = Counter(
            c.METRIC_INVALIDATION_RETRIES.removesuffix("_total"),
            "Attempts to apply pending invalidation intents left by a write.",
            ["outcome"], registry=registry,
        )
        self.invalidation_reads = Counter(
            c.METRIC_INVALIDATION_READS.removesuffix("_total"),
            "Reads of the invalidation outbox, by outcome.",
            ["outcome"], registry=registry,
        )
        self.invalidation_view_stale = Gauge(
            c.METRIC_INVALIDATION_VIEW_STALE,
            "1 while this replica serves no L1 answer: its last outbox read is too old.",
            registry=registry, multiprocess_mode=_ACROSS_WORKERS,
        )
        # Pre-create the label sets that dashboards and alerts divide by, so a fresh process
        # exports zeros rather than nothing.
        for cohort in (c.COHORT_ON, c.COHORT_OFF):
            for outcome in (c.OUTCOME_OK, c.OUTCOME_ERROR):
                self.queries.labels(outcome=outcome, l1=cohort)
        for kind in (c.UPSTREAM_EMBED, c.UPSTREAM_CHAT):
            self.upstream_cost.labels(kind=kind)
            for outcome in (c.OUTCOME_OK, c.OUTCOME_ERROR):
                self.upstream_requests.labels(kind=kind, outcome=outcome)
        for layer in (c.LAYER_EMBEDDING, c.LAYER_QUERY_RESULT):
            for result in (c.VERIFY_MATCH, c.VERIFY_MISMATCH, c.VERIFY_STALE):
                self.cache_verifications.labels(cache_layer=layer, result=result)
        for flag in c.ALL_FLAGS:
            self.flag_state.labels(flag=flag).set(0)
        self.cache_circuit_open.set(0)
        for via in (c.APPLIED_VIA_WRITE, c.APPLIED_VIA_RELAY):
            self.invalidation_applied.labels(via=via)
        for outcome in (c.OUTCOME_OK, c.OUTCOME_ERROR):
            self.invalidation_retries.labels(outcome=outcome)
        for outcome in (c.OUTCOME_OK, c.OUTCOME_ERROR, c.OUTCOME_TIMEOUT):
            self.invalidation_reads.labels(outcome=outcome)
        self.invalidation_view_stale.set(1)  # nothing read yet
        # Children bound once (`labels()` takes a lock and builds a key every call): the hot
        # path counts through these.
        self.queries_by = {(outcome, cohort): self.queries.labels(outcome=outcome, l1=cohort)
                           for cohort in (c.COHORT_ON, c.COHORT_OFF)
                           for outcome in (c.OUTCOME_OK, c.OUTCOME_ERROR)}
        self.query_duration_by = {cohort: self.query_duration.labels(l1=cohort)
                                  for cohort in (c.COHORT_ON, c.COHORT_OFF)}
        self._cache_lookups: dict[tuple[bool, str, str, str], Any] = {}

    def count_lookup(self, hit: bool, workspace_id: str, layer: str, mode: str) -> None:
        """One cache hit or miss of a workspace, through a child bound on first use."""
        key = (hit, workspace_id, layer, mode)
        child = self._cache_lookups.get(key)
        if child is None:
            counter = self.cache_hits if hit else self.cache_misses
            child = self._cache_lookups[key] = counter.labels(
                workspace_id=workspace_id, cache_layer=layer, mode=mode)
        child.inc()


def _exposed(own: CollectorRegistry) -> CollectorRegistry:
    """`own` in one process; in a worker of several, a registry that adds up every worker's
    values from PROMETHEUS_MULTIPROC_DIR."""
    if not os.environ.get(MULTIPROC_ENV):
        return own
    from prometheus_client import multiprocess  # noqa: PLC0415 - only in that mode

    shared = CollectorRegistry()
    multiprocess.MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
    return shared
