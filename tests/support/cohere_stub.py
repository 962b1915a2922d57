"""A local HTTP server that speaks Cohere's v2 embed/chat API, for end-to-end provider tests.

It is a real server (Starlette on uvicorn, in a background thread, on a free 127.0.0.1 port)
so the real `cohere` SDK, httpx and our retry/timeout code are all exercised over TCP.

    with running_cohere_stub() as stub:
        provider = CohereProvider(api_key="k", base_url=stub.base_url, ...)
        stub.fail("embed", 429, times=2, retry_after="1")   # then succeed
        stub.delay("chat", 30)                              # answer slowly
        stub.corrupt_embeddings(dimensions=7)               # wrong shape
        stub.requests("embed")                              # what it received

Embeddings are deterministic (seeded by a hash of the text), see `expected_embedding`.
Response and error bodies follow Cohere's v2 shapes (`embeddings_by_type`, assistant message
with text content items, `{"id", "message"}` errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Endpoint = Literal["embed", "chat"]
PATHS: dict[Endpoint, str] = {"embed": "/v2/embed", "chat": "/v2/chat"}
DEFAULT_DIMENSIONS = 1536  # embed-v4.0's default when no output_dimension is sent
DEFAULT_CHAT_REPLY = "The notes describe the client's progress."


def expected_embedding(text: str, dimensions: int) -> npt.NDArray[np.float32]:
    """The unit vector the stub returns for `text` (same text, same vector, in any request)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


@dataclass(slots=True)
class _Fault:
    status: int
    message: str
    remaining: int | None  # None: every request from now on
    retry_after: str | None


@dataclass(slots=True)
class _EndpointScript:
    faults: deque[_Fault] = field(default_factory=deque)
    delay_seconds: float = 0.0


