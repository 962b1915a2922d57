"""Timing one candidate: many calls at a fixed concurrency, the process's CPU time (every
thread's: valkey-glide does its I/O in Rust threads) and the wall time."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.client_bench.candidates import Call, Candidate
from bench.client_bench.fixture import Lookup, same_reply
from bench.client_bench.stats import split_calls


@dataclass(frozen=True)
class Sample:
    cpu_us: float  # process CPU per call
    per_second: float  # calls per wall second


async def measure(call: Call, calls: int, concurrency: int) -> Sample:
    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in split_calls(calls, concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Sample(cpu / calls * 1e6, calls / wall)


def reply_ok(candidate: Candidate, reply: Any, lookup: Lookup, ceiling: bytes) -> bool:
    if candidate.reply == "ceiling":
        return bytes(reply) == ceiling
    if candidate.reply == "hit":
        return reply.l1 is not None and reply.l1.status == "hit" \
            and reply.l1.value == lookup.expected[2]
    return same_reply(reply, lookup.expected)


async def check(candidate: Candidate, lookups: list[Lookup], ceiling: bytes) -> None:
    for lookup in lookups:
        reply = await candidate.bind(lookup)()
        if not reply_ok(candidate, reply, lookup, ceiling):
            raise RuntimeError(f"{candidate.key} ({candidate.label}) answered {reply!r:.200}")


async def cancellation(candidate: Candidate, lookups: list[Lookup], ceiling: bytes,
                       admin: redis.Redis, tries: int = 3) -> str:
    """Cancel a call mid-read (the server is paused, an asyncio.timeout fires while the
    reply is awaited), then make another call on the same client: it must get its own
    reply, not the late reply of the cancelled one."""
    first, other = candidate.bind(lookups[1]), candidate.bind(lookups[0])
    outcome = "safe"
    for _ in range(tries):
        admin.execute_command("CLIENT", "PAUSE", 150, "ALL")
        try:
            async with asyncio.timeout(0.03):
                await first()
            outcome = "not exercised (the call beat the pause)"
        except TimeoutError:
            pass
        await _until_unpaused(admin)
        try:
            async with asyncio.timeout(2.0):
                reply = await other()
        except Exception as exc:
            return f"next call failed: {type(exc).__name__}"
        if not reply_ok(candidate, reply, lookups[0], ceiling):
            return "UNSAFE: the next call got the cancelled call's reply"
    return outcome


async def _until_unpaused(admin: redis.Redis) -> None:
    # CLIENT PAUSE ALL holds every client's commands, PING included: this returns when
    # the pause is over (and the cancelled call's late reply has been sent).
    await asyncio.to_thread(admin.ping)
