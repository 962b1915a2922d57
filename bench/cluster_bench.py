"""The caches on a Redis Cluster against one Redis, side by side in one run (issue 14).

Starts a private single Redis and a private cluster (3 masters + 3 replicas) and drives the
service's own RedisCache against both, in interleaved rounds (so a noisy neighbour on the
machine hurts every variant alike):

  * invalidation (the write path's Redis cost): one generation bump of a client and its
    workspace, sequentially — single Redis (MULTI), cluster without the durability wait,
    cluster with `WAIT 1` (REDIS_INVALIDATION_REPLICAS=1, the cluster default);
  * L1 hits: one lookup script call per hit, `--concurrency` tasks at once — throughput
    and p50 on the cluster against the single Redis (target: at least 0.9 of it at equal
    concurrency).

This measures the store, not HTTP (bench/service_bench does the whole service).

    .venv/bin/python -m bench.cluster_bench [--rounds 5] [--bumps 400] [--hits 4000]
        [--concurrency 16] [--json bench/results/cluster_bench.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.cache.breaker import CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import RedisCache
from app.metrics import ServiceMetrics
from devstack.services import redis as redis_svc
from devstack.services import redis_cluster as cluster_svc

WS = uuid.UUID("00000000-0000-4000-8000-00000000be01")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000be02")
KEYS = KeyBuilder(b"bench")


@dataclass
class Figures:
    variant: str
    operations: int
    p50_us: float
    p95_us: float
    mean_us: float
    per_second: float


def _cache(client: Redis | RedisCluster, wait_replicas: int) -> RedisCache:
    return RedisCache(client, CircuitBreaker(1_000, 1.0), ServiceMetrics(CollectorRegistry()),
                      timeout_seconds=2.0, wait_replicas=wait_replicas, wait_ms=100)


async def _timed(op: Callable[[], Awaitable[object]], count: int, concurrency: int
                 ) -> tuple[list[float], float]:
    """Run `op` `count` times over `concurrency` tasks; per-op seconds and the wall time."""
    samples: list[float] = []
    per_task = count // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            started = time.perf_counter()
            await op()
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def _figures(variant: str, samples: list[float], wall: float) -> Figures:
    ordered = sorted(samples)
    return Figures(variant, len(samples), ordered[len(ordered) // 2] * 1e6,
                   ordered[int(len(ordered) * 0.95)] * 1e6, statistics.fmean(ordered) * 1e6,
                   len(samples) / wall)


async def _run(args: argparse.Namespace, single_url: str, cluster_url: str) -> list[Figures]:
    single, cluster = Redis.from_url(single_url), RedisCluster.from_url(cluster_url)
    bumps = {"invalidate single (MULTI)": _cache(single, 0),
             "invalidate cluster, no wait": _cache(cluster, 0),
             "invalidate cluster, WAIT 1": _cache(cluster, 1)}
    hits = {"L1 hit single": _cache(single, 0), "L1 hit cluster": _cache(cluster, 0)}
    generations = [KEYS.client_generation(WS, CLIENT), KEYS.workspace_generation(WS)]
    l1 = KEYS.l1(WS, CLIENT, "How is the patient sleeping?")
    for cache in hits.values():  # one current entry on each backend, scripts loaded
        found = await cache.lookup(l1, None)
        assert found.l1 is not None
        assert await cache.fill(l1, found.l1.generations, b"x" * 600, 3_600)
    samples: dict[str, list[float]] = {name: [] for name in [*bumps, *hits]}
    walls: dict[str, float] = dict.fromkeys(samples, 0.0)
    for _ in range(args.rounds):
        for name, cache in bumps.items():
            got, wall = await _timed(lambda c=cache: c.bump_generations(generations),
                                     args.bumps, 1)
            samples[name] += got
            walls[name] += wall
        for name, cache in hits.items():
            got, wall = await _timed(lambda c=cache: c.lookup(l1, None), args.hits,
                                     args.concurrency)
            samples[name] += got
            walls[name] += wall
    await single.aclose()
    await cluster.aclose()
    return [_figures(name, samples[name], walls[name]) for name in samples]


def _print(results: list[Figures], concurrency: int) -> None:
    by = {f.variant: f for f in results}
    print(f"{'variant':32} {'ops':>7} {'p50 µs':>8} {'p95 µs':>8} {'mean µs':>8} {'ops/s':>8}")
    for f in results:
        print(f"{f.variant:32} {f.operations:>7} {f.p50_us:>8.0f} {f.p95_us:>8.0f} "
              f"{f.mean_us:>8.0f} {f.per_second:>8.0f}")
    wait, no_wait = by["invalidate cluster, WAIT 1"], by["invalidate cluster, no wait"]
    hit_c, hit_s = by["L1 hit cluster"], by["L1 hit single"]
    print(f"invalidation: WAIT 1 costs {wait.p50_us - no_wait.p50_us:+.0f} µs at p50 "
          f"({wait.p50_us / no_wait.p50_us:.2f}x)")
    print(f"L1 hits at concurrency {concurrency}: cluster/single throughput "
          f"{hit_c.per_second / hit_s.per_second:.2f}x (target >= 0.9), p50 "
          f"{hit_c.p50_us / hit_s.p50_us:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bumps", type=int, default=400)
    parser.add_argument("--hits", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("rounds", "bumps", "hits", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    single = redis_svc.start_private_redis(name="redis-bench-single")
    try:
        cluster = cluster_svc.start_private_cluster(name="redis-cluster-bench")
        try:
            results = asyncio.run(_run(args, single.url, cluster.url))
        finally:
            cluster_svc.stop(cluster)
    finally:
        redis_svc.stop(single)
    _print(results, args.concurrency)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()
                                                  if k != "json"},
                                         "results": [asdict(f) for f in results]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
