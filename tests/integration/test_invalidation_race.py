"""No answer built from old notes is served after the write that changed them has returned.

The generations are read before the notes, and the L1 fill is a compare-and-set against
them, so a slow request that read old notes cannot publish its answer after a write. Each
test runs on the single Redis and on the Redis Cluster (REDIS_CLUSTER=true).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from app.cache.keys import L1Keys
from app.cache.store import L2Write, RedisCache
from app.providers.base import EmbedInput, RetrievedNote, Vector
from app.providers.local import LocalProvider
from tests.integration.test_query_api import add_note
from tests.support.auth import auth
from tests.support.redis_backends import RedisBackend
from tests.support.service import set_flags

WS = uuid.UUID("00000000-0000-4000-8000-00000000aaaa")
AUTH = auth(WS)
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000cccc")
CITATION = re.compile(r"\[session ([0-9a-f-]{36}), v(\d+)\]")


class GatedProvider(LocalProvider):
    """Local provider whose generation can be held at a gate, or jittered at random."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(dimensions=256, latency_scale=0.0)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.jitter = random.Random(seed)
        self.max_jitter = 0.0

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        if self.max_jitter:
            await asyncio.sleep(self.jitter.uniform(0, self.max_jitter / 3))
        return await super().embed(texts, input_type=input_type)

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        if self.max_jitter:
            await asyncio.sleep(self.jitter.uniform(0, self.max_jitter))
        return await super().generate(question, notes)


def cited_versions(answer: str) -> dict[str, int]:
    return {session: int(version) for session, version in CITATION.findall(answer)}


async def query(client: httpx.AsyncClient, client_id: uuid.UUID | None) -> httpx.Response:
    response = await client.post(
        f"/v1/workspaces/{WS}/query",
        json={"query": "How is the patient sleeping?",
              "client_id": str(client_id) if client_id else None},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    return response


def make_fill_unconditional(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant of the fill: it presents the generations current at fill time instead of
    those read before the notes, so its compare-and-set always passes."""
    original = RedisCache.fill

    async def fill(self: RedisCache, keys: L1Keys, generations: str, value: bytes, ttl: int,
                   l2: L2Write | None = None) -> bool:
        current = await self.current_generations(keys)
        return await original(self, keys, current or generations, value, ttl, l2)

    monkeypatch.setattr(RedisCache, "fill", fill)


@pytest.mark.parametrize("mutant", [False, True], ids=["compare-and-set", "mutant-fill"])
async def test_a_slow_request_cannot_publish_an_answer_a_write_made_stale(
    backend_service: Any, redis_backend: RedisBackend, mutant: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exact interleaving, step by step: read → write returns → slow fill (after the
    response is sent) → next read. Against the mutant fill the next read must serve the old
    answer: the test can tell."""
    if mutant:
        make_fill_unconditional(monkeypatch)
    provider = GatedProvider()
    await set_flags(redis_backend.raw, l1_percent=100)
    async with backend_service(provider=provider) as (client, _):
        note = await add_note(client, WS, CLIENT, "Sleeping 5 hours.")
        provider.gate = asyncio.Event()
        slow = asyncio.create_task(query(client, CLIENT))
        await asyncio.wait_for(provider.entered.wait(), timeout=10)  # it has read v1
        patched = await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 8 hours."}, headers=AUTH)
        assert patched.status_code == 200 and patched.json()["version"] == 2
        provider.gate.set()
        provider.gate = None
        stale_response = await slow
        assert cited_versions(stale_response.json()["answer"]) == {note["id"]: 1}

        after = await query(client, CLIENT)
        if mutant:  # the stale answer was published, and is served
            assert after.json()["cache"]["l1"] == "hit"
            assert cited_versions(after.json()["answer"]) == {note["id"]: 1}
        else:
            assert after.json()["cache"]["l1"] == "miss"
            assert cited_versions(after.json()["answer"]) == {note["id"]: 2}


async def test_many_concurrent_queries_and_writes_never_serve_old_notes(
    backend_service: Any, redis_backend: RedisBackend
) -> None:
    provider = GatedProvider(seed=1234)
    provider.max_jitter = 0.02
    await set_flags(redis_backend.raw, l2=True, l1_percent=100)
    violations: list[str] = []
    served_from_cache = 0
    async with backend_service(provider=provider) as (client, _):
        notes = [await add_note(client, WS, CLIENT, f"Note {i}: sleeping {5 + i} hours.")
                 for i in range(3)]
        acknowledged = {n["id"]: 1 for n in notes}  # versions whose write has returned
        rng = random.Random(99)

        async def reader(rounds: int) -> None:
            nonlocal served_from_cache
            for _ in range(rounds):
                required = dict(acknowledged)  # everything acknowledged before we start
                response = await query(client, rng.choice([CLIENT, None]))
                served_from_cache += response.json()["cache"]["l1"] == "hit"
                for session, version in cited_versions(response.json()["answer"]).items():
                    if version < required[session]:
                        violations.append(f"{session} v{version} < v{required[session]}")

        async def writer(writes: int) -> None:
            for i in range(writes):
                target = rng.choice(notes)["id"]
                response = await client.patch(
                    f"/v1/workspaces/{WS}/sessions/{target}",
                    json={"plan": f"Revision {i} at {time.monotonic()}"}, headers=AUTH,
                )
                if response.status_code == 409:  # concurrent update of the same note
                    continue
                assert response.status_code == 200, response.text
                acknowledged[target] = max(acknowledged[target], response.json()["version"])
                await asyncio.sleep(rng.uniform(0, 0.01))

        for _ in range(5):  # rounds, each with fresh interleavings
            await asyncio.gather(*(reader(20) for _ in range(8)), writer(12), writer(12))

    assert violations == []
    # The test only means something if the cache actually served during the storm.
    assert served_from_cache > 50
