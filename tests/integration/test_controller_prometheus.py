"""The controller end to end on real services: a private Prometheus scraping a fake service
replica that the test controls, real Redis for the state, log and lease, flags in the local
store or in a real Unleash, notifications to a real local HTTP listener.

The plan is the bundled default plan scaled to seconds (tests/support/controller_plan.py): a
plan day is 1 s (3 s where a stage must bake longer than the test needs), every window is 4 s
(four 1 s scrapes), M = 2 passing cycles, N = 2 failing cycles unless a test says otherwise,
one cycle every 0.5 s. The replica follows the flag store ~1 s after a change and then
reports the new flags, so every stage waits for the service and for one full window before
it is judged. Cycles are paced by the evaluation interval; every wait has a deadline.

The test that stops Prometheus runs last; the shared stack restarts it for any test after.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from devstack.environment import scrubbed
from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.services import redis as redis_svc
from devstack.services.common import Service
from devstack.services.unleash import UnleashService
from devstack.webhook_sink import WebhookSink
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.prometheus import PrometheusSource
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.adapters.unleash_admin import UnleashAdmin
from rollout.adapters.webhook import WebhookNotifier
from rollout.core.decision import Action
from rollout.core.flags import FlagSettings
from rollout.core.observations import Verdict
from rollout.core.plan import CheckKind
from rollout.cycle import run_cycle
from rollout.ports import FencedOut
from rollout.runtime_types import CycleReport
from rollout.scheduler import build_scheduler
from tests.support.controller_crash import CrashingStore, SimulatedCrash
from tests.support.controller_harness import (
    LEASE_SECONDS,
    build_harness,
    seed_state,
    seeded,
    utcnow,
)
from tests.support.controller_log import (
    check_of,
    entry_time,
    healthy,
    is_action,
    judged,
    oldest_first,
    record_of,
    spec_of,
    transitions,
    visits,
)
from tests.support.controller_plan import (
    DARK,
    DAY_SECONDS,
    INTERVAL_SECONDS,
    L1_10,
    L1_50,
    L1_100,
    L2,
    OFF,
    STAGES,
    demo_plan,
    judging_delay,
    stage_flags,
    write_demo_plan_file,
)
from tests.support.controller_replica import BASELINE, ERROR_RATE, TRAFFIC_RPS, ServiceReplica
from tests.support.controller_stack import SCRAPE_SECONDS, ControllerStack, running_controller_stack
from tests.support.prometheus import eventually
from tests.support.redis_gate import RedisGate
from tests.support.unleash import admin_for

pytestmark = pytest.mark.integration

ARROW = "\u2192"
REDIS_CHECKS = frozenset({"redis_no_oom_rejections", "redis_memory_below_limit",
                          "redis_oom_guardrail", "redis_evictions_guardrail"})


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[ControllerStack]:
    with running_controller_stack() as running:
        yield running


@pytest.fixture
def live(stack: ControllerStack) -> ControllerStack:
    """The shared stack with Prometheus running and the replica back at its defaults."""
    stack.ensure_prometheus()
    stack.reset()
    return stack


@pytest.fixture
async def client(redis_service: Service) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_service.url, decode_responses=True)
    yield redis
    await redis.aclose()


@pytest.fixture
async def keys(client: Redis) -> AsyncIterator[RolloutKeys]:
    keys = RolloutKeys(f"ctl-{uuid.uuid4().hex[:8]}")
    yield keys
    await client.delete(*keys.all(), f"{keys.namespace}:flags")


@pytest.fixture
async def source(live: ControllerStack) -> AsyncIterator[PrometheusSource]:
    async with PrometheusSource(live.url, timeout_seconds=2.0) as prometheus:
        yield prometheus


@pytest.fixture
async def local_flags(redis_service: Service, keys: RolloutKeys) -> AsyncIterator[LocalFlagWriter]:
    """The controller's writer on the local flag store (a key of this test's own)."""
    async with LocalFlagWriter.from_url(redis_service.url, key=f"{keys.namespace}:flags") as w:
        yield w


ReplicaFactory = Callable[..., Awaitable[ServiceReplica]]


@pytest.fixture
async def replica(live: ControllerStack, redis_service: Service,
                  keys: RolloutKeys) -> AsyncIterator[ReplicaFactory]:
    """`replica(initial_flags, reader=None, faults=None)`: the service, running
    `initial_flags` now and following the flag store from then on through `reader` (a flag
    adapter it takes over and closes), by default its own client on this test's local flag
    store; `faults`: scenario changes while it runs given flags (ServiceReplica). After the
    test it is stopped before its client closes (closing a redis client under an in-flight
    read can hang), and the exporter is reset."""
    started: list[ServiceReplica] = []
    async with contextlib.AsyncExitStack() as owned:

        async def start(initial: FlagSettings,
                        reader: LocalFlagWriter | UnleashAdmin | None = None,
                        faults: Mapping[FlagSettings, Mapping[str, Any]] | None = None,
                        ) -> ServiceReplica:
            if reader is None:
                reader = LocalFlagWriter.from_url(redis_service.url,
                                                  key=f"{keys.namespace}:flags")
            owned.push_async_callback(reader.aclose)
            service = ServiceReplica(live.exporter, reader, faults=faults)
            service.adopt(initial)
            started.append(service.start())
            return service

        yield start
        for service in started:
            await service.stop()
    live.reset()


HOOK = "/hooks/rollout"


@pytest.fixture
def listener() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def events(sink: WebhookSink, event: str | None = None) -> list[dict[str, Any]]:
    """The notifications posted so far (of `event` only, if given), oldest first."""
    return [body for body in sink.bodies() if event is None or body.get("event") == event]


# --- helpers -------------------------------------------------------------------------------


def all_pass(report: CycleReport) -> bool:
    assert report.observations is not None
    return all(o.verdict is Verdict.PASS for o in report.observations.checks)


def enforced(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in entry.checks if not c.dry_run]


def sample(registry: Any, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def settled(probe: Callable[[], Awaitable[FlagSettings | None]], want: FlagSettings,
                  what: str) -> None:
    await eventually(probe, lambda got: got == want, timeout=10, what=what)


# --- 1. a healthy noisy run, flags through a real Unleash -----------------------------------


async def test_a_healthy_noisy_run_completes_the_default_plan_on_unleash(  # noqa: PLR0915  (one scenario, read top to bottom)
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, unleash_server: UnleashService,
) -> None:
    """Random arrivals, 1 % errors in both cohorts, a slow tail: every gate is shown to pass
    from the counts since its stage's flags were confirmed, no guardrail proves harm, and
    the rollout completes."""
    plan = demo_plan()
    async with admin_for(unleash_server) as flags:
        await flags.apply(FlagSettings())  # whatever earlier tests left on the shared server
        service = await replica(FlagSettings(), admin_for(unleash_server))
        ctl = build_harness("ctl-a", plan, client, keys, flags, source)

        started = time.monotonic()
        done = await ctl.run_until(is_action(Action.COMPLETE), timeout=150,
                                   what="the rollout completing")
        took = time.monotonic() - started
        after = await ctl.cycles(2)
        final_flags = await flags.read()

    entries = await oldest_first(ctl.store)
    assert transitions(entries) == [
        (OFF, DARK, "advance"), (DARK, L2, "advance"), (L2, L1_10, "advance"),
        (L1_10, L1_50, "advance"), (L1_50, L1_100, "advance"), (L1_100, L1_100, "complete"),
    ], f"after {took:.0f}s"
    assert {e.kind for e in entries} == {"cycle"}  # no failed write, no recovery
    assert not [e for e in entries if e.action == "rollback"]
    assert not [c for e in entries for c in e.checks
                if c.verdict == "fail" and spec_of(plan, c.check).is_enforced
                and spec_of(plan, c.check).kind is CheckKind.GUARDRAIL]

    passes = plan.settings.passes_to_advance
    completed = next(i for i, e in enumerate(entries) if e.transition == "complete")
    cut = visits(entries[:completed + 1])
    assert [stage for stage, _ in cut] == list(STAGES)
    for number, (stage, visit) in enumerate(cut):
        move = visit[-1]
        index = plan.index_of(stage)
        assert index is not None and move.from_stage == stage
        wanted = {s.name for s in plan.checks_for(index) if s.is_enforced}
        # The move happened in a cycle where every gate passed and no guardrail stood in
        # the way, as in the M - 1 cycles before it; the service reported the stage's flags.
        for entry in visit[-passes:]:
            records = {c.check: c for c in entry.checks}
            assert wanted <= set(records), (stage, entry)
            for name in wanted:
                record, spec = records[name], spec_of(plan, name)
                if spec.kind is CheckKind.GUARDRAIL and spec.stat is not None:
                    assert record.verdict in {"pass", "inconclusive", "no_data"}, record
                else:
                    assert record.verdict == "pass", (stage, record)
        assert move.flags_match is True
        assert move.reported_flags.settings == stage_flags(plan, stage)
        # Bake time, and the counts began when the service reported the flags.
        entered = entry_time(cut[number - 1][1][-1]) if number else entry_time(visit[0])
        assert entry_time(move) - entered >= plan.bake_of(index), stage
        matching = [entry_time(e) for e in visit if e.flags_match]
        assert entry_time(move) - matching[0] >= judging_delay(plan, stage), stage
        if stage != OFF:
            # The replica takes ~1 s to follow: the controller waited for it, not judging a
            # stage on metrics from the one before.
            waiting = [e for e in visit if not e.flags_match]
            assert waiting and all("waiting for the service to report" in e.reason
                                   for e in waiting), stage
            assert entry_time(waiting[-1]) < matching[0]
            # Each passing gate shows its evidence: its bound, the margin or limit, n.
            for name in wanted:
                spec, record = spec_of(plan, name), record_of(move, name)
                if spec.stat is not None and spec.kind is CheckKind.GATE:
                    assert re.search(r"\(n=\d[\d ]*( vs \d[\d ]*)?\): pass$",
                                     record.message), record.message
                    assert record.sample is not None and record.sample > 0

    # The noise was real: errors at ~1 % in both cohorts, judged within their margins.
    l1_reports = [r for r in ctl.reports if r.state_before.stage_name in (L1_10, L1_50)
                  and r.observations is not None
                  and r.observations.get("l1_cohort_error_rate_vs_control") is not None]
    evidence = [o.evidence for r in l1_reports
                if (o := check_of(r, "l1_cohort_error_rate_vs_control")).verdict is Verdict.PASS
                and o.evidence is not None]
    assert evidence, "the L1 cohort gate never passed with evidence"
    for found in evidence:
        assert found.control_trials is not None and found.control_events is not None
        assert found.events > 0 and found.control_events > 0
        assert 0.002 < found.events / found.trials < 0.03, found
        assert found.upper <= found.limit == pytest.approx(0.01)
    # (How much more an inconclusive gate needs is asserted by the low-traffic test: at this
    # rate the gates are decided within the stage's first judged cycles.)

    # What stage `off` measured became the baseline the later stages were judged against.
    state = (await ctl.store.load()).state
    assert state is not None and state.stage_name == L1_100 and state.completed_at is not None
    assert set(state.baseline) == set(BASELINE) & {c.name for c in plan.baseline_checks()}
    assert state.baseline["baseline_error_rate"] == pytest.approx(ERROR_RATE, abs=0.006)
    assert state.baseline["baseline_p95_seconds"] == pytest.approx(
        BASELINE["baseline_p95_seconds"], rel=0.05)
    assert state.baseline["baseline_cost_per_query_usd"] == pytest.approx(
        BASELINE["baseline_cost_per_query_usd"], rel=1e-3)
    for name, (events, trials) in state.baseline_counts.items():
        assert trials >= TRAFFIC_RPS, name  # counted over the whole of `off`
        assert events / trials == pytest.approx(
            state.baseline.get(name, BASELINE[name]) / (0.05 if "cost" in name else 1.0),
            rel=0.5), name
    # Objectives are reported when a stage with objectives is left, and at the end.
    assert done.decision is not None and "rollout complete" in done.decision.reason
    assert "objectives: " in done.decision.reason
    assert "objectives: " in next(e.reason for e in entries if e.from_stage == L2
                                  and e.transition)
    assert all(r.decision is not None and r.decision.action is Action.HOLD
               and "rollout complete since" in r.decision.reason for r in after)

    # The service followed Unleash through exactly the plan's stages, in order.
    assert final_flags == stage_flags(plan, L1_100)
    assert service.adopted_flags == [stage_flags(plan, s) for s in STAGES]
    for before, after_stage in itertools.pairwise(STAGES):
        assert sample(ctl.registry, "rollout_transitions_total", from_stage=before,
                      to_stage=after_stage, kind="advance") == 1
    assert sample(ctl.registry, "rollout_stage_index") == 5


# --- 2. an error spike in the L1 cohort: proven, rolled back at once, in the log and webhook -


async def test_an_l1_cohort_error_spike_at_l1_50_rolls_back_to_l1_10_once_proven_then_holds(  # noqa: PLR0915  (one scenario, read top to bottom)
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
    listener: WebhookSink,
) -> None:
    # A plan day of 3 s: l1-50 bakes 15 s, so it cannot advance before the spike.
    plan = demo_plan(day_seconds=3)
    guard = spec_of(plan, "l1_cohort_error_guardrail")
    await local_flags.apply(stage_flags(plan, L1_50))
    await seed_state(client, keys, seeded(plan, L1_50, baked=False))
    service = await replica(stage_flags(plan, L1_50))
    notifier = WebhookNotifier(listener.url(HOOK), source="ctl-a")
    ctl = build_harness("ctl-a", plan, client, keys, local_flags, source, notifier=notifier)
    try:
        await ctl.run_until(lambda r: healthy(r, plan), timeout=30,
                            what="l1-50 judged healthy")
        service.scenario.error_rate_on = 0.3  # the L1 cohort starts failing
        flipped, before = time.monotonic(), len(ctl.reports)
        rollback = await ctl.run_until(is_action(Action.ROLLBACK), timeout=20,
                                       what="the rollback")
        elapsed = time.monotonic() - flipped
        service.scenario.error_rate_on = ERROR_RATE  # rolling back ended the incident

        # The counts since l1-50 was confirmed include its healthy seconds: the spike must
        # outweigh them, and the first cycle whose bound proves it rolls back (a proven
        # breach needs no second cycle).
        since = ctl.reports[before:]
        verdicts = [check_of(r, guard.name).verdict for r in since]
        assert verdicts[-1] is Verdict.FAIL and Verdict.FAIL not in verdicts[:-1], verdicts
        assert plan.failures_to_rollback(guard) == 1
        assert elapsed <= 4 * SCRAPE_SECONDS + ctl.interval + 1.0, elapsed

        assert rollback.decision is not None
        assert (rollback.decision.from_stage, rollback.decision.target_stage) == (L1_50, L1_10)
        reason = rollback.decision.reason
        proven = check_of(rollback, guard.name)
        assert proven.message in reason and proven.message.endswith(": fail"), reason
        assert re.search(rf"{re.escape(guard.display_name)} \+[\d.]+ pp, ≥ \+[\d.]+ pp "
                         r"\(99\.95 %\); margin \+1 pp vs control cohort "
                         r"\(n=\d[\d ]* vs \d[\d ]*\): fail", reason), reason
        assert reason.endswith(f"{L1_50} {ARROW} {L1_10}"), reason
        found = proven.evidence
        assert found is not None and found.lower > found.limit == pytest.approx(0.01)
        assert found.control_trials is not None and found.control_events is not None
        assert found.events / found.trials > 2 * found.control_events / found.control_trials

        # The log has the same line and the numbers behind it.
        [entry] = [e for e in await oldest_first(ctl.store) if e.transition]
        assert entry.transition == "rollback" and entry.reason == reason
        record = record_of(entry, guard.name)
        assert record.verdict == "fail" and record.limit == pytest.approx(0.01)
        assert record.value is not None and record.value > record.limit
        assert record.sample == pytest.approx(found.trials)
        assert entry.flags.desired == stage_flags(plan, L1_10)
        assert entry.flags.result == "written"

        # So does the webhook, at once (delivered within the cycle).
        [posted] = events(listener, "transition")
        assert (posted["from_stage"], posted["to_stage"]) == (L1_50, L1_10)
        assert posted["severity"] == "critical" and reason in posted["plain_text"]
        assert "ROLLED BACK" in posted["text"]

        # Then it holds at l1-10 (cooldown, then awaiting a person) even once every gate
        # of l1-10 passes again.
        await ctl.run_until(lambda r: healthy(r, plan), timeout=40,
                            what="l1-10 judged healthy after the rollback")
        held = await ctl.cycles(3)
    finally:
        await notifier.aclose()
    for report in held:
        assert report.decision is not None and report.decision.action is Action.HOLD
        assert report.state_after.stage_name == L1_10 and healthy(report, plan)
        assert "until a person resumes" in report.decision.reason
        assert f"from {L1_50}" in report.decision.reason
    state = (await ctl.store.load()).state
    assert state is not None and state.awaiting_resume and state.last_rollback is not None
    assert await local_flags.read() == stage_flags(plan, L1_10)
    assert service.adopted_flags[-2:] == [stage_flags(plan, L1_50), stage_flags(plan, L1_10)]
    assert sample(ctl.registry, "rollout_transitions_total", from_stage=L1_50,
                  to_stage=L1_10, kind="rollback") == 1


# --- 3. an error regression confined to the L1 cohort never reaches l1-50 -------------------


async def test_an_error_regression_confined_to_the_l1_cohort_rolls_back_from_l1_10_to_l2(
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
) -> None:
    """Answers served from L1 fail five times as often as the rest (5 % against 1 %). There is
    no L1 cohort in l2, so l2 passes; in l1-10 the cohort gate cannot pass, and the cohort
    guardrail proves the regression against the concurrent control before l1-10's bake and
    passes could take the rollout on. The service's overall error rate (~1.4 %) stays within
    the error guardrail's margin: only the cohort comparison sees it."""
    plan = demo_plan()
    guard = spec_of(plan, "l1_cohort_error_guardrail")
    gate = spec_of(plan, "l1_cohort_error_rate_vs_control")
    await local_flags.apply(stage_flags(plan, L2))
    await seed_state(client, keys, seeded(plan, L2, baked=True))
    service = await replica(stage_flags(plan, L2))
    service.scenario.error_rate_on = 0.05
    ctl = build_harness("ctl-a", plan, client, keys, local_flags, source)

    rollback = await ctl.run_until(is_action(Action.ROLLBACK), timeout=75, what="the rollback")
    await settled(_async_value(lambda: service.flags), stage_flags(plan, L2),
                  "the service back on l2")

    entries = await oldest_first(ctl.store)
    assert transitions(entries) == [(L2, L1_10, "advance"), (L1_10, L2, "rollback")]
    assert service.adopted_flags == [stage_flags(plan, s) for s in (L2, L1_10, L2)]
    assert rollback.decision is not None and rollback.decision.target_stage == L2
    reason = rollback.decision.reason
    assert reason.endswith(f"{L1_10} {ARROW} {L2}") and "[critical]" not in reason, reason
    # Once l1-10 was judged, the gate never let it pass, and the guardrail's first proof
    # rolled it back.
    at_l1_10 = [r for r in ctl.reports if (r.state_before.stage_name == L1_10
                and judged(r, plan)) or r is rollback]
    assert all(check_of(r, gate.name).verdict is not Verdict.PASS for r in at_l1_10)
    assert [r for r in at_l1_10 if check_of(r, guard.name).verdict is Verdict.FAIL] == [
        rollback]
    [(_, visit)] = [(stage, v) for stage, v in visits(entries) if stage == L1_10]
    moved = visit[-1]
    assert record_of(moved, guard.name).verdict == "fail"
    assert record_of(moved, "error_rate_guardrail").verdict != "fail"  # within its margin
    assert check_of(rollback, guard.name).message in reason

    found = check_of(rollback, guard.name).evidence
    assert found is not None and found.lower > found.limit == pytest.approx(0.01)
    assert found.control_trials is not None and found.control_events is not None
    assert 0.025 < found.events / found.trials < 0.1, found
    assert 0.003 < found.control_events / found.control_trials < 0.02, found
    assert 5 < found.control_trials / found.trials < 15, found  # a 10 % cohort
    state = (await ctl.store.load()).state
    assert state is not None and state.stage_name == L2 and state.awaiting_resume
    assert await local_flags.read() == stage_flags(plan, L2)


