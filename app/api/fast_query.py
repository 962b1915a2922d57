"""The query route's hot path as a pure ASGI middleware.

An L1 hit is one Redis call; FastAPI's per-request machinery (its middleware layers, routing,
dependency solving, response classes) cost about as much CPU again. This middleware answers
`POST /v1/workspaces/{uuid}/query` itself when the request is well formed, and hands
everything else — any other route, a malformed UUID or body, an oversized query — to the
FastAPI app, with the body replayed, so every error is still FastAPI's own answer (and the
route stays in the OpenAPI document). Exceptions from answering go to the app's exception
handlers, as they would from the route. It sits inside `Authenticate` (the token is verified
already) and answers only callers that `refusal` lets query this workspace: a refusal is
the route's to answer (404/403), in the route's words. The route in routes.py stays the
reference: the tests run the same requests through both and compare.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import audit_record, refusal
from app.api.schemas import QueryRequest, render_query_response
from app.auth.principal import Action

# Only the canonical hyphenated form: other spellings a UUID parser might accept (braces,
# urn:uuid:, no hyphens) are the FastAPI route's to accept or refuse.
_HEX = "[0-9a-fA-F]"
_QUERY_PATH = re.compile(
    rf"/v1/workspaces/({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})/query")
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


class QueryFastPath:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 exception_handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes
        self._handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _QUERY_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive, self._max_body_bytes)
        container = scope["app"].state.container
        request = _parse(match.group(1), body, container.settings.max_query_chars) \
            if complete else None
        if request is None:  # FastAPI answers it, with its own error shapes
            await self.app(scope, _replay(body, receive, complete), send)
            return
        workspace_id, parsed = request
        audit = audit_record(scope)
        principal = audit.principal if audit is not None else None
        if audit is None or principal is None or refusal(principal, workspace_id, Action.QUERY):
            await self.app(scope, _replay(body, receive, complete), send)
            return
        audit.action = Action.QUERY
        audit.workspace = workspace_id
        audit.client = parsed.client_id
        try:
            result = await container.queries.answer(workspace_id, parsed.client_id,
                                                    parsed.query)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = handler(Request(scope), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        audit.sources = tuple(source for source, _ in result.sources)
        payload = render_query_response(result)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(payload)).encode()),
                (b"content-type", b"application/json"),
                (b"cache-status", result.cache_status.encode()),
            ],
        })
        await send({"type": "http.response.body", "body": payload})

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None


def _parse(raw_workspace: str, body: bytes,
           max_query_chars: int) -> tuple[uuid.UUID, QueryRequest] | None:
    try:
        workspace_id = uuid.UUID(raw_workspace)
        request = QueryRequest.model_validate_json(body)
    except (ValueError, ValidationError):
        return None
    if len(request.query) > max_query_chars:
        return None
    return workspace_id, request


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, and whether it is all there (False: over `limit`, the rest unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # a disconnect: let the app see it
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > limit:
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive, complete: bool) -> Receive:
    """A receive() that first returns what was already read, then the rest of the stream."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": not complete}

    return replay
