"""Redis is a cache, never a single point of failure; bad cached bytes are just misses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from devstack.services import redis as redis_svc
from devstack.services.common import Service
from tests.integration.test_query_api import AUTH, CLIENT, WS, add_note, ask
from tests.support.redis_backends import RedisBackend
from tests.support.service import (
    make_settings,
    metric_value,
    running_service,
    set_flags,
    wait_for,
)


@pytest.fixture
def doomed_redis() -> Iterator[Service]:
    """A Redis of this test's own, which the test stops and restarts."""
    service = redis_svc.start_private_redis(name="redis-doomed")
    yield service
    redis_svc.stop(service)


async def test_redis_stopped_mid_test_every_request_still_answers(
    doomed_redis: Service, tmp_path: Path
) -> None:
    settings = make_settings(doomed_redis.url, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
                             redis_timeout_seconds=0.2, breaker_failure_threshold=3,
                             breaker_reset_seconds=0.3, flag_cache_seconds=1.0)
    raw = Redis.from_url(doomed_redis.url)
    await set_flags(raw, shadow=True, l2=True, l1_percent=100)
    await raw.aclose()
    async with running_service(settings) as (client, app):
        note = await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        await ask(client, WS, CLIENT)
        assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "hit"

        redis_svc.stop(doomed_redis)  # by pid: only the process this test started
        for _ in range(10):
            response = await ask(client, WS, CLIENT)
            assert response.json()["cache"] == {"l1": "error", "l2": "error"}
            assert "detail=unavailable" in response.headers["Cache-Status"]
        errors = metric_value(app, "ai_agent_cache_errors_total", cache_layer="query_result",
                              op="lookup")
        assert 1 <= errors < 10  # the breaker stopped paying a timeout per request
        assert metric_value(app, "ai_agent_cache_circuit_open") == 1
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["redis"] == "unavailable"

        # A note written while Redis is down still lands; its invalidation waits for Redis.
        patched = await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 8 hours."}, headers=AUTH)
        assert patched.status_code == 200
        assert (await client.get("/readyz")).json()["l1_invalidations_pending"] is True

        restarted = redis_svc.restart_on_same_port(doomed_redis)
        doomed_redis.pid, doomed_redis.pid_started = restarted.pid, restarted.pid_started
        doomed_redis.data_dir = restarted.data_dir
        # The new Redis starts empty: the flags must be set again (L1 comes back only once
        # the pending invalidation has been applied, which can take longer than the flag
        # source keeps its last-known flags).
        raw = Redis.from_url(doomed_redis.url)
        await set_flags(raw, shadow=True, l2=True, l1_percent=100)
        await raw.aclose()

        async def recovered() -> bool:
            response = await ask(client, WS, CLIENT)
            return response.json()["cache"]["l1"] in {"miss", "stale", "hit"}

        await wait_for(recovered, timeout=20, what="the breaker to close after Redis returns")

        async def invalidations_applied() -> bool:
            return (await client.get("/readyz")).json()["l1_invalidations_pending"] is False

        await wait_for(invalidations_applied, timeout=20, what="pending invalidations")
        answer = (await ask(client, WS, CLIENT)).json()["answer"]
        assert "v2" in answer and "v1]" not in answer


async def test_flags_unreadable_at_start_mean_everything_off(tmp_path: Path) -> None:
    from devstack.network import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(dead, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
                             redis_timeout_seconds=0.1)
    async with running_service(settings) as (client, _):
        await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        response = await ask(client, WS, CLIENT)
        assert response.json()["cache"] == {"l1": "bypass", "l2": "bypass"}
        assert (await client.get("/readyz")).json()["flags"] == "defaults"


