"""One run of the client comparison (in the peer venv): the servers, the rounds, the table."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import asdict
from typing import Any

import redis
import uvloop

from bench.client_bench.candidates import (
    ALL,
    ON_CLUSTER,
    Candidate,
    FloorReusingCancelled,
    Target,
    redis_py,
)
from bench.client_bench.fixture import ENTRY_BYTES, seed
from bench.client_bench.runner import Sample, cancellation, check, measure
from bench.client_bench.stats import Spread, ratios, rotate, spread
from devstack.services import redis as redis_svc
from devstack.services import redis_cluster as cluster_svc

CEILING = "f"
WARMUP_CALLS = 200


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"},
                               "entry_bytes": ENTRY_BYTES, "deployments": {}}
    loop_factory = uvloop.new_event_loop if args.loop == "uvloop" else None
    for deployment in args.deployments:
        if deployment == "single":
            server: Any = redis_svc.start_private_redis(name="redis-client-bench")
            stop = redis_svc.stop
        else:
            server = cluster_svc.start_private_cluster(name="redis-cluster-client-bench")
            stop = cluster_svc.stop
        try:
            target = Target("127.0.0.1", int(server.port), deployment == "cluster")
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                found = runner.run(_deployment(args, target))
        finally:
            stop(server)
        results["deployments"][deployment] = found
        _print(deployment, found, args)
    if args.peers:
        from bench.client_bench.peers import run_peers

        results["peers"] = run_peers(args)
    return results


async def _deployment(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    client = redis_py(target)
    lookups, ceiling = await seed(client)
    await client.aclose()
    candidates: list[Candidate] = [cls(target) for cls in (ON_CLUSTER if target.cluster
                                                            else ALL)]
    try:
        for candidate in candidates:
            await candidate.open()
            await check(candidate, lookups, ceiling)
        calls = {c.key: c.bind(lookups[0]) for c in candidates}
        samples: dict[int, dict[str, list[Sample]]] = {}
        for concurrency in args.concurrency:
            for candidate in candidates:  # connections opened, code paths warm
                await measure(calls[candidate.key], WARMUP_CALLS, concurrency)
            samples[concurrency] = {c.key: [] for c in candidates}
            for r in range(args.rounds):
                for candidate in rotate(r, candidates):
                    samples[concurrency][candidate.key].append(
                        await measure(calls[candidate.key], args.calls, concurrency))
        safety = {}
        if not target.cluster:  # CLIENT PAUSE on one server; the clients' code is the same
            admin = redis.Redis(target.host, target.port)
            control = FloorReusingCancelled(target)
            await control.open()
            try:
                for candidate in [*candidates, control]:
                    safety[candidate.key] = await cancellation(candidate, lookups, ceiling,
                                                               admin)
            finally:
                admin.close()
                await control.close()
        fallbacks = {c.key: c.cluster_direct.fallbacks for c in candidates
                     if hasattr(c, "cluster_direct")}
    finally:
        for candidate in candidates:
            await candidate.close()
    return {"direct_fallbacks": fallbacks,
            "candidates": {c.key: {"label": c.label, "role": c.role}
                           for c in [*candidates, FloorReusingCancelled(target)]},
            "concurrency": {str(n): _summary(by) for n, by in samples.items()},
            "cancellation": safety}


def _summary(by: dict[str, list[Sample]]) -> dict[str, Any]:
    ceiling = by[CEILING]
    out = {}
    for key, got in by.items():
        out[key] = {
            "cpu_us": asdict(spread([s.cpu_us for s in got])),
            "per_second": asdict(spread([s.per_second for s in got])),
            "cpu_vs_ceiling": asdict(ratios([s.cpu_us for s in got],
                                            [s.cpu_us for s in ceiling])),
            "per_second_vs_ceiling": asdict(ratios([s.per_second for s in got],
                                                   [s.per_second for s in ceiling])),
            "rounds": [asdict(s) for s in got],
        }
    return out


def _print(deployment: str, found: dict[str, Any], args: argparse.Namespace) -> None:
    labels = found["candidates"]
    name = "one Redis" if deployment == "single" else "Redis Cluster (3 masters + 3 replicas)"
    for concurrency, by in found["concurrency"].items():
        print(f"\n{name}, {concurrency} task(s), {args.rounds} rounds x {args.calls} calls; "
              f"median (min-max) over rounds; x f = median of per-round ratios to (f)")
        print(f"  {'':6} {'':44} {'CPU us/call':>20} {'x f':>17} {'calls/s':>23} {'x f':>17}")
        for key, row in by.items():
            cpu, rate = Spread(**row["cpu_us"]), Spread(**row["per_second"])
            cpu_f, rate_f = Spread(**row["cpu_vs_ceiling"]), Spread(**row["per_second_vs_ceiling"])
            print(f"  {key:6} {labels[key]['label']:44} {cpu.text(1):>20} {cpu_f.text(2):>17} "
                  f"{rate.text(0):>23} {rate_f.text(2):>17}")
    if found["cancellation"]:
        print(f"\n{name}: a call cancelled mid-read (CLIENT PAUSE + asyncio.timeout), then "
              "another call on the same client:")
        for key, outcome in found["cancellation"].items():
            print(f"  {key:6} {labels[key]['label']:44} {outcome}")
