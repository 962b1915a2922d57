"""PrometheusSource against a real Prometheus scraping fake service replicas.

Contract: every query of the default plan (as written and demo-scaled) yields a value once
traffic flows; NaN/±Inf/empty are no data; bad PromQL, evaluation errors, 5xx, a stopped or
silent Prometheus are errors with Prometheus' own message, after exactly one attempt and
within the timeout; `reported_flags` for one, two agreeing, two disagreeing and no replicas.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.contract import QUERY_DURATION_BUCKETS
from devstack.services.prometheus import PrometheusService
from rollout.adapters.prometheus import PrometheusSource, Series, flags_from_series
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement
from rollout.core.plan import CheckSpec, Plan
from rollout.core.plan_loader import load_default_plan
from rollout.ports import MetricsSource, RecordedMetricsSource, ReportedFlags
from tests.support.fake_exporter import Latency, Scenario
from tests.support.plan_queries import query_pairs
from tests.support.prometheus import (  # noqa: F401 - fixtures
    SCRAPE_INTERVAL,
    Stack,
    eventually,
    prometheus_factory,
    running_stack,
)

pytestmark = pytest.mark.integration

PLAN = load_default_plan()
DEMO_PLAN = replace(PLAN, settings=replace(PLAN.settings, time_scale=1 / 86400))
PLANS = {"as-written": PLAN, "demo-scaled": DEMO_PLAN}
CHECKS = list({check.name: check for check in PLAN.all_checks()}.values())
# Two replicas mid-rollout: between them every series the plan reads exists (shadow and
# served L2 lookups, both L1 cohorts, verifications, Redis).
REPLICA_A = Scenario(shadow=True, l2=False, l1_percent=50, requests_per_second=40)
REPLICA_B = Scenario(shadow=True, l2=True, l1_percent=50, requests_per_second=40)
# "Quickly": one attempt. The library's defaults (3 retries, backoff 0+2+4 s) would take
# >= 6 s per query, 12 s for a measurement's two queries.
FAST = 3.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(replace(REPLICA_A), replace(REPLICA_B)) as running:
        yield running


@pytest.fixture(autouse=True)
def baseline_scenarios(stack: Stack) -> Iterator[None]:
    """Every test starts (and leaves) the replicas in the module's baseline scenario."""
    a, b = stack.exporters
    a.scenario, b.scenario = replace(REPLICA_A), replace(REPLICA_B)
    yield
    a.scenario, b.scenario = replace(REPLICA_A), replace(REPLICA_B)


@pytest.fixture
async def source(stack: Stack) -> AsyncIterator[PrometheusSource]:
    async with PrometheusSource(stack.url, timeout_seconds=2.0) as src:
        yield src


def test_first_data_arrives_within_the_scrape_managers_tick(stack: Stack) -> None:
    # Prometheus applies new targets on a 5 s tick; then 3 scrapes at 1 s.
    assert stack.first_data_seconds < 20, stack.first_data_seconds


def test_is_a_metrics_source() -> None:
    assert isinstance(PrometheusSource("http://127.0.0.1:9"), MetricsSource)


@pytest.mark.parametrize("plan_name", list(PLANS))
@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
async def test_every_default_plan_query_returns_a_value(
    source: PrometheusSource, check: CheckSpec, plan_name: str,
) -> None:
    plan: Plan = PLANS[plan_name]
    pairs = query_pairs(plan, check)
    assert pairs, check.name
    for query, sample_query in pairs:
        measurement = await source.measure(query, sample_query)
        assert measurement.error is None, (query, measurement)
        assert measurement.value is not None, (query, measurement)
        assert math.isfinite(measurement.value)
        if sample_query is not None:
            assert measurement.sample is not None and measurement.sample > 0, (
                sample_query, measurement)


async def test_a_cycles_queries_run_concurrently(source: PrometheusSource) -> None:
    checks = DEMO_PLAN.checks_for(DEMO_PLAN.last_index) + DEMO_PLAN.stages[1].checks
    pairs = [pair for check in checks for pair in query_pairs(DEMO_PLAN, check)]
    started = time.monotonic()
    measurements = await asyncio.gather(*(source.measure(*pair) for pair in pairs))
    elapsed = time.monotonic() - started
    assert all(m.error is None and m.value is not None for m in measurements), measurements
    assert elapsed < FAST, elapsed


# The service's own PromQL, written out: this test is about strings becoming the right
# floats, not about the plan's names.
ERROR_RATE = ('sum(increase(ai_agent_queries_total{outcome="error"}[5s])) / '
              "sum(increase(ai_agent_queries_total[5s]))")
COST_PER_QUERY = ("sum(increase(ai_agent_upstream_cost_usd_total[5s])) / "
                  "sum(increase(ai_agent_queries_total[5s]))")
