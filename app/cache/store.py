"""Redis access for both caches: atomic L1 check-and-fill, L2 get/set, O(1) invalidation.

All Redis I/O of the caches goes through `RedisCache`. Failures never escape as Redis errors:
they are counted, fed to the circuit breaker and raised as `CacheUnavailable`, which the
query path treats as "go to the fresh path".
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from app.cache.breaker import CircuitBreaker
from app.cache.keys import L1Keys
from app.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# KEYS[1] = entry, KEYS[2..] = generation keys; ARGV[1..n-1] = tokens to adopt for missing
# generations, ARGV[n] = their TTL. A missing generation (never set, expired or evicted) is
# replaced by a fresh random token, so no old entry can ever match it again (no ABA).
# Returns {1, gens, value} for a current entry, {2, gens} for a stale one, {0, gens} if none.
_L1_LOOKUP = b"""
local gens = {}
local ttl = ARGV[#KEYS]
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    g = ARGV[i - 1]
    redis.call('SET', KEYS[i], g, 'EX', ttl)
  end
  gens[#gens + 1] = g
end
local header = table.concat(gens, ',')
local v = redis.call('GET', KEYS[1])
if not v then return {0, header} end
local nl = string.find(v, '\\n', 1, true)
if nl and string.sub(v, 1, nl - 1) == header then
  return {1, header, string.sub(v, nl + 1)}
end
return {2, header}
"""

# KEYS as above; ARGV[1] = the generations read before the notes were read, ARGV[2] = value,
# ARGV[3] = TTL. Stores only if no invalidation happened since: a slow request cannot
# publish an answer built from notes that a later write changed.
_L1_FILL = b"""
local gens = {}
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then return 0 end
  gens[#gens + 1] = g
end
if table.concat(gens, ',') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'EX', ARGV[3])
return 1
"""

L1Status = Literal["hit", "miss", "stale"]


class CacheUnavailable(Exception):
    """Redis could not be used for this operation (error, timeout, or circuit open)."""


@dataclass(frozen=True, slots=True)
class L1Lookup:
    status: L1Status
    generations: str  # read before the notes; the fill must present them again
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of the one-round-trip lookup of both layers. `None` means not asked or failed."""

    l1: L1Lookup | None
    l2: bytes | None
    l1_failed: bool = False
    l2_failed: bool = False


class _LuaScript:
    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source, usedforsecurity=False).hexdigest()


class RedisCache:
    """The caches' only door to Redis."""

    def __init__(
        self,
        redis: Redis,
        breaker: CircuitBreaker,
        metrics: ServiceMetrics,
        *,
        generation_ttl_seconds: int = 86_400,
    ) -> None:
        self._redis = redis
        self._breaker = breaker
        self._metrics = metrics
        self._generation_ttl = generation_ttl_seconds
        self._lookup_script = _LuaScript(_L1_LOOKUP)
        self._fill_script = _LuaScript(_L1_FILL)

    def _fail(self, layer: str, op: str, exc: BaseException) -> None:
        self._metrics.cache_errors.labels(cache_layer=layer, op=op).inc()
        self._breaker.record_failure()
        log.warning("cache %s %s failed: %s", layer, op, type(exc).__name__)

    async def lookup(self, l1: L1Keys | None, l2_key: str | None) -> Lookup:
        """Read the L1 entry (with its generations) and the L2 entry in one round trip."""
        if l1 is None and l2_key is None:
            return Lookup(None, None)
        if not self._breaker.allow():
            return Lookup(None, None, l1_failed=l1 is not None, l2_failed=l2_key is not None)
        try:
            results = await self._pipeline_lookup(l1, l2_key)
        except NoScriptError:
            try:
                await self._redis.script_load(self._lookup_script.source)
                results = await self._pipeline_lookup(l1, l2_key)
            except RedisError as exc:
                return self._lookup_failed(l1, l2_key, exc)
        except (RedisError, OSError) as exc:
            return self._lookup_failed(l1, l2_key, exc)
        self._breaker.record_success()
        l1_result = _parse_l1(results[0]) if l1 is not None else None
        l2_result = results[-1] if l2_key is not None else None
        return Lookup(l1_result, l2_result)

    def _lookup_failed(self, l1: L1Keys | None, l2_key: str | None, exc: BaseException) -> Lookup:
        self._fail("query_result" if l1 is not None else "embedding", "lookup", exc)
        return Lookup(None, None, l1_failed=l1 is not None, l2_failed=l2_key is not None)

    async def _pipeline_lookup(self, l1: L1Keys | None, l2_key: str | None) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        if l1 is not None:
            tokens = [os.urandom(8).hex() for _ in l1.generations]
            pipe.execute_command(
                "EVALSHA", self._lookup_script.sha, 1 + len(l1.generations),
                l1.entry, *l1.generations, *tokens, self._generation_ttl,
            )
        if l2_key is not None:
            pipe.get(l2_key)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, NoScriptError):
                raise result
            if isinstance(result, Exception):
                raise result
        return results

    async def fill_l1(self, keys: L1Keys, generations: str, value: bytes, ttl: int) -> bool:
        """Store an answer if the generations are still those read before the notes."""
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        args: list[str | bytes | int] = [keys.entry, *keys.generations, generations, value, ttl]
        try:
            try:
                stored = await self._redis.evalsha(
                    self._fill_script.sha, 1 + len(keys.generations), *args
                )
            except NoScriptError:
                stored = await self._redis.eval(
                    self._fill_script.source.decode(), 1 + len(keys.generations), *args
                )
        except (RedisError, OSError) as exc:
            self._fail("query_result", "fill", exc)
            raise CacheUnavailable(str(exc)) from exc
        self._breaker.record_success()
        return bool(stored)

    async def set_l2(self, key: str, value: bytes, ttl: int) -> None:
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        try:
            await self._redis.set(key, value, ex=ttl)
        except (RedisError, OSError) as exc:
            self._fail("embedding", "fill", exc)
            raise CacheUnavailable(str(exc)) from exc
        self._breaker.record_success()

    async def delete(self, key: str, layer: str) -> None:
        """Drop a corrupt entry; best effort (it expires anyway)."""
        if not self._breaker.allow():
            return
        try:
            await self._redis.delete(key)
        except (RedisError, OSError) as exc:
            self._fail(layer, "delete", exc)
            return
        self._breaker.record_success()

    async def bump_generations(self, generation_keys: list[str]) -> None:
        """O(1) invalidation: give each generation a new random token, atomically."""
        if not self._breaker.allow():
            raise CacheUnavailable("circuit open")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in generation_keys:
                    pipe.set(key, os.urandom(8).hex(), ex=self._generation_ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._fail("query_result", "invalidate", exc)
            raise CacheUnavailable(str(exc)) from exc
        self._breaker.record_success()

    async def current_generations(self, keys: L1Keys) -> str | None:
        """The generations `keys` depend on now, in lookup format; None if unknown."""
        if not self._breaker.allow():
            return None
        try:
            values = await self._redis.mget(list(keys.generations))
        except (RedisError, OSError) as exc:
            self._fail("query_result", "lookup", exc)
            return None
        self._breaker.record_success()
        tokens = [v for v in values if isinstance(v, bytes)]
        if len(tokens) != len(values):
            return None
        return ",".join(t.decode() for t in tokens)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False


def _parse_l1(raw: Any) -> L1Lookup:
    code = int(raw[0])
    generations = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
    if code == 1:
        return L1Lookup("hit", generations, bytes(raw[2]))
    return L1Lookup("stale" if code == 2 else "miss", generations)
