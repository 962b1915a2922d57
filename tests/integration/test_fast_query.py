"""The query fast path (app/api/fast_query.py) answers exactly as the FastAPI route does.

Two apps share one SQLite file and one Redis: one with QUERY_FAST_PATH on (the default), one
with it off (every query through the FastAPI route). Each request is sent twice to each app
from the same cache state (a miss, then a hit), and status, body and Cache-Status must be
the same. Bad input falls through to FastAPI, so its errors must be byte-for-byte FastAPI's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.types import Message, Receive, Scope, Send

from app.api.auth import AUDIT_LOGGER
from app.api.fast_query import QueryFastPath
from app.auth.principal import Principal, Role
from app.auth.verifier import AuthError
from app.service.query import LayerOutcome, QueryResult
from devstack.services.common import Service
from tests.integration.test_query_api import AUTH, CLIENT, QUESTION, WS, add_note
from tests.support.service import make_settings, running_service, set_flags, wait_for

pytestmark = pytest.mark.integration

MAX_CHARS = 200
Apps = tuple[httpx.AsyncClient, httpx.AsyncClient]


@pytest.fixture
async def apps(redis: Redis, redis_service: Service, tmp_path: Path) -> AsyncIterator[Apps]:
    database = f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"
    async with AsyncExitStack() as stack:
        clients = []
        for fast in (True, False):
            # Two apps and the test share one event loop: on a loaded machine a stall past
            # the default 1 s outbox lease would make one of them bypass L1 (as it should)
            # and the two paths differ for a reason that is not theirs.
            settings = make_settings(redis_service.url, database, query_fast_path=fast,
                                     max_query_chars=MAX_CHARS, outbox_lease_seconds=10.0)
            client, _ = await stack.enter_async_context(running_service(settings))
            clients.append(client)
        fast_client, route_client = clients
        await add_note(fast_client, WS, CLIENT, "Sleeping 6 hours, waking at 4 am.")
        await add_note(route_client, WS, CLIENT, "Appetite back to normal.")
        # A replica whose outbox read caught the other's intent between its commit and its
        # application serves no L1 for the workspace until its next read: wait for both.
        for client in clients:
            await wait_for(lambda c=client: no_invalidation_pending(c), timeout=20,
                           what="the notes' invalidations to be applied everywhere")
        yield fast_client, route_client


async def no_invalidation_pending(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).json()["l1_invalidations_pending"] is False


def seen(response: httpx.Response) -> tuple[int, Any, str | None, str | None]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return (response.status_code, body, response.headers.get("cache-status"),
            response.headers.get("content-type"))


async def twice_from_cold(redis: Redis, client: httpx.AsyncClient, path: str,
                          content: bytes) -> list[tuple[int, Any, str | None, str | None]]:
    await redis.flushall()
    await set_flags(redis, shadow=False, l2=True, l1_percent=100)
    headers = {"content-type": "application/json", **AUTH}
    return [seen(await client.post(path, content=content, headers=headers))
            for _ in range(2)]


VALID = [
    {"query": QUESTION, "client_id": str(CLIENT)},
    {"query": QUESTION, "client_id": None},
    {"query": QUESTION},
    {"query": "Sleep since sertraline? 😴 — ça va"},
    {"query": "é" * MAX_CHARS, "client_id": str(CLIENT)},
]
INVALID_BODIES = [
    b"{",
    b"",
    b"[]",
    json.dumps({"query": ""}).encode(),
    json.dumps({"query": "   "}).encode(),
    json.dumps({"query": "x" * (MAX_CHARS + 1)}).encode(),
    json.dumps({"query": QUESTION, "client_id": 5}).encode(),
    json.dumps({"query": QUESTION, "client_id": "not-a-uuid"}).encode(),
    json.dumps({"client_id": str(CLIENT)}).encode(),
    json.dumps({"query": 7}).encode(),
    json.dumps({"query": QUESTION, "extra": 1}).encode(),
]


@pytest.mark.parametrize("body", VALID, ids=lambda b: f"valid-{len(json.dumps(b))}")
async def test_valid_queries_answer_alike(apps: Apps, redis: Redis,
                                          body: dict[str, Any]) -> None:
    fast, route = apps
    content = json.dumps(body).encode()
    path = f"/v1/workspaces/{WS}/query"
    by_route = await twice_from_cold(redis, route, path, content)
    by_fast = await twice_from_cold(redis, fast, path, content)
    assert by_fast == by_route
    assert [r[0] for r in by_fast] == [200, 200]
    assert by_fast[1][1]["cache"]["l1"] == "hit"  # the second is served from L1


@pytest.mark.parametrize("content", INVALID_BODIES, ids=lambda b: b[:24].decode())
async def test_bad_bodies_get_fastapis_own_errors(apps: Apps, redis: Redis,
                                                  content: bytes) -> None:
    fast, route = apps
    path = f"/v1/workspaces/{WS}/query"
    by_route = await twice_from_cold(redis, route, path, content)
    by_fast = await twice_from_cold(redis, fast, path, content)
    assert by_fast == by_route
    assert all(400 <= status < 500 for status, *_ in by_fast), by_fast


@pytest.mark.parametrize("path", ["/v1/workspaces/not-a-uuid/query",
                                  f"/v1/workspaces/{{{WS}}}/query",
                                  f"/v1/workspaces/urn:uuid:{WS}/query",
                                  f"/v1/workspaces/{WS.hex}/query",
                                  f"/v1/workspaces/{str(WS).upper()}/query",
                                  f"/v1/workspaces/{WS}/query/",
                                  f"/v1/workspaces/{WS}/queries"])
async def test_other_spellings_of_the_path_answer_alike(apps: Apps, redis: Redis,
                                                       path: str) -> None:
    fast, route = apps
    content = json.dumps({"query": QUESTION}).encode()
    assert await twice_from_cold(redis, fast, path, content) == \
        await twice_from_cold(redis, route, path, content)


async def test_a_provider_failure_is_the_routes_503(redis: Redis, redis_service: Service,
                                                    tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"
    answers = []
    for fast in (True, False):
        settings = make_settings(redis_service.url, database, query_fast_path=fast,
                                 local_error_rate=1.0)
        async with running_service(settings) as (client, _):
            await set_flags(redis, shadow=False, l2=True, l1_percent=100)
            response = await client.post(f"/v1/workspaces/{WS}/query",
                                         json={"query": QUESTION}, headers=AUTH)
            answers.append((seen(response), response.headers.get("retry-after")))
    assert answers[0] == answers[1]
    assert answers[0][0][0] == 503 and answers[0][1] == "1"


# --- the middleware alone: body streaming and hand-over ----------------------------------


class Inner:
    """The app behind the fast path: records what it was given and answers 418."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Answers:
    def __init__(self) -> None:
        self.asked: list[tuple[uuid.UUID, uuid.UUID | None, str]] = []

    async def answer(self, workspace_id: uuid.UUID, client_id: uuid.UUID | None,
                     query: str) -> QueryResult:
        self.asked.append((workspace_id, client_id, query))
        return QueryResult(answer="ok", sources=[], l1=LayerOutcome("ai-l1", "hit"))


