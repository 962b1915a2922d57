"""Synthetic traffic: what every evaluation cycle brings, drawn once per run and read by every
plan compared (common random numbers), and the counters the service would export for it
under a stage's flags and a scenario's effects.

Per cycle, for each slice of the workspace buckets that the plans' L1 percentages cut
(0-10, 10-50, 50-100 for 10/50/100 %): Poisson arrivals at the rate over the cycle, then
per answer, independently:

* an error with p = 1 % (A/A: the same in both L1 cohorts and in the baseline); an error
  regression makes the affected answers err at its rate instead (extra errors drawn among
  the non-errors, so the healthy errors are the same draws);
* a latency from one log-normal for every answer (A/A: caching makes nothing slower or
  faster), median 1.75 s (the seed's full RAG answer), 5 % slower than 2.04 s (the bucket
  boundary nearest 2 s), drawn as the counts above each histogram boundary near the p95; a
  latency regression draws the affected answers from the same log-normal moved up until
  its share above 2.04 s is the regression's;
* an L1 hit with p = 30 % (served in the L1 cohort, a shadow hit outside it while shadow
  mode is on) and an L2 hit with p = 45 % of the lookups that reach L2; healthy, never
  stale, never mismatched; stale answers make each L1 hit stale with the scenario's rate
  (seen by the audit of served hits and by the verification of shadow hits);
* cost as the seed: $0.002 an embedding, $0.015 a generation, so $0.017 a miss, $0.015
  when L2 served the embedding, nothing when L1 served the answer.

Low traffic is a second, complete set of draws at a fraction of the rate, used in the
stages the scenario names.

Counters follow the service's code (app/service/query.py): a served L1 hit does not look
L2 up; shadow mode looks both layers up and verifies what it finds (L1 shadow hits and L2
shadow hits), served L1 hits are audited up to 5 a second (L1_AUDIT_MAX_PER_SECOND, one
replica); L2 hits served while L2 is on are not verified.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from app import contract as c
from rollout.core.boundaries import boundary_label
from rollout.core.flags import FlagSettings
from rollout.simulate.promql import Array, Metric, metric

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
    """The service's healthy behaviour, as rates; every share applies per answer."""

    rate: float  # queries per second over the whole service
    error: float = 0.01
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
        z = normal_quantile(1 - self.slow_share)
        return math.log(self.slow_boundary / self.latency_median) / z

    def slower_than(self, seconds: float) -> float:
        """P(latency > seconds)."""
        z = math.log(seconds / self.latency_median) / self.sigma
        return 0.5 * math.erfc(z / math.sqrt(2))

    def slowed(self, share: float) -> Traffic:
        """The same spread, moved up until `share` of answers are slower than the boundary."""
        median = self.slow_boundary / math.exp(self.sigma * normal_quantile(1 - share))
        return replace(self, latency_median=median, slow_share=share)


def normal_quantile(p: float) -> float:
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
class Regression:
    """What a scenario changes in the draws (None: nothing of that kind)."""

    error: float | None = None  # the affected answers' error rate
    slow_share: float | None = None  # the affected answers' share slower than the boundary
    stale: float | None = None  # the share of L1 hits that are stale
    traffic_factor: float | None = None  # low traffic: this fraction of the rate


@dataclass(frozen=True, slots=True)
class Effects:
    """Which of the scenario's changes apply to the traffic of one stage."""

    errors: bool = False
    slow: bool = False
    stale: bool = False
    low_traffic: bool = False
    whole_service: bool = False  # errors and latency hit every answer, not the L1 cohort


HEALTHY: Final = Effects()


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
    extra_errors: IntArray  # errors among the non-errors when an error regression applies
    l1_hits: IntArray
    l2_hits_after_l1_miss: IntArray
    l2_hits_after_l1_hit: IntArray
    slower: IntArray  # (slice, boundary, cycle): answers slower than each grid boundary
    slower_regressed: IntArray | None = None  # the same under a latency regression
    stale: IntArray | None = None  # stale L1 hits among l1_hits
    low: Draws | None = None  # the low-traffic draws

    @property
    def cycles(self) -> int:
        return int(self.answers.shape[-1])


def draw(
    rng: np.random.Generator, traffic: Traffic, slices: Slices, cycles: int,
    cycle_seconds: float, regression: Regression = Regression(),
) -> Draws:
    """One run's draws. The healthy draws come first and in the same order whatever the
    scenario (an error regression's extra errors excepted), so a scenario changes a run's
    traffic only where it acts."""
    shares = np.array(slices.shares)[:, None]
    answers = rng.poisson(traffic.rate * cycle_seconds * shares, size=(len(shares), cycles))
    answers[:, 0] = 0
    errors = rng.binomial(answers, traffic.error)
    extra = np.zeros_like(errors)
    if regression.error is not None:
        extra = rng.binomial(answers - errors,
                             (regression.error - traffic.error) / (1 - traffic.error))
    l1 = rng.binomial(answers, traffic.l1_hit)
    l2_miss = rng.binomial(answers - l1, traffic.l2_hit)
    l2_hit = rng.binomial(l1, traffic.l2_hit)
    slower = _slower(rng, answers, traffic)
    slowed = None
    if regression.slow_share is not None:
        slowed = _slower(rng, answers, traffic.slowed(regression.slow_share))
    stale = None if regression.stale is None else rng.binomial(l1, regression.stale)
    low = None
    if regression.traffic_factor is not None:
        low = draw(rng, replace(traffic, rate=traffic.rate * regression.traffic_factor),
                   slices, cycles, cycle_seconds)
    return Draws(answers, errors, extra, l1, l2_miss, l2_hit, slower, slowed, stale, low)


