"""`Harness` is one controller process (Controller + RedisLease + fenced RedisStateStore);
`Harness.run_until` drives its cycles at the plan's interval, like the scheduler would. And
the state a previous controller would have left in Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from rollout.adapters.redis_lease import RedisLease
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.controller import Controller
from rollout.core.plan import Plan
from rollout.core.state import RolloutState
from rollout.metrics import ControllerMetrics
from rollout.ports import FlagWriter, MetricsSource, Notifier, NullNotifier, StateStore
from rollout.runtime_types import CyclePorts, CycleReport
from tests.support.controller_replica import baseline_for

LEASE_SECONDS = 1.5


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
    """A state at `stage` with the profile's baseline (values and counts, as `off` would
    have recorded them); `baked`: its bake already elapsed."""
    index = plan.index_of(stage)
    assert index is not None, stage
    entered = utcnow() - (plan.bake_of(index) + timedelta(seconds=1) if baked else timedelta(0))
    baseline, counts = baseline_for(plan)
    return RolloutState(stage_index=index, stage_name=stage, entered_at=entered,
                        baseline=baseline, baseline_counts=counts, **fields)
