"""A small real exporter that a test controls: the service's contract metrics plus
redis_exporter-style Redis metrics, with synthetic traffic generated continuously.

The service metrics are `app.metrics.ServiceMetrics` on the exporter's own registry, so names,
labels, buckets and pre-created label sets are exactly the service's. A background thread turns
the mutable `scenario` into traffic every `tick` (50 ms): change any field at any time and the
next tick follows it.

    exporter = FakeExporter().start()          # exporter.url, exporter.target ("127.0.0.1:PORT")
    exporter.scenario.requests_per_second = 50
    exporter.scenario.error_rate_on = 0.2      # 20 % of the L1 cohort fails
    exporter.wait_for_scrapes(2)               # Prometheus has seen the change
    exporter.stop()

Rates are exact, not random: each per-request ratio (errors, hits, verifications, stale...)
is spread evenly with an accumulator, so 20 % is exactly every fifth request; only latencies
are drawn (lognormal, seeded) unless `sigma=0` makes them fixed.

Traffic follows the flags like the service does: L2 lookups happen when `l2` (mode `serve`) or
`shadow` (mode `shadow`) is on; an L1 lookup in mode `serve` for requests in the L1 cohort
(`l1_percent`, or `l1_share` to override), in mode `shadow` for the others when `shadow` is on.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app import contract as c
from app.metrics import ServiceMetrics

MIB = 1024 * 1024


@dataclass
class Latency:
    """Query duration of one cohort: lognormal around `median_seconds`; `sigma=0` is fixed."""

    median_seconds: float = 1.75
    sigma: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.sigma <= 0:
            return self.median_seconds
        return rng.lognormvariate(math.log(self.median_seconds), self.sigma)

    @classmethod
    def fixed_ms(cls, millis: float) -> Latency:
        return cls(median_seconds=millis / 1000.0)


@dataclass
class Scenario:
    """What the fake service replica (and its Redis) does right now. Mutate freely."""

    requests_per_second: float = 20.0
    workspaces: tuple[str, ...] = ("ws-a", "ws-b", "ws-c")

    # Flags this replica applies: exported as ai_agent_flag_state and followed by the traffic.
    shadow: bool = False
    l2: bool = False
    l1_percent: int = 0
    export_flags: bool = True  # False: no ai_agent_flag_state series at all
    l1_share: float | None = None  # fraction of requests in L1 cohort "on"; None: l1_percent

    # Outcomes per L1 cohort.
    error_rate_on: float = 0.0
    error_rate_off: float = 0.0
    latency_on: Latency = field(default_factory=lambda: Latency(0.02))
    latency_off: Latency = field(default_factory=lambda: Latency(1.75))

    # Hit rates per layer (l2 = embedding, l1 = query_result) and mode.
    l2_shadow_hit_rate: float = 0.45
    l2_serve_hit_rate: float = 0.45
    l1_shadow_hit_rate: float = 0.30
    l1_serve_hit_rate: float = 0.30

    # Upstream spend per query (split between embed and chat like the seed: $0.002 of $0.017).
    cost_per_query_usd: float = 0.017

    # Verifications (shadow checks / audits): per query, one per layer with this probability.
    verified_fraction: float = 0.5
    stale_rate: float = 0.0  # of query_result verifications
    mismatch_rate: float = 0.0  # of every verification

    cache_error_rate: float = 0.0  # Redis failures per query (cache_errors_total, op=get)
    circuit_open: bool = False
    invalidations_per_second: float = 0.0

    # redis_exporter side.
    export_redis: bool = True  # False: this replica exposes no redis_* series
    redis_up: bool = True  # False: redis_up 0 and no other redis_* series (as the exporter)
    redis_memory_used_bytes: float = 64 * MIB
    redis_memory_max_bytes: float = 256 * MIB  # 0 = no maxmemory
    redis_evictions_per_second: float = 0.0
    redis_oom_errors_per_second: float = 0.0  # also counted as rejected SET calls

    def flag_values(self) -> dict[str, float]:
        return {
            c.FLAG_SHADOW_MODE: 1.0 if self.shadow else 0.0,
            c.FLAG_L2_EMBEDDINGS: 1.0 if self.l2 else 0.0,
            c.FLAG_L1_QUERY_RESULTS: float(self.l1_percent),
        }


class _Spread:
    """Deterministic Bernoulli: `take(rate)` is true for exactly `rate` of the calls."""

    def __init__(self) -> None:
        self._acc: dict[str, float] = {}

    def take(self, key: str, rate: float) -> bool:
        if rate <= 0:
            return False
        acc = self._acc.get(key, 0.0) + min(rate, 1.0)
        hit = acc >= 1.0 - 1e-9
        self._acc[key] = acc - 1.0 if hit else acc
        return hit


class _RedisCollector(Collector):
    """redis_exporter-shaped series from the scenario and the exporter's running totals."""

    def __init__(self, exporter: FakeExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        scenario = self._exporter.scenario
        if not scenario.export_redis:
            return
        up = GaugeMetricFamily("redis_up", "Information about the Redis instance")
        up.add_metric([], 1.0 if scenario.redis_up else 0.0)
        yield up
        if not scenario.redis_up:
            return
        totals = self._exporter.redis_totals
        used = GaugeMetricFamily("redis_memory_used_bytes", "memory_used_bytes metric")
        used.add_metric([], scenario.redis_memory_used_bytes)
        yield used
        limit = GaugeMetricFamily("redis_memory_max_bytes", "memory_max_bytes metric")
        limit.add_metric([], scenario.redis_memory_max_bytes)
        yield limit
        evicted = CounterMetricFamily("redis_evicted_keys", "evicted_keys_total metric")
        evicted.add_metric([], totals["evicted"])
        yield evicted
        errors = CounterMetricFamily("redis_errors", "Total number of errors per error type",
                                     labels=["err"])
        errors.add_metric(["OOM"], totals["oom"])
        errors.add_metric(["ERR"], 0.0)
        yield errors
        rejected = CounterMetricFamily("redis_commands_rejected_calls",
                                       "Total number of errors prior command execution per "
                                       "command", labels=["cmd"])
        rejected.add_metric(["set"], totals["oom"])
        yield rejected


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class FakeExporter:
    """One fake service replica (+ its redis_exporter) on 127.0.0.1, driven by `scenario`."""

    def __init__(self, scenario: Scenario | None = None, *, port: int = 0, seed: int = 1,
                 tick: float = 0.05) -> None:
        self.scenario = scenario or Scenario()
        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry)
        self.registry.register(_RedisCollector(self))
        self.redis_totals: dict[str, float] = {"evicted": 0.0, "oom": 0.0}
        self.generated = 0  # requests generated so far
        self._port = port
        self._tick = tick
        self._rng = random.Random(seed)
        self._spread = _Spread()
        self._pending = 0.0
        self._flags_exported = True
        self._scrapes = 0
        self._scrape_cond = threading.Condition()
        self._stop = threading.Event()
        self._server: _ThreadingServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeExporter:
        if self._server is not None:
            return self
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            body: Iterable[bytes] = metrics_app(environ, start_response)
            if environ.get("PATH_INFO", "/") in {"/", "/metrics"}:
                with self._scrape_cond:
                    self._scrapes += 1
                    self._scrape_cond.notify_all()
            return body

        self._server = make_server("127.0.0.1", self._port, app, server_class=_ThreadingServer,
                                   handler_class=_QuietHandler)
        self._stop.clear()
        self._apply_gauges()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name=f"fake-exporter-http-{self.port}", daemon=True),
            threading.Thread(target=self._generate, name=f"fake-exporter-traffic-{self.port}",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and generating; idempotent."""
        server, self._server = self._server, None
        self._stop.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> FakeExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- where it listens ------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("exporter not started")
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """`127.0.0.1:PORT`, for a Prometheus static config."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    # --- scrapes ---------------------------------------------------------------------------
    @property
    def scrapes(self) -> int:
        return self._scrapes

    def wait_for_scrapes(self, count: int = 1, *, timeout: float = 15.0) -> None:
        """Block until `count` more scrapes than now have been served (so a scenario change
        made before the call is in Prometheus afterwards)."""
        with self._scrape_cond:
            target = self._scrapes + count
            if not self._scrape_cond.wait_for(lambda: self._scrapes >= target, timeout=timeout):
                raise TimeoutError(f"{self.target}: not scraped {count} more time(s) "
                                   f"within {timeout}s")

    # --- traffic ---------------------------------------------------------------------------
    def _generate(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            elapsed, last = now - last, now
            self.step(elapsed)

    def step(self, elapsed: float) -> None:
        """Generate `elapsed` seconds of traffic at once (the thread calls this every tick)."""
        scenario = self.scenario
        self._apply_gauges()
        self._pending += max(0.0, scenario.requests_per_second) * elapsed
        count = int(self._pending)
        self._pending -= count
        for _ in range(count):
            self._one_request(scenario)
        if scenario.export_redis and scenario.redis_up:
            self.redis_totals["evicted"] += max(0.0, scenario.redis_evictions_per_second) * elapsed
            self.redis_totals["oom"] += max(0.0, scenario.redis_oom_errors_per_second) * elapsed
        if scenario.invalidations_per_second > 0:
            self.metrics.cache_invalidations.labels(
                workspace_id=scenario.workspaces[0], reason="session_write",
            ).inc(scenario.invalidations_per_second * elapsed)

    def _apply_gauges(self) -> None:
        scenario = self.scenario
        flag_state = self.metrics.flag_state
        if scenario.export_flags:
            for flag, value in scenario.flag_values().items():
                flag_state.labels(flag=flag).set(value)
            self._flags_exported = True
        elif self._flags_exported:
            flag_state.clear()
            self._flags_exported = False
        self.metrics.cache_circuit_open.set(1.0 if scenario.circuit_open else 0.0)

    def _one_request(self, scenario: Scenario) -> None:
        m, take = self.metrics, self._spread.take
        self.generated += 1
        workspace = scenario.workspaces[self.generated % len(scenario.workspaces)]
        share = scenario.l1_share if scenario.l1_share is not None else scenario.l1_percent / 100
        cohort = c.COHORT_ON if take("cohort", share) else c.COHORT_OFF

        l2_mode = c.MODE_SERVE if scenario.l2 else c.MODE_SHADOW if scenario.shadow else None
        if l2_mode is not None:
            rate = scenario.l2_serve_hit_rate if l2_mode == c.MODE_SERVE else \
                scenario.l2_shadow_hit_rate
            self._lookup(workspace, c.LAYER_EMBEDDING, l2_mode, take(f"l2-{l2_mode}", rate))
        l1_mode = c.MODE_SERVE if cohort == c.COHORT_ON else \
            c.MODE_SHADOW if scenario.shadow else None
        if l1_mode is not None:
            rate = scenario.l1_serve_hit_rate if l1_mode == c.MODE_SERVE else \
                scenario.l1_shadow_hit_rate
            self._lookup(workspace, c.LAYER_QUERY_RESULT, l1_mode, take(f"l1-{l1_mode}", rate))

        error_rate = scenario.error_rate_on if cohort == c.COHORT_ON else scenario.error_rate_off
        outcome = c.OUTCOME_ERROR if take(f"error-{cohort}", error_rate) else c.OUTCOME_OK
        m.queries.labels(outcome=outcome, l1=cohort).inc()
        latency = scenario.latency_on if cohort == c.COHORT_ON else scenario.latency_off
        m.query_duration.labels(l1=cohort).observe(latency.sample(self._rng))

        cost = max(0.0, scenario.cost_per_query_usd)
        embed_cost = min(cost, 0.002)
        if embed_cost > 0:
            m.upstream_requests.labels(kind=c.UPSTREAM_EMBED, outcome=c.OUTCOME_OK).inc()
            m.upstream_cost.labels(kind=c.UPSTREAM_EMBED).inc(embed_cost)
        if cost - embed_cost > 0:
            m.upstream_requests.labels(kind=c.UPSTREAM_CHAT, outcome=outcome).inc()
            m.upstream_cost.labels(kind=c.UPSTREAM_CHAT).inc(cost - embed_cost)

        if take("verify", scenario.verified_fraction):
            for layer in (c.LAYER_EMBEDDING, c.LAYER_QUERY_RESULT):
                if take(f"mismatch-{layer}", scenario.mismatch_rate):
                    result = c.VERIFY_MISMATCH
                elif layer == c.LAYER_QUERY_RESULT and take("stale", scenario.stale_rate):
                    result = c.VERIFY_STALE
                else:
                    result = c.VERIFY_MATCH
                m.cache_verifications.labels(cache_layer=layer, result=result).inc()
        if take("cache-error", scenario.cache_error_rate):
            m.cache_errors.labels(cache_layer=c.LAYER_EMBEDDING, op="get").inc()

    def _lookup(self, workspace: str, layer: str, mode: str, hit: bool) -> None:
        counter = self.metrics.cache_hits if hit else self.metrics.cache_misses
        counter.labels(workspace_id=workspace, cache_layer=layer, mode=mode).inc()


def running(*scenarios: Scenario) -> Iterator[list[FakeExporter]]:
    """Generator for fixtures: start one exporter per scenario, stop them all afterwards."""
    exporters = [FakeExporter(scenario, seed=index + 1) for index, scenario in
                 enumerate(scenarios)]
    try:
        for exporter in exporters:
            exporter.start()
        yield exporters
    finally:
        for exporter in exporters:
            exporter.stop()
