"""RedisCache against a real Redis — one contract suite, three backends (issue 14): every
test runs on the private single Redis, on the private Redis Cluster (3 masters + 3 replicas)
and on the private Sentinel-managed master (1 replica, 3 sentinels), through the client the
service builds for each; where the master has a replica, bumps WAIT for it as the service's.

Round trips, compare-and-set fills, client and workspace-wide generations, evicted
generations, corrupt entries, the global L2 scope across slots, and fail-open.
"""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster

from app.cache.breaker import BreakerState, CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import CacheUnavailable, L2Write, RedisCache
from app.metrics import ServiceMetrics
from devstack.services.common import Service
from tests.support.redis_backends import (
    CountingDirect,
    CountingRedis,
    CountingRedisCluster,
    RedisBackend,
    on_every_backend,
)

WS = uuid.UUID("00000000-0000-4000-8000-00000000f001")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000f0c1")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000f0c2")


def make_cache(backend: RedisBackend) -> tuple[RedisCache, CountingRedis | CountingRedisCluster]:
    client = backend.counting_client()
    breaker = CircuitBreaker(5, 1.0)
    # A generous WAIT: a loaded CI machine must not turn a replicated bump into a failure.
    return RedisCache(client, breaker, ServiceMetrics(CollectorRegistry()),
                      timeout_seconds=1.0, wait_replicas=backend.replicas,
                      wait_ms=2_000, direct=CountingDirect(client)), client


async def fill_once(cache: RedisCache, keys: KeyBuilder, client_id: uuid.UUID | None,
                    value: bytes) -> None:
    l1 = keys.l1(WS, client_id, "q")
    miss = await cache.lookup(l1, None)
    assert miss.l1 is not None and miss.l1.status == "miss"
    assert await cache.fill(l1, miss.l1.generations, value, 60)


async def status(cache: RedisCache, keys: KeyBuilder, client_id: uuid.UUID | None) -> str:
    found = await cache.lookup(keys.l1(WS, client_id, "q"), None)
    assert found.l1 is not None
    return found.l1.status


@on_every_backend
async def test_a_hit_is_one_round_trip_and_a_miss_two(redis_backend: RedisBackend) -> None:
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    l2 = keys.l2(WS, "m", 8, "q")
    # The first use of each script on a fresh Redis costs one extra EVAL (NOSCRIPT).
    warm = keys.l1(WS, CLIENT, "warm-up")
    warm_lookup = await cache.lookup(warm, None)
    assert warm_lookup.l1 is not None
    await cache.fill(warm, warm_lookup.l1.generations, b"x", 60)

    client.round_trips = 0
    miss = await cache.lookup(l1, l2, l2_on_l1_hit=False)
    assert miss.l1 is not None and miss.l1.status == "miss" and miss.l2 is None
    assert await cache.fill(l1, miss.l1.generations, b"answer", 60, L2Write(l2, b"vec", 60))
    assert client.round_trips == 2

    client.round_trips = 0
    hit = await cache.lookup(l1, l2, l2_on_l1_hit=False)
    assert hit.l1 is not None and hit.l1.status == "hit" and hit.l1.value == b"answer"
    assert hit.l2 is None  # a served hit needs no embedding: not sent back
    assert client.round_trips == 1

    shadow = await cache.lookup(l1, l2, l2_on_l1_hit=True)
    assert shadow.l1 is not None and shadow.l1.status == "hit" and shadow.l2 == b"vec"
    await client.aclose()


@on_every_backend
async def test_fill_refuses_generations_that_changed(redis_backend: RedisBackend) -> None:
    """The CAS fill race: generations read before the notes, a bump, then the slow fill."""
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    l2 = keys.l2(WS, "m", 8, "q")
    before = await cache.lookup(l1, None)
    assert before.l1 is not None
    await cache.bump_generations([keys.client_generation(WS, CLIENT)])
    assert not await cache.fill(l1, before.l1.generations, b"old", 60, L2Write(l2, b"vec", 60))
    after = await cache.lookup(l1, l2)
    assert after.l1 is not None and after.l1.status == "miss"
    assert after.l2 == b"vec"  # the embedding does not depend on notes: stored anyway
    await client.aclose()