P95 = ("histogram_quantile(0.95, sum by (le) "
       "(rate(ai_agent_query_duration_seconds_bucket[5s])))")
MEMORY = "max(max_over_time(redis_memory_used_bytes[3s]) / (redis_memory_max_bytes > 0))"


def _expected_p95(latency: float) -> float:
    """histogram_quantile's linear interpolation inside the contract bucket holding every
    answer of `latency` seconds."""
    upper = next(bound for bound in QUERY_DURATION_BUCKETS if latency <= bound)
    lower = max((bound for bound in QUERY_DURATION_BUCKETS if bound < upper), default=0.0)
    return lower + 0.95 * (upper - lower)


async def test_values_follow_the_scenario(stack: Stack, source: PrometheusSource) -> None:
    """Strings become the right floats: what the replicas do is what the controller reads."""
    for exporter in stack.exporters:
        exporter.scenario.error_rate_off = 0.2
        exporter.scenario.error_rate_on = 0.2
        exporter.scenario.cost_per_query_usd = 0.01
        exporter.scenario.latency_off = Latency(0.3)
        exporter.scenario.latency_on = Latency(0.3)
        exporter.scenario.redis_memory_used_bytes = 192 * 1024 * 1024
    p95 = _expected_p95(0.3)

    async def read() -> list[float | None]:
        measured = [await source.measure(query, None)
                    for query in (ERROR_RATE, COST_PER_QUERY, P95, MEMORY)]
        assert all(m.error is None for m in measured), measured
        return [m.value for m in measured]

    def close(values: list[float | None]) -> bool:
        rate, per_query, seconds, used = values
        return (rate is not None and abs(rate - 0.2) < 0.02
                and per_query is not None and abs(per_query - 0.01) < 1e-4
                and seconds is not None and abs(seconds - p95) < 1e-9
                and used is not None and abs(used - 0.75) < 1e-9)

    await eventually(read, close, timeout=20, what=f"error rate 0.2, $0.01/query, p95 {p95} s, "
                                                   "memory 75 %")


@pytest.mark.parametrize("expr", [
    "vector(0/0)", "vector(1/0)", "vector(-1/0)", "0/0", "1/0", "-1/0",
    "no_such_metric_anywhere",
    'ai_agent_queries_total{outcome="no-such-outcome"}',
    # A real NaN: a quantile over buckets that all increased by 0.
    "histogram_quantile(0.95, sum by (le) (rate(ai_agent_query_duration_seconds_bucket[1m])) * 0)",
])
async def test_nan_inf_and_empty_are_no_data(source: PrometheusSource, expr: str) -> None:
    assert await source.measure(expr, expr) == Measurement(value=None, sample=None, error=None)


@pytest.mark.parametrize(("expr", "expected"), [
    ("vector(0.25)", 0.25), ("scalar(vector(2))", 2.0), ("3", 3.0), ("vector(1e-9)", 1e-9),
])
async def test_scalars_and_single_series_are_values(source: PrometheusSource, expr: str,
                                                    expected: float) -> None:
    measurement = await source.measure(expr, None)
    assert measurement.value == pytest.approx(expected)
    assert measurement.sample is None and measurement.error is None


async def test_more_than_one_series_is_a_query_bug(source: PrometheusSource) -> None:
    measurement = await source.measure("ai_agent_queries_total", None)
    assert measurement.value is None
    assert measurement.error is not None
    assert "series, expected one" in measurement.error
    assert 'ai_agent_queries_total{' in measurement.error  # says which


async def test_bad_promql_is_an_error_with_prometheus_message(source: PrometheusSource) -> None:
    measurement = await source.measure("sum(rate(ai_agent_queries_total[5m])", None)
    assert measurement.value is None
    assert measurement.error is not None
    assert measurement.error.startswith("Prometheus 400 bad_data: ")
    assert "parse error" in measurement.error


async def test_evaluation_error_is_an_error(source: PrometheusSource) -> None:
    measurement = await source.measure(
        "ai_agent_queries_total + on() ai_agent_queries_total", None)
    assert measurement.error is not None
    assert measurement.error.startswith("Prometheus 422 execution: ")
    assert "many-to-many" in measurement.error


async def test_range_vector_is_an_error(source: PrometheusSource) -> None:
    measurement = await source.measure("ai_agent_queries_total[1m]", None)
    assert measurement.error is not None and "range vector" in measurement.error


async def test_a_failing_sample_query_is_an_error_that_says_so(
    source: PrometheusSource,
) -> None:
    measurement = await source.measure("vector(1)", "sum(")
    assert measurement.value == 1.0
    assert measurement.error is not None
    assert measurement.error.startswith("sample query: Prometheus 400 bad_data")