def _slower(rng: np.random.Generator, answers: IntArray, traffic: Traffic) -> IntArray:
    """Answers slower than each grid boundary: nested binomial thinning, boundary by
    boundary."""
    bounds = grid()
    slower = np.empty((answers.shape[0], len(bounds), answers.shape[1]), dtype=np.int64)
    above, previous = answers, 1.0
    for k, bound in enumerate(bounds):
        share = traffic.slower_than(bound)
        above = rng.binomial(above, share / previous) if previous > 0 else np.zeros_like(above)
        slower[:, k, :] = above
        previous = share
    return slower


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


@dataclass(frozen=True, slots=True)
class Emission:
    """What one call to `emit` is about: the cycles start..stop-1 under `flags`."""

    flags: FlagSettings
    effects: Effects
    start: int
    stop: int
    cycle_seconds: float


def emit(draws: Draws, traffic: Traffic, slices: Slices, what: Emission) -> dict[Metric, Array]:
    """Counter increments of cycles start..stop-1 under the flags and the scenario's effects
    (zeros for the counters these flags leave untouched)."""
    base = draws.low if what.effects.low_traffic and draws.low is not None else draws
    out = _Increments(what.stop - what.start)
    for index, on in enumerate(slices.in_cohort(what.flags.l1_percent)):
        _emit_slice(out, base, traffic, what, index, on=on)
    audits = np.minimum(out.l1_served, traffic.audits_per_second * what.cycle_seconds)
    # The audit budget takes served hits as they come: stale ones in their share (rounded).
    with np.errstate(divide="ignore", invalid="ignore"):
        stale_audited = np.where(out.l1_served > 0,
                                 np.round(out.stale_served * audits / out.l1_served), 0.0)
    out.add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_MATCH),
            audits - stale_audited)
    out.add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_STALE),
            stale_audited)
    return out.values


class _Increments:
    """The increments of one emission, with the served L1 hits the audits sample from."""

    def __init__(self, length: int) -> None:
        self.values: dict[Metric, Array] = {m: np.zeros(length) for m in all_metrics()}
        self.l1_served = np.zeros(length)
        self.stale_served = np.zeros(length)

    def add(self, m: Metric, values: IntArray | Array) -> None:
        self.values[m] += values


def _emit_slice(out: _Increments, base: Draws, traffic: Traffic, what: Emission, index: int,
                *, on: bool) -> None:
    """One workspace slice's answers, in the L1 cohort (`on`) or not."""
    effects, flags, add = what.effects, what.flags, out.add
    span = slice(what.start, what.stop)
    affected = on or effects.whole_service
    n = base.answers[index, span]
    errors = base.errors[index, span]
    if effects.errors and affected:
        errors = errors + base.extra_errors[index, span]
    slower = base.slower
    if effects.slow and affected and base.slower_regressed is not None:
        slower = base.slower_regressed
    stale = np.zeros(what.stop - what.start)
    if effects.stale and base.stale is not None:
        stale = base.stale[index, span].astype(np.float64)
    label = c.COHORT_ON if on else c.COHORT_OFF
    add(metric(QUERIES, outcome=c.OUTCOME_ERROR, l1=label), errors)
    add(metric(QUERIES, outcome=c.OUTCOME_OK, l1=label), n - errors)
    add(metric(f"{DURATION}_count", l1=label), n)
    for k, bound in enumerate(grid()):
        add(metric(f"{DURATION}_bucket", le=boundary_label(bound), l1=label),
            n - slower[index, k, span])
    add(metric(f"{DURATION}_bucket", le=boundary_label(math.inf), l1=label), n)

    l1 = base.l1_hits[index, span]
    after_miss = base.l2_hits_after_l1_miss[index, span]
    after_hit = base.l2_hits_after_l1_hit[index, span]
    l2_mode = c.MODE_SERVE if flags.l2 else c.MODE_SHADOW
    if on:  # L1 serves; a served hit needs no embedding, so no L2 lookup either
        add(metric(c.METRIC_CACHE_HITS, cache_layer=c.LAYER_QUERY_RESULT, mode=c.MODE_SERVE), l1)
        add(metric(c.METRIC_CACHE_MISSES, cache_layer=c.LAYER_QUERY_RESULT, mode=c.MODE_SERVE),
            n - l1)
        out.l1_served += l1
        out.stale_served += stale
        looked_up, l2_hits, generated = n - l1, after_miss, n - l1
    else:
        if flags.shadow:  # shadow L1 lookups, every shadow hit verified
            add(metric(c.METRIC_CACHE_HITS, cache_layer=c.LAYER_QUERY_RESULT,
                       mode=c.MODE_SHADOW), l1)
            add(metric(c.METRIC_CACHE_MISSES, cache_layer=c.LAYER_QUERY_RESULT,
                       mode=c.MODE_SHADOW), n - l1)
            add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_MATCH),
                l1 - stale)
            add(metric(VERIFY, cache_layer=c.LAYER_QUERY_RESULT, result=c.VERIFY_STALE), stale)
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


@dataclass
class Counters:
    """The run's counters as they grow: each stage visit writes the increments from the
    cycle its flags apply on, as far as its cycles reach."""

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
