"""redis-py used directly for one command: a connection, send the packed command, read the
reply — without `execute_command`'s retry, pool lock, events and response callbacks.

Safety, which redis-py's own machinery otherwise gives:
  * a reply must never be read by the next caller: any exception while sending or reading
    (a connection error, a timeout, a task cancelled mid-read) disconnects the connection
    before it goes back to the idle set (redis-py's `read_response` and
    `send_packed_command` already disconnect on BaseException; closing again is harmless),
    and a disconnected connection reconnects on its next send;
  * an error *reply* (NOSCRIPT, MOVED, ASK) was read whole: the connection stays usable;
  * on a cluster the slot map comes from the client, and a MOVED/ASK or a connection error
    hands the call to the full client once (it follows the redirection and re-reads the
    topology), so only the common case takes the short path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import AskError, ConnectionError, MovedError, ResponseError

Packed = list[bytes] | bytes


class DirectConnections:
    """Dedicated connections (made with the client's own connection settings), kept in a
    LIFO idle set; as many as there are concurrent callers."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        self._make = lambda: pool.connection_class(**pool.connection_kwargs)
        self._idle: deque[Connection] = deque()
        self._all: list[Connection] = []
        template = self._make()
        self.pack = template.pack_command  # redis-py's packer (hiredis when installed)

    async def execute(self, packed: Packed) -> Any:
        conn = self._idle.pop() if self._idle else self._new()
        try:
            await conn.send_packed_command(packed, check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            self._idle.append(conn)  # the whole error reply was read: still in step
            raise
        except BaseException:
            await conn.disconnect(nowait=True)  # a reply may be in flight: never reuse as is
            self._idle.append(conn)  # disconnected: reconnects on its next send
            raise
        self._idle.append(conn)
        return reply

    def _new(self) -> Connection:
        conn = self._make()
        self._all.append(conn)
        return conn

    async def close(self) -> None:
        for conn in self._all:
            await conn.disconnect()


class PoolConnection:
    """The same, with the connection taken from (and given back to) the client's pool for
    every call: the pool's lock and health bookkeeping, no retry or callbacks."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool

    async def execute(self, args: Sequence[Any]) -> Any:
        conn = await self._pool.get_connection()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self._pool.release(conn)


class DirectCluster:
    """Direct calls on a cluster: the key's master from the client's slot map, one of that
    node's connections; the full client for anything but a plain reply."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self.fallbacks = 0  # calls handed to the full client (the bench reports them)

    async def execute(self, key: str, packed: Packed, args: Sequence[Any]) -> Any:
        node = self._cluster.get_node_from_key(key)
        if node is None:
            self.fallbacks += 1
            return await self._cluster.execute_command(*args)
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            reply = await conn.read_response()
        except (MovedError, AskError):
            node.release(conn)
            self.fallbacks += 1
            return await self._cluster.execute_command(*args)  # follows it, updates the map
        except ResponseError:
            node.release(conn)
            raise
        except ConnectionError:
            await conn.disconnect(nowait=True)
            node.release(conn)
            self.fallbacks += 1
            return await self._cluster.execute_command(*args)  # re-reads the topology
        except BaseException:
            await conn.disconnect(nowait=True)
            node.release(conn)
            raise
        node.release(conn)
        return reply
