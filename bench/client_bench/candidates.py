"""The compared ways of making the L1 hit's call, one class each, behind one shape:
`open()`, `bind(lookup)` -> a zero-argument coroutine function making one call, `close()`.

Every candidate is bound to the same `Lookup` (keys and ARGV fixed, as the service sends
them on a hit) so the per-call work differs only by client. Each one's reply is checked
against the seeded entry before it is timed (`fixture.same_reply`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cache.direct import direct_commands
from app.cache.keys import L1Keys
from bench.client_bench import resp
from bench.client_bench.direct import DirectCluster, DirectConnections, PoolConnection
from bench.client_bench.fixture import CEILING_KEY, SCRIPT, SCRIPT_SHA, Lookup, _cache

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    cluster: bool

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}" + ("" if self.cluster else "/0")


def redis_py(target: Target) -> Redis | RedisCluster:
    """The service's client configuration (app/main.py build_redis): no retries, no socket
    timeout (deadlines are asyncio timeouts), no health checks, bytes replies."""
    if target.cluster:
        return RedisCluster.from_url(target.url, socket_timeout=None,
                                     socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0),
                                     health_check_interval=0, decode_responses=False)
    return Redis.from_url(target.url, socket_timeout=None, socket_connect_timeout=1.0,
                          retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                          health_check_interval=0, decode_responses=False)


class Candidate:
    key: str = ""  # short id in tables and JSON
    label: str = ""
    reply: str = "lookup"  # "lookup" (the script's reply), "hit" (a Lookup), "ceiling"
    role: str = "candidate"  # or "service", "floor", "ceiling"

    def __init__(self, target: Target) -> None:
        self.target = target
        self._stack = AsyncExitStack()

    async def open(self) -> None:
        return None

    def bind(self, lookup: Lookup) -> Call:
        raise NotImplementedError

    async def close(self) -> None:
        await self._stack.aclose()


class RedisPyEvalsha(Candidate):
    key, label = "a", "redis-py evalsha (the service today)"

    async def open(self) -> None:
        self.client = redis_py(self.target)
        self._stack.push_async_callback(self.client.aclose)

    def bind(self, lookup: Lookup) -> Call:
        evalsha, keys, args = self.client.evalsha, lookup.keys, lookup.args
        return lambda: evalsha(SCRIPT_SHA, len(keys), *keys, *args)


class ServiceLookup(RedisPyEvalsha):
    """The store's whole lookup: breaker, asyncio.timeout, token generation, parsing."""

    key, label, reply, role = "a+", "RedisCache.lookup (the store, as shipped)", "hit", \
        "service"

    def bind(self, lookup: Lookup) -> Call:
        cache = _cache(self.client)
        keys = L1Keys(lookup.keys[0], tuple(lookup.keys[1:-1]))
        l2_key = lookup.keys[-1]
        return lambda: cache.lookup(keys, l2_key, l2_on_l1_hit=False)


class DirectPacked(RedisPyEvalsha):
    key, label = "b", "redis-py direct, own conns, packed per call"

    async def open(self) -> None:
        await super().open()
        if self.target.cluster:
            self.cluster_direct = DirectCluster(self.client)  # type: ignore[arg-type]
            await self.client.initialize()  # type: ignore[union-attr]
        else:
            self.direct = DirectConnections(self.client)  # type: ignore[arg-type]
            self._stack.push_async_callback(self.direct.close)

    def bind(self, lookup: Lookup) -> Call:
        command = lookup.command
        if self.target.cluster:
            node = self.client.get_node_from_key(lookup.keys[0])  # type: ignore[union-attr]
            template = node.acquire_connection()
            pack = template.pack_command  # the encoder only: no state of the connection
            node.release(template)
            execute_on = self.cluster_direct.execute
            first = lookup.keys[0]
            return lambda: execute_on(first, pack(*command), command)
        execute, pack = self.direct.execute, self.direct.pack
        return lambda: execute(pack(*command))


class DirectPrepacked(DirectPacked):
    key, label = "b'", "redis-py direct, own conns, pre-packed"

    def bind(self, lookup: Lookup) -> Call:
        command = lookup.command
        packed = resp.pack(command)
        if self.target.cluster:
            execute_on, first = self.cluster_direct.execute, lookup.keys[0]
            return lambda: execute_on(first, packed, command)
        execute = self.direct.execute
        return lambda: execute(packed)


class DirectHiredisPacked(RedisPyEvalsha):
    """What the service does (app/cache/direct.py, measured as shipped): keys and tokens
    change per request, so the command is packed per call, by hiredis.pack_command (C)
    rather than redis-py's asyncio packer (Python, argument by argument)."""

    key, label = "b-h", "the service's direct calls (hiredis pack)"

    async def open(self) -> None:
        await super().open()
        if self.target.cluster:
            await self.client.initialize()  # type: ignore[union-attr]
        self.service_direct = direct_commands(self.client)
        self._stack.push_async_callback(self.service_direct.aclose)

    def bind(self, lookup: Lookup) -> Call:
        call, first, command = self.service_direct.call, lookup.keys[0], lookup.command
        return lambda: call(first, *command)


