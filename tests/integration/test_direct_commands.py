"""The caches' direct commands (app/cache/direct.py) against the real servers: the same
replies as the client, and the guarantees redis-py's machinery would otherwise give — an
error reply leaves the connection in step, a call cancelled mid-read never hands its reply
to the next call, a killed connection reconnects, and on a cluster a stale slot map falls
back to the full client. On the single Redis, the Sentinel-managed master and the cluster.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, NoScriptError

from app.cache.direct import DirectServer, direct_commands
from tests.support.redis_backends import RedisBackend, on_every_backend

pytestmark = pytest.mark.integration


def key(name: str) -> str:
    return f"direct-test:{{{uuid.uuid4()}}}:{name}"  # one slot per test, like a workspace


@on_every_backend
async def test_replies_are_the_clients_and_an_error_reply_keeps_the_connection(
    redis_backend: RedisBackend,
) -> None:
    direct = direct_commands(redis_backend.raw)
    k = key("a")
    assert await direct.call(k, "SET", k, b"value") in (b"OK", "OK", True)
    assert await direct.call(k, "GET", k) == await redis_backend.raw.get(k) == b"value"
    with pytest.raises(NoScriptError):
        await direct.call(k, "EVALSHA", "0" * 40, 1, k)
    assert await direct.call(k, "GET", k) == b"value"  # the same connection, in step
    await direct.aclose()


@on_every_backend
async def test_a_call_cancelled_mid_read_never_hands_its_reply_to_the_next(
    redis_backend: RedisBackend,
) -> None:
    """BLPOP holds the reply 0.5 s; cancelled after 50 ms. Were its connection reused, the
    next GET would read BLPOP's late nil instead of its own value."""
    direct = direct_commands(redis_backend.raw)
    k, empty = key("v"), key("list")
    await direct.call(k, "SET", k, b"mine")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await direct.call(empty, "BLPOP", empty, 0.5)
    for _ in range(3):
        assert await direct.call(k, "GET", k) == b"mine"
    await direct.aclose()


@on_every_backend
async def test_a_killed_connection_is_an_error_once_then_reconnects(
    redis_backend: RedisBackend,
) -> None:
    direct = direct_commands(redis_backend.raw)
    k = key("k")
    await direct.call(k, "SET", k, b"x")
    my_id = await direct.call(k, "CLIENT", "ID")
    await direct.call(k, "CLIENT", "KILL", "ID", my_id, "SKIPME", "no")
    if isinstance(redis_backend.raw, RedisCluster):
        # A connection error on a cluster goes to the full client (it re-reads the map).
        assert await direct.call(k, "GET", k) == b"x"
    else:
        with pytest.raises(ConnectionError):
            await direct.call(k, "GET", k)
    assert await direct.call(k, "GET", k) == b"x"
    await direct.aclose()


@pytest.mark.parametrize("redis_backend", ["cluster"], indirect=True)
async def test_a_stale_slot_map_on_a_cluster_falls_back_to_the_client(
    redis_backend: RedisBackend,
) -> None:
    cluster = redis_backend.raw
    assert isinstance(cluster, RedisCluster)
    await cluster.initialize()
    direct = direct_commands(cluster)
    k = key("moved")
    await cluster.set(k, b"here")
    slot = cluster.keyslot(k)
    owner = cluster.get_node_from_key(k)
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    cluster.nodes_manager.slots_cache[slot] = [other]  # as if the slot had moved
    assert await direct.call(k, "GET", k) == b"here"  # MOVED: the client followed it
    assert cluster.get_node_from_key(k).name == owner.name  # and mended its map


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
async def test_calls_past_the_connection_cap_go_through_the_client(
    redis_backend: RedisBackend,
) -> None:
    assert isinstance(redis_backend.raw, Redis)
    direct = DirectServer(redis_backend.raw, max_connections=2)
    empty = key("list")
    clients_before = len(await redis_backend.raw.client_list())
    replies = await asyncio.gather(*(direct.call(empty, "BLPOP", empty, 0.3) for _ in range(4)))
    assert replies == [None] * 4
    # Two held calls on the two dedicated connections, two on the client's pool.
    assert direct.connections == 2
    assert len(await redis_backend.raw.client_list()) >= clients_before + 2
    await direct.aclose()