# --- 4. stale L1 answers at l1-50 go back to l2 ---------------------------------------------


async def test_stale_answers_at_l1_50_roll_back_to_l2(
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
) -> None:
    """Once the service serves half its answers from L1, 2 % of the audited ones are stale.
    The integrity guardrail (rare harm: limit 0.5 %) proves it within seconds and, critical,
    goes straight to l2, the last stage serving no cached answer; the stage's stale-rate
    gate, counting since l1-10 on the audits of both stages, never let it advance."""
    plan = demo_plan()
    guard = spec_of(plan, "cache_integrity_guardrail")
    l1_50 = plan.index_of(L1_50)
    assert l1_50 is not None
    [stale_gate] = [s for s in plan.stages[l1_50].checks
                    if s.stat is not None and s.stat.since == L1_10]
    await local_flags.apply(stage_flags(plan, L1_10))
    await seed_state(client, keys, seeded(plan, L1_10, baked=True))
    service = await replica(stage_flags(plan, L1_10),
                            faults={stage_flags(plan, L1_50): {"stale_rate": 0.02}})
    ctl = build_harness("ctl-a", plan, client, keys, local_flags, source)

    rollback = await ctl.run_until(is_action(Action.ROLLBACK), timeout=75, what="the rollback")
    await settled(_async_value(lambda: service.flags), stage_flags(plan, L2),
                  "the service on l2")

    entries = await oldest_first(ctl.store)
    assert transitions(entries) == [(L1_10, L1_50, "advance"), (L1_50, L2, "rollback")]
    assert service.adopted_flags == [stage_flags(plan, s) for s in (L1_10, L1_50, L2)]
    assert service.scenario.stale_rate == 0  # the fault ended with l1-50's flags
    assert rollback.decision is not None and rollback.decision.target_stage == L2
    reason = rollback.decision.reason
    proven = check_of(rollback, guard.name)
    assert f"{proven.message} [critical]" in reason, reason
    assert reason.endswith(f"{L1_50} {ARROW} {L2}"), reason
    found = proven.evidence
    assert found is not None and found.lower > found.limit == pytest.approx(0.005)
    assert 0.005 < found.events / found.trials < 0.05, found

    # l1-10's audits were clean and passed its gate; l1-50's gate, counting since l1-10,
    # never passed once l1-50 was judged, and counts more audits than the guardrail (since
    # l1-50 only).
    [(_, first), (_, second)] = [(stage, v) for stage, v in visits(entries)
                                 if stage in (L1_10, L1_50)]
    assert record_of(first[-1], "l1_stale_rate_1pct").verdict == "pass"
    at_l1_50 = [r for r in ctl.reports if (r.state_before.stage_name == L1_50
                and judged(r, plan)) or r is rollback]
    assert all(check_of(r, stale_gate.name).verdict is not Verdict.PASS for r in at_l1_50)
    gate_evidence = check_of(rollback, stale_gate.name).evidence
    assert gate_evidence is not None and gate_evidence.trials > found.trials
    record = record_of(second[-1], guard.name)
    assert record.verdict == "fail" and record.critical
    assert record.sample == pytest.approx(found.trials)
    state = (await ctl.store.load()).state
    assert state is not None and state.stage_name == L2 and state.awaiting_resume
    assert state.last_rollback is not None and state.last_rollback.to_stage == L2


