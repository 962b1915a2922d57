"""`ServiceExporter`: the fake exporter's metrics and Redis side, with traffic generated the
way the service produces it under its flags, at random (DESIGN.md §7: the controller judges
counts, so the tests must give it counts that are noisy like real ones).

Every tick (50 ms) the replica answers a Poisson number of queries (`requests_per_second`);
each joins the L1 cohort with probability `l1_share` (else `l1_percent` %), fails with its
cohort's error rate (`error_rate_on` / `error_rate_off`), and is answered as the service
would (app/service/query.py):

* a served L1 hit (L1 cohort, `l1_serve_hit_rate`): ~20 ms, no provider call, audited;
* else, with L2 on, an L2 hit (`l2_serve_hit_rate`): the chat call only, ~1.55 s;
* else a full answer: embedding + chat ($0.017), ~1.7 s. About 5 % of full answers are
  slower than 2.04 s (the boundary nearest the plans' 2 s): `ServiceProfile`.

Lookups are counted per layer and mode like the service counts them (no L2 lookup after a
served L1 hit; shadow L1 lookups for the control cohort while shadow is on; L2 in mode
`shadow` while only shadow is on). Verifications: a share `verified_fraction` of served L1
hits (the audit; the service audits every hit, capped per second) and of shadow hits of
either layer; of those, `stale_rate` (L1 only) are stale and `mismatch_rate` mismatched.
Every count is a binomial draw, durations are lognormal: counters jump by hundreds per
scrape, which is all the controller sees. `latency_on`/`latency_off`/`cost_per_query_usd` of
the Scenario are not used here: the profile decides time and spend per kind of answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app import contract as c
from tests.support.fake_exporter import FakeExporter, Scenario

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Answer:
    """How long one kind of answer takes: lognormal around `median_seconds`."""

    median_seconds: float
    sigma: float

    def cdf(self, seconds: float) -> float:
        """P(duration <= seconds)."""
        if seconds <= 0:
            return 0.0
        if self.sigma <= 0:
            return 1.0 if seconds >= self.median_seconds else 0.0
        return _NORMAL.cdf(math.log(seconds / self.median_seconds) / self.sigma)

    def share_slower(self, seconds: float) -> float:
        return 1.0 - self.cdf(seconds)


@dataclass(frozen=True)
class ServiceProfile:
    """The seed's anchors: a full RAG answer ~1.7 s for $0.002 (embedding) + $0.015 (chat);
    an L2 hit skips the embedding call; an L1 hit skips both, ~20 ms."""

    miss: Answer = Answer(1.7, 0.11)
    l2_hit: Answer = Answer(1.55, 0.11)
    l1_hit: Answer = Answer(0.02, 0.3)
    embed_cost_usd: float = 0.002
    chat_cost_usd: float = 0.015

    @property
    def miss_cost_usd(self) -> float:
        return self.embed_cost_usd + self.chat_cost_usd


PROFILE = ServiceProfile()


def histogram_quantile(q: float, parts: Iterable[tuple[float, Answer]],
                       bounds: Sequence[float] = c.QUERY_DURATION_BUCKETS) -> float:
    """What Prometheus's histogram_quantile(q) reads from the service's buckets when answers
    are the mixture `parts` ((weight, answer), weights summing to 1): the bucket where the
    expected cumulative share crosses q, interpolated linearly."""
    mixture = list(parts)

    def cdf(seconds: float) -> float:
        return sum(weight * answer.cdf(seconds) for weight, answer in mixture)

    lower = 0.0
    for upper in bounds:
        below, within = cdf(lower), cdf(upper)
        if within >= q:
            return lower + (upper - lower) * (q - below) / max(within - below, 1e-12)
        lower = upper
    return bounds[-1]


class ServiceExporter(FakeExporter):
    """A FakeExporter whose traffic is the service's, at random (see the module doc)."""

    def __init__(self, scenario: Scenario | None = None, *, profile: ServiceProfile = PROFILE,
                 port: int = 0, seed: int = 1, tick: float = 0.05) -> None:
        super().__init__(scenario, port=port, seed=seed, tick=tick)
        self.profile = profile
        self._random = np.random.default_rng(seed)
        self._ticks = 0

    def step(self, elapsed: float) -> None:
        scenario = self.scenario  # one read: the replica swaps whole scenarios
        self._apply_gauges()
        arrivals = int(self._random.poisson(max(0.0, scenario.requests_per_second) * elapsed))
        share = scenario.l1_share if scenario.l1_share is not None else \
            scenario.l1_percent / 100
        in_cohort = self._draw(arrivals, share)
        self._ticks += 1
        workspace = scenario.workspaces[self._ticks % len(scenario.workspaces)]
        for cohort, count in ((c.COHORT_ON, in_cohort), (c.COHORT_OFF, arrivals - in_cohort)):
            if count:
                self._answer(scenario, workspace, cohort, count)
        self.generated += arrivals
        if scenario.export_redis and scenario.redis_up:
            self.redis_totals["evicted"] += max(0.0, scenario.redis_evictions_per_second) * elapsed
            self.redis_totals["oom"] += max(0.0, scenario.redis_oom_errors_per_second) * elapsed
        if scenario.invalidations_per_second > 0:
            self.metrics.cache_invalidations.labels(
                workspace_id=scenario.workspaces[0], reason="session_write",
            ).inc(scenario.invalidations_per_second * elapsed)

    def _draw(self, count: int, rate: float) -> int:
        if count <= 0 or rate <= 0:
            return 0
        return int(self._random.binomial(count, min(rate, 1.0)))

    def _answer(self, scenario: Scenario, workspace: str, cohort: str, count: int) -> None:
        """`count` queries of one cohort in one tick."""
        m, profile = self.metrics, self.profile
        served_l1 = 0
        if cohort == c.COHORT_ON:
            served_l1 = self._draw(count, scenario.l1_serve_hit_rate)
            self._lookups(workspace, c.LAYER_QUERY_RESULT, c.MODE_SERVE, served_l1, count)
            self._verify(scenario, c.LAYER_QUERY_RESULT, served_l1)  # the audit
        elif scenario.shadow:
            shadow_hits = self._draw(count, scenario.l1_shadow_hit_rate)
            self._lookups(workspace, c.LAYER_QUERY_RESULT, c.MODE_SHADOW, shadow_hits, count)
            self._verify(scenario, c.LAYER_QUERY_RESULT, shadow_hits)
        rest = count - served_l1
        served_l2 = 0
        if scenario.l2 or scenario.shadow:
            mode = c.MODE_SERVE if scenario.l2 else c.MODE_SHADOW
            rate = scenario.l2_serve_hit_rate if scenario.l2 else scenario.l2_shadow_hit_rate
            hits = self._draw(rest, rate)
            self._lookups(workspace, c.LAYER_EMBEDDING, mode, hits, rest)
            if scenario.l2:
                served_l2 = hits
            else:
                self._verify(scenario, c.LAYER_EMBEDDING, hits)
        misses = rest - served_l2

        error_rate = scenario.error_rate_on if cohort == c.COHORT_ON else scenario.error_rate_off
        errors = self._draw(count, error_rate)
        if errors:
            m.queries.labels(outcome=c.OUTCOME_ERROR, l1=cohort).inc(errors)
        if count - errors:
            m.queries.labels(outcome=c.OUTCOME_OK, l1=cohort).inc(count - errors)
        histogram = m.query_duration.labels(l1=cohort)
        for kind, number in ((profile.l1_hit, served_l1), (profile.l2_hit, served_l2),
                             (profile.miss, misses)):
            for seconds in self._durations(kind, number):
                histogram.observe(seconds)

        if misses:
            m.upstream_requests.labels(kind=c.UPSTREAM_EMBED, outcome=c.OUTCOME_OK).inc(misses)
            m.upstream_cost.labels(kind=c.UPSTREAM_EMBED).inc(misses * profile.embed_cost_usd)
        if rest:
            m.upstream_requests.labels(kind=c.UPSTREAM_CHAT, outcome=c.OUTCOME_OK).inc(rest)
            m.upstream_cost.labels(kind=c.UPSTREAM_CHAT).inc(rest * profile.chat_cost_usd)
        cache_errors = self._draw(count, scenario.cache_error_rate)
        if cache_errors:
            m.cache_errors.labels(cache_layer=c.LAYER_EMBEDDING, op="get").inc(cache_errors)

    def _durations(self, answer: Answer, count: int) -> list[float]:
        if count <= 0:
            return []
        if answer.sigma <= 0:
            return [answer.median_seconds] * count
        drawn = self._random.lognormal(math.log(answer.median_seconds), answer.sigma, count)
        return [float(seconds) for seconds in drawn]

    def _lookups(self, workspace: str, layer: str, mode: str, hits: int, lookups: int) -> None:
        labels = {"workspace_id": workspace, "cache_layer": layer, "mode": mode}
        if hits:
            self.metrics.cache_hits.labels(**labels).inc(hits)
        if lookups - hits:
            self.metrics.cache_misses.labels(**labels).inc(lookups - hits)

    def _verify(self, scenario: Scenario, layer: str, hits: int) -> None:
        checked = self._draw(hits, scenario.verified_fraction)
        stale = self._draw(checked, scenario.stale_rate) if layer == c.LAYER_QUERY_RESULT else 0
        mismatched = self._draw(checked - stale, scenario.mismatch_rate)
        counter = self.metrics.cache_verifications
        for result, number in ((c.VERIFY_MATCH, checked - stale - mismatched),
                               (c.VERIFY_STALE, stale), (c.VERIFY_MISMATCH, mismatched)):
            if number:
                counter.labels(cache_layer=layer, result=result).inc(number)
