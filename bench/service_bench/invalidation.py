"""Part 2: the real invalidation (a generation bump) with few and with many answers cached,
and a SCAN + DEL invalidation at the same sizes for comparison."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.cache.breaker import CircuitBreaker
from app.cache.store import RedisCache
from app.main import build_redis
from app.metrics import ServiceMetrics
from app.service.invalidation import Invalidator
from app.settings import Settings
from bench.service_bench.invalidation_keys import (
    ANSWERS_PER_WORKSPACE,
    CLIENTS_PER_WORKSPACE,
    Layout,
    make_layout,
    populate,
)
from bench.service_bench.plan import REDIS_TIMEOUT_SECONDS, BenchError, Plan
from bench.service_bench.report import Row, say, verdict
from bench.service_bench.rounds import alternate, median
from bench.service_bench.servers import start_redis

# Targets (issue 2, "Benchmark").
TARGET_INVALIDATION_MS = 1.0  # at the large size
TARGET_INVALIDATION_RATIO = 2.0  # large / small

SCAN_COUNT = 1000


def ms(seconds: float) -> float:
    return seconds * 1000.0


async def _scan_invalidate(redis: Redis, pattern: str) -> int:
    """What the design forbids: SCAN the keyspace for the workspace's entries and DEL them."""
    deleted, cursor = 0, 0
    while True:
        cursor, found = await redis.scan(cursor, match=pattern, count=SCAN_COUNT)
        if found:
            deleted += int(await redis.delete(*found))
        if cursor == 0:
            return deleted


async def _measure_invalidation(plan: Plan, layout: Layout,
                                urls: dict[int, str]) -> dict[str, Any]:
    sizes = list(plan.sizes)
    ws, client = Layout.workspace(0), Layout.client(0, 0)
    pattern = layout.workspace_pattern(ws)
    target_entries = layout.workspace_entries(0)
    redis_clients: dict[int, Redis] = {}
    invalidators: dict[int, Invalidator] = {}
    for size, url in urls.items():
        settings = Settings(_env_file=None, redis_url=url,
                            redis_timeout_seconds=REDIS_TIMEOUT_SECONDS)
        redis = build_redis(settings)  # the service's Redis client configuration
        redis_clients[size] = redis
        metrics = ServiceMetrics(CollectorRegistry())
        cache = RedisCache(redis, CircuitBreaker(settings.breaker_failure_threshold,
                                                 settings.breaker_reset_seconds),
                           metrics, generation_ttl_seconds=max(86_400,
                                                               settings.l1_ttl_seconds * 2))
        invalidators[size] = Invalidator(cache, layout.keys, metrics)
    try:
        dbsize = {size: int(await redis_clients[size].dbsize()) for size in sizes}
        bumps: dict[int, list[float]] = {size: [] for size in sizes}
        for i in range(50 + plan.bump_calls):  # 50 warm-up calls each
            for size in alternate(i, sizes):
                started = time.perf_counter()
                applied = await invalidators[size].note_changed(ws, client, "bench")
                elapsed = time.perf_counter() - started
                if not applied:
                    raise BenchError(f"invalidation failed with {size} answers present")
                if i >= 50:
                    bumps[size].append(elapsed)

        scans: dict[int, list[float]] = {size: [] for size in sizes}
        deleted: dict[int, list[int]] = {size: [] for size in sizes}
        calls = dict(zip(sizes, plan.scan_calls, strict=True))
        for i in range(max(calls.values())):
            for n in alternate(i, sizes):
                if i >= calls[n]:
                    continue
                redis = redis_clients[n]
                async with redis.pipeline(transaction=False) as pipe:  # restore, untimed
                    for key, value in target_entries:
                        pipe.set(key, value, ex=3600)
                    await pipe.execute()
                started = time.perf_counter()
                deleted[n].append(await _scan_invalidate(redis, pattern))
                scans[n].append(time.perf_counter() - started)
    finally:
        for inv in invalidators.values():
            await inv.aclose()
        for redis in redis_clients.values():
            await redis.aclose()
    return {"bumps": bumps, "scans": scans, "deleted": deleted, "dbsize": dbsize,
            "pattern": pattern}