class CohereStub:
    """The server's state and the knobs a test turns. Thread-safe: tests and server share it."""

    def __init__(self, *, expected_api_key: str | None = None) -> None:
        self._expected_api_key = expected_api_key
        self._lock = threading.Lock()
        self._scripts: dict[Endpoint, _EndpointScript] = {e: _EndpointScript() for e in PATHS}
        self._requests: list[RecordedRequest] = []
        self._chat_reply = DEFAULT_CHAT_REPLY
        self._override_dimensions: int | None = None
        self._drop_vectors = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None  # wakes delayed handlers on reset/stop
        self._port: int | None = None
        self._socket: socket.socket | None = None

    # --- Test controls ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the stub is not running")
        return f"http://127.0.0.1:{self._port}"

    def fail(
        self,
        endpoint: Endpoint,
        status: int,
        *,
        times: int | None = None,
        message: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `times` requests (all, if None) with `status`; queued after others."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for every request)")
        fault = _Fault(status, message or f"stub error {status}", times, retry_after)
        with self._lock:
            self._scripts[endpoint].faults.append(fault)

    def delay(self, endpoint: Endpoint, seconds: float) -> None:
        """Wait `seconds` before answering each request (cut short by `reset`/`stop`)."""
        with self._lock:
            self._scripts[endpoint].delay_seconds = seconds

    def corrupt_embeddings(self, *, dimensions: int | None = None, drop: int = 0) -> None:
        """Return vectors of `dimensions` instead of the requested size and/or `drop` fewer."""
        with self._lock:
            self._override_dimensions = dimensions
            self._drop_vectors = drop

    def set_chat_reply(self, text: str) -> None:
        with self._lock:
            self._chat_reply = text

    def requests(self, endpoint: Endpoint | None = None) -> list[RecordedRequest]:
        with self._lock:
            recorded = list(self._requests)
        if endpoint is None:
            return recorded
        return [r for r in recorded if r.path == PATHS[endpoint]]

    def count(self, endpoint: Endpoint) -> int:
        return len(self.requests(endpoint))

    def reset(self) -> None:
        """Forget requests and scripted behaviour; release any handler still delaying."""
        with self._lock:
            self._scripts = {e: _EndpointScript() for e in PATHS}
            self._requests.clear()
            self._chat_reply = DEFAULT_CHAT_REPLY
            self._override_dimensions = None
            self._drop_vectors = 0
        self._wake_delayed()

    # --- Lifecycle ---------------------------------------------------------------------------

    def start(self, *, ready_timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        # Binding here (port 0) and handing the socket to uvicorn leaves no window in which
        # another process could take the port between choosing and binding it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="cohere-stub", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self._server.started:
            # join() doubles as the poll interval and notices a server thread that died.
            self._thread.join(timeout=0.01)
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the Cohere stub server exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Cohere stub was not ready within {ready_timeout}s")

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._wake_delayed()
        self._server.should_exit = True
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()  # normally closed already by the server's shutdown; idempotent
        self._server = None
        self._thread = None
        self._port = None
        self._socket = None

    def __enter__(self) -> CohereStub:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- Server side (runs in the stub's thread and event loop) -------------------------------

    def _wake_delayed(self) -> None:
        loop, release = self._loop, self._release
        if loop is None or release is None or loop.is_closed():
            return

        def rotate() -> None:
            release.set()
            self._release = asyncio.Event()

        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(rotate)

    def _app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
            yield
            self._release.set()

        return Starlette(
            routes=[
                Route(PATHS["embed"], self._handle, methods=["POST"]),
                Route(PATHS["chat"], self._handle, methods=["POST"]),
            ],
            lifespan=lifespan,
        )

    async def _handle(self, request: Request) -> JSONResponse:
        endpoint: Endpoint = "embed" if request.url.path == PATHS["embed"] else "chat"
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        with self._lock:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._requests.append(RecordedRequest(request.url.path, headers, body))
            script = self._scripts[endpoint]
            delay = script.delay_seconds
            fault = script.faults[0] if script.faults else None
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    script.faults.popleft()
        if delay > 0 and self._release is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), timeout=delay)
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return _error(fault.status, fault.message, extra)
        expected_key = self._expected_api_key
        if expected_key is not None and headers.get("authorization") != f"Bearer {expected_key}":
            return _error(401, "invalid api token")
        if not isinstance(body, dict):
            return _error(400, "invalid request: body must be a JSON object")
        return self._embed(body) if endpoint == "embed" else self._chat(body)

    def _embed(self, body: dict[str, Any]) -> JSONResponse:
        texts = body.get("texts")
        if not body.get("model") or not body.get("input_type"):
            return _error(400, "invalid request: model and input_type are required")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "invalid request: texts must be a list of strings")
        if "float" not in (body.get("embedding_types") or ["float"]):
            return _error(400, "this stub only serves float embeddings")
        dimensions = int(body.get("output_dimension") or DEFAULT_DIMENSIONS)
        with self._lock:
            if self._override_dimensions is not None:
                dimensions = self._override_dimensions
            drop = self._drop_vectors
        vectors = [expected_embedding(t, dimensions).tolist() for t in texts]
        if drop:
            vectors = vectors[: max(0, len(vectors) - drop)]
        return JSONResponse({
            "id": str(uuid.uuid4()),
            "embeddings": {"float": vectors},
            "texts": texts,
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"input_tokens": sum(len(t.split()) for t in texts)},
            },
            "response_type": "embeddings_by_type",
        })

    def _chat(self, body: dict[str, Any]) -> JSONResponse:
        messages = body.get("messages")
        if not body.get("model") or not isinstance(messages, list) or not messages:
            return _error(400, "invalid request: model and messages are required")
        with self._lock:
            reply = self._chat_reply
        input_tokens = sum(len(str(m.get("content", "")).split()) for m in messages
                           if isinstance(m, dict))
        output_tokens = len(reply.split())
        return JSONResponse({
            "id": str(uuid.uuid4()),
            "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": reply}]},
            "usage": {
                "billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                "tokens": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
        })


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"id": str(uuid.uuid4()), "message": message}, status_code=status,
                        headers=headers)


@contextlib.contextmanager
def running_cohere_stub(*, expected_api_key: str | None = None) -> Iterator[CohereStub]:
    """Start a stub on a free loopback port for the duration of the `with` block."""
    stub = CohereStub(expected_api_key=expected_api_key)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
