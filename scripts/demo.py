"""The main job on one machine: Redis, the service, and traffic through the cache stages.

Starts what is missing (a private Redis unless REDIS_URL is set), runs the service with the
local provider (seed-like latencies, scaled), walks the flags through the rollout stages of
DESIGN.md §7 by writing the local flag store, sends traffic in each stage and prints what it
measured. Everything it started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import httpx
from redis import Redis

from app import contract
from scripts.svc import redis as redis_svc
from scripts.svc.common import REPO_ROOT, RUN_DIR, free_port, stop_pid, wait_until
from scripts.traffic import TrafficGenerator

STAGES = [  # name, shadow, l2, l1 percent
    ("off", 0, 0, 0),
    ("dark-launch", 1, 0, 0),
    ("l2", 1, 1, 0),
    ("l1-10", 1, 1, 10),
    ("l1-50", 1, 1, 50),
    ("l1-100", 0, 1, 100),
]


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def start_service(redis_url: str, token: str, scale: float, stack: ExitStack) -> str:
    port = free_port()
    db_dir = tempfile.mkdtemp(prefix="aicache-demo-")
    env = {**os.environ, "REDIS_URL": redis_url, "SERVICE_API_TOKEN": token,
           "DATABASE_URL": f"sqlite+aiosqlite:///{db_dir}/notes.db", "AI_PROVIDER": "local",
           "AI_LATENCY_SCALE": str(scale), "LOG_LEVEL": "WARNING",
           "L1_AUDIT_SAMPLE_RATE": "0.05"}
    log = RUN_DIR / "logs" / f"service-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)], cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_pid, proc.pid)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited; see {log}")
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200

    wait_until(healthy, timeout=60, what=f"the service on {url}")
    return url


async def run_stages(url: str, redis_url: str, token: str, seconds: float, rate: float) -> None:
    flags = Redis.from_url(redis_url)
    generator = TrafficGenerator(url, token)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        print(f"seeding {generator.shape.workspaces} workspaces with notes …", flush=True)
        await generator.seed_notes(client)
        header = (f"{'stage':<12} {'queries':>7} {'p50 ms':>7} {'p95 ms':>7} "
                  f"{'L1 hit':>7} {'L2 hit':>7} {'$/query':>8} {'errors':>6}")
        print(header)
        print("-" * len(header))
        baseline_cost = None
        for name, shadow, l2, l1 in STAGES:
            flags.hset(contract.LOCAL_FLAGS_KEY, mapping={
                contract.LOCAL_FIELD_SHADOW: shadow, contract.LOCAL_FIELD_L2: l2,
                contract.LOCAL_FIELD_L1_PERCENT: l1})
            await asyncio.sleep(1.1)  # the service re-reads the flag store at most every 1 s
            before = (await client.get(f"{url}/metrics")).text
            stats = await generator.run(client, rate=rate, duration=seconds)
            after = (await client.get(f"{url}/metrics")).text
            cost = (_metric_sum(after, "ai_agent_upstream_cost_usd_total")
                    - _metric_sum(before, "ai_agent_upstream_cost_usd_total"))
            per_query = cost / max(stats.queries, 1)
            baseline_cost = baseline_cost or per_query
            served = max(stats.queries - stats.errors, 1)
            print(f"{name:<12} {stats.queries:>7} {stats.p(0.5) * 1000:>7.0f} "
                  f"{stats.p(0.95) * 1000:>7.0f} {stats.l1['hit'] / served:>7.0%} "
                  f"{stats.l2['hit'] / served:>7.0%} {per_query:>8.4f} {stats.errors:>6}",
                  flush=True)
        print(f"\ncost per query at l1-100 vs off: {per_query / baseline_cost:.0%} "
              f"(session writes during the run: {generator.stats.writes})")
    flags.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--seconds-per-stage", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=15.0, help="requests per second")
    parser.add_argument("--latency-scale", type=float, default=0.2,
                        help="multiplies the seed's 0.5 s embed / 1.25 s chat latencies")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(16)
    with ExitStack() as stack:
        redis = redis_svc.ensure_redis(name="redis-demo")
        if redis.owned:
            stack.callback(redis_svc.stop, redis)
            print(f"started a private Redis at {redis.url}")
        else:
            print(f"using the Redis at REDIS_URL={redis.url}")
        url = start_service(redis.url, token, args.latency_scale, stack)
        print(f"service running at {url} (local provider, latency scale {args.latency_scale})")
        started = time.monotonic()
        try:
            asyncio.run(run_stages(url, redis.url, token, args.seconds_per_stage, args.rate))
        except KeyboardInterrupt:
            print("\ninterrupted; stopping what the demo started")
            return 130
        print(f"done in {time.monotonic() - started:.0f} s; stopping what the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
