"""The peer comparison (`--peers`): the project's caches against two off-the-shelf ones,
in-process on one private Redis, in the same rotated rounds and figures as the clients.

  * L1 hit: `RedisCache.lookup` of the seeded entry plus opening and decoding the answer
    (what a served hit does before rendering) against a cashews-cached coroutine's hit
    (cashews' Redis backend on redis-py: key from the arguments, GET, unpickle) returning
    the same answer as a dict. Not HTTP: bench/service_bench measures whole requests.
  * L2 entry: `MEMORY USAGE` of one 1024-d embedding written as the service writes it
    (`encode_embedding` float16, `Envelope`, SET EX) against redisvl's `EmbeddingsCache`,
    and one get of it (the service's `lookup(None, l2_key)` + `decode_embedding`) against
    `EmbeddingsCache.aget`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import uvloop
from redis.asyncio import Redis

from app.cache.codec import Envelope, decode_answer, decode_embedding, encode_embedding
from app.cache.keys import L1Keys
from bench.client_bench.candidates import Target, redis_py
from bench.client_bench.fixture import (
    CLIENT,
    ENTRY_BYTES,
    KEYS,
    QUESTIONS,
    WS,
    _cache,
    answer_of_size,
    seed,
)
from bench.client_bench.runner import Sample, measure
from bench.client_bench.stats import Spread, ratios, rotate, spread
from devstack.services import redis as redis_svc

MODEL, DIMENSIONS = "embed-english-v3.0", 1024


def run_peers(args: argparse.Namespace) -> dict[str, Any]:
    server = redis_svc.start_private_redis(name="redis-client-bench-peers")
    loop_factory = uvloop.new_event_loop if args.loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            found = runner.run(_peers(args, Target("127.0.0.1", int(server.port), False)))
    finally:
        redis_svc.stop(server)
    _print(found, args)
    return found


async def _timed(args: argparse.Namespace, calls: dict[str, Callable[[], Awaitable[Any]]]
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = list(calls)
    for concurrency in args.concurrency:
        for call in calls.values():
            await measure(call, 200, concurrency)
        got: dict[str, list[Sample]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in rotate(r, names):
                got[name].append(await measure(calls[name], args.calls, concurrency))
        base = got[names[0]]
        out[str(concurrency)] = {n: {
            "cpu_us": asdict(spread([s.cpu_us for s in v])),
            "per_second": asdict(spread([s.per_second for s in v])),
            "cpu_vs_project": asdict(ratios([s.cpu_us for s in v], [s.cpu_us for s in base])),
        } for n, v in got.items()}
    return out


async def _l1_hits(args: argparse.Namespace, client: Redis, target: Target) -> dict[str, Any]:
    from cashews import Cache

    lookups, _ = await seed(client)
    keys, l2_key = L1Keys(lookups[0].keys[0], tuple(lookups[0].keys[1:-1])), lookups[0].keys[-1]
    cache, envelope = _cache(client), Envelope()

    async def project_hit() -> Any:
        found = await cache.lookup(keys, l2_key, l2_on_l1_hit=False)
        assert found.l1 is not None and found.l1.value is not None
        return decode_answer(envelope.open(found.l1.value, keys.entry))

    await project_hit()
    # The same answer as a plain dict (the seeded entry's text and sources), pickled by cashews.
    answer = answer_of_size(ENTRY_BYTES, len(lookups[0].expected[1]))
    peer = Cache()
    peer.setup(target.url, client_side=False)

    @peer(ttl="1h")
    async def cashews_answer(workspace: str, client_id: str, question: str) -> dict[str, Any]:
        return {"answer": answer.answer,
                "sources": [{"session_id": str(s.session_id), "version": s.version,
                             "score": s.score} for s in answer.sources]}

    hit_args = (str(WS), str(CLIENT), QUESTIONS[0])
    await cashews_answer(*hit_args)  # the fill; every timed call is a hit

    async def cashews_hit() -> Any:
        return await cashews_answer(*hit_args)

    try:
        return await _timed(args, {"project L1 hit (lookup + decode)": project_hit,
                                   "cashews @cache hit": cashews_hit})
    finally:
        await peer.close()


async def _l2(args: argparse.Namespace, client: Redis, target: Target) -> dict[str, Any]:
    from redisvl.extensions.cache.embeddings import EmbeddingsCache

    rng = np.random.default_rng(15)
    vector = rng.standard_normal(DIMENSIONS).astype(np.float32)
    vector /= np.linalg.norm(vector)
    question = QUESTIONS[0]
    l2_key = KEYS.l2(WS, MODEL, DIMENSIONS, question)
    envelope = Envelope()
    await client.set(l2_key, envelope.seal(encode_embedding(vector, "float16"), l2_key),
                     ex=86_400)
    peer = EmbeddingsCache(name="bench-embeddings", ttl=86_400, async_redis_client=client)
    peer_key = await peer.aset(content=question, model_name=MODEL,
                               embedding=vector.tolist())
    sizes = {"project": int(await client.memory_usage(l2_key) or 0),
             "redisvl EmbeddingsCache": int(await client.memory_usage(peer_key) or 0)}
    cache = _cache(client)

    async def project_get() -> Any:
        found = await cache.lookup(None, l2_key)
        assert found.l2 is not None
        return decode_embedding(envelope.open(found.l2, l2_key), DIMENSIONS)

    async def redisvl_get() -> Any:
        found = await peer.aget(content=question, model_name=MODEL)
        assert found is not None
        return found

    timed = await _timed(args, {"project L2 get (lookup + decode)": project_get,
                                "redisvl EmbeddingsCache.aget": redisvl_get})
    return {"memory_usage_bytes": sizes, "get": timed}


async def _peers(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    client = redis_py(target)
    assert isinstance(client, Redis)
    try:
        return {"l1_hit": await _l1_hits(args, client, target),
                "l2": await _l2(args, client, target)}
    finally:
        await client.aclose()


def _print_table(title: str, by_concurrency: dict[str, Any]) -> None:
    for concurrency, rows in by_concurrency.items():
        print(f"\n{title}, {concurrency} task(s); median (min-max); x = per-round ratio to "
              "the project's")
        for name, row in rows.items():
            cpu, rate = Spread(**row["cpu_us"]), Spread(**row["per_second"])
            print(f"  {name:36} CPU {cpu.text(1):>20} us/call  "
                  f"x {Spread(**row['cpu_vs_project']).text(2):>17}  "
                  f"{rate.text(0):>23} calls/s")


def _print(found: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nPeers ({args.rounds} rounds x {args.calls} calls):")
    _print_table("L1 hit", found["l1_hit"])
    sizes = found["l2"]["memory_usage_bytes"]
    print(f"\nL2 entry MEMORY USAGE: project {sizes['project']} B, redisvl "
          f"{sizes['redisvl EmbeddingsCache']} B "
          f"({sizes['redisvl EmbeddingsCache'] / sizes['project']:.1f}x)")
    _print_table("L2 get", found["l2"]["get"])
