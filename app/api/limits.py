"""A request body size limit, checked before anything parses the body.

Pure ASGI, outermost of the app's own middleware (ahead of the query fast path), so that no
route and no middleware ever holds more than `max_body_bytes` of a body in memory:

* a declared `Content-Length` above the limit is answered 413 at once, the body unread (the
  server enforces a declared length: the body cannot be longer than declared);
* a body of undeclared length (chunked) is counted as it is received; when it passes the
  limit, `BodyTooLarge` (a 413 `HTTPException`) is raised from `receive()`: FastAPI's
  exception handling answers it inside a route, this middleware when it escapes earlier
  (from the fast path's read).

Starlette's own `RequestBodyLimitMiddleware` (FastAPI's `max_body_size`) would do the
counting too, but it builds a responder object and wraps `send` on every request, and
answers in plain text; here a request with a declared length costs one pass over the
headers and an int compare, and is passed on untouched.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_detail(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


class BodyTooLarge(HTTPException):
    """Raised from receive() once a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        # The rest of the body stays unread: the connection cannot be reused.
        super().__init__(413, too_large_detail(limit), headers={"Connection": "close"})


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope["headers"])
        if declared is None:
            await self._counted(scope, receive, send)
        elif declared > self._limit:
            await self._refuse(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit
        size = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The same bytes FastAPI's HTTPException handler sends for BodyTooLarge.
        response = JSONResponse({"detail": too_large_detail(self._limit)}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length; None when there is none to trust (chunked, or malformed)."""
    length: int | None = None
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None  # chunked wins over any Content-Length (RFC 9112 §6.3)
    return length
