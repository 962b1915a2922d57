"""The query route's hot path as a pure ASGI middleware, outermost of all.

An L1 hit is one Redis call; FastAPI's per-request machinery (its middleware layers, routing,
dependency solving, response classes) cost about as much CPU again. This layer sits in front
of the whole application, FastAPI's own `__call__` included (`ServiceApp.__call__`), answers
`POST /v1/workspaces/{uuid}/query` itself when the request is well formed, its bearer token
verifies and its caller may query the workspace, and hands everything else — any other route,
a missing or invalid token, a refusal, a malformed UUID or body, an oversized query — to
the application, with the body replayed, so every error is still the application's own answer
in its own words (401 with its audit line, 404/403, 422), and the route stays in the OpenAPI
document. Exceptions from answering go to the app's exception handlers, as they would from
the route. A request it answers gets the same audit line as through `Authenticate`. The
route in routes.py stays the reference: the tests run the same requests through both and
compare.
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

from app.api.auth import AuditRecord, bearer_token, refusal
from app.api.deps import ServiceContainer
from app.api.schemas import QueryRequest, render_query_response
from app.auth.principal import Action
from app.auth.verifier import AuthError

# Only the canonical hyphenated form: other spellings a UUID parser might accept (braces,
# urn:uuid:, no hyphens) are the FastAPI route's to accept or refuse.
_HEX = "[0-9a-fA-F]"
_QUERY_PATH = re.compile(
    rf"/v1/workspaces/({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})/query")
_JSON = (b"content-type", b"application/json")
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


class QueryFastPath:
    def __init__(self, app: ASGIApp, *, container: Callable[[], ServiceContainer],
                 max_body_bytes: int,
                 exception_handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self._container = container
        self._max_body_bytes = max_body_bytes
        self._handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _QUERY_PATH.fullmatch(scope["path"])
        token = bearer_token(scope["headers"]) if match is not None else None
        if match is None or token is None:
            await self.app(scope, receive, send)
            return
        container = self._container()
        try:
            principal = await container.verifier.verify(token)
        except AuthError:  # the application answers 401 and writes the audit line
            await self.app(scope, receive, send)
            return
        if _declared_length(scope["headers"]) > self._max_body_bytes:
            await self.app(scope, receive, send)  # BodyLimit answers 413, nothing read
            return
        body, complete = await _read_body(receive, self._max_body_bytes)
        request = _parse(match.group(1), body, container.settings.max_query_chars) \
            if complete else None
        if request is None or refusal(principal, request[0], Action.QUERY):
            # The application answers it, with its own error shapes and audit line.
            await self.app(scope, _replay(body, receive, complete), send)
            return
        workspace_id, parsed = request
        audit = AuditRecord(scope["method"], scope["path"], principal=principal,
                            action=Action.QUERY, workspace=workspace_id,
                            client=parsed.client_id)
        status = 500  # what the server answers if answering raises before responding
        try:
            status = await self._answer(scope, receive, send, container, audit, parsed)
        finally:
            audit.emit(status)

    async def _answer(self, scope: Scope, receive: Receive, send: Send,
                      container: ServiceContainer, audit: AuditRecord,
                      parsed: QueryRequest) -> int:
        assert audit.workspace is not None
        try:
            result = await container.queries.answer(audit.workspace, parsed.client_id,
                                                    parsed.query)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = handler(Request(scope), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return response.status_code
        audit.sources = tuple(source for source, _ in result.sources)
        payload = render_query_response(result)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(payload)).encode()),
                _JSON,
                (b"cache-status", result.cache_status.encode()),
            ],
        })
        await send({"type": "http.response.body", "body": payload})
        if result.after is not None:  # the client has its answer; now fill the caches
            await result.after()
        return 200

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


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0  # a malformed one: the server's
    return 0


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
