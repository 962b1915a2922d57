"""An httpx client for generating load: plain HTTP/1.1 keep-alive over asyncio streams (see
KeepAliveTransport for why not httpx's own pool)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import httpx

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, float]


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Plain HTTP/1.1 keep-alive over asyncio streams, one LIFO stack of idle connections
    per origin: O(1) per request however many are in flight.

    Why not httpx's default: httpcore's pool rescans every connection for every request and
    response (measured: 47 s of CPU in 80 s at 60 req/s with ~100 in flight), so under load
    the generator adds seconds of its own latency and then spirals. Enough HTTP for our own
    service: Content-Length or chunked bodies, no TLS, no proxies, no HTTP/2.
    """

    IDLE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive: never reuse what it is closing

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{url.scheme} is not supported", request=request)
        origin = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        timeout = timeouts.get("read") or timeouts.get("pool") or 30.0
        body = await request.aread()
        lines = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}"
                  for k, v in request.headers.raw]
        if not any(k.lower() == b"content-length" for k, _ in request.headers.raw) and body:
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            conn = self._pop(origin)
            pooled = conn is not None
            if conn is None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(*origin), timeout)
                except (OSError, TimeoutError) as exc:
                    raise httpx.ConnectError(str(exc) or type(exc).__name__,
                                             request=request) from exc
            else:
                reader, writer, _ = conn
            try:
                writer.write(payload)
                status, headers, content, keep = await asyncio.wait_for(
                    self._read_response(reader), timeout)
            except (ConnectionError, asyncio.IncompleteReadError, _ClosedEarly) as exc:
                writer.close()
                # A pooled connection the server closed before reading our request: retry
                # once on a new one. Anything else is the caller's error to count.
                if pooled and attempt == 0 and isinstance(exc, _ClosedEarly | ConnectionError):
                    continue
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            except TimeoutError as exc:
                writer.close()
                raise httpx.ReadTimeout("no response in time", request=request) from exc
            except BaseException:
                writer.close()  # cancelled mid-request: the connection is in an unknown state
                raise
            if keep:
                self._idle[origin].append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return httpx.Response(status, headers=headers, content=content, request=request)
        raise AssertionError("unreachable")

    def _pop(self, origin: tuple[str, int]) -> _Conn | None:
        stack = self._idle[origin]
        while stack:
            reader, writer, since = stack.pop()
            if time.monotonic() - since < self.IDLE_SECONDS and not reader.at_eof():
                return reader, writer, since
            writer.close()
        return None

    @staticmethod
    async def _read_response(
        reader: asyncio.StreamReader,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise _ClosedEarly("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[bytes, bytes]] = []
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers.append((name.strip(), value.strip()))
        fields = {k.lower(): v for k, v in headers}
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while size := int((await reader.readline()).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            await reader.readline()
            content = b"".join(chunks)
            headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
        else:
            content = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        keep = fields.get(b"connection", b"").lower() != b"close"
        return status, headers, content, keep

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for _, writer, _ in stack:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self._idle.clear()


class _ClosedEarly(Exception):
    pass


def load_client(timeout: float = 30.0) -> httpx.AsyncClient:
    """An httpx client for generating load (see KeepAliveTransport)."""
    return httpx.AsyncClient(transport=KeepAliveTransport(), timeout=timeout)


