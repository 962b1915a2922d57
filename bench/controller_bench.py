"""How fast the controller sees and acts, on real services started here (and stopped after).

(a) One controller cycle — `rollout.cycle.run_cycle` with the default plan exactly as shipped
    (windows 1 h / 10 min / 1 d), for every stage's checks and guardrails: read the state
    from Redis, measure every check on a local Prometheus that holds data (a fake service
    replica scraped every second), decide, re-apply the stage's flags (local store), record
    (fenced Lua commit). Many cycles per stage; p50/p95. Target: p50 <= 100 ms.

(b) Breach to rollback, as in the integration tests: the default plan scaled to seconds
    (tests/support/controller_plan.py), a controller ticking every `interval` at stage
    l1-50; once the stage is being judged and healthy, the L1 cohort's error rate jumps to
    30 % (the breach), and the clock runs until the flag store holds l1-10's flags. Compared
    with the budget `interval x N + scrape interval` (N = failing cycles needed for a
    rollback).

    .venv/bin/python -m bench.controller_bench [--cycles 40] [--trials 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from redis.asyncio import Redis

from devstack.services import redis as redis_svc
from devstack.services.common import Service
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.prometheus import PrometheusSource
from rollout.adapters.redis_state import RolloutKeys
from rollout.core.decision import Action
from rollout.core.flags import FlagSettings
from rollout.core.observations import Verdict
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_default_plan
from rollout.cycle import run_cycle
from rollout.ports import ApplyResult, FlagWriter
from rollout.runtime_types import CycleReport
from tests.support.controller_harness import build_harness, seed_state, seeded, utcnow
from tests.support.controller_log import is_action, judged
from tests.support.controller_plan import L1_10, L1_50, demo_plan, stage_flags
from tests.support.controller_replica import ServiceReplica
from tests.support.controller_stack import SCRAPE_SECONDS, ControllerStack, running_controller_stack

TARGET_P50_MS = 100.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[index]


@contextlib.contextmanager
def private_redis() -> Iterator[Service]:
    service = redis_svc.start_private_redis(name="redis-controller-bench",
                                            maxmemory_policy="noeviction")
    try:
        yield service
    finally:
        redis_svc.stop(service)


@contextlib.asynccontextmanager
async def namespace(client: Redis) -> AsyncIterator[RolloutKeys]:
    keys = RolloutKeys(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        yield keys
    finally:
        await client.delete(*keys.all(), f"{keys.namespace}:flags")


# --- (a) one cycle --------------------------------------------------------------------------


@dataclass
class CycleTimes:
    stage: str
    checks: int
    queries: int
    millis: list[float]


def distinct_queries(plan: Plan, index: int) -> int:
    """Queries one cycle sends: identical (query, sample query) pairs run once, plus the
    reported flags."""
    pairs = {(plan.render_query(c), plan.render_sample_query(c)) for c in plan.checks_for(index)}
    return sum(1 + (sample is not None) for _, sample in pairs) + 1


async def time_cycles(stack: ControllerStack, redis: Service, cycles: int) -> list[CycleTimes]:
    plan = load_default_plan()  # as shipped: no scaling
    results: list[CycleTimes] = []
    client = Redis.from_url(redis.url, decode_responses=True)
    try:
        for index, stage in enumerate(plan.stages):
            async with (
                namespace(client) as keys,
                LocalFlagWriter.from_url(redis.url, key=f"{keys.namespace}:flags") as flags,
                PrometheusSource(stack.url, timeout_seconds=2.0) as source,
            ):
                replica = ServiceReplica(stack.exporter, flags)
                replica.adopt(stage.flags)
                await flags.apply(stage.flags)
                await seed_state(client, keys, seeded(plan, stage.name, baked=False))
                harness = build_harness("bench", plan, client, keys, flags, source,
                                        lease_seconds=60)
                assert await harness.lease.refresh()
                token = harness.lease.token
                assert token is not None
                await run_cycle(harness.ports, now=utcnow(), token=token)  # warm-up
                millis: list[float] = []
                for _ in range(cycles):
                    started = time.perf_counter()
                    report = await run_cycle(harness.ports, now=utcnow(), token=token)
                    millis.append((time.perf_counter() - started) * 1000)
                    assert report.committed and report.observations is not None
                    assert not any(o.verdict is Verdict.ERROR
                                   for o in report.observations.checks), report.entry
                    await asyncio.sleep(0.02)  # not back to back: one cycle at a time
                await harness.lease.release()
                results.append(CycleTimes(stage.name, len(plan.checks_for(index)),
                                          distinct_queries(plan, index), millis))
    finally:
        await client.aclose()
    stack.reset()
    return results


def print_cycles(results: list[CycleTimes]) -> bool:
    print("(a) one controller cycle, default plan as shipped, local Prometheus + Redis")
    print(f"{'stage':<12} {'checks':>6} {'queries':>7} {'cycles':>6} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'max ms':>8}")
    every: list[float] = []
    for row in results:
        every += row.millis
        print(f"{row.stage:<12} {row.checks:>6} {row.queries:>7} {len(row.millis):>6} "
              f"{statistics.median(row.millis):>8.1f} {percentile(row.millis, 95):>8.1f} "
              f"{max(row.millis):>8.1f}")
    p50, p95 = statistics.median(every), percentile(every, 95)
    ok = p50 <= TARGET_P50_MS
    print(f"{'all stages':<12} {'':>6} {'':>7} {len(every):>6} {p50:>8.1f} {p95:>8.1f} "
          f"{max(every):>8.1f}   target p50 <= {TARGET_P50_MS:g} ms: {'PASS' if ok else 'MISS'}")
    return ok


# --- (b) breach to rollback ------------------------------------------------------------------


class TimedFlags:
    """A FlagWriter that notes when each write that changed something returned."""

    def __init__(self, inner: FlagWriter) -> None:
        self.inner = inner
        self.written: list[tuple[float, FlagSettings]] = []

    @property
    def target(self) -> str:
        return self.inner.target

    async def read(self) -> FlagSettings:
        return await self.inner.read()

    async def apply(self, desired: FlagSettings) -> ApplyResult:
        result = await self.inner.apply(desired)
        if result.changed:
            self.written.append((time.monotonic(), desired))
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Trial:
    failures: int
    interval: float
    breach_to_rollback: float
    first_fail: float
    cycles: int

    @property
    def budget(self) -> float:
        return self.interval * self.failures + SCRAPE_SECONDS


async def one_breach(stack: ControllerStack, redis: Service, failures: int) -> Trial:
    plan = demo_plan(day_seconds=3, failures=failures)  # l1-50 bakes 15 s: no advance first
    rolled_back = stage_flags(plan, L1_10)
    client = Redis.from_url(redis.url, decode_responses=True)
    try:
        async with (
            namespace(client) as keys,
            LocalFlagWriter.from_url(redis.url, key=f"{keys.namespace}:flags") as store,
            LocalFlagWriter.from_url(redis.url, key=f"{keys.namespace}:flags") as view,
            PrometheusSource(stack.url, timeout_seconds=2.0) as source,
        ):
            flags = TimedFlags(store)
            await flags.apply(stage_flags(plan, L1_50))
            await seed_state(client, keys, seeded(plan, L1_50, baked=False))
            replica = ServiceReplica(stack.exporter, view)
            replica.adopt(stage_flags(plan, L1_50))
            replica.start()
            try:
                ctl = build_harness("bench", plan, client, keys, flags, source)

                def healthy(report: CycleReport) -> bool:
                    observations = report.observations
                    return judged(report, plan) and observations is not None and all(
                        o.verdict is Verdict.PASS for o in observations.checks)

                await ctl.run_until(healthy, timeout=30, what="l1-50 judged healthy")
                replica.scenario.error_rate_on = 0.3
                flipped, flipped_wall, before = time.monotonic(), utcnow(), len(ctl.reports)
                await ctl.run_until(is_action(Action.ROLLBACK), timeout=30, what="rollback")
                replica.scenario.error_rate_on = 0.0
                await ctl.controller.shutdown()
            finally:
                await replica.stop()
                stack.reset()
    finally:
        await client.aclose()
    [written_at] = [t for t, f in flags.written if f == rolled_back]
    since = ctl.reports[before:]
    first_fail = next(
        r for r in since if r.observations is not None
        and any(o.check == "error_rate_guardrail" and o.verdict is Verdict.FAIL
                for o in r.observations.checks)
    )
    return Trial(failures=failures, interval=ctl.interval,
                 breach_to_rollback=written_at - flipped,
                 first_fail=(first_fail.at - flipped_wall).total_seconds(), cycles=len(since))


def print_breaches(trials: list[Trial]) -> None:
    print()
    print("(b) breach (error_rate_on 0 -> 30 % at l1-50) to flags rolled back (l1-10), "
          f"scrape {SCRAPE_SECONDS:g} s")
    print(f"{'N':>2} {'interval s':>10} {'budget s':>9} {'1st fail s':>10} {'rollback s':>10} "
          f"{'ratio':>6} {'cycles':>6}")
    for t in trials:
        print(f"{t.failures:>2} {t.interval:>10.2f} {t.budget:>9.2f} {t.first_fail:>10.2f} "
              f"{t.breach_to_rollback:>10.2f} {t.breach_to_rollback / t.budget:>6.2f} "
              f"{t.cycles:>6}")
    print("budget = interval x N + scrape interval; ratio = rollback / budget")


async def main_async(cycles: int, trials: int) -> int:
    started = time.monotonic()
    with private_redis() as redis, running_controller_stack() as stack:
        results = await time_cycles(stack, redis, cycles)
        ok = print_cycles(results)
        breaches = [await one_breach(stack, redis, failures)
                    for failures in (2, 3) for _ in range(trials)]
        print_breaches(breaches)
    print(f"\n(total {time.monotonic() - started:.0f} s, services stopped)")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=40, help="timed cycles per stage (a)")
    parser.add_argument("--trials", type=int, default=2, help="breaches per N in (2, 3) (b)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(main_async(args.cycles, args.trials))


if __name__ == "__main__":
    raise SystemExit(main())
