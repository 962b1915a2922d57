"""A loopback TCP proxy in front of a real Redis that can stop one command from arriving.

It lets a test kill a real controller process at an exact point of its protocol: between
the flag write and the state write. The controller stores its intent (a fenced script over
the `fence` and `intent` keys), writes the flags elsewhere, then commits (a fenced script
over the `state` and `log` keys, among others). The gate forwards everything, notices the
intent going through, and then holds the first commit: that command never reaches Redis, the
process waits for its answer, and the test kills it there.

It recognises the commands by the key names in the bytes a client sends, which is enough for
the controller's own scripts (their keys are in the first few hundred bytes of the command);
it is a test tool, not a Redis protocol parser.
"""

from __future__ import annotations

import asyncio
import contextlib

from rollout.adapters.redis_state import RolloutKeys

READ_SIZE = 65536


class RedisGate:
    def __init__(self, upstream_host: str, upstream_port: int, keys: RolloutKeys) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._intent = keys.intent.encode()
        self._log = keys.log.encode()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.intent_passed = asyncio.Event()
        self.commit_held = asyncio.Event()
        self.port = 0

    async def start(self) -> RedisGate:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def _holds(self, chunk: bytes) -> bool:
        """Hold the first commit after an intent: the write that would record the stage."""
        if self.commit_held.is_set():
            return False
        if self._intent in chunk and self._log not in chunk and b"to_stage" in chunk:
            self.intent_passed.set()
            return False
        return self.intent_passed.is_set() and self._log in chunk and self._intent in chunk

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        self._writers.update((client_writer, upstream_writer))
        up = asyncio.create_task(self._pump(client_reader, upstream_writer, gated=True))
        down = asyncio.create_task(self._pump(upstream_reader, client_writer, gated=False))
        self._tasks.update((up, down))
        for task in (up, down):
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    gated: bool) -> None:
        try:
            while chunk := await reader.read(READ_SIZE):
                if gated and self._holds(chunk):
                    self.commit_held.set()
                    await asyncio.Event().wait()  # this connection never moves again
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
