"""Sentinel (issue 14) beyond the cache contract suite: the starter (`scripts.svc …
redis_sentinel`, stopped by pid), the durability wait against the real replica, the service
with its Sentinel defaults, and the controller writing the flags the service reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from app.cache.breaker import BreakerState, CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import NotReplicated, RedisCache
from app.contract import LOCAL_FLAGS_KEY
from app.flags.local import LocalFlagSource
from app.main import build_sentinel_master
from app.metrics import ServiceMetrics
from app.settings import Settings
from devstack.paths import REPO_ROOT
from devstack.processes import is_ours
from devstack.services import redis_sentinel as sentinel_svc
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.composition import build_flag_writer
from rollout.core.flags import FlagSettings
from rollout.settings import RolloutSettings
from tests.integration.test_query_api import AUTH, CLIENT, WS, add_note, ask
from tests.support.redis_backends import sentinel_settings
from tests.support.service import make_settings, running_service, set_flags

pytestmark = pytest.mark.integration

Deployment = sentinel_svc.RedisSentinelService


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.svc", *args], cwd=REPO_ROOT,
                          env=env, text=True, capture_output=True, timeout=120, check=False)


def test_scripts_svc_starts_the_deployment_once_and_stops_every_process_by_pid(
    tmp_path: Path,
) -> None:
    """Started by one process, stopped by another: the stop reads every pid and start time
    from the record and signals only those processes."""
    env = os.environ | {"AI_CACHE_RUN_DIR": str(tmp_path / "run")}
    out = _cli(["start", "redis_sentinel"], env)
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    deployment = Deployment.load(tmp_path / "run" / "redis_sentinel.json")
    try:
        assert deployment is not None and len(deployment.pids) == 5
        assert all(is_ours(pid, deployment.pid_starts[port])
                   for port, pid in deployment.pids.items())
        assert sentinel_svc.current_master(deployment) == deployment.data_ports[0]
        assert sentinel_svc.is_whole(deployment)
        again = _cli(["start", "redis_sentinel"], env)  # already running: the same one
        assert json.loads(again.stdout)["pid"] == started["pid"]
    finally:
        out = _cli(["stop", "redis_sentinel"], env)
        assert out.returncode == 0, out.stderr
    assert deployment is not None and deployment.data_dir is not None
    assert not any(is_ours(pid, deployment.pid_starts[port])
                   for port, pid in deployment.pids.items())
    assert not Path(deployment.data_dir).exists()
    assert not (tmp_path / "run" / "redis_sentinel.json").exists()


def _settings(deployment: Deployment, tmp_path: Path, **overrides: object) -> Settings:
    return make_settings(deployment.url, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
                         **sentinel_settings(deployment), **overrides)


async def test_a_bump_waits_for_the_replica_and_more_than_exist_is_not_applied(
    redis_sentinel_service: Deployment, tmp_path: Path,
) -> None:
    master = build_sentinel_master(_settings(redis_sentinel_service, tmp_path))
    generation = [KeyBuilder(b"s").workspace_generation(WS)]
    for wanted, wait_ms in ((1, 2_000), (2, 100)):
        breaker = CircuitBreaker(1, 60.0)
        cache = RedisCache(master, breaker, ServiceMetrics(CollectorRegistry()),
                           timeout_seconds=1.0, wait_replicas=wanted, wait_ms=wait_ms)
        if wanted == 1:
            await cache.bump_generations(generation)  # the replica acknowledged it
        else:
            with pytest.raises(NotReplicated, match=r"1 of 2 replicas in 100 ms"):
                await cache.bump_generations(generation)
        assert breaker.state is BreakerState.CLOSED
    await master.aclose()


async def test_the_service_caches_and_invalidates_with_the_sentinel_defaults(
    redis_sentinel_service: Deployment, tmp_path: Path,
) -> None:
    """REDIS_SENTINELS + REDIS_SENTINEL_MASTER alone: the WAIT for one replica is on, writes
    are applied (not left pending), answers are cached and a write makes them stale."""
    settings = _settings(redis_sentinel_service, tmp_path)
    raw = build_sentinel_master(settings)
    await raw.flushall()
    await set_flags(raw, l1_percent=100)
    async with running_service(settings) as (client, _):
        note = await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        assert (await client.get("/readyz")).json()["l1_invalidations_pending"] is False
        await ask(client, WS, CLIENT)
        assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "hit"
        patched = await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 8 hours."}, headers=AUTH)
        assert patched.status_code == 200
        answer = await ask(client, WS, CLIENT)
        assert answer.json()["cache"]["l1"] == "stale" and "v2]" in answer.json()["answer"]
    await raw.aclose()


async def test_the_service_reads_each_stage_the_controller_writes(
    redis_sentinel_service: Deployment, tmp_path: Path,
) -> None:
    """The same REDIS_SENTINELS for both: build_flag_writer writes through the sentinels'
    master, and the service's flag source reads exactly what it wrote."""
    deployment = redis_sentinel_service
    settings = RolloutSettings(
        _env_file=None, redis_url="redis://127.0.0.1/0", redis_sentinels=deployment.sentinels,
        redis_sentinel_master=deployment.master_name)
    assert "ROLLOUT_REDIS_URL" in " ".join(settings.missing_for_run())
    reader = build_sentinel_master(_settings(deployment, tmp_path))
    await reader.delete(LOCAL_FLAGS_KEY)
    source = LocalFlagSource(reader, cache_seconds=0.0, timeout_seconds=2.0)
    writer = build_flag_writer(settings)
    assert isinstance(writer, LocalFlagWriter) and "sentinel master ai-cache" in writer.target
    async with writer:
        for stage in (FlagSettings(shadow=True), FlagSettings(shadow=True, l2=True),
                      FlagSettings(l2=True, l1_percent=25)):
            await writer.apply(stage)
            seen = await source.snapshot()
            assert (seen.shadow, seen.l2, seen.l1_percent, seen.source) == (
                stage.shadow, stage.l2, stage.l1_percent, "local")
    await reader.aclose()