@on_every_backend
async def test_a_client_bump_drops_that_client_and_workspace_answers_only(
    redis_backend: RedisBackend,
) -> None:
    """What a note write bumps (client + workspace generation, one MULTI in one slot)."""
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    for client_id, value in ((CLIENT, b"a"), (OTHER, b"b"), (None, b"ws")):
        await fill_once(cache, keys, client_id, value)
    await cache.bump_generations([keys.client_generation(WS, CLIENT),
                                  keys.workspace_generation(WS)])
    assert await status(cache, keys, CLIENT) == "stale"
    assert await status(cache, keys, None) == "stale"
    assert await status(cache, keys, OTHER) == "hit"
    await client.aclose()


@on_every_backend
async def test_a_workspace_wide_invalidation_drops_every_answer(
    redis_backend: RedisBackend,
) -> None:
    """The operator's invalidation: the epoch every answer of the workspace depends on."""
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    for client_id, value in ((CLIENT, b"a"), (OTHER, b"b"), (None, b"ws")):
        await fill_once(cache, keys, client_id, value)
    await cache.bump_generations([keys.workspace_epoch(WS), keys.workspace_generation(WS)])
    for client_id in (CLIENT, OTHER, None):
        assert await status(cache, keys, client_id) == "stale"
    await client.aclose()


@on_every_backend
async def test_an_evicted_generation_never_revives_old_entries(
    redis_backend: RedisBackend,
) -> None:
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    first = await cache.lookup(l1, None)
    assert first.l1 is not None
    assert await cache.fill(l1, first.l1.generations, b"answer", 60)
    await redis_backend.raw.delete(l1.generations[0])  # as an eviction or expiry would
    again = await cache.lookup(l1, None)
    assert again.l1 is not None and again.l1.status == "stale"
    assert again.l1.generations != first.l1.generations
    await client.aclose()


@on_every_backend
async def test_a_corrupt_entry_is_never_a_hit_and_can_be_deleted(
    redis_backend: RedisBackend,
) -> None:
    """Bytes without a generation header are stale (the codec judges a current entry's
    body: tests/integration/test_resilience.py, on both backends)."""
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    await redis_backend.raw.set(l1.entry, b"\x00\x01garbage without a header")
    assert await status(cache, keys, CLIENT) == "stale"
    await cache.delete(l1.entry, "query_result")
    assert await redis_backend.raw.exists(l1.entry) == 0
    assert await status(cache, keys, CLIENT) == "miss"
    await client.aclose()


@on_every_backend
async def test_current_generations_match_what_a_lookup_read(
    redis_backend: RedisBackend,
) -> None:
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    found = await cache.lookup(l1, None)
    assert found.l1 is not None
    assert await cache.current_generations(l1) == found.l1.generations
    assert await cache.ping()
    await client.aclose()


@on_every_backend
async def test_global_l2_scope_uses_a_pipeline_across_slots(
    redis_backend: RedisBackend,
) -> None:
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, None, "q")
    l2 = keys.l2(None, "m", 8, "q")
    miss = await cache.lookup(l1, l2)
    assert miss.l1 is not None
    assert await cache.fill(l1, miss.l1.generations, b"answer", 60, L2Write(l2, b"vec", 60))
    client.round_trips = 0
    hit = await cache.lookup(l1, l2)
    assert hit.l1 is not None and hit.l1.status == "hit" and hit.l2 == b"vec"
    # One pipeline on one server (Sentinel's master too); on a cluster the two slots'
    # commands go out together (a cluster pipeline may not carry a script).
    assert client.round_trips == (2 if redis_backend.cluster else 1)
    await client.aclose()


@on_every_backend
async def test_global_l2_scope_loads_the_script_where_it_is_missing(
    redis_backend: RedisBackend,
) -> None:
    """NOSCRIPT inside the cross-slot lookup: SCRIPT LOAD then the pipeline again (one
    server), EVAL in its place (cluster)."""
    cache, client = make_cache(redis_backend)
    keys = KeyBuilder(b"s")
    await redis_backend.raw.script_flush()
    found = await cache.lookup(keys.l1(WS, None, "q"), keys.l2(None, "m", 8, "q"))
    assert found.l1 is not None and found.l1.status == "miss" and not found.l1_failed
    await client.aclose()


