"""RedisCache against a real Redis: round trips, compare-and-set, generations, global scope."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.cache.breaker import CircuitBreaker
from app.cache.keys import KeyBuilder
from app.cache.store import L2Write, RedisCache
from app.metrics import ServiceMetrics
from devstack.services.common import Service

WS = uuid.UUID("00000000-0000-4000-8000-00000000f001")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000f0c1")


class CountingRedis(Redis):
    """Counts the requests the client sends (a pipeline is one)."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.round_trips += 1
        return super().pipeline(transaction, shard_hint)


async def make_cache(redis_service: Service) -> tuple[RedisCache, CountingRedis]:
    client = CountingRedis.from_url(redis_service.url)
    breaker = CircuitBreaker(5, 1.0)
    return RedisCache(client, breaker, ServiceMetrics(CollectorRegistry()),
                      timeout_seconds=1.0), client


async def test_a_hit_is_one_round_trip_and_a_miss_two(redis_service: Service,
                                                      redis: Redis) -> None:
    cache, client = await make_cache(redis_service)
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


async def test_fill_refuses_generations_that_changed(redis_service: Service,
                                                     redis: Redis) -> None:
    cache, client = await make_cache(redis_service)
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


async def test_an_evicted_generation_never_revives_old_entries(redis_service: Service,
                                                               redis: Redis) -> None:
    cache, client = await make_cache(redis_service)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, CLIENT, "q")
    first = await cache.lookup(l1, None)
    assert first.l1 is not None
    assert await cache.fill(l1, first.l1.generations, b"answer", 60)
    await redis.delete(*l1.generations)  # as an eviction or expiry would
    again = await cache.lookup(l1, None)
    assert again.l1 is not None and again.l1.status == "stale"
    assert again.l1.generations != first.l1.generations
    await client.aclose()


async def test_global_l2_scope_uses_a_pipeline_across_slots(redis_service: Service,
                                                            redis: Redis) -> None:
    cache, client = await make_cache(redis_service)
    keys = KeyBuilder(b"s")
    l1 = keys.l1(WS, None, "q")
    l2 = keys.l2(None, "m", 8, "q")
    miss = await cache.lookup(l1, l2)
    assert miss.l1 is not None
    assert await cache.fill(l1, miss.l1.generations, b"answer", 60, L2Write(l2, b"vec", 60))
    client.round_trips = 0
    hit = await cache.lookup(l1, l2)
    assert hit.l1 is not None and hit.l1.status == "hit" and hit.l2 == b"vec"
    assert client.round_trips == 1
    await client.aclose()
