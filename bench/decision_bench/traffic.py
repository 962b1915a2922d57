"""Synthetic traffic: what every evaluation cycle brings, drawn once per run and read by both
plans (common random numbers), and the counters the service would export for it under a
stage's flags.

Per cycle, for each slice of the workspace buckets that the plans' L1 percentages cut
(0-10, 10-50, 50-100 for 10/50/100 %): Poisson arrivals at the rate over the cycle, then
per answer, independently:

* an error with p = 1 % (A/A: the same in both L1 cohorts and in the baseline); in the
  regression scenario the L1 cohort's answers err with 3 % instead (extra errors drawn
  among the non-errors, so the healthy errors are the same draws);
* a latency from one log-normal for every answer (A/A: caching makes nothing slower or
  faster), median 1.75 s (the seed's full RAG answer), 5 % slower than 2.04 s (the bucket
  boundary nearest 2 s), drawn as the counts above each histogram boundary near the p95;
* an L1 hit with p = 30 % (served in the L1 cohort, a shadow hit outside it while shadow
  mode is on) and an L2 hit with p = 45 % of the lookups that reach L2; never stale, never
  mismatched (the healthy case);
* cost as the seed: $0.002 an embedding, $0.015 a generation, so $0.017 a miss, $0.015
  when L2 served the embedding, nothing when L1 served the answer.

Counters follow the service's code (app/service/query.py): a served L1 hit does not look
L2 up; shadow mode looks both layers up and verifies what it finds (L1 shadow hits and L2
shadow hits), served L1 hits are audited up to 5 a second (L1_AUDIT_MAX_PER_SECOND, one
replica); L2 hits served while L2 is on are not verified.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from app import contract as c
from bench.decision_bench.promql import Array, Metric, metric
from rollout.core.boundaries import boundary_label
from rollout.core.flags import FlagSettings

IntArray = npt.NDArray[np.int64]

# The histogram boundaries simulated: every contract bucket from 1.09 s (below 0.6 x the p95,
# and below all but 1 in 10^6 answers) to 2.92 s (above all but 1 in 10^7), so
# histogram_quantile near the p95 and every `{le}` a plan asks for (2 s, 0.8 and 0.6 x the
# baseline p95) come out as Prometheus would compute them from the full histogram.
GRID_LOW: Final = 1.0
GRID_HIGH: Final = 3.0
GIB: Final = float(2**30)


@dataclass(frozen=True, slots=True)
class Traffic:
    """The service's behaviour, as rates; every share applies per answer."""

    rate: float  # queries per second over the whole service
    error: float = 0.01
    regression_error: float = 0.03  # the L1 cohort's error rate in the regression scenario
    latency_median: float = 1.75
    slow_boundary: float = 2.04  # 5 % of answers are slower than this (the p95)
    slow_share: float = 0.05
    l1_hit: float = 0.30
    l2_hit: float = 0.45
    audits_per_second: float = 5.0
    embed_cost: float = 0.002
    chat_cost: float = 0.015

    @property
    def sigma(self) -> float:
        z = _normal_quantile(1 - self.slow_share)
        return math.log(self.slow_boundary / self.latency_median) / z

    def slower_than(self, seconds: float) -> float:
        """P(latency > seconds)."""
        z = math.log(seconds / self.latency_median) / self.sigma
        return 0.5 * math.erfc(z / math.sqrt(2))


def _normal_quantile(p: float) -> float:
    low, high = -10.0, 10.0
    for _ in range(200):
        middle = (low + high) / 2
        if 0.5 * math.erfc(-middle / math.sqrt(2)) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def grid() -> tuple[float, ...]:
    return tuple(b for b in c.QUERY_DURATION_BUCKETS if GRID_LOW <= b <= GRID_HIGH)


@dataclass(frozen=True, slots=True)
class Slices:
    """The workspace-bucket slices [low, high) the plans' L1 percentages cut 0-100 into."""

    bounds: tuple[int, ...]  # 0, 10, 50, 100

    @classmethod
    def for_percents(cls, percents: Iterable[int]) -> Slices:
        cuts = sorted({0, 100, *(p for p in percents if 0 < p < 100)})
        return cls(tuple(cuts))

    @property
    def shares(self) -> tuple[float, ...]:
        return tuple((b - a) / 100 for a, b in zip(self.bounds, self.bounds[1:], strict=False))

    def in_cohort(self, l1_percent: int) -> tuple[bool, ...]:
        return tuple(high <= l1_percent for high in self.bounds[1:])


