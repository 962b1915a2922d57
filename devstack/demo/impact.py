"""What a demo run measured: the seed's impact figures per rollout stage.

The numbers come from the run's own Prometheus — the very series the controller's gates
read — evaluated over each stage's time span (`@ end`), plus the exact client-side p95 from
the traffic generator. Stage spans come from the controller's decision log (stages.py), so
a stage visited twice (after a rollback) is two rows.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from devstack.demo.stages import StageVisit
from devstack.promql import value
from rollout.core.plan import promql_duration

# The first seconds of a stage still carry the previous stage's flags (the service re-reads
# flags at most every second, Unleash polls every second or two): leave them out.
SETTLE_SECONDS = 3.0

Q_QUERIES = "sum(increase(ai_agent_queries_total[{w}] @ {t}))"
Q_ERRORS = 'sum(increase(ai_agent_queries_total{{outcome="error"}}[{w}] @ {t})) or vector(0)'
Q_P95 = ("histogram_quantile(0.95, sum by (le) "
         "(rate(ai_agent_query_duration_seconds_bucket[{w}] @ {t})))")
Q_MEAN = ("sum(increase(ai_agent_query_duration_seconds_sum[{w}] @ {t})) / "
          "sum(increase(ai_agent_query_duration_seconds_count[{w}] @ {t}))")
Q_COST = "sum(increase(ai_agent_upstream_cost_usd_total[{w}] @ {t})) or vector(0)"
_HITS = ('sum(increase(ai_agent_cache_hits_total{{cache_layer="{layer}",mode="{mode}"}}'
         '[{w}] @ {t})) or vector(0)')
_MISSES = ('sum(increase(ai_agent_cache_misses_total{{cache_layer="{layer}",mode="{mode}"}}'
           '[{w}] @ {t})) or vector(0)')


@dataclass
class StageImpact:
    stage: str
    seconds: float
    queries: float | None
    error_rate: float | None
    p95: float | None  # server histogram, as the gates see it
    p95_client: float | None  # exact, from the generator's own clock
    mean: float | None
    l1_served: float | None  # share of queries answered from L1
    l1_shadow: float | None  # would-be L1 hit rate of shadow lookups
    l2_served: float | None  # hit rate of served L2 lookups (the L1 misses)
    l2_shadow: float | None
    cost_per_query: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _hit_rate(prom_url: str, layer: str, mode: str, w: str, t: str) -> float | None:
    hits = value(prom_url, _HITS.format(layer=layer, mode=mode, w=w, t=t)) or 0.0
    misses = value(prom_url, _MISSES.format(layer=layer, mode=mode, w=w, t=t)) or 0.0
    return _ratio(hits, hits + misses) if hits + misses >= 1 else None


def measure_visit(prom_url: str, visit: StageVisit,
                  client_latencies: Sequence[tuple[float, float]]) -> StageImpact | None:
    """`client_latencies` are (sent_at, seconds) of successful queries of the whole run."""
    start = visit.start + SETTLE_SECONDS
    seconds = visit.end - start
    if seconds < 2:
        return None
    w, t = promql_duration_of(seconds), f"{visit.end:.3f}"
    queries = value(prom_url, Q_QUERIES.format(w=w, t=t))
    served = [lat for at, lat in client_latencies if start <= at < visit.end - 2.0]
    return StageImpact(
        stage=visit.label,
        seconds=visit.end - visit.start,
        queries=queries,
        error_rate=_ratio(value(prom_url, Q_ERRORS.format(w=w, t=t)), queries),
        p95=value(prom_url, Q_P95.format(w=w, t=t)),
        p95_client=_quantile(served, 0.95),
        mean=value(prom_url, Q_MEAN.format(w=w, t=t)),
        l1_served=_ratio(value(prom_url, _HITS.format(
            layer="query_result", mode="serve", w=w, t=t)), queries),
        l1_shadow=_hit_rate(prom_url, "query_result", "shadow", w, t),
        l2_served=_hit_rate(prom_url, "embedding", "serve", w, t),
        l2_shadow=_hit_rate(prom_url, "embedding", "shadow", w, t),
        cost_per_query=_ratio(value(prom_url, Q_COST.format(w=w, t=t)), queries),
    )


def promql_duration_of(seconds: float) -> str:
    return promql_duration(timedelta(seconds=round(seconds)))


def _quantile(values: Sequence[float], q: float) -> float | None:
    if len(values) < 20:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def impact_table(prom_url: str, visits: Sequence[StageVisit],
                 client_latencies: Sequence[tuple[float, float]]) -> list[StageImpact]:
    rows = []
    for visit in visits:
        row = measure_visit(prom_url, visit, client_latencies)
        if row is not None:
            rows.append(row)
    return rows
