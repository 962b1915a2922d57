"""Invalidation that survives failover (issue 14): a generation bump counts as applied only
once `REDIS_INVALIDATION_REPLICAS` replicas acknowledged it (WAIT on the bump's own
connection); otherwise it stays pending and L1 is off for that workspace (fail closed)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.cache.breaker import BreakerState, CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import NotReplicated, RedisCache
from app.metrics import ServiceMetrics
from devstack.services.common import Service
from tests.integration.test_query_api import AUTH, CLIENT, WS, add_note, ask
from tests.support.redis_backends import RedisBackend
from tests.support.service import make_settings, running_service, set_flags


def cache_on(client: Redis | RedisCluster, wait_replicas: int,
             breaker: CircuitBreaker | None = None, *, wait_ms: int) -> RedisCache:
    return RedisCache(client, breaker or CircuitBreaker(3, 60.0),
                      ServiceMetrics(CollectorRegistry()), timeout_seconds=1.0,
                      wait_replicas=wait_replicas, wait_ms=wait_ms)


async def test_a_bump_the_replica_acknowledged_is_applied(
    redis_cluster_service: Service,
) -> None:
    client = RedisCluster.from_url(redis_cluster_service.url)
    keys = KeyBuilder(b"s")
    generations = [keys.client_generation(WS, CLIENT), keys.workspace_generation(WS)]
    # A generous wait: a loaded CI machine must not make this test flaky.
    await cache_on(client, 1, wait_ms=2_000).bump_generations(generations)  # no NotReplicated
    tokens = await client.mget(generations)
    assert all(isinstance(t, bytes) and len(t) == 16 for t in tokens)
    await client.aclose()


async def test_a_bump_fewer_replicas_acknowledged_is_not_applied(
    redis_backend: RedisBackend,
) -> None:
    """One server has no replica, a cluster's master has one: asking for one more than
    exists must time out into NotReplicated — without opening the breaker (Redis works)."""
    wanted = 2 if redis_backend.cluster else 1
    breaker = CircuitBreaker(1, 60.0)
    cache = cache_on(redis_backend.raw, wanted, breaker, wait_ms=100)
    keys = KeyBuilder(b"s")
    before = await redis_backend.raw.get(keys.workspace_generation(WS))
    with pytest.raises(NotReplicated, match=rf"[01] of {wanted} replicas in 100 ms"):
        await cache.bump_generations([keys.workspace_generation(WS)])
    assert breaker.state is BreakerState.CLOSED
    # The master took the new token (a later bump replaces it again): only its durability
    # is in doubt.
    assert await redis_backend.raw.get(keys.workspace_generation(WS)) != before


@pytest.mark.parametrize("replicas", [1, 2])
async def test_an_unreplicated_invalidation_keeps_l1_off_for_the_workspace(
    redis_cluster_service: Service, tmp_path: Any, replicas: int,
) -> None:
    """The service on the cluster (1 replica a master). Asking for 1: writes are applied and
    answers are cached. Asking for 2: every write is acknowledged (the note is stored) but
    its intent stays pending, and the workspace serves no cached answer."""
    raw = RedisCluster.from_url(redis_cluster_service.url)
    await raw.flushall()
    await set_flags(raw, l1_percent=100)
    settings = make_settings(redis_cluster_service.url,
                             f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", redis_cluster=True,
                             redis_invalidation_replicas=replicas,
                             # generous where it must succeed, short where it cannot
                             redis_invalidation_wait_ms=2_000 if replicas == 1 else 50)
    replicated = replicas == 1
    async with running_service(settings) as (client, _):
        note = await add_note(client, WS, CLIENT, "Sleeping 6 hours.")
        pending = (await client.get("/readyz")).json()["l1_invalidations_pending"]
        assert pending is not replicated
        await ask(client, WS, CLIENT)
        served = (await ask(client, WS, CLIENT)).json()["cache"]["l1"]
        assert served == ("hit" if replicated else "bypass")
        patched = await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 8 hours."}, headers=AUTH)
        assert patched.status_code == 200
        answer = await ask(client, WS, CLIENT)
        assert answer.json()["cache"]["l1"] == ("stale" if replicated else "bypass")
        assert "v2]" in answer.json()["answer"]
    await raw.aclose()
