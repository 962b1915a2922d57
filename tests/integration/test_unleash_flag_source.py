"""The service reading flags from a real Unleash server through UnleashClient."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app import contract
from app.flags.base import FlagSnapshot
from app.flags.bucketing import in_rollout
from app.flags.unleash import UnleashFlagSource, l1_percent_from_payload
from app.settings import Settings
from devstack.services import unleash as unleash_svc
from devstack.services.unleash import UnleashService
from rollout.core.flags import FlagSettings
from tests.support.auth import auth
from tests.support.service import make_settings, metric_value, running_service, wait_for
from tests.support.unleash import admin_for, short_lived_unleash

WORKSPACES = [str(uuid.UUID(int=(i * 40503 + 17) << 64, version=4)) for i in range(10_000)]


def source_settings(server: UnleashService, cache_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "unleash_url": server.api_url, "unleash_api_token": server.client_token,
        "unleash_environment": server.environment, "unleash_refresh_seconds": 1,
        "unleash_cache_dir": str(cache_dir), "flag_cache_seconds": 0.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def wait_for_snapshot(source: UnleashFlagSource, expected: FlagSettings,
                            timeout: float = 15) -> FlagSnapshot:
    async def applied() -> bool:
        snap = await source.snapshot()
        return (snap.shadow, snap.l2, snap.l1_percent) == (
            expected.shadow, expected.l2, expected.l1_percent)

    await wait_for(applied, timeout=timeout, what=f"the SDK to apply {expected.describe()}")
    return await source.snapshot()


async def test_unleash_decisions_equal_the_local_store_for_10000_workspaces(
    unleash_server: UnleashService, tmp_path: Path
) -> None:
    async with admin_for(unleash_server) as admin:
        await admin.apply(FlagSettings(shadow=True, l2=True, l1_percent=10))
        source = await UnleashFlagSource.start(source_settings(unleash_server, tmp_path))
        try:
            cohorts: dict[int, set[str]] = {}
            for percent in (10, 50):
                await admin.apply(FlagSettings(shadow=True, l2=True, l1_percent=percent))
                snap = await wait_for_snapshot(source, FlagSettings(True, True, percent))
                assert snap.source == "unleash"
                ours = [source.l1_enabled_for(snap, ws) for ws in WORKSPACES]
                local = [in_rollout(ws, contract.L1_ROLLOUT_GROUP_ID, percent)
                         for ws in WORKSPACES]
                direct = [source._client.is_enabled(contract.FLAG_L1_QUERY_RESULTS,
                                                     {"userId": ws}) for ws in WORKSPACES]
                assert ours == local == direct
                cohorts[percent] = {ws for ws, on in zip(WORKSPACES, ours, strict=True) if on}
                assert abs(len(cohorts[percent]) / len(WORKSPACES) - percent / 100) < 0.02
            assert cohorts[10] < cohorts[50]
        finally:
            await source.aclose()


async def test_a_flag_write_reaches_a_running_service_within_bounded_time(
    unleash_server: UnleashService, tmp_path: Path, redis: Redis, redis_service: Any,
) -> None:
    settings = make_settings(
        redis_service.url, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
        unleash_url=unleash_server.api_url, unleash_api_token=unleash_server.client_token,
        unleash_environment=unleash_server.environment, unleash_refresh_seconds=1,
        unleash_cache_dir=str(tmp_path / "unleash"), flag_cache_seconds=0.0,
    )
    async with admin_for(unleash_server) as admin:
        await admin.apply(FlagSettings(shadow=False, l2=False, l1_percent=0))
        async with running_service(settings) as (client, app):
            assert (await client.get("/readyz")).json()["flags"] == "unleash"
            ws = uuid.uuid4()
            await client.post(f"/v1/workspaces/{ws}/query", json={"query": "warm"},
                              headers=auth(ws))
            written = time.monotonic()
            await admin.apply(FlagSettings(shadow=True, l2=True, l1_percent=50))

            async def seen() -> bool:
                # Every query refreshes the snapshot; the gauge is what operators watch.
                other = uuid.uuid4()
                await client.post(f"/v1/workspaces/{other}/query", json={"query": "q"},
                                  headers=auth(other))
                return metric_value(app, "ai_agent_flag_state",
                                    flag=contract.FLAG_L1_QUERY_RESULTS) == 50

            await wait_for(seen, timeout=10, what="the service to apply the new L1 percentage")
            elapsed = time.monotonic() - written
            print(f"\nUnleash write → service applies it: {elapsed:.2f} s (refresh interval 1 s)")
            assert metric_value(app, "ai_agent_flag_state", flag=contract.FLAG_SHADOW_MODE) == 1
            assert metric_value(app, "ai_agent_flag_state", flag=contract.FLAG_L2_EMBEDDINGS) == 1


async def test_unleash_down_keeps_the_last_flags_and_a_restart_reads_them_from_disk(
    tmp_path: Path,
) -> None:
    wanted = FlagSettings(shadow=True, l2=True, l1_percent=50)
    with short_lived_unleash("unleash-down") as server:
        async with admin_for(server) as admin:
            await admin.bootstrap()
            await admin.apply(wanted)
        running = await UnleashFlagSource.start(source_settings(server, tmp_path))
        try:
            before = await wait_for_snapshot(running, wanted)
            decisions = [running.l1_enabled_for(before, ws) for ws in WORKSPACES[:500]]
            unleash_svc.stop(server)

            async def fell_back() -> bool:
                return running.state == "last-known"

            await wait_for(fell_back, timeout=15, what="the source to notice Unleash is down")
            after = await running.snapshot()
            assert (after.shadow, after.l2, after.l1_percent) == (True, True, 50)
            assert [running.l1_enabled_for(after, ws) for ws in WORKSPACES[:500]] == decisions
        finally:
            await running.aclose()

        restarted = await UnleashFlagSource.start(source_settings(server, tmp_path))
        try:
            snap = await restarted.snapshot()
            assert restarted.state == "last-known"
            assert (snap.shadow, snap.l2, snap.l1_percent) == (True, True, 50)
            assert [restarted.l1_enabled_for(snap, ws) for ws in WORKSPACES[:500]] == decisions
        finally:
            await restarted.aclose()


async def test_no_unleash_and_no_disk_cache_means_everything_off(tmp_path: Path) -> None:
    from devstack.network import free_port

    settings = Settings(_env_file=None, unleash_url=f"http://127.0.0.1:{free_port()}/api",  # type: ignore[call-arg]
                        unleash_api_token="x", unleash_cache_dir=str(tmp_path),
                        unleash_refresh_seconds=1)
    source = await UnleashFlagSource.start(settings)
    try:
        snap = await source.snapshot()
        assert (snap.shadow, snap.l2, snap.l1_percent, source.state) == (
            False, False, 0, "defaults")
        assert not source.l1_enabled_for(snap, WORKSPACES[0])
    finally:
        await source.aclose()


@pytest.mark.parametrize(
    ("payload", "percent"),
    [
        ({"features": []}, 0),
        ({"features": [{"name": contract.FLAG_L1_QUERY_RESULTS, "enabled": False}]}, 0),
        ({"features": [{"name": contract.FLAG_L1_QUERY_RESULTS, "enabled": True,
                        "strategies": [{"name": "flexibleRollout",
                                        "parameters": {"rollout": "25"}}]}]}, 25),
        ({"features": [{"name": contract.FLAG_L1_QUERY_RESULTS, "enabled": True,
                        "strategies": [{"name": "default"}]}]}, 100),
        ('{"features": [{"name": "ai-cache-l1-query-results", "enabled": true, '
         '"strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "x"}}]}]}', 0),
        ("not json", 0),
    ],
    ids=["absent", "disabled", "rollout-25", "default-strategy", "bad-rollout", "garbage"],
)
def test_l1_percent_from_payload(payload: Any, percent: int) -> None:
    assert l1_percent_from_payload(payload) == percent
