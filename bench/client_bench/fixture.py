"""What every client is asked for: the L1 hit's EVALSHA on the real key layout, seeded
through the service's own RedisCache, and the ceiling's GET of a value of the same size."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.cache.breaker import CircuitBreaker
from app.cache.codec import CachedAnswer, Envelope, SourceRef, encode_answer
from app.cache.keys import KeyBuilder, L1Keys
from app.cache.store import _LOOKUP, RedisCache
from app.metrics import ServiceMetrics

WS = uuid.UUID("00000000-0000-4000-8000-00000000cb01")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000cb02")
KEYS = KeyBuilder(b"client-bench")
# The L1 entry the service bench measured in Redis (bench/results/latest.json,
# l1_entry_bytes): generation header, newline, sealed encode_answer of a 3-source answer.
ENTRY_BYTES = 501
GENERATION_TTL = 86_400
QUESTIONS = ("How has the patient's sleep changed since starting sertraline?",
             "Which side effects were reported after the dose change?")
CEILING_KEY = f"bench:ceiling:{{{WS}}}"  # the workspace's slot: the same node on a cluster


@dataclass(frozen=True)
class Lookup:
    """One L1 hit's call: EVALSHA sha numkeys KEYS... ARGV..., and the reply it must get."""

    keys: tuple[str, ...]
    args: tuple[bytes, ...]
    expected: tuple[Any, ...]

    @property
    def command(self) -> tuple[bytes | str | int, ...]:
        return ("EVALSHA", SCRIPT_SHA, len(self.keys), *self.keys, *self.args)


SCRIPT = _LOOKUP
SCRIPT_SHA = hashlib.sha1(_LOOKUP, usedforsecurity=False).hexdigest()


def answer_of_size(entry_bytes: int, header_bytes: int, fill: str = "s") -> CachedAnswer:
    """A 3-source answer whose L1 entry (header, newline, sealed value) is `entry_bytes`;
    `fill` tells answers apart (a late reply must be told from the right one)."""
    sources = tuple(SourceRef(uuid.UUID(int=i + 1), i + 1, 0.9 - i / 10) for i in range(3))
    overhead = header_bytes + 1 + len(Envelope().seal(encode_answer(CachedAnswer("", sources)),
                                                      "k"))
    if entry_bytes < overhead:
        raise ValueError(f"an entry cannot be smaller than {overhead} B")
    return CachedAnswer(fill * (entry_bytes - overhead), sources)


def _cache(client: Redis | RedisCluster) -> RedisCache:
    return RedisCache(client, CircuitBreaker(1_000, 1.0), ServiceMetrics(CollectorRegistry()),
                      timeout_seconds=2.0, generation_ttl_seconds=GENERATION_TTL)


def l1_keys(question: str) -> tuple[L1Keys, str]:
    """The L1 keys and the workspace's L2 key, as the query path builds them on a hit
    (`lookup(l1, l2_key, l2_on_l1_hit=False)`: mode '1', the L2 key last, not read)."""
    return (KEYS.l1(WS, CLIENT, question),
            KEYS.l2(WS, "embed-english-v3.0", 1024, question))


async def seed(client: Redis | RedisCluster) -> tuple[list[Lookup], bytes]:
    """Fill one current entry per question through RedisCache (the real scripts), check
    that the service's own lookup sees a hit, and store the ceiling's value. Returns the
    lookups and the ceiling's value."""
    cache = _cache(client)
    lookups = []
    for index, question in enumerate(QUESTIONS):
        keys, l2_key = l1_keys(question)
        found = await cache.lookup(keys, l2_key, l2_on_l1_hit=False)
        assert found.l1 is not None, "lookup failed on a fresh Redis"
        generations = found.l1.generations
        value = Envelope().seal(encode_answer(answer_of_size(ENTRY_BYTES, len(generations),
                                                          "st"[index])),
                                keys.entry)
        if not await cache.fill(keys, generations, value, 3_600):
            raise RuntimeError("the fill was refused on a quiet Redis")
        hit = await cache.lookup(keys, l2_key, l2_on_l1_hit=False)
        if hit.l1 is None or hit.l1.status != "hit" or hit.l1.value != value:
            raise RuntimeError(f"the seeded entry is not a hit: {hit}")
        # Tokens for missing generations: unused on a hit, sent anyway as the service does.
        args = (b"1", str(GENERATION_TTL).encode(),
                *(f"{i:016x}".encode() for i in range(len(keys.generations))))
        lookups.append(Lookup((keys.entry, *keys.generations, l2_key), args,
                              (1, generations.encode(), value, None)))
    ceiling = b"c" * ENTRY_BYTES
    await client.set(CEILING_KEY, ceiling)
    await client.script_load(SCRIPT)
    return lookups, ceiling


def same_reply(reply: Any, expected: tuple[Any, ...]) -> bool:
    """Clients differ in list vs tuple and str vs bytes for simple strings; not in values."""
    if not isinstance(reply, list | tuple) or len(reply) != len(expected):
        return False
    return all(_norm(a) == _norm(b) for a, b in zip(reply, expected, strict=True))


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value