@dataclass(frozen=True, slots=True)
class Draws:
    """One run's traffic, per slice (axis 0) and cycle (last axis); index 0 is empty (the
    counters before the first cycle)."""

    answers: IntArray
    errors: IntArray
    extra_errors: IntArray  # errors among the non-errors when the cohort errs at 3 %
    l1_hits: IntArray
    l2_hits_after_l1_miss: IntArray
    l2_hits_after_l1_hit: IntArray
    slower: IntArray  # (slice, boundary, cycle): answers slower than each grid boundary

    @property
    def cycles(self) -> int:
        return int(self.answers.shape[-1])


def draw(
    rng: np.random.Generator, traffic: Traffic, slices: Slices, cycles: int,
    cycle_seconds: float, regression: bool,
) -> Draws:
    shares = np.array(slices.shares)[:, None]
    answers = rng.poisson(traffic.rate * cycle_seconds * shares, size=(len(shares), cycles))
    answers[:, 0] = 0
    errors = rng.binomial(answers, traffic.error)
    extra = np.zeros_like(errors)
    if regression:
        extra = rng.binomial(answers - errors,
                             (traffic.regression_error - traffic.error) / (1 - traffic.error))
    l1 = rng.binomial(answers, traffic.l1_hit)
    l2_miss = rng.binomial(answers - l1, traffic.l2_hit)
    l2_hit = rng.binomial(l1, traffic.l2_hit)
    bounds = grid()
    slower = np.empty((len(shares), len(bounds), cycles), dtype=np.int64)
    above, previous = answers, 1.0
    for k, bound in enumerate(bounds):
        share = traffic.slower_than(bound)
        above = rng.binomial(above, share / previous) if previous > 0 else np.zeros_like(above)
        slower[:, k, :] = above
        previous = share
    return Draws(answers, errors, extra, l1, l2_miss, l2_hit, slower)


# --- the counters a stage's flags produce ------------------------------------------------------
QUERIES = c.METRIC_QUERIES
DURATION = c.METRIC_QUERY_DURATION
VERIFY = c.METRIC_CACHE_VERIFICATIONS


def all_metrics() -> tuple[Metric, ...]:
    names = [metric(QUERIES, outcome=o, l1=k) for o in (c.OUTCOME_OK, c.OUTCOME_ERROR)
             for k in (c.COHORT_ON, c.COHORT_OFF)]
    for cohort in (c.COHORT_ON, c.COHORT_OFF):
        names.append(metric(f"{DURATION}_count", l1=cohort))
        names.extend(metric(f"{DURATION}_bucket", le=boundary_label(b), l1=cohort)
                     for b in (*grid(), math.inf))
    names.extend(metric(c.METRIC_UPSTREAM_COST, kind=k) for k in (c.UPSTREAM_EMBED,
                                                                  c.UPSTREAM_CHAT))
    for layer in (c.LAYER_QUERY_RESULT, c.LAYER_EMBEDDING):
        for mode in (c.MODE_SERVE, c.MODE_SHADOW):
            names.append(metric(c.METRIC_CACHE_HITS, cache_layer=layer, mode=mode))
            names.append(metric(c.METRIC_CACHE_MISSES, cache_layer=layer, mode=mode))
    names.extend(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=r)
                 for r in (c.VERIFY_MATCH, c.VERIFY_STALE, c.VERIFY_MISMATCH))
    names.extend(metric(VERIFY, cache_layer=c.LAYER_EMBEDDING, result=r)
                 for r in (c.VERIFY_MATCH, c.VERIFY_MISMATCH))
    names.extend((metric("redis_errors_total", err="OOM"), metric("redis_evicted_keys_total")))
    return tuple(names)


GAUGES: Final[Mapping[Metric, float]] = {
    metric("redis_memory_used_bytes"): 0.4 * GIB,  # healthy: 40 % of maxmemory
    metric("redis_memory_max_bytes"): 1.0 * GIB,
}