@on_every_backend
async def test_an_unreachable_redis_fails_open_and_opens_the_breaker(
    redis_backend: RedisBackend,
) -> None:
    """Nothing listens (on Sentinel: no sentinel, so no master): lookups report failure (the
    fresh path answers), fills and bumps raise CacheUnavailable, never a Redis error; after
    the threshold no call is made."""
    dead = redis_backend.unreachable_client()
    breaker = CircuitBreaker(3, 60.0)
    cache = RedisCache(dead, breaker, ServiceMetrics(CollectorRegistry()), timeout_seconds=1.0)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    found = await cache.lookup(l1, keys.l2(WS, "m", 8, "q"))
    assert found.l1 is None and found.l1_failed and found.l2_failed
    for attempt in (cache.fill(l1, "g,e", b"x", 60),
                    cache.bump_generations([keys.client_generation(WS, CLIENT)])):
        try:
            await attempt
        except CacheUnavailable:
            pass
        else:
            raise AssertionError("an unreachable Redis took a write")
    assert breaker.state is BreakerState.OPEN
    assert (await cache.lookup(l1, None)).l1_failed  # refused by the breaker, no timeout
    assert await cache.current_generations(l1) is None
    assert not await cache.ping()
    await dead.aclose()


async def test_every_script_path_runs_on_the_cluster_in_one_slot(
    redis_cluster_service: Service,
) -> None:
    """Each branch of the lookup and fill scripts and the invalidation MULTI on the cluster:
    a key of another slot would be a CROSSSLOT refusal (a failed lookup, an error counted)."""
    client = RedisCluster.from_url(redis_cluster_service.url)
    await client.flushall()
    await client.script_flush()  # the first call of each script takes the NOSCRIPT path
    metrics = ServiceMetrics(CollectorRegistry())
    cache = RedisCache(client, CircuitBreaker(1, 60.0), metrics, timeout_seconds=2.0)
    keys = KeyBuilder(b"s")
    for client_id in (CLIENT, None):
        l1 = keys.l1(WS, client_id, "every path")
        l2 = keys.l2(WS, "m", 8, "every path")
        slots = {await client.cluster_keyslot(k) for k in (l1.entry, *l1.generations, l2)}
        assert len(slots) == 1
        plain = await cache.lookup(l1, None)  # mode 0, generations adopted
        assert plain.l1 is not None and plain.l1.status == "miss" and not plain.l1_failed
        await client.delete(l1.generations[0])
        assert not await cache.fill(l1, plain.l1.generations, b"x", 60)  # generation gone
        for on_hit in (False, True):  # modes 1 and 2, on a miss
            miss = await cache.lookup(l1, l2, l2_on_l1_hit=on_hit)
            assert miss.l1 is not None and miss.l1.status == "miss" and not miss.l1_failed
        assert miss.l1 is not None
        assert not await cache.fill(l1, "not,current", b"x", 60, L2Write(l2, b"v", 60))
        assert await cache.fill(l1, miss.l1.generations, b"a", 60, L2Write(l2, b"v", 60))
        assert await cache.fill(l1, miss.l1.generations, b"a", 60)  # without L2
        for on_hit in (False, True):  # modes 1 and 2, on a hit
            hit = await cache.lookup(l1, l2, l2_on_l1_hit=on_hit)
            assert hit.l1 is not None and hit.l1.status == "hit"
            assert hit.l2 == (b"v" if on_hit else None)
        await cache.bump_generations(list(l1.generations))
        stale = await cache.lookup(l1, l2, l2_on_l1_hit=False)  # mode 1 on a stale entry
        assert stale.l1 is not None and stale.l1.status == "stale" and stale.l2 == b"v"
    errors = metrics.registry.get_sample_value("ai_agent_cache_errors_total",
                                               {"cache_layer": "query_result", "op": "lookup"})
    assert not errors
    await client.aclose()