@pytest.mark.parametrize("layer", ["l1", "l2"])
async def test_corrupt_cached_value_is_a_miss_deleted_and_counted(
    backend_service: Any, redis_backend: RedisBackend, layer: str
) -> None:
    """On the single Redis and on the Redis Cluster."""
    redis = redis_backend.raw
    await set_flags(redis, l2=layer == "l2", l1_percent=100 if layer == "l1" else 0)
    async with backend_service() as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        first = await ask(client, WS, CLIENT)
        [key] = [k async for k in redis.scan_iter(f"ai-cache:{layer}:*")]
        if layer == "l1":
            header, _ = (await redis.get(key)).split(b"\n", 1)
            await redis.set(key, header + b"\n\x00\x09garbage", keepttl=True)  # format 9
        else:
            await redis.set(key, b"\x00\x01\x02\x03", keepttl=True)
        second = await ask(client, WS, CLIENT)
        assert second.json()["cache"][layer] == "miss"
        assert second.json()["answer"] == first.json()["answer"]
        layer_name = "query_result" if layer == "l1" else "embedding"
        assert metric_value(app, "ai_agent_cache_errors_total", cache_layer=layer_name,
                            op="decode") == 1
        # Deleted and refilled with a good value: the third ask is a hit again.
        assert (await ask(client, WS, CLIENT)).json()["cache"][layer] == "hit"


async def test_encrypted_values_hold_no_plaintext_and_still_hit(service: Any,
                                                                redis: Redis) -> None:
    import base64

    key = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    await set_flags(redis, l2=True, l1_percent=100)
    async with service(cache_encryption_key=key) as (client, _):
        await add_note(client, WS, CLIENT, "Sleeping 6 hours on sertraline.")
        first = await ask(client, WS, CLIENT)
        assert (await ask(client, WS, CLIENT)).json()["cache"] == {"l1": "hit", "l2": "bypass"}
    values = [await redis.get(k) async for k in redis.scan_iter("ai-cache:l1:*")]
    assert values and all(b"sertraline" not in v for v in values)
    assert "sertraline" in first.json()["answer"].lower() or first.json()["sources"]
    # A service with another key treats those entries as misses, never as plaintext.
    other = base64.b64encode(b"X" * 32).decode()
    async with service(cache_encryption_key=other) as (client, _):
        assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "miss"


async def test_served_hits_are_audited_in_the_background(service: Any, redis: Redis) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service(l1_audit_sample_rate=1.0) as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        await ask(client, WS, CLIENT)
        assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "hit"
        await app.state.container.queries.drain()
        assert metric_value(app, "ai_agent_cache_verifications_total",
                            cache_layer="query_result", result="match") == 1


async def test_audits_stay_within_their_budget_per_second(service: Any, redis: Redis) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service(l1_audit_sample_rate=1.0, l1_audit_max_per_second=1.0) as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        await ask(client, WS, CLIENT)
        started = time.monotonic()
        for _ in range(20):
            assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "hit"
        elapsed = time.monotonic() - started
        await app.state.container.queries.drain()
        audits = metric_value(app, "ai_agent_cache_verifications_total",
                              cache_layer="query_result", result="match")
        # Every hit was sampled (rate 1.0); the budget let one through, plus one per second.
        assert 1 <= audits <= 1 + int(elapsed)


async def test_a_stale_entry_is_detected_by_verification(service: Any, redis: Redis) -> None:
    """If an invalidation were ever lost, shadow verification must say `stale`."""
    await set_flags(redis, shadow=True)
    async with service() as (client, app):
        note = await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        await ask(client, WS, CLIENT)
        gens = {k: await redis.get(k) async for k in redis.scan_iter("ai-cache:gen:*")}
        await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                           json={"subjective": "Sleeping 9 hours."}, headers=AUTH)
        for k, v in gens.items():  # simulate the lost invalidation
            await redis.set(k, v)
        response = await ask(client, WS, CLIENT)
        assert response.json()["cache"]["l1"] == "shadow-hit"
        assert "v2" in response.json()["answer"]  # shadow mode served the fresh answer
        assert metric_value(app, "ai_agent_cache_verifications_total",
                            cache_layer="query_result", result="stale") == 1