# --- 5. too little traffic: inconclusive holds, never advances -------------------------------


async def test_too_little_traffic_holds_inconclusive_until_traffic_returns(
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
) -> None:
    plan = demo_plan()
    await local_flags.apply(stage_flags(plan, DARK))
    await seed_state(client, keys, seeded(plan, DARK, baked=True))  # only traffic is missing
    service = await replica(stage_flags(plan, DARK))
    service.scenario.requests_per_second = 2.0
    ctl = build_harness("ctl-a", plan, client, keys, local_flags, source)

    await ctl.run_until(lambda r: judged(r, plan), timeout=20, what="dark-launch judged")
    quiet = await ctl.cycles(plan.settings.passes_to_advance + 2)
    gates = {s.name for s in plan.checks_for(1)
             if s.is_enforced and s.stat is not None and s.kind is CheckKind.GATE}
    assert gates
    for report in quiet:
        decision = report.decision
        assert decision is not None and decision.action is Action.HOLD
        assert report.state_after.stage_name == DARK
        assert report.state_after.pass_streak == 0
        assert not report.state_after.failure_streaks  # too few counts are no failure
        assert report.observations is not None
        verdicts = {o.check: o.verdict for o in report.observations.checks}
        assert Verdict.FAIL not in verdicts.values(), verdicts
        assert {verdicts[g] for g in gates} <= {Verdict.INCONCLUSIVE, Verdict.NO_DATA}
        assert all(verdicts[c] is Verdict.PASS for c in REDIS_CHECKS & set(verdicts))
    # The hold says how much more evidence a verdict needs, and about how long that takes.
    assert any(re.search(r": inconclusive, ~\d[\d ]* more \(≈[\d.]+ (s|min|h|d) at the "
                         r"current rate\)", r.decision.reason)
               for r in quiet if r.decision is not None), quiet[-1].decision
    held = sum(sample(ctl.registry, "rollout_checks_total", check="l2_shadow_hit_rate",
                      verdict=v) for v in ("inconclusive", "no_data"))
    assert held >= len(quiet)

    # With traffic back, the same stage passes and advances: it was the traffic.
    service.scenario.requests_per_second = TRAFFIC_RPS
    moved = await ctl.run_until(is_action(Action.ADVANCE), timeout=30, what="the advance")
    assert moved.decision is not None and moved.decision.target_stage == L2


