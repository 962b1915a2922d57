"""redis-py used directly for the caches' scripts: one connection, the packed command, the
reply — without `execute_command`'s pool lock, health probe, retry wrapper, observability
events and response callbacks, which cost about as much CPU as the rest of an L1 hit
(bench/client_bench measures both, side by side; issue 15).

What redis-py's own machinery otherwise guarantees, kept here:
  * a reply is never read by the next caller: any exception while sending or reading (a
    connection error, a timeout, a task cancelled mid-read) disconnects the connection
    before it is used again, and a disconnected connection reconnects on its next send;
  * an error *reply* (NOSCRIPT, MOVED, ASK, any other ResponseError) has been read whole:
    the connection stays in step and is reused;
  * connections are made by the client's own pool class with its own settings (TLS,
    credentials, timeouts; the Sentinel pool's connections find the master themselves);
  * on a cluster the slot's master comes from the client's slot map, and a MOVED/ASK or a
    connection error hands that call to the full client once, which follows the
    redirection and re-reads the topology: only the common case takes the short path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AskError, ConnectionError, MovedError, ResponseError


class DirectCommands(Protocol):
    async def call(self, key: str, *args: Any) -> Any:
        """Run one command whose keys all share `key`'s slot; its raw reply."""

    async def aclose(self) -> None: ...


class DirectServer:
    """One server (or a Sentinel-managed master): a LIFO set of the caches' own
    connections, as many as there were concurrent calls, up to `max_connections`; a call
    beyond that goes through the client (its pool)."""

    def __init__(self, redis: Redis, max_connections: int = 128) -> None:
        self._redis = redis
        self._max_connections = max_connections
        pool = redis.connection_pool
        self._make: Callable[[], AbstractConnection] = lambda: pool.connection_class(
            **pool.connection_kwargs)
        self._idle: deque[AbstractConnection] = deque()
        self._all: list[AbstractConnection] = []

    async def call(self, key: str, *args: Any) -> Any:
        if self._idle:
            conn = self._idle.pop()
        elif len(self._all) < self._max_connections:
            conn = self._new()
        else:
            return await self._redis.execute_command(*args)  # type: ignore[no-untyped-call]
        try:
            if not conn.is_connected:
                # connect(), not the implicit connect of a send: a Sentinel-managed
                # connection asks the sentinels for the master only in connect().
                await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_packed_command(_pack(args), check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            self._idle.append(conn)  # the whole error reply was read: still in step
            raise
        except BaseException:
            await conn.disconnect(nowait=True)  # a reply may be in flight: never reuse as is
            self._idle.append(conn)  # reconnects on its next send
            raise
        self._idle.append(conn)
        return reply

    @property
    def connections(self) -> int:
        """Dedicated connections made so far (at most `max_connections`)."""
        return len(self._all)

    def _new(self) -> AbstractConnection:
        conn = self._make()
        self._all.append(conn)
        return conn

    async def aclose(self) -> None:
        for conn in self._all:
            await conn.disconnect()
        self._all.clear()
        self._idle.clear()


class DirectCluster:
    """A Redis Cluster: the key's master from the client's slot map, one of that node's
    connections; the full client for anything but a plain reply or error reply."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster

    async def call(self, key: str, *args: Any) -> Any:
        node = self._cluster.get_node_from_key(key) if self._cluster.nodes_manager.slots_cache \
            else None
        if node is None:  # slot map not read yet, or the slot has no master now
            return await self._cluster.execute_command(*args)
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(_pack(args), check_health=False)
            reply = await conn.read_response()
        except (MovedError, AskError):
            node.release(conn)
            return await self._cluster.execute_command(*args)  # follows it, updates the map
        except ResponseError:
            node.release(conn)
            raise
        except ConnectionError:
            await conn.disconnect(nowait=True)
            node.release(conn)
            return await self._cluster.execute_command(*args)  # re-reads the topology
        except BaseException:
            await conn.disconnect(nowait=True)
            node.release(conn)
            raise
        node.release(conn)
        return reply

    async def aclose(self) -> None:
        """The connections are the cluster client's own: it closes them."""


def _pack(args: tuple[Any, ...]) -> bytes:
    """RESP for one command: hiredis' packer, ~8 us a call less than redis-py's own."""
    packed: bytes = hiredis.pack_command(args)
    return packed


def direct_commands(redis: Redis | RedisCluster) -> DirectCommands:
    if isinstance(redis, RedisCluster):
        return DirectCluster(redis)
    return DirectServer(redis)
