"""Cache fills run once the response is sent, at most CACHE_FILL_MAX_RUNNING at once: one past
the limit is dropped and counted, and costs a later miss, never an error or a wrong answer.

Real app, real Redis, real SQLite; the only stand-in is a gate in front of the real
`RedisCache.fill`, so that a fill can be held running while another request misses.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from app import contract
from app.cache.keys import L1Keys
from app.cache.store import L2Write, RedisCache
from tests.integration.test_query_api import CLIENT, WS, add_note, ask
from tests.support.service import metric_value, set_flags

pytestmark = pytest.mark.integration


async def test_a_fill_past_the_limit_is_dropped_counted_and_costs_only_a_later_miss(
    service: Any, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = asyncio.Event()
    release = asyncio.Event()
    original = RedisCache.fill

    async def gated_fill(self: RedisCache, keys: L1Keys, generations: str, value: bytes,
                         ttl: int, l2: L2Write | None = None) -> bool:
        if not held.is_set():  # the first fill waits until released
            held.set()
            await release.wait()
        return await original(self, keys, generations, value, ttl, l2)

    monkeypatch.setattr(RedisCache, "fill", gated_fill)
    await set_flags(redis, l2=True, l1_percent=100)
    async with service(cache_fill_max_running=1) as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 7 hours since sertraline.")
        first = asyncio.create_task(ask(client, WS, CLIENT, "How is the patient sleeping?"))
        await asyncio.wait_for(held.wait(), timeout=10)  # its fill is running, and held

        second = await ask(client, WS, CLIENT, "Any nausea?")  # a miss: its fill is dropped
        assert second.json()["cache"]["l1"] == "miss"
        assert metric_value(app, contract.METRIC_CACHE_FILLS_DROPPED) == 1

        release.set()
        assert (await first).json()["cache"]["l1"] == "miss"
        # The held fill went through; the dropped one stored nothing: a miss again, the same
        # answer, and this time (a free slot) filled.
        assert (await ask(client, WS, CLIENT, "How is the patient sleeping?")
                ).json()["cache"]["l1"] == "hit"
        again = await ask(client, WS, CLIENT, "Any nausea?")
        assert again.json()["cache"]["l1"] == "miss"
        assert again.json()["answer"] == second.json()["answer"]
        assert (await ask(client, WS, CLIENT, "Any nausea?")).json()["cache"]["l1"] == "hit"
        assert metric_value(app, contract.METRIC_CACHE_FILLS_DROPPED) == 1