# --- 6. killed between the flag write and the state write ----------------------------------


async def test_a_controller_killed_between_flag_write_and_state_write_is_reconciled_once(  # noqa: PLR0915  (one scenario, read top to bottom)
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, unleash_server: UnleashService, listener: WebhookSink,
) -> None:
    plan = demo_plan()
    target = stage_flags(plan, L1_10)
    async with admin_for(unleash_server) as flags:
        await flags.apply(stage_flags(plan, L2))
        await seed_state(client, keys, seeded(plan, L2, baked=True))
        service = await replica(stage_flags(plan, L2), admin_for(unleash_server))

        # Controller A advances l2 → l1-10: intent stored, flags written to Unleash, and the
        # process dies before the commit that records the new stage.
        dying = CrashingStore(RedisStateStore(client, keys),
                              lambda entry, _state: entry.transition == "advance")
        first = build_harness("ctl-a", plan, client, keys, flags, source, store=dying)
        with pytest.raises(SimulatedCrash):
            await first.run_until(lambda _r: False, timeout=40, what="the crash")
        zombie_token = first.lease.token
        assert zombie_token is not None
        assert await flags.read() == target
        snapshot = await first.store.load()
        assert snapshot.state is not None and snapshot.state.stage_name == L2
        assert snapshot.intent is not None and snapshot.intent.to_stage == L1_10
        assert not [e for e in await oldest_first(first.store) if e.transition]
        # The service follows Unleash: it runs l1-10 while the stored state still says l2.
        await settled(_async_value(lambda: service.flags), target, "the service on l1-10")

        # Controller B (a restart: new instance, new lease once A's expired) reconciles.
        notifier = WebhookNotifier(listener.url(HOOK), source="ctl-b")
        second = build_harness("ctl-b", plan, client, keys, flags, source, notifier=notifier)
        try:
            recovered = await second.run_until(lambda _r: True, timeout=LEASE_SECONDS + 10,
                                               what="B's first cycle")
            await second.run_until(
                lambda r: r.observations is not None and r.observations.flags_match,
                timeout=15, what="B seeing the service report l1-10")
            tail = await second.cycles(2)
        finally:
            await notifier.aclose()
        flags_after = await flags.read()

    assert recovered.recovery is not None and "recovered interrupted transition" in \
        recovered.recovery
    assert recovered.state_before.stage_name == L1_10  # B's cycle ran on the recovered state
    entries = await oldest_first(second.store)
    moved = [e for e in entries if e.action in ("advance", "rollback", "complete")]
    assert len(moved) == 1, moved  # exactly one l2 → l1-10, recorded by the recovery
    assert moved[0].kind == "recovered" and moved[0].instance == "ctl-b"
    assert (moved[0].from_stage, moved[0].to_stage) == (L2, L1_10)
    assert sample(second.registry, "rollout_transitions_total", from_stage=L2,
                  to_stage=L1_10, kind="advance") == 1
    # No flapping: B never re-applied l2's flags, nor wrote anything at all.
    cycles_of_b = [e for e in entries if e.kind == "cycle" and e.instance == "ctl-b"]
    assert cycles_of_b and len(cycles_of_b) == len(second.reports)
    for entry in cycles_of_b:
        assert entry.from_stage == L1_10 and entry.action == "hold"
        assert entry.flags.desired == target
        assert entry.flags.writes == () and entry.flags.result == "unchanged"
    assert flags_after == target
    assert service.adopted_flags[-2:] == [stage_flags(plan, L2), target]
    assert all(r.state_after.stage_name == L1_10 for r in tail)
    snapshot = await second.store.load()
    assert snapshot.state is not None and snapshot.state.stage_name == L1_10
    assert snapshot.intent is None
    assert [p["event"] for p in events(listener) if p["event"] != "overdue"] == ["recovered"]
    # A, should it wake up, is fenced out: it can write nothing.
    length = await second.store.log_length()
    with pytest.raises(FencedOut):
        await run_cycle(first.ports, now=utcnow(), token=zombie_token)
    assert await second.store.log_length() == length