CLINICIAN = Principal(sub="someone", role=Role.CLINICIAN, workspaces=frozenset({WS}), via="jwt")
TOKEN = "a-token"


class Verifier:
    """Accepts one token, as `principal`; refuses anything else as TokenVerifier would."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    async def verify(self, token: str) -> Principal:
        if token != TOKEN:
            raise AuthError("invalid", "not the test's token")
        return self.principal


def fast_path(inner: Inner, answers: Answers, principal: Principal = CLINICIAN,
              max_body_bytes: int = 1024) -> QueryFastPath:
    container = SimpleNamespace(settings=SimpleNamespace(max_query_chars=MAX_CHARS),
                                queries=answers, verifier=Verifier(principal))
    return QueryFastPath(inner, container=lambda: container,  # type: ignore[arg-type,return-value]
                         max_body_bytes=max_body_bytes, exception_handlers={})


async def call(app: QueryFastPath, path: str, chunks: list[bytes], method: str = "POST",
               token: str | None = TOKEN) -> list[Message]:
    """`app` given the request as uvicorn hands it on, with `token` as its bearer token."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope: Scope = {"type": "http", "method": method, "path": path, "headers": headers}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
               for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_body_in_chunks_is_answered_by_the_fast_path() -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers)
    body = json.dumps({"query": QUESTION, "client_id": str(CLIENT)}).encode()
    sent = await call(app, f"/v1/workspaces/{WS}/query", [body[:7], body[7:30], body[30:]])
    assert answers.asked == [(WS, CLIENT, QUESTION)] and inner.bodies == []
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"cache-status"] == b"ai-l2; fwd=bypass, ai-l1; hit"
    assert json.loads(sent[1]["body"]) == {"answer": "ok", "sources": [],
                                           "cache": {"l1": "hit", "l2": "bypass"}}