async def test_stopped_prometheus_is_an_error_quickly(
    prometheus_factory: Callable[..., PrometheusService],  # noqa: F811
) -> None:
    from devstack.services import prometheus as prom_svc

    svc = prometheus_factory()
    async with PrometheusSource(svc.url, timeout_seconds=2.0) as src:
        assert (await src.measure("vector(1)", "vector(2)")).value == 1.0
        prom_svc.stop(svc)
        started = time.monotonic()
        measurement = await src.measure("vector(1)", "vector(2)")
        flags = await src.reported_flags()
        elapsed = time.monotonic() - started
    assert measurement.value is None and measurement.sample is None
    assert measurement.error == f"cannot reach Prometheus at {svc.url}: Connection refused"
    assert flags == ReportedFlags(settings=None, instances=0, error=measurement.error)
    assert elapsed < FAST, elapsed


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (kernel backlog) and never answers: a hung Prometheus."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_silent_prometheus_times_out_once(silent_server: str) -> None:
    async with PrometheusSource(silent_server, timeout_seconds=0.5) as src:
        started = time.monotonic()
        measurement = await src.measure("vector(1)", "vector(1)")
        elapsed = time.monotonic() - started
    assert measurement.error == f"Prometheus at {silent_server} did not answer within 0.5s"
    # One attempt of 0.5 s; the library's default Retry would make it 4 attempts + 6 s.
    assert elapsed < 1.5, elapsed


class _Unavailable(BaseHTTPRequestHandler):
    requests_seen = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            type(self).requests_seen += 1
        body = (b'{"status":"error","errorType":"unavailable",'
                b'"error":"TSDB not ready (test stub)"}')
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "5")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def unavailable_server() -> Iterator[str]:
    _Unavailable.requests_seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_5xx_is_an_error_after_exactly_one_request(unavailable_server: str) -> None:
    async with PrometheusSource(unavailable_server) as src:
        started = time.monotonic()
        measurement = await src.measure("vector(1)", "vector(1)")
        elapsed = time.monotonic() - started
    assert measurement.error == "Prometheus 503 unavailable: TSDB not ready (test stub)"
    assert _Unavailable.requests_seen == 1  # no retry on 503, no Retry-After sleep
    assert elapsed < FAST


async def test_something_that_is_not_prometheus_is_an_error(stack: Stack) -> None:
    exporter = stack.exporters[0]
    async with PrometheusSource(f"http://{exporter.target}") as src:
        measurement = await src.measure("vector(1)", None)
    assert measurement.error is not None
    assert "did not answer like the Prometheus API" in measurement.error


# --- reported flags ---------------------------------------------------------------------------
async def _flags_become(source: PrometheusSource, expected: ReportedFlags) -> ReportedFlags:
    return await eventually(source.reported_flags, lambda r: r == expected, timeout=15,
                            what=f"reported flags {expected}")


async def test_reported_flags_two_agreeing_replicas(stack: Stack,
                                                    source: PrometheusSource) -> None:
    for exporter in stack.exporters:
        exporter.scenario.shadow, exporter.scenario.l2 = True, True
        exporter.scenario.l1_percent = 50
    await _flags_become(source, ReportedFlags(
        settings=FlagSettings(shadow=True, l2=True, l1_percent=50), instances=2))


async def test_reported_flags_two_disagreeing_replicas(stack: Stack,
                                                       source: PrometheusSource) -> None:
    a, b = stack.exporters
    for exporter in stack.exporters:
        exporter.scenario.shadow, exporter.scenario.l2 = True, True
    a.scenario.l1_percent, b.scenario.l1_percent = 10, 50  # one replica lags behind
    await _flags_become(source, ReportedFlags(settings=None, instances=2, consistent=False))


async def test_reported_flags_one_replica(stack: Stack, source: PrometheusSource) -> None:
    a, b = stack.exporters
    b.scenario.export_flags = False  # its series go stale at the next scrape
    a.scenario.shadow, a.scenario.l2, a.scenario.l1_percent = False, True, 100
    await _flags_become(source, ReportedFlags(
        settings=FlagSettings(shadow=False, l2=True, l1_percent=100), instances=1))


async def test_reported_flags_no_replica(stack: Stack, source: PrometheusSource) -> None:
    for exporter in stack.exporters:
        exporter.scenario.export_flags = False
    await _flags_become(source, ReportedFlags(settings=None, instances=0))


def _series(instance: str, shadow: float | None, l2: float | None,
            l1: float | None) -> list[Series]:
    from app import contract as c

    values = {c.FLAG_SHADOW_MODE: shadow, c.FLAG_L2_EMBEDDINGS: l2, c.FLAG_L1_QUERY_RESULTS: l1}
    return [Series(labels={"__name__": c.METRIC_FLAG_STATE, "flag": flag, "instance": instance,
                           "job": "ai-agent"}, value=value) for flag, value in values.items()]