class RolloutProcess:
    """`python -m rollout run` in a process of its own, killed or stopped by the test."""

    def __init__(self, instance: str, log_dir: Path, env: dict[str, str]) -> None:
        self.instance = instance
        self.log = log_dir / f"rollout-{instance}.log"
        base = scrubbed()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rollout", "run"], cwd=REPO_ROOT, stdout=out,
                stderr=subprocess.STDOUT,
                env=base | env | {"ROLLOUT_INSTANCE_ID": instance,
                                  "ROLLOUT_PORT": str(free_port())},
            )

    def assert_running(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def finish(self, sig: signal.Signals) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=20)


async def test_a_real_process_killed_between_flag_write_and_state_write_is_reconciled_once(  # noqa: PLR0915  (one scenario, read top to bottom)
    live: ControllerStack, keys: RolloutKeys, replica: ReplicaFactory, tmp_path: Path,
) -> None:
    """The same crash as above, but a real `rollout run` process gets SIGKILL: a gate in
    front of its state Redis lets the intent through, holds the commit that would record
    l1-10 (the flags are already written by then), and the test kills the process while it
    waits for that answer. A second process, started afterwards, reconciles once."""
    plan = demo_plan()
    target = stage_flags(plan, L1_10)
    redis = redis_svc.start_private_redis(name="redis-killed-controller")
    gate = await RedisGate("127.0.0.1", int(redis.port or 0), keys).start()
    direct = Redis.from_url(redis.url, decode_responses=True)
    store = RedisStateStore(direct, keys)
    env = {
        "REDIS_URL": redis.url,  # the local flag store
        "PROMETHEUS_URL": live.url,
        "ROLLOUT_PLAN": str(write_demo_plan_file(tmp_path / "plan.yaml")),
        "ROLLOUT_TIME_SCALE": repr(DAY_SECONDS / 86400),
        "ROLLOUT_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        "ROLLOUT_LEASE_SECONDS": str(LEASE_SECONDS),
        "ROLLOUT_NAME": keys.namespace,
        "ROLLOUT_API_TOKEN": "killed-controller-test",
    }
    processes: list[RolloutProcess] = []
    try:
        async with LocalFlagWriter.from_url(redis.url) as flags:
            await flags.apply(stage_flags(plan, L2))
            await seed_state(direct, keys, seeded(plan, L2, baked=True))
            await replica(stage_flags(plan, L2), LocalFlagWriter.from_url(redis.url))

            first = RolloutProcess("ctl-a", tmp_path, env | {"ROLLOUT_REDIS_URL": gate.url()})
            processes.append(first)
            try:
                await asyncio.wait_for(gate.commit_held.wait(), timeout=60)
            except TimeoutError:
                first.assert_running()
                raise AssertionError(
                    f"no advance reached the commit: {first.log.read_text()[-3000:]}") from None
            first.assert_running()  # alive, waiting for the commit's answer
            assert first.finish(signal.SIGKILL) == -signal.SIGKILL
            await gate.close()

            assert await flags.read() == target  # the flag write happened
            snapshot = await store.load()
            assert snapshot.state is not None and snapshot.state.stage_name == L2
            assert snapshot.intent is not None and snapshot.intent.to_stage == L1_10
            assert not [e for e in await oldest_first(store) if e.transition]
            killed_token = snapshot.fence

            second = RolloutProcess("ctl-b", tmp_path, env | {"ROLLOUT_REDIS_URL": redis.url})
            processes.append(second)

            async def cycles_of_b() -> int:
                second.assert_running()
                return len([e for e in await oldest_first(store)
                            if e.kind == "cycle" and e.instance == "ctl-b"])

            await eventually(cycles_of_b, lambda count: count >= 2,
                             timeout=LEASE_SECONDS + 30,
                             what="the restarted controller's first cycles")
            assert second.finish(signal.SIGTERM) == 0
            flags_after = await flags.read()

        entries = await oldest_first(store)
        moved = [e for e in entries if e.action in ("advance", "rollback", "complete")]
        assert len(moved) == 1, moved  # exactly one l2 → l1-10, recorded by the restart
        assert moved[0].kind == "recovered" and moved[0].instance == "ctl-b"
        assert (moved[0].from_stage, moved[0].to_stage) == (L2, L1_10)
        cycles_of_a = [e for e in entries if e.kind == "cycle" and e.instance == "ctl-a"]
        assert all(e.from_stage == L2 and e.action == "hold" for e in cycles_of_a)
        for entry in (e for e in entries if e.kind == "cycle" and e.instance == "ctl-b"):
            assert entry.from_stage == L1_10
            assert entry.flags.writes == ()  # never re-applied l2, never wrote at all
        assert flags_after == target
        snapshot = await store.load()
        assert snapshot.state is not None and snapshot.state.stage_name == L1_10
        assert snapshot.intent is None and snapshot.fence > killed_token
    finally:
        for process in processes:
            process.finish(signal.SIGKILL)
        await gate.close()
        await direct.aclose()
        redis_svc.stop(redis)


