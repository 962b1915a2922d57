"""Redis access for both caches: atomic L1 check-and-fill, L2 get/set, O(1) invalidation.

All Redis I/O of the caches goes through `RedisCache`. Failures never escape as Redis errors:
they are counted, fed to the circuit breaker and raised as `CacheUnavailable` (or reported
as failed lookups), which the query path treats as "go to the fresh path".

Round trips: a lookup is one call (the L1 script also reads the L2 entry when both keys
share the workspace's hash tag), a miss is filled with one more (the fill script also writes
the L2 entry), an invalidation is one MULTI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from app.cache.breaker import CircuitBreaker
from app.cache.deadlines import Deadlines
from app.cache.direct import DirectCommands, direct_commands
from app.cache.keys import L1Keys, hash_tag
from app.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# KEYS[1] = L1 entry, KEYS[2..g] = its generation keys, KEYS[g+1] = the L2 entry when
# ARGV[1] ~= '0'. ARGV[1] = '0' no L2 | '1' read L2 only on an L1 miss | '2' always read it;
# ARGV[2] = TTL of generation keys; ARGV[3..] = tokens to adopt for missing generations.
# A missing generation (never set, expired or evicted) gets a fresh random token, so no old
# entry can ever match it again (no ABA). Reply: {code, generations, l1 value, l2 value} with
# code 1 = current entry, 2 = stale entry, 0 = none; absent values are nil.
_LOOKUP = b"""
local l2_mode = ARGV[1]
local last_gen = #KEYS
if l2_mode ~= '0' then last_gen = #KEYS - 1 end
local gens = {}
for i = 2, last_gen do
  local g = redis.call('GET', KEYS[i])
  if not g then
    g = ARGV[i + 1]
    redis.call('SET', KEYS[i], g, 'EX', ARGV[2])
  end
  gens[#gens + 1] = g
end
local header = table.concat(gens, ',')
local code, value = 0, false
local v = redis.call('GET', KEYS[1])
if v then
  code = 2
  local nl = string.find(v, '\\n', 1, true)
  if nl and string.sub(v, 1, nl - 1) == header then
    code, value = 1, string.sub(v, nl + 1)
  end
end
local embedding = false
if l2_mode == '2' or (l2_mode == '1' and code ~= 1) then
  embedding = redis.call('GET', KEYS[#KEYS])
end
return {code, header, value, embedding}
"""

# KEYS as above (the L2 key last when ARGV[4] is given); ARGV[1] = the generations read
# before the notes were read, ARGV[2] = the answer, ARGV[3] = its TTL, ARGV[4..5] = the
# embedding and its TTL. The answer is stored only if no invalidation happened since: a slow
# request cannot publish an answer built from notes that a later write changed. The
# embedding does not depend on notes and is stored either way.
_FILL = b"""
local last_gen = #KEYS
if #ARGV >= 5 then
  last_gen = #KEYS - 1
  redis.call('SET', KEYS[#KEYS], ARGV[4], 'EX', ARGV[5])
end
local gens = {}
for i = 2, last_gen do
  local g = redis.call('GET', KEYS[i])
  if not g then return 0 end
  gens[#gens + 1] = g
end
if table.concat(gens, ',') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'EX', ARGV[3])
return 1
"""

L1Status = Literal["hit", "miss", "stale"]

# What a Redis call may raise when Redis cannot serve it. RedisClusterException is not a
# RedisError (e.g. SlotNotCoveredError while a failover is under way, or no node reachable
# at start): on a cluster it is a cache failure like any other, never an error response.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


class CacheUnavailable(Exception):
    """Redis could not be used for this operation (error, timeout, or circuit open)."""


class NotReplicated(CacheUnavailable):
    """A generation bump reached the master but not enough replicas in time: treated as not
    applied (the invalidation stays pending), since a failover could lose it."""


@dataclass(frozen=True, slots=True)
class L1Lookup:
    status: L1Status
    generations: str  # read before the notes; the fill must present them again
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of the lookup of both layers. `None` means not asked, not read, or failed."""

    l1: L1Lookup | None
    l2: bytes | None
    l1_failed: bool = False
    l2_failed: bool = False


@dataclass(frozen=True, slots=True)
class L2Write:
    key: str
    value: bytes
    ttl: int


class _LuaScript:
    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source, usedforsecurity=False).hexdigest()


class RedisCache:
    """The caches' only door to Redis: one server, or a Redis Cluster (issue 14).

    On a cluster every script and MULTI touches the keys of one workspace only, which share
    its `{workspace}` hash tag and so one slot: a lookup is one EVALSHA to the slot's master,
    as on one server. Only the opt-in global L2 scope reads a second slot (a pipeline: on a
    cluster, the two commands go to their nodes concurrently).

    Every operation runs under a deadline (cancelling the waiting task) rather than a socket
    timeout: redis-py with a socket timeout can swallow a task cancellation
    (redis/redis-py#2551), and a request that is cancelled must stop waiting for Redis.
    The deadlines share one timer (app/cache/deadlines.py): a call gives up between its
    budget and a tenth of it later.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        breaker: CircuitBreaker,
        metrics: ServiceMetrics,
        *,
        timeout_seconds: float = 0.05,
        generation_ttl_seconds: int = 86_400,
        wait_replicas: int = 0,
        wait_ms: int = 50,
        direct: DirectCommands | None = None,
    ) -> None:
        self._redis = redis
        self._breaker = breaker
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._generation_ttl = generation_ttl_seconds
        self._wait_replicas = wait_replicas
        self._wait_ms = wait_ms if wait_replicas else 0
        self._lookup_script = _LuaScript(_LOOKUP)
        self._fill_script = _LuaScript(_FILL)
        # The scripts of the hot path go out on the caches' own connections (app/cache/direct.py).
        self._direct = direct if direct is not None else direct_commands(redis)
        # One timer for every call's deadline (app/cache/deadlines.py), a tenth of the budget.
        self._deadlines = Deadlines(tick_seconds=timeout_seconds / 10)

    async def aclose(self) -> None:
        await self._direct.aclose()

    def _fail(self, layer: str, op: str, exc: BaseException) -> None:
        self._metrics.cache_errors.labels(cache_layer=layer, op=op).inc()
        self._breaker.record_failure()
        log.warning("cache %s %s failed: %s", layer, op, type(exc).__name__)

    async def _script(self, script: _LuaScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._direct.call(keys[0], "EVALSHA", script.sha, len(keys), *keys,
                                           *args)
        except NoScriptError:
            return await self._redis.eval(script.source.decode(), len(keys), *keys, *args)

    async def lookup(
        self, l1: L1Keys | None, l2_key: str | None, *, l2_on_l1_hit: bool = True
    ) -> Lookup:
        """Read the L1 entry (with its generations) and the L2 entry in one round trip.

        `l2_on_l1_hit=False` skips the embedding when the answer is current (serving it
        needs no embedding), so a hit carries one small value back.
        """
        if l1 is None and l2_key is None:
            return Lookup(None, None)
        layer = "query_result" if l1 is not None else "embedding"
        if not self._breaker.allow():
            return Lookup(None, None, l1_failed=l1 is not None, l2_failed=l2_key is not None)
        try:
            async with self._deadlines.within(self._timeout):
                if l1 is None:
                    assert l2_key is not None
                    result = Lookup(None, _bytes_or_none(await self._redis.get(l2_key)))
                elif l2_key is None or hash_tag(l2_key) == hash_tag(l1.entry):
                    result = await self._lookup_one_slot(l1, l2_key, l2_on_l1_hit)
                else:
                    result = await self._lookup_two_slots(l1, l2_key)
        except REDIS_FAILURES as exc:
            self._fail(layer, "lookup", exc)
            return Lookup(None, None, l1_failed=l1 is not None, l2_failed=l2_key is not None)
        self._breaker.record_success()
        return result

    async def _lookup_one_slot(self, l1: L1Keys, l2_key: str | None, l2_on_hit: bool) -> Lookup:
        mode = "0" if l2_key is None else ("2" if l2_on_hit else "1")
        keys = [l1.entry, *l1.generations, *([l2_key] if l2_key else [])]
        tokens = _fresh_tokens(len(l1.generations))
        reply = await self._script(self._lookup_script, keys, [mode, self._generation_ttl,
                                                               *tokens])
        return Lookup(_parse_l1(reply), _bytes_or_none(reply[3]) if len(reply) > 3 else None)

    async def _lookup_two_slots(self, l1: L1Keys, l2_key: str) -> Lookup:
        """Global-scope embeddings live in another slot: script and GET in one pipeline (on
        a cluster, where a pipeline may not carry scripts, sent concurrently to their
        nodes: still one round trip of waiting)."""
        tokens = _fresh_tokens(len(l1.generations))
        keys = [l1.entry, *l1.generations]
        if isinstance(self._redis, RedisCluster):
            reply, embedding = await asyncio.gather(
                self._script(self._lookup_script, keys, ["0", self._generation_ttl, *tokens]),
                self._redis.get(l2_key))
            return Lookup(_parse_l1(reply), _bytes_or_none(embedding))
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=False)
            pipe.evalsha(self._lookup_script.sha, len(keys), *keys, "0", self._generation_ttl,
                         *tokens)
            pipe.get(l2_key)
            reply, embedding = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 1:
                await self._redis.script_load(self._lookup_script.source)
                continue
            for item in (reply, embedding):
                if isinstance(item, Exception):
                    raise item
            return Lookup(_parse_l1(reply), _bytes_or_none(embedding))
        raise RedisError("lookup script could not be loaded")

    async def fill(
        self, keys: L1Keys, generations: str, value: bytes, ttl: int, l2: L2Write | None = None
    ) -> bool:
        """Store an answer if the generations are still those read before the notes, and
        the embedding (if given) in the same call. Returns whether the answer was stored."""
        if l2 is not None and hash_tag(l2.key) != hash_tag(keys.entry):
            await self.set_l2(l2)
            l2 = None
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        script_keys = [keys.entry, *keys.generations, *([l2.key] if l2 else [])]
        args: list[Any] = [generations, value, ttl, *([l2.value, l2.ttl] if l2 else [])]
        try:
            async with self._deadlines.within(self._timeout):
                stored = await self._script(self._fill_script, script_keys, args)
        except REDIS_FAILURES as exc:
            self._fail("query_result", "fill", exc)
            raise CacheUnavailable(type(exc).__name__) from exc
        self._breaker.record_success()
        return bool(stored)

    async def set_l2(self, write: L2Write) -> None:
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        try:
            async with self._deadlines.within(self._timeout):
                await self._redis.set(write.key, write.value, ex=write.ttl)
        except REDIS_FAILURES as exc:
            self._fail("embedding", "fill", exc)
            raise CacheUnavailable(type(exc).__name__) from exc
        self._breaker.record_success()

    async def delete(self, key: str, layer: str) -> None:
        """Drop a corrupt entry; best effort (it expires anyway)."""
        if not self._breaker.allow():
            return
        try:
            async with self._deadlines.within(self._timeout):
                await self._redis.delete(key)
        except REDIS_FAILURES as exc:
            self._fail(layer, "delete", exc)
            return
        self._breaker.record_success()

    async def bump_generations(self, generation_keys: list[str]) -> None:
        """O(1) invalidation: give each generation a new random token, atomically.

        With `wait_replicas` (a cluster's masters have replicas), the MULTI is followed by
        `WAIT wait_replicas wait_ms` on the same connection: a failover promotes a replica,
        and a replica that never received the new token would make the entries of the old
        generation current again. When fewer replicas acknowledge in time the bump raises
        NotReplicated: the caller keeps the intent pending (no L1 for the workspace) and
        applies it again, so it fails closed instead of trusting an unreplicated token.
        """
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        tokens = [(key, os.urandom(8).hex()) for key in generation_keys]
        try:
            async with self._deadlines.within(self._timeout + self._wait_ms / 1000):
                if self._wait_replicas or isinstance(self._redis, RedisCluster):
                    acked = await self._bump_and_wait(tokens)
                else:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        for key, token in tokens:
                            pipe.set(key, token, ex=self._generation_ttl)
                        await pipe.execute()
                    acked = 0
        except REDIS_FAILURES as exc:
            self._fail("query_result", "invalidate", exc)
            raise CacheUnavailable(type(exc).__name__) from exc
        self._breaker.record_success()  # Redis answered; only replication is behind
        if acked < self._wait_replicas:
            log.warning("invalidation not replicated in time", extra={
                "replicas_acked": acked, "replicas_wanted": self._wait_replicas,
                "wait_ms": self._wait_ms})
            raise NotReplicated(f"{acked} of {self._wait_replicas} replicas in "
                                f"{self._wait_ms} ms")

    async def _bump_and_wait(self, tokens: list[tuple[str, str]]) -> int:
        """MULTI, the SETs, EXEC, then (with `wait_replicas`) WAIT, pipelined on one
        connection (WAIT counts the writes of its own connection) to the master of the
        keys' slot. Returns how many replicas acknowledged (0 without a WAIT). On a cluster
        this is also the path without a WAIT: redis-py's cluster transaction costs about
        1 ms more a bump (bench/cluster_bench.py)."""
        commands: list[tuple[Any, ...]] = [
            ("MULTI",),
            *(("SET", key, token, "EX", self._generation_ttl) for key, token in tokens),
            ("EXEC",),
            *([("WAIT", self._wait_replicas, self._wait_ms)] if self._wait_replicas else []),
        ]
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()  # the slot map, read on first use (no-op after)
            node = self._redis.get_node_from_key(tokens[0][0])
            if node is None:
                raise RedisClusterException(f"no master for {tokens[0][0]}")
            pipeline = [PipelineCommand(i, *args) for i, args in enumerate(commands)]
            try:
                await node.execute_pipeline(pipeline)
                for command in pipeline:
                    if isinstance(command.result, BaseException):
                        raise command.result
            except REDIS_FAILURES:
                # This path bypasses the client's own MOVED/connection handling: re-read
                # the slot map so that the retry (the outbox relay's) finds the new master.
                with contextlib.suppress(*REDIS_FAILURES):
                    await self._redis.nodes_manager.initialize()
                raise
            return int(cast(int, pipeline[-1].result)) if self._wait_replicas else 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            results = await pipe.execute()
        return int(results[-1]) if self._wait_replicas else 0

    async def current_generations(self, keys: L1Keys) -> str | None:
        """The generations `keys` depend on now, in lookup format; None if unknown."""
        if not self._breaker.allow():
            return None
        try:
            async with self._deadlines.within(self._timeout):
                values = await self._redis.mget(list(keys.generations))
        except REDIS_FAILURES as exc:
            self._fail("query_result", "lookup", exc)
            return None
        self._breaker.record_success()
        tokens = [v for v in values if isinstance(v, bytes)]
        if len(tokens) != len(values):
            return None
        return ",".join(t.decode() for t in tokens)

    async def ping(self) -> bool:
        try:
            async with self._deadlines.within(max(self._timeout, 0.5)):
                return bool(await self._redis.ping())
        except REDIS_FAILURES:
            return False


def _fresh_tokens(count: int) -> list[str]:
    """Random generation tokens (16 hex characters each), from one read of the OS's CSPRNG."""
    raw = os.urandom(8 * count).hex()
    return [raw[i:i + 16] for i in range(0, 16 * count, 16)]


def _bytes_or_none(value: Any) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _parse_l1(raw: Any) -> L1Lookup:
    code = int(raw[0])
    generations = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
    if code == 1:
        value = _bytes_or_none(raw[2])
        if value is not None:
            return L1Lookup("hit", generations, value)
    return L1Lookup("stale" if code == 2 else "miss", generations)