@pytest.mark.parametrize(("series", "expected"), [
    ([], ReportedFlags(settings=None, instances=0)),
    (_series("a", 1, 0, 10), ReportedFlags(FlagSettings(True, False, 10), instances=1)),
    (_series("a", 1, 0, 10) + _series("b", 1, 0, 10),
     ReportedFlags(FlagSettings(True, False, 10), instances=2)),
    (_series("a", 1, 0, 10) + _series("b", 1, 1, 10),
     ReportedFlags(None, instances=2, consistent=False)),
    # A replica that misses a flag, reports NaN, or a value no flag can have agrees with nobody.
    (_series("a", 1, 0, 10) + _series("b", 1, 0, 10)[:2],
     ReportedFlags(None, instances=2, consistent=False)),
    (_series("a", 1, 0, None), ReportedFlags(None, instances=1, consistent=False)),
    (_series("a", 1, 0, 150), ReportedFlags(None, instances=1, consistent=False)),
    (_series("a", 0.5, 0, 10), ReportedFlags(None, instances=1, consistent=False)),
    # The same instance reporting one flag twice with different values.
    (_series("a", 1, 0, 10) + _series("a", 1, 0, 20)[2:],
     ReportedFlags(None, instances=1, consistent=False)),
], ids=["none", "one", "two-agree", "two-disagree", "missing-flag", "nan", "out-of-range",
        "half-on", "conflicting-duplicate"])
def test_flags_from_series(series: list[Series], expected: ReportedFlags) -> None:
    assert flags_from_series(series) == expected


def test_timeout_must_be_positive() -> None:
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout_seconds"):
            PrometheusSource("http://127.0.0.1:9", timeout_seconds=bad)


# --- as of a past moment (rollout replay) -------------------------------------------------------
async def test_as_of_evaluates_every_query_at_that_moment(source: PrometheusSource) -> None:
    moment = datetime.now(UTC) - timedelta(seconds=37, milliseconds=250)
    past = source.as_of(moment)
    assert isinstance(source, RecordedMetricsSource) and isinstance(past, MetricsSource)
    measured = await past.measure("time()", "vector(time())")
    assert measured.error is None, measured
    assert measured.value == pytest.approx(moment.timestamp(), abs=1e-3)
    assert measured.sample == pytest.approx(moment.timestamp(), abs=1e-3)
    # The live path is unchanged: now.
    live = await source.measure("time()", None)
    assert live.value is not None and live.value > moment.timestamp() + 30


async def test_as_of_reads_counters_and_flags_as_they_were(stack: Stack,
                                                           source: PrometheusSource) -> None:
    before = FlagSettings(shadow=True, l2=False, l1_percent=0)
    after = FlagSettings(shadow=True, l2=True, l1_percent=10)
    for exporter in stack.exporters:
        exporter.scenario.shadow, exporter.scenario.l2 = before.shadow, before.l2
        exporter.scenario.l1_percent = before.l1_percent
    await _flags_become(source, ReportedFlags(settings=before, instances=2))
    counted_then = await source.measure("sum(ai_agent_queries_total)", None)
    then = datetime.now(UTC)
    for exporter in stack.exporters:
        exporter.scenario.l2, exporter.scenario.l1_percent = after.l2, after.l1_percent
    await _flags_become(source, ReportedFlags(settings=after, instances=2))

    past = source.as_of(then)
    assert await past.reported_flags() == ReportedFlags(settings=before, instances=2)
    counted = await past.measure("sum(ai_agent_queries_total)", None)
    now_counted = await source.measure("sum(ai_agent_queries_total)", None)
    assert counted.error is None and counted.value is not None
    # The last scrape at or before `then`: what the live query just before it saw, or one
    # scrape later (stamped before `then`, ingested after that query ran).
    assert counted_then.value is not None and now_counted.value is not None
    assert counted.value <= now_counted.value
    assert counted.value >= counted_then.value
    assert counted.value <= counted_then.value + 2 * 40 * SCRAPE_INTERVAL * 3


async def test_as_of_before_any_data_is_no_data(stack: Stack, source: PrometheusSource) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    past = source.as_of(long_ago)
    assert await past.measure("sum(ai_agent_queries_total)", None) == Measurement(value=None)
    assert await past.reported_flags() == ReportedFlags(settings=None, instances=0)


async def test_as_of_an_unreachable_prometheus_is_an_error() -> None:
    async with PrometheusSource("http://127.0.0.1:9", timeout_seconds=1.0) as src:
        past = src.as_of(datetime.now(UTC) - timedelta(minutes=5))
        measured = await past.measure("vector(1)", None)
        flags = await past.reported_flags()
    assert measured.value is None and measured.error is not None
    assert "cannot reach Prometheus" in measured.error
    assert flags.settings is None and flags.error is not None


def test_as_of_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PrometheusSource("http://127.0.0.1:9").as_of(datetime(2026, 1, 1))