def _async_value(read: Callable[[], FlagSettings | None]) -> Callable[
        [], Awaitable[FlagSettings | None]]:
    async def probe() -> FlagSettings | None:
        return read()
    return probe


# --- 7. two controllers: one acts, the standby takes over ----------------------------------


async def test_two_controllers_only_one_acts_and_the_standby_takes_over(
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
) -> None:
    plan = demo_plan()
    await replica(FlagSettings())
    a = build_harness("ctl-a", plan, client, keys, local_flags, source)
    b = build_harness("ctl-b", plan, client, keys, local_flags, source)
    # The production scheduler (lease every ttl/3, a cycle every interval), two in one loop.
    scheduler_a = build_scheduler(a.controller, interval_seconds=a.interval,
                                  lease_seconds=LEASE_SECONDS)
    scheduler_b = build_scheduler(b.controller, interval_seconds=b.interval,
                                  lease_seconds=LEASE_SECONDS)

    async def instances() -> list[str]:
        return [str(e.instance) for e in await oldest_first(a.store)]

    try:
        scheduler_a.start()
        await eventually(instances, lambda xs: len(xs) >= 2, timeout=10, what="A acting")
        scheduler_b.start()
        await eventually(instances, lambda xs: len(xs) >= 6, timeout=10, what="A acting on")
        assert a.controller.is_leader and not b.controller.is_leader
        assert b.controller.last_report is None
        state_by_a = (await a.store.load()).state

        # A hangs (stops renewing and evaluating) without giving the lease up.
        scheduler_a.shutdown(wait=False)
        assert await a.controller.wait_idle(5)
        stopped = time.monotonic()
        await eventually(instances, lambda xs: "ctl-b" in xs, timeout=LEASE_SECONDS + 5,
                         what="B taking over")
        takeover = time.monotonic() - stopped
        await eventually(instances, lambda xs: xs.count("ctl-b") >= 3, timeout=10,
                         what="B acting")
    finally:
        for scheduler in (scheduler_a, scheduler_b):
            if scheduler.running:
                scheduler.shutdown(wait=False)
        await a.controller.wait_idle(5)
        await b.controller.wait_idle(5)

    entries = await oldest_first(a.store)
    names = [e.instance for e in entries]
    first_b = names.index("ctl-b")
    assert names == ["ctl-a"] * first_b + ["ctl-b"] * (len(names) - first_b)  # never both
    fences_a = {e.fence for e in entries[:first_b]}
    fences_b = {e.fence for e in entries[first_b:]}
    assert len(fences_a) == len(fences_b) == 1 and min(fences_b) > max(fences_a)
    assert takeover <= LEASE_SECONDS + a.interval + 1.5, takeover
    # B carried on with A's rollout instead of starting one of its own.
    initialised = [e for e in entries if "first cycle" in (e.flags.note if e.flags else "")]
    assert [e.instance for e in initialised] == ["ctl-a"]
    last_a, first_of_b = entries[first_b - 1], entries[first_b]
    assert first_of_b.from_stage == last_a.to_stage
    assert state_by_a is not None
    final = (await a.store.load()).state
    assert final is not None and final.stage_index >= state_by_a.stage_index
    if final.stage_name == state_by_a.stage_name:
        assert final.entered_at == state_by_a.entered_at  # the same visit, not a new one
    # A's leadership has lapsed locally, so a late tick of A does nothing.
    assert not a.controller.is_leader and await a.controller.tick() is None
    assert sample(b.registry, "rollout_is_leader") == 1


