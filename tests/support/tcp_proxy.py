"""A loopback TCP proxy in front of a real server (Redis) that a test can cut.

* `cut()`: every open connection is closed and new ones are closed as soon as they are
  accepted — the server is unreachable for the clients behind this proxy only, while it
  keeps running (and keeps its data) for everyone else.
* `refuse(marker)`: a connection that sends a chunk containing `marker` is closed before
  the chunk is forwarded (e.g. b"MULTI": the service's generation bumps fail while its
  lookups go through).
* `restore()`: forward everything again.

A test tool, not a protocol parser: markers are matched in the raw bytes a client sends.
Subclasses decide what happens to each chunk a client sends by overriding `_admit`
(tests.support.redis_gate holds one command there).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

READ_SIZE = 65536


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._refused: bytes | None = None
        self.port = 0
        self.refused_count = 0

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        self._cut = True
        for client, upstream in list(self._connections):
            client.close()
            upstream.close()
        self._connections.clear()

    def refuse(self, marker: bytes) -> None:
        self._refused = marker

    def restore(self) -> None:
        self._cut = False
        self._refused = None

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._connections.add(pair)
        for task in (asyncio.create_task(self._pump(reader, up_writer, pair, upstream=True)),
                     asyncio.create_task(self._pump(up_reader, writer, pair, upstream=False))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, chunk: bytes) -> bool:
        """Whether a chunk from a client goes on to the server; False closes its connection."""
        if self._refused and self._refused in chunk:
            self.refused_count += 1
            return False
        return True

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *,
                    upstream: bool) -> None:
        try:
            while chunk := await reader.read(READ_SIZE):
                if self._cut or (upstream and not await self._admit(chunk)):
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for side in pair:
                side.close()
            self._connections.discard(pair)
