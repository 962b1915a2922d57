"""Proof on a real Prometheus: every PromQL expression of the repository runs on real metrics.

The stack is the real thing, on 127.0.0.1: a private Redis (with maxmemory), redis_exporter
on it, two `python -m app` replicas sharing that Redis (one SQLite file each), a
`python -m rollout run` controller, and Prometheus (1 s scrape and evaluation) scraping them
as the jobs deploy/prometheus.yml and the rules use (`ai-cache-service`,
`rollout-controller`, `redis`) and loading every rule file of alerts/rules/.
devstack/traffic drives both replicas (queries and session writes, so invalidations
happen) in two phases: dark launch (shadow on, L2 off: shadow-mode L2 lookups exist) then
shadow + L2 + L1 at 50 % (served L2 and L1 lookups, both L1 cohorts); then Redis writes are
stalled for a second (CLIENT PAUSE WRITE) so the replicas' fail-open path counts cache
errors. The controller is paused and promoted once by hand so that its transition and
threshold series exist. The test waits for every series by polling Prometheus, never by
sleeping.

Then it executes every expression of `alerts.queries.iter_promql(executable=True)` (rules and
dashboards) and every query the controller's default plan makes it run (a threshold check's
value and sample; a statistical check's events and trials, and its control cohort's, with the
slow-answer boundary `{le}` placed as observe places it; a baseline check's counts), and
checks: no query errors; every expression has data unless it is on the commented allow-lists
below;
every vector selector of every expression matches series (so a renamed metric or label
value is caught even inside an alert whose condition is false); every recording rule
produces a series; /api/v1/rules reports every rule loaded and healthy; and the controller
measured its own plan against this Prometheus without a single error verdict. This is what
guarantees that names agree across alerts, dashboards, controller and service.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.exceptions import ResponseError

from alerts.queries import iter_promql, iter_rules, rule_files
from app import contract
from devstack import promql
from devstack.errors import ServiceError
from devstack.network import free_port
from devstack.services import prometheus as prom_svc
from devstack.services import redis as redis_svc
from devstack.services import redis_exporter as exporter_svc
from devstack.services.prometheus import PrometheusService
from rollout.core.boundaries import render_counts, resolve_boundary
from rollout.core.plan import BOUNDARY_PLACEHOLDER, WINDOW_PLACEHOLDER, Plan
from rollout.core.plan_loader import load_default_plan
from tests.integration.test_cluster_observability import (
    CLUSTER_ONLY_ALERTS,
    CLUSTER_ONLY_PANELS,
    CLUSTER_ONLY_SELECTORS,
)
from tests.support.observability import (
    BackgroundTraffic,
    Process,
    TrafficTotals,
    metric_name,
    spawn_controller,
    start_service,
    vector_selectors,
)

pytestmark = pytest.mark.integration

TOKEN = "observability-proof-token"
SERVICE_JOB = "ai-cache-service"  # as in deploy/prometheus.yml and the rules
CONTROLLER_JOB = "rollout-controller"
REDIS_JOB = "redis"
TRAFFIC_RATE = 6.0  # requests/s per replica: enough for every series, light on 2 cores
SERIES_TIMEOUT = 90.0

# The default plan as the controller runs it in a demo (days → seconds), with every window
# raised to 5 minutes: that covers the whole test (both traffic phases), as the dashboards'
# 5 m / 1 h windows do, so "has data" does not depend on which phase ran last.
PLAN = load_default_plan()
SCALED_PLAN = replace(PLAN, settings=replace(PLAN.settings, time_scale=1 / 86400,
                                             min_window=timedelta(minutes=5)))

# --- allow-lists -------------------------------------------------------------------------------
# Keys are `short_source()` values. Each entry says why the expression may or must be empty
# in this setup (healthy replicas that agree on flags, Redis with maxmemory and no OOM, one
# controller up, leading and paused after a manual promote).

# A result here would mean a metric is missing or the stack is broken: these MUST be empty.
MUST_BE_EMPTY: dict[str, str] = {
    "alert:AIAgentCacheLookupsMissing": "companion: fires only if flags are on and no lookups "
                                        "are counted; both replicas look up",
    "alert:AIAgentCacheVerificationsMissing": "companion: fires only if shadow hits are not "
                                              "verified; shadow mode verifies them",
    "alert:AIAgentFlagStateDisagreement": "both replicas read the same flag hash",
    "alert:AIAgentServiceDown": "both replicas are up",
    "alert:AIAgentServiceMetricsAbsent": "absent() companion: every service metric exists",
    "alert:AIAgentRedisMaxmemoryUnset": "the private Redis runs with maxmemory",
    "alert:AIAgentRedisDown": "Redis and redis_exporter are up (absent() arm included)",
    "alert:RolloutControllerDown": "the controller is up",
    "alert:RolloutControllerNoLeader": "exactly one controller leads (absent() arm included)",
    "alert:RolloutEvaluationStale": "the controller evaluates every second (absent() arm "
                                    "included)",
    # A single Redis here; the cluster case is proven in test_cluster_observability.py.
    **CLUSTER_ONLY_ALERTS,
}

# Threshold conditions that are false on a healthy stack, and events that did not happen.
# They may be empty; their names are still proven by the selector check.
MAY_BE_EMPTY: dict[str, str] = {
    "alert:AIAgentLowCacheHitRate": "condition: 1 h hit rate < 30 %; depends on how warm "
                                    "the caches got",
    "alert:AIAgentHighErrorRate": "condition: error ratio > 5 %; the local provider fails "
                                  "nothing",
    "alert:AIAgentL1CohortErrorRateAboveControl": "condition: L1 cohort error ratio 1 point "
                                                  "above the control's; nothing fails",
    "alert:AIAgentLatencyP95High": "condition: p95 > 2.5 s; latencies are scaled down",
    "alert:AIAgentCacheErrors": "condition: > 0.1 Redis errors/s over 5 m; the test only "
                                "stalls Redis writes briefly",
    "alert:AIAgentCacheCircuitOpen": "condition: breaker open > 50 % of 5 m",
    "alert:AIAgentCacheStaleOrMismatch": "condition: stale/mismatch share > 0.1 %",
    "alert:AIAgentRedisMemoryNearMax": "condition: memory > 90 % of maxmemory",
    "alert:AIAgentRedisEvictions": "condition: > 1 eviction/s",
    "alert:AIAgentRedisOOMRejections": "event: no OOM rejection happened "
                                       "(redis_errors_total{err=\"OOM\"} is absent)",
    "alert:RolloutRolledBack": "event: the controller never rolled back (paused)",
    "alert:RolloutHeldNoData": "condition: > 50 % no_data verdicts over 1 h",
    "alert:RolloutPrometheusErrors": "condition: > 50 % error verdicts over 15 m",
    "ai-cache-sre.json panel 43 ref A": "OOM rejections/s: no OOM happened, the series is "
                                        "created by the first one",
    **CLUSTER_ONLY_PANELS,  # a single Redis here (see above)
}

# Selectors that legitimately match nothing here. Their metric *name* must still exist
# (another label value of it is asserted to have series), so only the label value is
# unproven, and the reason says why it cannot be produced safely.
ABSENT_SELECTORS: dict[str, str] = {
    'redis_errors_total{err="OOM"}': "no OOM rejection; the test provokes an ERR reply so "
                                     "that redis_errors_total itself exists",
    'rollout_transitions_total{kind="rollback"}': "no rollback; the manual promote creates "
                                                  "rollout_transitions_total",
}


def short_source(source: str) -> str:
    """`alert:Name` / `record:name{labels}` for rules, `file panel N ref X` for dashboards,
    `plan:check:query|sample_query|events|trials|control_events|control_trials|
    counted_events|counted_trials` for the plan."""
    if source.startswith("plan:"):
        return source
    path, _, where = source.partition("#")
    if path.startswith("alerts/"):
        return where.split("/", 1)[1]
    file = path.rsplit("/", 1)[-1]
    if where.startswith("panel "):
        words = where.split()
        return f"{file} panel {words[1]} ref {words[-1]}"
    return f"{file} {where}"


# What stage `off` would have recorded, to place the boundary `{le}` of the checks whose
# slow-answer threshold is relative to the baseline p95 (the seed's ~1.75 s an answer).
PLAUSIBLE_BASELINE = {"baseline_p95_seconds": 1.78}


def plan_queries(plan: Plan) -> list[tuple[str, str]]:
    """Every query the controller runs for the plan's checks, rendered as rollout.observe
    renders them: counts over a window since the evidence began (here the 5 m the test's
    traffic spans), `{le}` resolved to the contract bucket the client labels."""
    queries: list[tuple[str, str]] = []
    seen: set[str] = set()
    window = max(timedelta(minutes=5), plan.settings.min_window)
    for check in plan.all_checks():
        if check.name in seen:  # stages share checks (l1-10 and l1-50 gates, l1_stale_rate_*)
            continue
        seen.add(check.name)
        if check.query:
            queries.append((f"plan:{check.name}:query", plan.render_query(check)))
            sample = plan.render_sample_query(check)
            if sample is not None:
                queries.append((f"plan:{check.name}:sample_query", sample))
        if check.counts is not None:  # a baseline check's recorded counts
            events, trials = render_counts(check.counts, window, None)
            queries += [(f"plan:{check.name}:counted_events", events),
                        (f"plan:{check.name}:counted_trials", trials)]
        stat = check.stat
        if stat is None:
            continue
        boundary = None
        if stat.slower_than is not None:
            boundary = resolve_boundary(stat.slower_than, PLAUSIBLE_BASELINE)
            assert boundary is not None, f"{check.name}: cannot place its slow boundary"
        events, trials = render_counts(stat.counts, window, boundary)
        queries += [(f"plan:{check.name}:events", events), (f"plan:{check.name}:trials", trials)]
        if stat.control is not None:
            events, trials = render_counts(stat.control, window, boundary)
            queries += [(f"plan:{check.name}:control_events", events),
                        (f"plan:{check.name}:control_trials", trials)]
    return queries


RULE_AND_DASHBOARD_QUERIES = list(iter_promql(executable=True))
PLAN_QUERIES = plan_queries(SCALED_PLAN)
ALL_QUERIES = RULE_AND_DASHBOARD_QUERIES + PLAN_QUERIES


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: PrometheusService
    services: list[Process]
    controller: Process
    traffic: BackgroundTraffic
    ready_seconds: float

    @property
    def url(self) -> str:
        return self.prometheus.url

    def query(self, expr: str) -> list[dict[str, Any]]:
        return promql.query(self.url, expr, timeout=10.0)


def _set_flags(client: Redis, *, shadow: bool, l2: bool, l1_percent: int) -> None:
    client.hset(contract.LOCAL_FLAGS_KEY, mapping={
        contract.LOCAL_FIELD_SHADOW: int(shadow), contract.LOCAL_FIELD_L2: int(l2),
        contract.LOCAL_FIELD_L1_PERCENT: l1_percent,
    })


def _wait_all(prometheus: PrometheusService, traffic: BackgroundTraffic,
              exprs: dict[str, int], what: str) -> None:
    """wait_for_series for each expression (expr → min series), failing with `what`."""
    deadline = time.monotonic() + SERIES_TIMEOUT
    for expr, min_series in exprs.items():
        traffic.raise_if_failed()
        try:
            prometheus.wait_for_series(expr, timeout=max(1.0, deadline - time.monotonic()),
                                       min_series=min_series)
        except ServiceError as exc:
            raise AssertionError(f"{what}: {exc}; traffic so far {traffic.totals}") from exc


def _increased(metric: str, matchers: str, *, by: str = "") -> str:
    """`metric{matchers}` increased within 5 m (the rate window of the rules, dashboards and
    scaled plan). A counter series created by its first increment only counts from its
    second one, so "the series exists" is not enough for a `> 0` denominator."""
    selector = ",".join(filter(None, [f'job="{SERVICE_JOB}"', matchers]))
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}{{{selector}}}[5m])) > 0"


def _controller_command(controller: Process, name: str) -> dict[str, Any]:
    response = httpx.post(f"{controller.url}/api/{name}", timeout=10.0,
                          headers={"Authorization": f"Bearer {TOKEN}"},
                          json={"who": "observability-proof", "why": "create rollout series"})
    assert response.status_code == 200, (name, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


def _stall_redis_writes_until_cache_errors(redis_client: Redis, stack_prom: PrometheusService,
                                           traffic: BackgroundTraffic) -> None:
    """Pause Redis writes (CLIENT PAUSE ... WRITE) for a second at a time until the replicas
    count cache errors: their fills time out (REDIS_TIMEOUT_SECONDS) and fail open. This is
    what makes ai_agent_cache_errors_total (created on the first failure) exist."""
    deadline = time.monotonic() + SERIES_TIMEOUT
    while True:
        traffic.raise_if_failed()
        redis_client.execute_command("CLIENT", "PAUSE", 1000, "WRITE")  # type: ignore[no-untyped-call]
        with contextlib.suppress(ServiceError):
            stack_prom.wait_for_series(
                f'sum({contract.METRIC_CACHE_ERRORS}{{job="{SERVICE_JOB}"}}) > 0', timeout=4.0)
            # Dashboards rate() it: wait for the second scrape of the new series, without
            # which rate() is empty (a proof run right after the first scrape once failed).
            stack_prom.wait_for_series(
                f'sum(rate({contract.METRIC_CACHE_ERRORS}{{job="{SERVICE_JOB}"}}[5m])) >= 0',
                timeout=SERIES_TIMEOUT)
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"no cache errors after stalling Redis writes; traffic "
                                 f"{traffic.totals}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("observability")
    with contextlib.ExitStack() as cleanup:
        redis = redis_svc.start_private_redis(name="redis-observability", maxmemory="128mb")
        cleanup.callback(redis_svc.stop, redis)
        client = Redis.from_url(redis.url, decode_responses=True)
        cleanup.callback(client.close)
        exporter = exporter_svc.start_private_redis_exporter(redis.url,
                                                            name="redis-exporter-observability")
        cleanup.callback(exporter_svc.stop, exporter)

        # One deliberate error reply (wrong arity) so that redis_exporter exports
        # redis_errors_total{err="ERR"}: the metric the OOM alert and gates read exists.
        with pytest.raises(ResponseError):
            client.execute_command(  # type: ignore[no-untyped-call]
                "SET", "observability-proof:wrong-arity")

        # Phase A, dark launch: shadow-mode lookups in both layers.
        _set_flags(client, shadow=True, l2=False, l1_percent=0)
        services: list[Process] = []
        for index in (1, 2):
            service = start_service(
                f"ai-cache-service-{index}", redis_url=redis.url, token=TOKEN, workdir=workdir,
                database_url=f"sqlite+aiosqlite:///{workdir / f'notes-{index}.db'}",
                AI_LATENCY_SCALE="0.02", LOCAL_EMBEDDING_DIMENSIONS="256",
            )
            cleanup.callback(service.stop)
            services.append(service)

        controller_port = free_port()
        prometheus = prom_svc.start_private_prometheus(
            targets={
                SERVICE_JOB: [s.target for s in services],
                CONTROLLER_JOB: [f"127.0.0.1:{controller_port}"],
                REDIS_JOB: [exporter_svc.target_of(exporter)],
            },
            scrape_interval=1.0, rule_files=rule_files(), name="prometheus-observability",
        )
        cleanup.callback(prom_svc.stop, prometheus)

        # The controller keeps its local flag store and state in database 1 of the same
        # Redis: it would otherwise reconcile the service's flags (database 0) to its stage
        # every second, and this test sets those flags itself.
        controller = spawn_controller(
            "rollout-controller", port=controller_port,
            redis_url=redis.url.rsplit("/", 1)[0] + "/1",
            prometheus_url=prometheus.url, token=TOKEN, workdir=workdir,
            ROLLOUT_NAME=f"proof-{uuid.uuid4().hex[:8]}", ROLLOUT_INTERVAL_SECONDS="1",
            ROLLOUT_TIME_SCALE=str(1 / 86400),
        )
        cleanup.callback(controller.stop)
        controller.wait_ready("/healthz")

        traffic = BackgroundTraffic([s.url for s in services], TOKEN, rate=TRAFFIC_RATE)
        traffic.start()
        cleanup.callback(traffic.stop)
        traffic.wait_seeded()

        hits, misses = contract.METRIC_CACHE_HITS, contract.METRIC_CACHE_MISSES
        verifications = contract.METRIC_CACHE_VERIFICATIONS
        job = f'job="{SERVICE_JOB}"'
        _wait_all(prometheus, traffic, {
            f'up{{job=~"{SERVICE_JOB}|{CONTROLLER_JOB}|{REDIS_JOB}"}} == 1': 4,
            _increased(hits, 'cache_layer="embedding",mode="shadow"'): 1,
            _increased(misses, 'cache_layer="embedding",mode="shadow"'): 1,
            _increased(verifications, 'cache_layer="embedding"'): 1,
        }, "dark-launch series")

        # Phase B: shadow + L2 + L1 at 50 %, so both L1 cohorts exist.
        _set_flags(client, shadow=True, l2=True, l1_percent=50)
        _wait_all(prometheus, traffic, {
            f'{contract.METRIC_FLAG_STATE}{{{job},flag="{contract.FLAG_L1_QUERY_RESULTS}"}}'
            " == 50": 2,
            _increased(hits, 'cache_layer="embedding",mode="serve"'): 1,
            _increased(misses, 'cache_layer="embedding",mode="serve"'): 1,
            _increased(hits, 'cache_layer="query_result",mode="serve"'): 1,
            _increased(misses, 'cache_layer="query_result",mode="serve"'): 1,
            _increased(hits, 'cache_layer="query_result",mode="shadow"'): 1,
            _increased(verifications, 'cache_layer="query_result"'): 1,
            _increased(f"{contract.METRIC_QUERY_DURATION}_count", "", by="l1"): 2,
            f'sum({contract.METRIC_CACHE_INVALIDATIONS}{{{job}}}) > 0': 1,
        }, "served-cache series")
        _stall_redis_writes_until_cache_errors(client, prometheus, traffic)

        # Rollout series that only exist after a transition and in a stage with thresholds:
        # pause first (no automatic decision will move it afterwards), then promote by hand.
        _controller_command(controller, "pause")
        promoted = _controller_command(controller, "promote")
        assert promoted["to_stage"] == "dark-launch", promoted
        _wait_all(prometheus, traffic, {
            'rollout_transitions_total{kind="manual-promote",to_stage="dark-launch"}': 1,
            "rollout_paused == 1": 1,
            "rollout_stage_index == 1": 1,
            "rollout_check_threshold": 1,
            "rollout_check_value": 1,
        }, "controller series")

        # Every recording rule has produced its series (evaluated every second).
        _wait_all(prometheus, traffic, {_recorded_selector(r.body): 1 for r in iter_rules()
                                        if not r.is_alert}, "recording rules")

        yield Stack(prometheus=prometheus, services=services, controller=controller,
                    traffic=traffic, ready_seconds=time.monotonic() - started)
        totals: TrafficTotals = traffic.stop()
        print(f"\ntraffic: {totals}")
        for process in (*services, controller):
            assert process.alive(), f"{process.name} died:\n{process.log_tail()}"


def _recorded_selector(body: Mapping[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(body.get("labels", {}).items()))
    return f"{body['record']}{{{labels}}}" if labels else str(body["record"])


# --- the proofs ------------------------------------------------------------------------------


def test_vector_selectors_are_extracted_from_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{l1="on"}[5m])))\n'
            'and on (job) (sum(rate(b_total[5m])) by (le) > 0)\n'
            'or label_replace(absent(up{job="x"} == 1), "reason", "y", "", "")\n'
            'unless c offset 15m / on (k) group_left () d{r=~"stale|mismatch"} or vector(0)')
    assert vector_selectors(expr) == [
        'a_bucket{l1="on"}', "b_total", 'up{job="x"}', "c", 'd{r=~"stale|mismatch"}']


def test_allow_lists_name_existing_expressions() -> None:
    keys = {short_source(source) for source, _ in ALL_QUERIES}
    assert len(keys) == len(ALL_QUERIES), "short_source() must be unique"
    stale = sorted((set(MUST_BE_EMPTY) | set(MAY_BE_EMPTY)) - keys)
    assert not stale, f"allow-list entries that match no expression: {stale}"
    assert not set(MUST_BE_EMPTY) & set(MAY_BE_EMPTY)
    every_selector = {s for _, expr in ALL_QUERIES for s in vector_selectors(expr)}
    assert not set(ABSENT_SELECTORS) - every_selector


def test_plan_queries_cover_every_query_the_controller_runs() -> None:
    """Threshold checks by value and sample, statistical ones by their counts (and the
    control cohort's), baseline checks by the counts they record: none is left unproven."""
    keys = {key for key, _ in PLAN_QUERIES}
    for check in SCALED_PLAN.all_checks():
        expected = set()
        if check.query:
            expected.add(f"plan:{check.name}:query")
        if check.sample_query is not None:
            expected.add(f"plan:{check.name}:sample_query")
        if check.counts is not None:
            expected |= {f"plan:{check.name}:counted_events", f"plan:{check.name}:counted_trials"}
        if check.stat is not None:
            expected |= {f"plan:{check.name}:events", f"plan:{check.name}:trials"}
            if check.stat.control is not None:
                expected |= {f"plan:{check.name}:control_events",
                             f"plan:{check.name}:control_trials"}
        assert expected, f"{check.name}: the controller runs no query for it?"
        assert expected <= keys, f"{check.name}: missing {sorted(expected - keys)}"
    unrendered = [expr for _, expr in PLAN_QUERIES
                  if WINDOW_PLACEHOLDER in expr or BOUNDARY_PLACEHOLDER in expr]
    assert not unrendered, unrendered


def test_every_expression_runs_and_has_data(stack: Stack) -> None:
    errors: list[str] = []
    empty: list[str] = []
    unexpected: list[str] = []
    may_have_data: list[str] = []
    not_finite: list[str] = []
    counts = {"rules": 0, "dashboards": 0, "plan": 0}
    for source, expr in ALL_QUERIES:
        kind = ("plan" if source.startswith("plan:")
                else "rules" if source.startswith("alerts/") else "dashboards")
        counts[kind] += 1
        key = short_source(source)
        try:
            result = stack.query(expr)
        except ServiceError as exc:
            errors.append(f"{source}\n    {expr}\n    -> {exc}")
            continue
        if key in MUST_BE_EMPTY:
            if result:
                unexpected.append(f"{source} ({MUST_BE_EMPTY[key]})\n    {expr}\n"
                                  f"    -> {json.dumps(result)[:600]}")
        elif not result:
            if key not in MAY_BE_EMPTY:
                empty.append(f"{source}\n    {expr}")
        elif key in MAY_BE_EMPTY:
            may_have_data.append(key)
        # Every ratio and quantile is guarded: no NaN or ±Inf anywhere, and a plan's sample
        # or trials (the traffic behind a check) is positive.
        values = [float(sample["value"][1]) for sample in result]
        if not all(math.isfinite(v) for v in values) or (
                key.endswith(("sample_query", "trials")) and not all(v > 0 for v in values)):
            not_finite.append(f"{source}\n    {expr}\n    -> {values}")
    print(f"\nexecuted {sum(counts.values())} expressions: {counts}; "
          f"allow-listed but with data: {may_have_data}")
    assert not errors, "query errors:\n" + "\n".join(errors)
    assert not empty, "empty results (not on the allow-list):\n" + "\n".join(empty)
    assert not unexpected, "must be empty but returned series:\n" + "\n".join(unexpected)
    assert not not_finite, "NaN/Inf values or empty samples:\n" + "\n".join(not_finite)
    assert counts["rules"] == len(list(iter_rules()))
    assert counts["dashboards"] > 0 and counts["plan"] > 0


def test_every_selector_matches_series(stack: Stack) -> None:
    """The names themselves: each `metric{matchers}` any expression reads has series now."""
    selectors = sorted({s for _, expr in ALL_QUERIES for s in vector_selectors(expr)})
    missing: list[str] = []
    for selector in selectors:
        found = stack.query(f"count({selector})")
        if selector in CLUSTER_ONLY_SELECTORS:  # proven in test_cluster_observability.py
            assert not found, f"{selector} has series on a single Redis"
        elif selector in ABSENT_SELECTORS:
            assert not found, f"{selector} now has series: drop it from ABSENT_SELECTORS"
            name = metric_name(selector)
            assert stack.query(f'count({{__name__="{name}"}})'), (
                f"{name} does not exist at all, not only {selector}")
        elif not found:
            readers = [src for src, expr in ALL_QUERIES if selector in vector_selectors(expr)]
            missing.append(f"{selector} (read by {readers})")
    print(f"\n{len(selectors)} selectors checked")
    assert not missing, "selectors without series:\n" + "\n".join(missing)


def test_every_recording_rule_produces_a_series(stack: Stack) -> None:
    recording = [r for r in iter_rules() if not r.is_alert]
    assert recording
    absent = [r.source for r in recording if not stack.query(_recorded_selector(r.body))]
    assert not absent, f"recording rules without series: {absent}"


def test_rule_groups_are_loaded_and_healthy(stack: Stack) -> None:
    expected = {(r.group, r.name) for r in iter_rules()}

    def report() -> tuple[set[tuple[str, str]], list[str]]:
        groups = promql.api(stack.url, "rules")["groups"]
        loaded = {(g["name"], r["name"]) for g in groups for r in g["rules"]}
        problems = [f"{g['name']}/{r['name']}: health={r.get('health')} "
                    f"lastError={r.get('lastError')!r}"
                    for g in groups for r in g["rules"]
                    if r.get("health") != "ok" or r.get("lastError")]
        return loaded, problems

    deadline = time.monotonic() + 15
    loaded, problems = report()
    while problems and time.monotonic() < deadline:  # "unknown" until the first evaluation
        time.sleep(0.5)
        loaded, problems = report()
    assert loaded == expected
    assert not problems, problems


def test_the_controller_measured_its_plan_without_errors(stack: Stack) -> None:
    """The controller's own queries (demo-scaled default plan) ran against this Prometheus:
    verdicts were counted, none of them `error`."""
    verdicts = stack.query(f'sum by (verdict) (rollout_checks_total{{job="{CONTROLLER_JOB}"}})')
    by_verdict = {s["metric"]["verdict"]: float(s["value"][1]) for s in verdicts}
    assert sum(by_verdict.values()) > 0, by_verdict
    assert by_verdict.get("error", 0.0) == 0.0, (by_verdict, stack.controller.log_tail())


def test_the_stack_came_up_in_time(stack: Stack) -> None:
    assert stack.ready_seconds < 120, stack.ready_seconds
    assert all(p.alive() for p in (*stack.services, stack.controller))