def part2_invalidation(plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    small, large = plan.sizes
    label = {small: f"10^{len(str(small)) - 1}", large: f"10^{len(str(large)) - 1}"}
    say(f"\n[2] invalidation with {label[small]} vs {label[large]} cached answers present"
        + (" (--quick: 10^5 stands in for 10^6)" if plan.quick else ""))
    layout = make_layout()
    with ExitStack() as stack:
        urls: dict[int, str] = {}
        for size in plan.sizes:
            redis = start_redis(stack, f"bench-inv-{size}")
            took = populate(redis, layout, size)
            urls[size] = redis.url
            say(f"    populated {size:,} L1 entries ({len(layout.value_client)} B values, real "
                f"key layout, {ANSWERS_PER_WORKSPACE} per workspace) in {took:.1f} s")
        found = asyncio.run(_measure_invalidation(plan, layout, urls))

    bumps: dict[int, list[float]] = found["bumps"]
    scans: dict[int, list[float]] = found["scans"]
    for size in plan.sizes:
        expected = size + (size // ANSWERS_PER_WORKSPACE) * (CLIENTS_PER_WORKSPACE + 2)
        if found["dbsize"][size] < expected:
            raise BenchError(f"expected >= {expected} keys with {size} answers, found "
                             f"{found['dbsize'][size]}")
        if any(d != ANSWERS_PER_WORKSPACE for d in found["deleted"][size]):
            raise BenchError(f"SCAN invalidation deleted {found['deleted'][size]} entries, "
                             f"expected {ANSWERS_PER_WORKSPACE} each time")
    bump_med = {size: ms(median(times)) for size, times in bumps.items()}
    bump_p99 = {size: ms(float(np.percentile(times, 99))) for size, times in bumps.items()}
    scan_med = {size: ms(median(times)) for size, times in scans.items()}
    ratio = bump_med[large] / bump_med[small]
    for size in plan.sizes:
        say(f"    {label[size]:>5}: Invalidator.note_changed median {bump_med[size]:.3f} ms "
            f"(p99 {bump_p99[size]:.3f} ms, {len(bumps[size])} calls); SCAN+DEL median "
            f"{scan_med[size]:.1f} ms ({len(scans[size])} calls)")
    rows = [
        Row(f"2a invalidation at {label[large]} answers (median)",
            f"{bump_med[large]:.3f} ms (p99 {bump_p99[large]:.3f})",
            f"<= {TARGET_INVALIDATION_MS:.1f} ms", "-",
            verdict(bump_med[large] <= TARGET_INVALIDATION_MS)),
        Row(f"2b invalidation {label[large]} / {label[small]}",
            f"{bump_med[large]:.3f} / {bump_med[small]:.3f} ms",
            f"<= {TARGET_INVALIDATION_RATIO:.1f}x", f"{ratio:.2f}x",
            verdict(ratio <= TARGET_INVALIDATION_RATIO)),
        Row(f"2c SCAN+DEL invalidation {label[large]} / {label[small]}",
            f"{scan_med[large]:.1f} / {scan_med[small]:.2f} ms", "(comparison)",
            f"{scan_med[large] / scan_med[small]:.0f}x", "info"),
    ]
    data = {
        "quick_substitute": plan.quick,
        "sizes": list(plan.sizes),
        "layout": {"answers_per_workspace": ANSWERS_PER_WORKSPACE,
                   "value_bytes": len(layout.value_client), "scan_pattern": found["pattern"],
                   "scan_count": SCAN_COUNT, "dbsize": found["dbsize"]},
        "bump_median_ms": bump_med, "bump_p99_ms": bump_p99, "bump_ratio": ratio,
        "scan_median_ms": scan_med,
    }
    return rows, data
