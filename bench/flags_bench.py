"""Per-request cost of flag decisions, side by side in one run.

Compares, for the decisions one query needs (shadow, L2, the workspace's L1 cohort):
  * the local flag store source (snapshot cached ≤ 1 s, murmur3 bucketing),
  * the Unleash source (UnleashClient; decisions cached per toggle change),
  * calling UnleashClient.is_enabled directly three times (what the cache avoids).
Both Unleash variants evaluate the same real SDK state (a bootstrapped flexibleRollout), so
the ratio is the cost of the cache versus the SDK. Target: ≤ 10 µs per request.

    .venv/bin/python -m bench.flags_bench [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from UnleashClient.cache import FileCache
from UnleashClient.clients.unleash_client import UnleashClient
from UnleashClient.utils import InstanceAllowType

from app import contract
from app.flags.local import LocalFlagSource
from app.flags.unleash import UnleashFlagSource, _ToggleChanges, _TrackingFileCache

TARGET_US = 10.0


def _features(percent: int) -> dict[str, object]:
    on = {"name": "default", "parameters": {}}
    return {"version": 1, "features": [
        {"name": contract.FLAG_SHADOW_MODE, "enabled": True, "strategies": [on]},
        {"name": contract.FLAG_L2_EMBEDDINGS, "enabled": True, "strategies": [on]},
        {"name": contract.FLAG_L1_QUERY_RESULTS, "enabled": True, "strategies": [
            {"name": "flexibleRollout", "parameters": {
                "rollout": str(percent), "stickiness": "userId",
                "groupId": contract.L1_ROLLOUT_GROUP_ID}}]},
    ]}


def _unleash_client(cache: FileCache) -> UnleashClient:
    cache.bootstrap_from_dict(_features(50))
    client = UnleashClient(url="http://127.0.0.1:9/api", app_name="flags-bench", cache=cache,
                           disable_metrics=True, disable_registration=True,
                           multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW)
    client.initialize_client(fetch_toggles=False)
    return client


class _NoRedis:
    """The local source reads Redis at most once per second; the bench measures the cached
    path, so one canned read is all it needs."""

    async def hgetall(self, _key: str) -> dict[bytes, bytes]:
        return {b"shadow": b"1", b"l2": b"1", b"l1_percent": b"50"}


async def _per_request_us(decide: Callable[[str], Awaitable[bool]], workspaces: list[str],
                          requests: int) -> float:
    for ws in workspaces:  # warm: steady state is what every request after the first sees
        await decide(ws)
    started = time.perf_counter_ns()
    for i in range(requests):
        await decide(workspaces[i % len(workspaces)])
    return (time.perf_counter_ns() - started) / requests / 1000


async def main_async(requests: int, rounds: int) -> int:
    workspaces = [str(uuid.uuid4()) for _ in range(2_000)]
    local = LocalFlagSource(_NoRedis(), cache_seconds=1.0)  # type: ignore[arg-type]
    tmp = tempfile.mkdtemp(prefix="flags-bench-")
    tracking = _TrackingFileCache("bench-cached", tmp)
    cached_client = _unleash_client(tracking)
    unleash = UnleashFlagSource(cached_client, tracking, _ToggleChanges(), refresh_seconds=15,
                                check_seconds=1.0, stickiness="userId")
    direct = _unleash_client(FileCache("bench-direct", directory=tmp))

    async def via_local(ws: str) -> bool:
        snap = await local.snapshot()
        return snap.shadow and snap.l2 and local.l1_enabled_for(snap, ws)

    async def via_unleash(ws: str) -> bool:
        snap = await unleash.snapshot()
        return snap.shadow and snap.l2 and unleash.l1_enabled_for(snap, ws)

    async def via_is_enabled(ws: str) -> bool:
        context = {"userId": ws}
        return (direct.is_enabled(contract.FLAG_SHADOW_MODE, context)
                and direct.is_enabled(contract.FLAG_L2_EMBEDDINGS, context)
                and direct.is_enabled(contract.FLAG_L1_QUERY_RESULTS, context))

    variants = {"local store": via_local, "unleash (cached)": via_unleash,
                "is_enabled x3": via_is_enabled}
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved rounds: drift on a shared machine hits all alike
        for name, fn in variants.items():
            results[name].append(await _per_request_us(fn, workspaces, requests))
    cached_client.destroy()
    direct.destroy()

    medians = {name: statistics.median(values) for name, values in results.items()}
    baseline = medians["is_enabled x3"]
    print(f"flag decisions per request ({requests} requests x {rounds} rounds, "
          f"{len(workspaces)} workspaces, median of rounds)")
    print(f"{'variant':<20} {'µs/request':>11} {'vs is_enabled':>14} {'target ≤10 µs':>14}")
    for name, value in medians.items():
        verdict = "PASS" if value <= TARGET_US else "MISS"
        print(f"{name:<20} {value:>11.2f} {value / baseline:>13.2f}x {verdict:>14}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flags_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    return asyncio.run(main_async(args.requests, args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