@pytest.mark.parametrize("principal", [
    Principal(sub="elsewhere", role=Role.CLINICIAN, workspaces=frozenset({CLIENT}), via="jwt"),
    Principal(sub="a viewer", role="viewer", workspaces=frozenset({WS}), via="jwt"),
], ids=["other-workspace", "unknown-role"])
async def test_a_caller_who_may_not_query_here_is_left_to_the_route(
    principal: Principal,
) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers, principal)
    body = json.dumps({"query": QUESTION}).encode()
    sent = await call(app, f"/v1/workspaces/{WS}/query", [body])
    assert inner.bodies == [body] and answers.asked == []  # the route answers 404 / 403
    assert sent[0]["status"] == 418


@pytest.mark.parametrize("token", [None, "forged"], ids=["no-token", "invalid-token"])
async def test_a_request_without_a_valid_token_is_left_to_the_app(token: str | None) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers)
    body = json.dumps({"query": QUESTION}).encode()
    sent = await call(app, f"/v1/workspaces/{WS}/query", [body], token=token)
    assert inner.bodies == [body] and answers.asked == []  # Authenticate answers 401
    assert sent[0]["status"] == 418


async def test_the_fast_path_writes_the_audit_line_of_what_it_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers)
    body = json.dumps({"query": QUESTION, "client_id": str(CLIENT)}).encode()
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        await call(app, f"/v1/workspaces/{WS}/query", [body])
    [line] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert (line.action, line.workspace, line.client, line.sources, line.status,  # type: ignore[attr-defined]
            line.who) == ("query", str(WS), str(CLIENT), [], 200, "someone")  # type: ignore[attr-defined]


@pytest.mark.parametrize("chunks", [
    [b'{"query": "' + b"x" * 600, b"y" * 600 + b'"}'],  # over max_body_bytes
    [b"{", b'"query": ""}'],  # invalid
])
async def test_what_the_fast_path_declines_reaches_the_app_whole(chunks: list[bytes]) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers)
    sent = await call(app, f"/v1/workspaces/{WS}/query", chunks)
    assert inner.bodies == [b"".join(chunks)] and answers.asked == []
    assert sent[0]["status"] == 418


@pytest.mark.parametrize(("method", "path"), [("GET", f"/v1/workspaces/{WS}/query"),
                                              ("POST", f"/v1/workspaces/{WS}/sessions")])
async def test_other_routes_pass_through_untouched(method: str, path: str) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers)
    sent = await call(app, path, [b'{"query": "hi"}'], method=method)
    assert inner.bodies == [b'{"query": "hi"}'] and answers.asked == []
    assert sent[0]["status"] == 418


@pytest.mark.parametrize("body", VALID, ids=lambda b: f"valid-{len(json.dumps(b))}")
async def test_every_valid_body_above_is_answered_by_the_fast_path(body: dict[str, Any]) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers, max_body_bytes=MAX_CHARS * 6 + 1024)
    await call(app, f"/v1/workspaces/{WS}/query", [json.dumps(body).encode()])
    assert inner.bodies == [] and [a[2] for a in answers.asked] == [body["query"]]


@pytest.mark.parametrize("content", INVALID_BODIES, ids=lambda b: b[:24].decode())
async def test_every_bad_body_above_is_left_to_fastapi(content: bytes) -> None:
    inner, answers = Inner(), Answers()
    app = fast_path(inner, answers, max_body_bytes=MAX_CHARS * 6 + 1024)
    await call(app, f"/v1/workspaces/{WS}/query", [content])
    assert inner.bodies == [content] and answers.asked == []
