"""Helpers for running the real controller against a real Prometheus (tests and bench).

* `demo_plan()` is the bundled default plan scaled to seconds: a plan day is `day_seconds`,
  every window becomes `WINDOW` (the plan's `min_window`; with 1 s scrapes a 4 s window holds
  ~4 samples, so rate()/increase() always have two), small pass/failure counts.
* `ServiceReplica` plays the service: it polls the flag store the way the service does, adopts
  a new flag state once it has been stable for `adopt_after` seconds (the SDK's refresh), and
  makes the FakeExporter report those flags (`ai_agent_flag_state`) and behave like the
  service would under them (`ServiceProfile`: L2 makes answers faster and cheaper, L1 hits
  take ~20 ms). So the controller's "wait until the service reports the new flags, then one
  full window" is exercised for real.
* `ControllerStack` is one fake replica's exporter plus the private Prometheus scraping it,
  restartable (a test may stop Prometheus).
* `Harness` is one controller process (Controller + RedisLease + fenced RedisStateStore) and
  `Harness.run_until` drives its cycles at the plan's interval, like the scheduler would.
* `CrashingStore` kills the "process" (SimulatedCrash, a BaseException) at a chosen commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import yaml
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devstack.services import prometheus as prom_svc
from devstack.services.prometheus import PrometheusService
from rollout.adapters.redis_lease import RedisLease
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.controller import Controller
from rollout.core.decision import Action
from rollout.core.flags import FlagSettings
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_default_plan, load_plan
from rollout.core.state import RolloutState
from rollout.metrics import ControllerMetrics
from rollout.plans import default_plan_path
from rollout.ports import (
    FlagError,
    FlagWriter,
    Leader,
    MetricsSource,
    Notifier,
    NullNotifier,
    StateStore,
    StoredSnapshot,
)
from rollout.records import CycleSummary, IntentRecord, LogEntry
from rollout.runtime_types import CyclePorts, CycleReport
from tests.support.fake_exporter import FakeExporter, Latency, Scenario
from tests.support.prometheus import SERVICE_JOB, start_prometheus, wait_for_scraped

SCRAPE_SECONDS = 1.0  # tests.support.prometheus scrapes every second
WINDOW = timedelta(seconds=4)
INTERVAL_SECONDS = 0.5
DAY_SECONDS = 1.0
# Enough that every min_sample of the default plan is met over a 4 s window, including the
# smaller L1 cohort at 10 % (800 x 0.1 x 4 = 320 >= 200) and the baseline (>= 1000).
TRAFFIC_RPS = 800.0
LEASE_SECONDS = 1.5

OFF, DARK, L2, L1_10, L1_50, L1_100 = "off", "dark-launch", "l2", "l1-10", "l1-50", "l1-100"
STAGES = (OFF, DARK, L2, L1_10, L1_50, L1_100)


def demo_plan(
    *,
    day_seconds: float = DAY_SECONDS,
    window: timedelta = WINDOW,
    passes: int = 2,
    failures: int = 2,
    interval_seconds: float = INTERVAL_SECONDS,
) -> Plan:
    """The bundled default plan (every check and stage as shipped), scaled to seconds."""
    plan = load_default_plan()
    settings = replace(
        plan.settings,
        time_scale=day_seconds / 86400,
        min_window=window,
        passes_to_advance=passes,
        failures_to_rollback=failures,
        evaluation_interval=timedelta(seconds=interval_seconds),
    )
    return replace(plan, settings=settings)


def write_demo_plan_file(path: Path, *, window: timedelta = WINDOW, passes: int = 2,
                         failures: int = 2) -> Path:
    """`demo_plan()` as a YAML file for a `rollout run` process (days are scaled by the
    process's ROLLOUT_TIME_SCALE, the interval by ROLLOUT_INTERVAL_SECONDS)."""
    data = yaml.safe_load(default_plan_path().read_text())
    data["settings"].update(min_window=f"{window.total_seconds()}s", passes_to_advance=passes,
                            failures_to_rollback=failures)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_plan(path)  # exactly as the process will
    return path


def stage_flags(plan: Plan, stage: str) -> FlagSettings:
    index = plan.index_of(stage)
    assert index is not None, stage
    return plan.stages[index].flags


def longest_window(plan: Plan, stage: str) -> timedelta:
    index = plan.index_of(stage)
    assert index is not None, stage
    return max(plan.window_of(spec) for spec in plan.checks_for(index))


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProfile:
    """How the service's latency and spend respond to the flags (the seed's anchors: a full
    RAG answer ~1.75 s and $0.017, an L1 hit ~20 ms)."""

    full_seconds: float = 1.75
    l2_seconds: float = 1.1
    l1_hit_seconds: float = 0.02
    full_cost_usd: float = 0.017
    l2_cost_usd: float = 0.012
    l1_cost_usd: float = 0.005

    def scenario_for(self, scenario: Scenario, flags: FlagSettings) -> Scenario:
        share = flags.l1_percent / 100
        base_cost = self.l2_cost_usd if flags.l2 else self.full_cost_usd
        return replace(
            scenario,
            shadow=flags.shadow,
            l2=flags.l2,
            l1_percent=flags.l1_percent,
            l1_share=None,
            latency_off=Latency(self.l2_seconds if flags.l2 else self.full_seconds),
            latency_on=Latency(self.l1_hit_seconds),
            cost_per_query_usd=base_cost - share * (base_cost - self.l1_cost_usd),
        )


PROFILE = ServiceProfile()
# What stage `off` records for the profile: no errors; every answer 1.75 s, which lands in
# the (1.5, 1.75] bucket, so histogram_quantile(0.95) = 1.5 + 0.25 x 0.95; $0.017 a query.
BASELINE: Mapping[str, float] = {
    "baseline_error_rate": 0.0,
    "baseline_p95_seconds": 1.7375,
    "baseline_cost_per_query_usd": 0.017,
}


def base_scenario(**overrides: Any) -> Scenario:
    scenario = PROFILE.scenario_for(
        Scenario(requests_per_second=TRAFFIC_RPS), FlagSettings()
    )
    return replace(scenario, **overrides)


class FlagReader(Protocol):
    async def read(self) -> FlagSettings: ...


class ServiceReplica:
    """The service, as far as the controller can see it: follows the flag store."""

    def __init__(
        self,
        exporter: FakeExporter,
        flags: FlagReader,
        *,
        profile: ServiceProfile = PROFILE,
        adopt_after: float = 1.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self.exporter = exporter
        self._flags = flags
        self.profile = profile
        self.adopt_after = adopt_after
        self.poll_seconds = poll_seconds
        self.adopted: list[tuple[float, FlagSettings]] = []  # (monotonic, flags) in order
        self.read_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._seen: FlagSettings | None = None
        self._seen_since = 0.0

    @property
    def scenario(self) -> Scenario:
        """The live scenario: set error rates, traffic, ... on it at any time."""
        return self.exporter.scenario

    @property
    def flags(self) -> FlagSettings | None:
        return self.adopted[-1][1] if self.adopted else None

    @property
    def adopted_flags(self) -> list[FlagSettings]:
        return [flags for _, flags in self.adopted]

    def adopt(self, flags: FlagSettings) -> None:
        """Apply `flags` now (setup, or a stable read): one atomic scenario swap, so the
        exporter never mixes the flags of one stage with the behaviour of another."""
        self.exporter.scenario = self.profile.scenario_for(self.exporter.scenario, flags)
        if self.flags != flags:
            self.adopted.append((time.monotonic(), flags))
        self._seen, self._seen_since = flags, time.monotonic()

    def start(self) -> ServiceReplica:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="replica")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._poll_once()
            await asyncio.sleep(self.poll_seconds)

    async def _poll_once(self) -> None:
        try:
            current = await self._flags.read()
        except (FlagError, RuntimeError, OSError):
            self.read_errors += 1  # the service keeps its last flags, as the real one does
            return
        now = time.monotonic()
        if current != self._seen:
            self._seen, self._seen_since = current, now
        if current != self.flags and now - self._seen_since >= self.adopt_after:
            self.adopt(current)


# --- Prometheus and the exporter -------------------------------------------------------------


class ControllerStack:
    """One fake replica's exporter and a private Prometheus scraping it every second."""

    def __init__(self) -> None:
        self.exporter = FakeExporter(base_scenario(), seed=7)
        self.prometheus: PrometheusService | None = None
        self.first_data_seconds = 0.0

    def start(self) -> ControllerStack:
        self.exporter.start()
        self.ensure_prometheus()
        return self

    @property
    def url(self) -> str:
        assert self.prometheus is not None, "Prometheus is not running"
        return self.prometheus.url

    def ensure_prometheus(self) -> None:
        """(Re)start Prometheus if it is not running, and wait until it has data."""
        if self.prometheus is not None and prom_svc.is_running(self.prometheus):
            return
        self.stop_prometheus()
        self.prometheus = start_prometheus({SERVICE_JOB: [self.exporter.target]},
                                           name="prometheus-controller")
        self.first_data_seconds = wait_for_scraped(self.prometheus, [self.exporter])

    def stop_prometheus(self) -> None:
        if self.prometheus is not None:
            prom_svc.stop(self.prometheus)

    def reset(self) -> None:
        self.exporter.scenario = base_scenario()

    def close(self) -> None:
        try:
            self.stop_prometheus()
        finally:
            self.exporter.stop()


@contextlib.contextmanager
def running_controller_stack() -> Iterator[ControllerStack]:
    stack = ControllerStack()
    try:
        yield stack.start()
    finally:
        stack.close()


# --- the controller ---------------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """The controller process dies here (a BaseException: no `except Exception` swallows it)."""


class CrashingStore:
    """A StateStore that dies at the first commit `crash_on(entry, state)` picks, before
    anything of that commit reaches Redis (as a kill -9 between the two writes would)."""

    def __init__(self, inner: RedisStateStore,
                 crash_on: Callable[[LogEntry, RolloutState | None], bool]) -> None:
        self.inner = inner
        self.crash_on = crash_on
        self.crashed = False

    async def load(self) -> StoredSnapshot:
        return await self.inner.load()

    async def check_fence(self, token: int) -> None:
        await self.inner.check_fence(token)

    async def begin_transition(self, intent: IntentRecord, token: int) -> None:
        await self.inner.begin_transition(intent, token)

    async def commit(self, *, token: int, entry: LogEntry,
                     state: RolloutState | None = None, clear_intent: bool = True,
                     last_cycle: CycleSummary | None = None) -> str:
        if not self.crashed and self.crash_on(entry, state):
            self.crashed = True
            raise SimulatedCrash(f"killed before recording {entry.from_stage} -> "
                                 f"{entry.to_stage}")
        return await self.inner.commit(token=token, entry=entry, state=state,
                                       clear_intent=clear_intent, last_cycle=last_cycle)

    async def append_unfenced(self, entry: LogEntry) -> str:
        return await self.inner.append_unfenced(entry)

    async def history(self, limit: int = 50) -> list[LogEntry]:
        return await self.inner.history(limit)

    async def last_cycle(self) -> CycleSummary | None:
        return await self.inner.last_cycle()

    async def leader(self) -> Leader:
        return await self.inner.leader()

    async def eviction_risk(self) -> str | None:
        return await self.inner.eviction_risk()

    async def aclose(self) -> None:
        await self.inner.aclose()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Harness:
    """One controller process: its lease, its ports, its own metrics registry."""

    name: str
    plan: Plan
    store: RedisStateStore
    lease: RedisLease
    controller: Controller
    registry: CollectorRegistry
    reports: list[CycleReport] = field(default_factory=list)

    @property
    def ports(self) -> CyclePorts:
        return self.controller.ports

    @property
    def interval(self) -> float:
        return self.plan.settings.evaluation_interval.total_seconds()

    async def cycle(self) -> CycleReport | None:
        """What the scheduler does each interval: renew the lease, then evaluate."""
        await self.controller.refresh_lease()
        report = await self.controller.tick()
        if report is not None:
            self.reports.append(report)
        return report

    async def run_until(self, accept: Callable[[CycleReport], bool], *, timeout: float,
                        what: str, max_cycles: int | None = None) -> CycleReport:
        """Evaluate every `interval` until a cycle's report is accepted. Fails at the deadline
        (or after `max_cycles`) with the last decision's reason."""
        started_at = time.monotonic()
        deadline = started_at + timeout
        count = 0
        last: CycleReport | None = None
        while True:
            started = time.monotonic()
            report = await self.cycle()
            if report is not None:
                count += 1
                last = report
                if accept(report):
                    return report
            if time.monotonic() >= deadline or (max_cycles is not None and count >= max_cycles):
                reason = last.decision.reason if last and last.decision else "no cycle ran"
                raise AssertionError(f"{self.name}: {what} not reached after {count} cycles "
                                     f"({time.monotonic() - started_at:.1f}s); last "
                                     f"at {last.state_after.stage_name if last else '?'}: "
                                     f"{reason}")
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    async def cycles(self, count: int) -> list[CycleReport]:
        """Exactly `count` more evaluations at the plan's interval."""
        done: list[CycleReport] = []

        def enough(report: CycleReport) -> bool:
            done.append(report)
            return len(done) >= count

        await self.run_until(enough, timeout=count * self.interval * 4 + 10,
                             what=f"{count} cycles")
        return done


def build_harness(
    name: str,
    plan: Plan,
    redis: Redis,
    keys: RolloutKeys,
    flags: FlagWriter,
    source: MetricsSource,
    *,
    notifier: Notifier | None = None,
    store: StateStore | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> Harness:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, plan)
    redis_store = RedisStateStore(redis, keys)
    ports = CyclePorts(plan=plan, store=store or redis_store, flags=flags,
                       metrics_source=source, notifier=notifier or NullNotifier(),
                       metrics=metrics, instance_id=name)
    lease = RedisLease(redis, keys, name, ttl_seconds=lease_seconds)
    return Harness(name=name, plan=plan, store=redis_store, lease=lease,
                   controller=Controller(ports, lease, clock=utcnow), registry=registry)


async def seed_state(redis: Redis, keys: RolloutKeys, state: RolloutState) -> None:
    """Leave `state` in Redis as a previous controller would have (no lease, no log)."""
    await redis.set(keys.state, json.dumps(state.to_dict()))


def seeded(plan: Plan, stage: str, *, baked: bool, **fields: Any) -> RolloutState:
    """A state at `stage` with the profile's baseline; `baked`: its bake already elapsed."""
    index = plan.index_of(stage)
    assert index is not None, stage
    entered = utcnow() - (plan.bake_of(index) + timedelta(seconds=1) if baked else timedelta(0))
    return RolloutState(stage_index=index, stage_name=stage, entered_at=entered,
                        baseline=dict(BASELINE), **fields)


# --- reading what happened ---------------------------------------------------------------------


def check_of(report: CycleReport, name: str) -> Any:
    assert report.observations is not None
    found = report.observations.get(name)
    assert found is not None, f"{name} not measured in {report.state_before.stage_name}"
    return found


def judged(report: CycleReport, plan: Plan) -> bool:
    """True when this cycle judged every check of its stage: the service reported the
    stage's flags at least one full window before it."""
    state = report.state_after
    confirmed = state.flags_confirmed_at
    if report.decision is None or report.decision.changes_stage or confirmed is None:
        return False
    return report.at - confirmed >= longest_window(plan, state.stage_name)


def entry_time(entry: LogEntry) -> datetime:
    assert entry.at is not None
    return entry.at


def transitions(entries: list[LogEntry]) -> list[tuple[str, str, str]]:
    """(from, to, kind) of every recorded transition, oldest first (`entries` oldest first)."""
    return [(str(e.from_stage), str(e.to_stage), str(e.transition))
            for e in entries if e.transition]


async def oldest_first(store: StateStore, limit: int = 2000) -> list[LogEntry]:
    return list(reversed(await store.history(limit)))


def is_action(action: Action) -> Callable[[CycleReport], bool]:
    return lambda report: report.decision is not None and report.decision.action is action

