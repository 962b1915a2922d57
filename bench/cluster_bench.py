"""The caches on a Redis Cluster against one Redis, side by side in one run (issue 14).

Part `store`: starts a private single Redis, a private cluster (3 masters + 3 replicas) and
a private Sentinel-managed master (1 replica, 3 sentinels) and drives the service's own
RedisCache against them, in interleaved rounds (so a noisy neighbour on the machine hurts
every variant alike):

  * invalidation (the write path's Redis cost): one generation bump of a client and its
    workspace, sequentially — single Redis (MULTI), cluster and Sentinel's master each
    without the durability wait and with `WAIT 1` (REDIS_INVALIDATION_REPLICAS=1, their
    default);
  * L1 hits: one lookup script call per hit, `--concurrency` tasks at once — throughput
    and p50 on the cluster against the single Redis (target: at least 0.9 of it at equal
    concurrency).

Part `http`: the whole write path with and without the durability wait. The real service
(`python -m app`, started as bench/service_bench starts it) four times — on the cluster and
on a private Sentinel-managed master (1 replica, 3 sentinels), each with
REDIS_INVALIDATION_REPLICAS=1 (the default there) and 0 — takes note PATCHes over HTTP, one
at a time (SQLite commit with its outbox row, the generation bump, the response; SQLite on
/dev/shm by default, `--db-dir`: disk flushes are the same either way and would drown the
difference). Writes go to the four services in turn, the order rotating write by write;
per backend the figure is the median over rounds of each round's ratio of median latencies
(WAIT 1 / no wait), with its spread, and the service's CPU per write (/proc utime+stime
over each request; the Redis processes' CPU is not in it). Every write must have
been applied by the writer itself (ai_agent_cache_invalidation_intents_applied_total
{via="write"}), or a NotReplicated bump's 1.1 lease wait would be measured.

    .venv/bin/python -m bench.cluster_bench [--parts store,http] [--rounds 5] [--bumps 400]
        [--hits 4000] [--concurrency 16] [--writes 150] [--db-dir /dev/shm]
        [--json bench/results/cluster_bench.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app import contract
from app.cache.breaker import CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import RedisCache
from app.main import build_redis
from app.metrics import ServiceMetrics
from app.settings import Settings
from bench.service_bench.plan import REDIS_TIMEOUT_SECONDS, REPO, BenchError
from bench.service_bench.rounds import rotate
from bench.service_bench.servers import Server, start_server
from bench.service_bench.wrk import cpu_ticks
from devstack.auth import LocalIssuer
from devstack.network import free_port
from devstack.readiness import wait_until
from devstack.services import redis as redis_svc
from devstack.services import redis_cluster as cluster_svc
from devstack.services import redis_sentinel as sentinel_svc

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


async def _run(args: argparse.Namespace, single_url: str, cluster_url: str,
               sentinel: Settings) -> list[Figures]:
    single, cluster = Redis.from_url(single_url), RedisCluster.from_url(cluster_url)
    master = build_redis(sentinel)  # the service's Sentinel-managed master client
    bumps = {"invalidate single (MULTI)": _cache(single, 0),
             "invalidate cluster, no wait": _cache(cluster, 0),
             "invalidate cluster, WAIT 1": _cache(cluster, 1),
             "invalidate sentinel, no wait": _cache(master, 0),
             "invalidate sentinel, WAIT 1": _cache(master, 1)}
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
    await master.aclose()
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
    wait, no_wait = by["invalidate sentinel, WAIT 1"], by["invalidate sentinel, no wait"]
    print(f"invalidation on Sentinel's master: WAIT 1 costs "
          f"{wait.p50_us - no_wait.p50_us:+.0f} µs at p50 ({wait.p50_us / no_wait.p50_us:.2f}x)")
    print(f"L1 hits at concurrency {concurrency}: cluster/single throughput "
          f"{hit_c.per_second / hit_s.per_second:.2f}x (target >= 0.9), p50 "
          f"{hit_c.p50_us / hit_s.p50_us:.2f}x")


# --- part http: the whole write path over HTTP, with and without the durability wait ----

@dataclass
class WriteTarget:
    """One service process: a backend and REDIS_INVALIDATION_REPLICAS, its own SQLite file,
    one note of its own workspace that every write PATCHes."""

    backend: str  # cluster | sentinel
    replicas: int
    server: Server
    workspace: uuid.UUID
    headers: dict[str, str]
    note_id: str = ""
    writes: int = 0
    round_medians: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def variant(self) -> str:
        return f"{self.backend}, WAIT {self.replicas}" if self.replicas else \
            f"{self.backend}, no wait"

    @property
    def note_url(self) -> str:
        return f"{self.server.url}/v1/workspaces/{self.workspace}/sessions/{self.note_id}"


def _start_write_targets(stack: ExitStack, backends: dict[str, dict[str, str]],
                         db_dir: Path | None) -> list[WriteTarget]:
    """The real service (as bench/service_bench starts it) per backend, with the wait and
    without; cwd a temp dir (in `db_dir`, with the SQLite files), so no developer's .env
    leaks into the measured settings."""
    tmp = Path(tempfile.mkdtemp(prefix="aicache-cluster-bench-", dir=db_dir))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    issuer = LocalIssuer.generate()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", str(tmp)), "LANG": "C.UTF-8",
                "PYTHONPATH": str(REPO), "AI_PROVIDER": "local", "AI_LATENCY_SCALE": "0",
                "LOCAL_EMBEDDING_DIMENSIONS": "256", **issuer.env(),
                "REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_SECONDS), "LOG_LEVEL": "WARNING"}
    targets = []
    for backend, redis_env in backends.items():
        for replicas in (1, 0):
            port = free_port()
            env = {**base_env, **redis_env, "REDIS_INVALIDATION_REPLICAS": str(replicas),
                   "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/{backend}-{replicas}.db"}
            server = start_server(stack, f"writes-{backend}-{replicas}",
                                  [sys.executable, "-m", "app", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, cwd=tmp, port=port)
            workspace = uuid.uuid4()
            targets.append(WriteTarget(backend, replicas, server, workspace,
                                       issuer.headers([workspace], role="clinician",
                                                      sub="bench")))
    return targets


def _create_note(http: httpx.Client, target: WriteTarget) -> None:
    response = http.post(f"{target.server.url}/v1/workspaces/{target.workspace}/sessions",
                         headers=target.headers,
                         json={"client_id": str(uuid.uuid4()), "subjective": "Sleeping 6 h.",
                               "objective": "Calm.", "assessment": "Improving.",
                               "plan": "Revision 0"})
    if response.status_code != 201:
        raise BenchError(f"{target.variant}: creating the note answered "
                         f"{response.status_code}: {response.text}")
    target.note_id = str(response.json()["id"])


def _write_once(http: httpx.Client, target: WriteTarget) -> float:
    """One PATCH; its latency. Adds the service's CPU over it to the target's."""
    target.writes += 1
    ticks = cpu_ticks(target.server.pid)
    started = time.perf_counter()
    response = http.patch(target.note_url, headers=target.headers,
                          json={"plan": f"Revision {target.writes}"})
    latency = time.perf_counter() - started
    target.cpu_seconds += (cpu_ticks(target.server.pid) - ticks) / os.sysconf("SC_CLK_TCK")
    if response.status_code != 200:
        raise BenchError(f"{target.variant}: PATCH answered {response.status_code}: "
                         f"{response.text}")
    return latency


def _applied_by_writer(http: httpx.Client, target: WriteTarget) -> float:
    text = http.get(f"{target.server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == contract.METRIC_INVALIDATION_APPLIED and \
                    sample.labels.get("via") == contract.APPLIED_VIA_WRITE:
                return sample.value
    return 0.0


def _check_every_write_applied(http: httpx.Client, target: WriteTarget) -> None:
    """Each write's bump applied (and WAITed for) by the writer, none left to the relay:
    the removal is batched in the background, so poll for the count."""
    try:
        wait_until(lambda: _applied_by_writer(http, target) >= target.writes, timeout=10,
                   what=f"{target.writes} invalidations applied by {target.variant}'s writes")
    except Exception as exc:
        raise BenchError(f"{exc}: {_applied_by_writer(http, target):.0f} were") from exc


def _measure_writes(targets: list[WriteTarget], rounds: int, writes: int) -> None:
    """Every step writes once to each service, in an order that rotates step by step: a
    neighbour's burst on the shared machine lands on all variants alike. A round's median
    per variant gives one ratio per backend."""
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        for target in targets:
            _create_note(http, target)
            for _ in range(20):  # warm-up: connections, scripts, SQLite pages
                _write_once(http, target)
        warm = {id(t): t.writes for t in targets}
        for target in targets:
            target.cpu_seconds = 0.0  # the timed writes' only
        for _ in range(rounds):
            got: dict[int, list[float]] = {id(t): [] for t in targets}
            for step in range(writes):
                for target in rotate(step, targets):
                    got[id(target)].append(_write_once(http, target))
            for target in targets:
                target.samples += got[id(target)]
                target.round_medians.append(statistics.median(got[id(target)]))
        for target in targets:
            _check_every_write_applied(http, target)
            target.writes -= warm[id(target)]  # timed writes only, for the CPU figure


def _write_figures(targets: list[WriteTarget]) -> dict[str, Any]:
    by = {(t.backend, t.replicas): t for t in targets}
    figures: dict[str, Any] = {"variants": {}, "wait_cost": {}}
    for t in targets:
        ordered = sorted(t.samples)
        figures["variants"][t.variant] = {
            "writes": len(t.samples), "p50_ms": statistics.median(ordered) * 1e3,
            "p95_ms": ordered[int(len(ordered) * 0.95)] * 1e3,
            "round_p50_ms": [m * 1e3 for m in t.round_medians],
            "cpu_us_per_write": t.cpu_seconds / t.writes * 1e6 if t.writes else None}
    for backend in dict.fromkeys(t.backend for t in targets):
        wait, no_wait = by[(backend, 1)], by[(backend, 0)]
        ratios = [w / n for w, n in zip(wait.round_medians, no_wait.round_medians,
                                        strict=True)]
        deltas = [(w - n) * 1e6 for w, n in zip(wait.round_medians, no_wait.round_medians,
                                                 strict=True)]
        cpu_w = figures["variants"][wait.variant]["cpu_us_per_write"]
        cpu_n = figures["variants"][no_wait.variant]["cpu_us_per_write"]
        figures["wait_cost"][backend] = {
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "delta_us_median": statistics.median(deltas),
            "delta_us_min": min(deltas), "delta_us_max": max(deltas),
            "cpu_us_per_write_wait": cpu_w, "cpu_us_per_write_no_wait": cpu_n}
    return figures


def _print_writes(figures: dict[str, Any], rounds: int, writes: int) -> None:
    print(f"\nnote writes over HTTP (PATCH, one at a time, variants interleaved write by "
          f"write; {rounds} rounds x {writes} each)")
    print(f"{'variant':24} {'writes':>7} {'p50 ms':>8} {'p95 ms':>8} {'CPU µs/write':>13}")
    for name, f in figures["variants"].items():
        cpu = f["cpu_us_per_write"]
        print(f"{name:24} {f['writes']:>7} {f['p50_ms']:>8.2f} {f['p95_ms']:>8.2f} "
              f"{cpu:>13.0f}")
    for backend, c in figures["wait_cost"].items():
        print(f"{backend}: WAIT 1 / no wait, median of per-round p50 ratios "
              f"{c['ratio_median']:.3f}x (rounds {c['ratio_min']:.3f}-{c['ratio_max']:.3f}), "
              f"{c['delta_us_median']:+.0f} µs ({c['delta_us_min']:+.0f} to "
              f"{c['delta_us_max']:+.0f}); service CPU {c['cpu_us_per_write_wait']:.0f} vs "
              f"{c['cpu_us_per_write_no_wait']:.0f} µs a write")


def run_http_part(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        cluster = cluster_svc.start_private_cluster(name="redis-cluster-bench-writes")
        stack.callback(cluster_svc.stop, cluster)
        sentinel = sentinel_svc.start_private_sentinel(name="redis-sentinel-bench-writes")
        stack.callback(sentinel_svc.stop, sentinel)
        targets = _start_write_targets(stack, {
            "cluster": {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "true"},
            "sentinel": sentinel.settings()}, args.db_dir)
        _measure_writes(targets, args.rounds, args.writes)
    figures = _write_figures(targets)
    _print_writes(figures, args.rounds, args.writes)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench")
    parser.add_argument("--parts", default="store,http",
                        help="comma-separated: store (RedisCache), http (note writes)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bumps", type=int, default=400)
    parser.add_argument("--hits", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--writes", type=int, default=150, help="note writes a variant a round")
    # The same SQLite commits are made with and without the wait; on tmpfs their disk
    # flushes, slow and erratic on a shared machine, do not drown the difference.
    parser.add_argument("--db-dir", type=Path,
                        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="where the services' SQLite files live (default /dev/shm)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("rounds", "bumps", "hits", "concurrency", "writes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"store", "http"}:
        parser.error("--parts takes store, http or both")
    output: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    if "store" in parts:
        results = run_store_part(args)
        output["results"] = [asdict(f) for f in results]
    if "http" in parts:
        output["http_writes"] = run_http_part(args)
    if args.json:
        args.json.write_text(json.dumps(output, indent=2, default=str))
    return 0


def run_store_part(args: argparse.Namespace) -> list[Figures]:
    with ExitStack() as stack:
        single = redis_svc.start_private_redis(name="redis-bench-single")
        stack.callback(redis_svc.stop, single)
        cluster = cluster_svc.start_private_cluster(name="redis-cluster-bench")
        stack.callback(cluster_svc.stop, cluster)
        sentinel = sentinel_svc.start_private_sentinel(name="redis-sentinel-bench")
        stack.callback(sentinel_svc.stop, sentinel)
        sentinel_settings = Settings(_env_file=None,  # type: ignore[call-arg]
                                     **{k.lower(): v for k, v in sentinel.settings().items()})
        results = asyncio.run(_run(args, single.url, cluster.url, sentinel_settings))
    _print(results, args.concurrency)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