# --- 8. Prometheus stopped mid-run (last: it stops the module's Prometheus) -----------------


async def test_prometheus_stopped_mid_run_holds_with_error_never_moving(
    live: ControllerStack, client: Redis, keys: RolloutKeys, source: PrometheusSource,
    replica: ReplicaFactory, local_flags: LocalFlagWriter,
) -> None:
    # Dark-launch is baked and healthy, one passing cycle in: one more would advance it.
    plan = demo_plan(passes=2)
    await local_flags.apply(stage_flags(plan, DARK))
    await seed_state(client, keys, seeded(plan, DARK, baked=True))
    await replica(stage_flags(plan, DARK))
    ctl = build_harness("ctl-a", plan, client, keys, local_flags, source)
    await ctl.run_until(lambda r: r.state_after.pass_streak == 1, timeout=30,
                        what="one passing cycle")

    live.stop_prometheus()
    outage = await ctl.cycles(6)
    checks = {s.name for s in plan.checks_for(1)}
    for report in outage:
        decision = report.decision
        assert decision is not None and decision.action is Action.HOLD
        assert report.state_after.stage_name == DARK
        assert report.state_after.pass_streak == 0
        assert not report.state_after.failure_streaks
        assert report.observations is not None
        assert {o.check for o in report.observations.checks} == checks
        assert {o.verdict for o in report.observations.checks} == {Verdict.ERROR}
        assert all("cannot reach Prometheus" in (o.error or "")
                   for o in report.observations.checks)
        assert all(o.evidence is None for o in report.observations.checks)  # no counts, no bound
        assert report.reported is not None and report.reported.error is not None
        # The reason names the outage, not the service, and the evidence gathered since the
        # flags were confirmed stands (the service never left the stage).
        assert re.search(r"cannot read the metrics; error: .*cannot reach Prometheus at "
                         r"http://127\.0\.0\.1:\d+.* \(and \d+ more checks\); the evidence "
                         r"since .* is kept", decision.reason), decision.reason
        assert report.state_after.flags_confirmed_at == report.state_before.flags_confirmed_at
    entries = await oldest_first(ctl.store)
    assert not [e for e in entries if e.transition]
    assert all(c.verdict == "error" for c in entries[-1].checks)
    assert await local_flags.read() == stage_flags(plan, DARK)
    for name in ("error_rate_guardrail", "error_rate_vs_baseline"):
        assert sample(ctl.registry, "rollout_checks_total", check=name,
                      verdict="error") == len(outage)
    state = (await ctl.store.load()).state
    assert state is not None and state.stage_name == DARK
    assert state.entered_at < utcnow() - plan.bake_of(1) - timedelta(seconds=1)