def emit(
    draws: Draws, traffic: Traffic, slices: Slices, flags: FlagSettings, regression: bool,
    start: int, stop: int, cycle_seconds: float,
) -> dict[Metric, Array]:
    """Counter increments of cycles start..stop-1 under `flags` (zeros for the counters
    these flags leave untouched)."""
    span = slice(start, stop)
    length = stop - start
    out: dict[Metric, Array] = {m: np.zeros(length) for m in all_metrics()}

    def add(m: Metric, values: IntArray | Array) -> None:
        out[m] += values

    cohort = slices.in_cohort(flags.l1_percent)
    l1_served = np.zeros(length)
    for index, on in enumerate(cohort):
        n = draws.answers[index, span]
        errors = draws.errors[index, span] + (draws.extra_errors[index, span]
                                              if regression and on else 0)
        label = c.COHORT_ON if on else c.COHORT_OFF
        add(metric(QUERIES, outcome=c.OUTCOME_ERROR, l1=label), errors)
        add(metric(QUERIES, outcome=c.OUTCOME_OK, l1=label), n - errors)
        add(metric(f"{DURATION}_count", l1=label), n)
        for k, bound in enumerate(grid()):
            add(metric(f"{DURATION}_bucket", le=boundary_label(bound), l1=label),
                n - draws.slower[index, k, span])
        add(metric(f"{DURATION}_bucket", le=boundary_label(math.inf), l1=label), n)

        l1 = draws.l1_hits[index, span]
        after_miss = draws.l2_hits_after_l1_miss[index, span]
        after_hit = draws.l2_hits_after_l1_hit[index, span]
        l2_mode = c.MODE_SERVE if flags.l2 else c.MODE_SHADOW
        if on:  # L1 serves; a served hit needs no embedding, so no L2 lookup either
            add(metric(c.METRIC_CACHE_HITS, cache_layer=c.LAYER_QUERY_RESULT,
                       mode=c.MODE_SERVE), l1)
            add(metric(c.METRIC_CACHE_MISSES, cache_layer=c.LAYER_QUERY_RESULT,
                       mode=c.MODE_SERVE), n - l1)
            l1_served += l1
            looked_up, l2_hits, generated = n - l1, after_miss, n - l1
        else:
            if flags.shadow:  # shadow L1 lookups, every shadow hit verified
                add(metric(c.METRIC_CACHE_HITS, cache_layer=c.LAYER_QUERY_RESULT,
                           mode=c.MODE_SHADOW), l1)
                add(metric(c.METRIC_CACHE_MISSES, cache_layer=c.LAYER_QUERY_RESULT,
                           mode=c.MODE_SHADOW), n - l1)
                add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_MATCH), l1)
            looked_up, l2_hits, generated = n, after_miss + after_hit, n
        embedded = looked_up
        if flags.l2 or flags.shadow:
            add(metric(c.METRIC_CACHE_HITS, cache_layer=c.LAYER_EMBEDDING, mode=l2_mode), l2_hits)
            add(metric(c.METRIC_CACHE_MISSES, cache_layer=c.LAYER_EMBEDDING, mode=l2_mode),
                looked_up - l2_hits)
            if flags.l2:
                embedded = looked_up - l2_hits
            else:  # a shadow hit is compared with the fresh embedding
                add(metric(VERIFY, cache_layer=c.LAYER_EMBEDDING, result=c.VERIFY_MATCH), l2_hits)
        add(metric(c.METRIC_UPSTREAM_COST, kind=c.UPSTREAM_EMBED),
            embedded.astype(np.float64) * traffic.embed_cost)
        add(metric(c.METRIC_UPSTREAM_COST, kind=c.UPSTREAM_CHAT),
            generated.astype(np.float64) * traffic.chat_cost)
    audits = np.minimum(l1_served, traffic.audits_per_second * cycle_seconds)
    add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_MATCH), audits)
    return out


@dataclass
class Counters:
    """The run's counters as they grow: each stage visit writes the increments from the
    cycle after its transition on (the flags the service applies from then), as far as
    its cycles reach."""

    cycles: int
    increments: dict[Metric, Array] = field(default_factory=dict)
    cumulative: dict[Metric, Array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in all_metrics():
            self.increments[m] = np.zeros(self.cycles)
            self.cumulative[m] = np.zeros(self.cycles)

    def apply(self, start: int, emitted: Mapping[Metric, Array]) -> None:
        """Increments from cycle `start` on (as many as given); the counters after them
        are left for the next call."""
        for m, values in emitted.items():
            stop = start + len(values)
            self.increments[m][start:stop] = values
            before = self.cumulative[m][start - 1] if start > 0 else 0.0
            self.cumulative[m][start:stop] = before + np.cumsum(values)