class DirectFromPool(RedisPyEvalsha):
    key, label = "b-pool", "redis-py direct, pool get/release per call"

    def bind(self, lookup: Lookup) -> Call:
        execute, command = PoolConnection(self.client).execute, lookup.command  # type: ignore[arg-type]
        return lambda: execute(command)


class CoredisEvalsha(Candidate):
    key, label = "c", "coredis evalsha"

    async def open(self) -> None:
        import coredis

        if self.target.cluster:
            client: Any = coredis.RedisCluster(self.target.host, self.target.port,
                                               decode_responses=False)
        else:
            client = coredis.Redis(self.target.host, self.target.port, decode_responses=False)
        self.client = await self._stack.enter_async_context(client)

    def bind(self, lookup: Lookup) -> Call:
        evalsha, keys, args = self.client.evalsha, list(lookup.keys), list(lookup.args)
        return lambda: evalsha(SCRIPT_SHA, keys, args)


class GlideScript(Candidate):
    key, label = "d", "valkey-glide invoke_script"

    async def open(self) -> None:
        from glide import (
            GlideClient,
            GlideClientConfiguration,
            GlideClusterClient,
            GlideClusterClientConfiguration,
            NodeAddress,
        )

        address = [NodeAddress(self.target.host, self.target.port)]
        if self.target.cluster:
            self.client: Any = await GlideClusterClient.create(
                GlideClusterClientConfiguration(address, request_timeout=2_000))
        else:
            self.client = await GlideClient.create(
                GlideClientConfiguration(address, request_timeout=2_000))
        self._stack.push_async_callback(self.client.close)

    def bind(self, lookup: Lookup) -> Call:
        from glide import Script

        script, invoke = Script(SCRIPT), self.client.invoke_script
        keys, args = list(lookup.keys), list(lookup.args)
        return lambda: invoke(script, keys=keys, args=args)


class GlideCustom(GlideScript):
    key, label = "d'", "valkey-glide custom_command EVALSHA"

    def bind(self, lookup: Lookup) -> Call:
        custom = self.client.custom_command
        command = [str(part) if isinstance(part, int) else part for part in lookup.command]
        if self.target.cluster:
            from glide import SlotKeyRoute, SlotType

            route = SlotKeyRoute(SlotType.PRIMARY, lookup.keys[0])
            return lambda: custom(command, route)
        return lambda: custom(command)


class Floor(Candidate):
    """An asyncio stream per concurrent caller and a hiredis.Reader: no client at all. Not
    a candidate (no cluster routing, no reconnects): the least a call can cost in Python."""

    key, label, role = "e", "floor: asyncio stream + hiredis.Reader", "floor"

    async def open(self) -> None:
        self._idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                hiredis.Reader]] = deque()
        self._writers: list[asyncio.StreamWriter] = []
        self._address = (self.target.host, self.target.port)
        if self.target.cluster:  # the master of the workspace's slot, found once
            cluster = redis_py(self.target)
            await cluster.initialize()  # type: ignore[union-attr]
            node = cluster.get_node_from_key(CEILING_KEY)  # type: ignore[union-attr]
            self._address = (node.host, node.port)
            await cluster.aclose()
        self._stack.push_async_callback(self._close_all)

    async def _close_all(self) -> None:
        for writer in self._writers:
            writer.close()

    async def _call(self, packed: bytes) -> Any:
        if self._idle:
            conn = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(*self._address)
            self._writers.append(writer)
            conn = (reader, writer, hiredis.Reader())
        reader, writer, parser = conn
        writer.write(packed)
        reply = parser.gets()
        while reply is False:
            data = await reader.read(65_536)
            if not data:
                raise ConnectionError("connection closed")
            parser.feed(data)
            reply = parser.gets()
        self._idle.append(conn)
        return reply

    def bind(self, lookup: Lookup) -> Call:
        call, packed = self._call, resp.pack(lookup.command)
        return lambda: call(packed)


class CeilingGet(RedisPyEvalsha):
    key, label, reply, role = "f", "ceiling: redis-py GET, same size", "ceiling", "ceiling"

    def bind(self, lookup: Lookup) -> Call:
        get = self.client.get
        return lambda: get(CEILING_KEY)


ALL: tuple[type[Candidate], ...] = (RedisPyEvalsha, ServiceLookup, DirectFromPool,
                                    DirectPacked, DirectHiredisPacked, DirectPrepacked,
                                    CoredisEvalsha,
                                    GlideScript, GlideCustom, Floor, CeilingGet)
ON_CLUSTER = tuple(c for c in ALL if c is not DirectFromPool)  # a cluster has no one pool


class FloorReusingCancelled(Floor):
    """The cancellation check's control (never timed): the floor, but a connection goes
    back to the idle set even when its call was cancelled mid-read. The check must call it
    UNSAFE, or it proves nothing about the others."""

    key, label, role = "e-bad", "control: reuses a cancelled connection", "control"

    async def _call(self, packed: bytes) -> Any:
        if self._idle:
            conn = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(*self._address)
            self._writers.append(writer)
            conn = (reader, writer, hiredis.Reader())
        reader, writer, parser = conn
        try:
            writer.write(packed)
            reply = parser.gets()
            while reply is False:
                parser.feed(await reader.read(65_536))
                reply = parser.gets()
            return reply
        finally:
            self._idle.append(conn)
