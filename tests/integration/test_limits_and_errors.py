"""Bad input and a dead database get clear 4xx/503 answers, never a 500 (issue 11, item 4-6).

* bodies above MAX_BODY_BYTES are refused (413) before they are read: a huge declared
  Content-Length at once, a chunked body as soon as it passes the limit — on a real server
  process over a socket, and in-process on every route, with and without the query fast path;
* a 422 echoes at most a short excerpt of the input;
* invalid UTF-8, lone surrogates and NUL in text → 422 with a message (SQLite and PostgreSQL);
* PostgreSQL stopped → 503 with Retry-After; L1 hits keep serving; the Redis breaker stays
  closed and no Redis error is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.api.schemas import MAX_NOTE_FIELD_CHARS
from app.providers.base import EmbedInput, Vector
from app.providers.local import LocalProvider
from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.readiness import wait_until
from devstack.services import postgres as pg
from devstack.services.common import Service
from tests.integration.test_query_api import AUTH, CLIENT, QUESTION, WS, add_note, ask
from tests.support.auth import SECRET, auth
from tests.support.service import (
    make_settings,
    metric_value,
    running_service,
    set_flags,
)

pytestmark = pytest.mark.integration

LIMIT = 1_048_576  # the default MAX_BODY_BYTES
QUERY = f"/v1/workspaces/{WS}/query"
SESSIONS = f"/v1/workspaces/{WS}/sessions"
JSON = {"content-type": "application/json"}


# --- a real server process: the body is refused, not read ------------------------------


@pytest.fixture
def server(redis_service: Service, redis: Redis, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_service.url, "AUTH_JWT_SECRET": SECRET,
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}",
           "AI_LATENCY_SCALE": "0", "LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                   .status_code == 200, timeout=30, what="the service to be ready")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not _complete(data):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: service", "Content-Type: application/json",
             *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("path", [QUERY, SESSIONS])
def test_a_huge_declared_body_is_refused_at_once_unread(server: int, path: str) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        # Claims 500 MB, sends a 64 KiB prefix and then nothing: only an answer that does
        # not wait for the body can arrive.
        sock.sendall(_head(path, "Content-Length: 524288000",
                           f"Authorization: {AUTH['Authorization']}"))
        sock.sendall(b'{"query": "' + b"x" * 65_536)
        response = _read_response(sock, time.monotonic() + 5)
    elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body == {"detail": f"request body is larger than the limit of {LIMIT} bytes"}
    assert elapsed < 2.0


@pytest.mark.parametrize("path", [QUERY, SESSIONS])
def test_a_chunked_body_is_cut_off_at_the_limit(server: int, path: str) -> None:
    chunk = b"x" * 65_536
    sent = 0
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(_head(path, "Transfer-Encoding: chunked",
                           f"Authorization: {AUTH['Authorization']}"))
        try:
            while sent < 8 * LIMIT:  # a stream that would go on to 8 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server has answered
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = _read_response(sock, time.monotonic() + 5)
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert json.loads(response.partition(b"\r\n\r\n")[2])["detail"].startswith(
        "request body is larger than the limit")
    # Answered once the limit was passed, not after reading the stream to its end (the
    # socket buffers between the two ends hold a few MB at most).
    assert sent < 8 * LIMIT


# --- in-process, through both query paths ----------------------------------------------


@pytest.fixture(params=[True, False], ids=["fast-path", "route"])
async def client(request: pytest.FixtureRequest, service: Any,
                 redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with service(query_fast_path=request.param) as (http, _):
        await set_flags(redis, l2=True, l1_percent=100)
        yield http


class Stream:
    """A request body that yields `prefix` and then `chunk` up to `total`, counting what
    the app pulled from it; `then_hang` makes it wait forever after the prefix."""

    def __init__(self, prefix: bytes, *, chunk: bytes = b"", total: int = 0,
                 then_hang: bool = False) -> None:
        self.prefix, self.chunk, self.total, self.then_hang = prefix, chunk, total, then_hang
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += len(self.prefix)
        yield self.prefix
        if self.then_hang:
            await asyncio.Event().wait()
        while self.pulled < self.total:
            self.pulled += len(self.chunk)
            yield self.chunk


@pytest.mark.parametrize("path", [QUERY, SESSIONS])
async def test_declared_length_over_the_limit_is_413_before_any_read(
    client: httpx.AsyncClient, path: str
) -> None:
    stream = Stream(b'{"query": "', then_hang=True)
    response = await asyncio.wait_for(client.post(
        path, content=stream, headers={**JSON, **AUTH, "content-length": str(500 * 2**20)}), 5)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body is larger than the limit of {LIMIT} bytes"}
    assert response.headers["connection"] == "close"
    assert stream.pulled == 0


@pytest.mark.parametrize("path", [QUERY, SESSIONS])
async def test_streamed_body_over_the_limit_is_413_once_past_it(
    client: httpx.AsyncClient, path: str
) -> None:
    stream = Stream(b'{"query": "', chunk=b"x" * 65_536, total=500 * 2**20)
    response = await client.post(path, content=stream, headers={**JSON, **AUTH})
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body is larger than the limit of {LIMIT} bytes"}
    assert stream.pulled <= LIMIT + 2 * 65_536


async def test_a_small_limit_applies_on_the_fast_path_read_too(service: Any,
                                                               redis: Redis) -> None:
    """MAX_BODY_BYTES below the fast path's own read size: the fast path's read is cut."""
    answers = []
    for fast in (True, False):
        async with service(query_fast_path=fast, max_body_bytes=1024) as (http, _):
            body = json.dumps({"query": "x" * 1500}).encode()
            stream = Stream(body[:100], chunk=body[100:], total=len(body))
            response = await http.post(QUERY, content=stream, headers={**JSON, **AUTH})
            answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1] == (
        413, {"detail": "request body is larger than the limit of 1024 bytes"})


async def test_the_largest_legitimate_note_fits_under_the_default_limit(
    client: httpx.AsyncClient,
) -> None:
    # 4 fields at the schema's maximum, of a character a client may send as a 12-byte
    # JSON escape (\ud83d\ude34): just under 1 MB of body.
    note = {f: "😴" * MAX_NOTE_FIELD_CHARS for f in ("subjective", "objective", "assessment",
                                                     "plan")}
    body = json.dumps({"client_id": str(CLIENT), **note}).encode()  # ensure_ascii: escapes
    assert 900_000 < len(body) <= LIMIT
    response = await client.post(SESSIONS, content=body, headers={**JSON, **AUTH})
    assert response.status_code == 201, response.text[:300]


# --- 422s echo only an excerpt ---------------------------------------------------------

BIG = 900_000  # under the body limit, far over every field's limit


@pytest.mark.parametrize(("path", "body"), [
    (QUERY, json.dumps({"query": "x" * BIG}).encode()),
    (QUERY, b'{"query": "' + b"x" * BIG),  # not even JSON
    (QUERY, json.dumps({"query": QUESTION, "y" * BIG: 1}).encode()),  # a huge unknown key
    (SESSIONS, json.dumps({"client_id": str(CLIENT), "plan": "x" * BIG}).encode()),
    (SESSIONS, json.dumps({"client_id": str(CLIENT), "plan": " " * 19_000,
                           "subjective": " " * 19_000}).encode()),  # blank: the whole body
    (SESSIONS, json.dumps({"client_id": "z" * BIG}).encode()),
], ids=["long-query", "invalid-json", "long-key", "long-note", "blank-note", "long-uuid"])
async def test_a_422_echoes_only_a_short_excerpt(client: httpx.AsyncClient, path: str,
                                                 body: bytes) -> None:
    response = await client.post(path, content=body, headers={**JSON, **AUTH})
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 2_000, response.text[:300]
    assert isinstance(response.json()["detail"], list)


async def test_an_excerpt_says_how_long_the_input_was(client: httpx.AsyncClient) -> None:
    response = await client.post(QUERY, json={"query": "x" * 150_000}, headers=AUTH)
    (error,) = response.json()["detail"]
    assert error["type"] == "string_too_long" and error["loc"] == ["query"]
    assert error["input"] == "x" * 80 + "… (150000 characters)"


# --- invalid UTF-8, lone surrogates, NUL: 422 on both paths and both databases ----------


async def _same_on_both_paths(service: Any, redis: Redis, body: bytes) -> httpx.Response:
    responses = []
    for fast in (True, False):
        async with service(query_fast_path=fast) as (http, _):
            await set_flags(redis, l2=True, l1_percent=100)
            responses.append(await http.post(QUERY, content=body, headers={**JSON, **AUTH}))
    fast_path, route = responses
    assert (fast_path.status_code, fast_path.json()) == (route.status_code, route.json())
    return route


@pytest.mark.parametrize(("body", "message"), [
    (b'{"query": "sleep \xff"}', "Invalid JSON: invalid unicode code point"),
    (b'{"query": "sleep \xed\xa0\x80"}', "Invalid JSON: invalid unicode code point"),
    (b'{"query": "sleep \\ud800"}', "Invalid JSON: unexpected end of hex escape"),
    (b'{"query": "sleep \\udc00 ok"}', "Invalid JSON: lone leading surrogate"),
    (b'{"query": "sleep \\u0000 ok"}', "text must not contain NUL (U+0000) characters"),
    (b'{"query": "sleep \x00 ok"}', "Invalid JSON"),  # a raw control character
], ids=["xff", "utf8-surrogate", "high-surrogate", "low-surrogate", "nul-escape", "nul-raw"])
async def test_bad_text_in_a_query_is_a_422_with_a_message(service: Any, redis: Redis,
                                                          body: bytes, message: str) -> None:
    response = await _same_on_both_paths(service, redis, body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["msg"].startswith(message), error


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


NOTE_BODIES = [
    (b'{"client_id": "%s", "plan": "sleep \xff"}', "Invalid JSON: the body is not valid UTF-8"),
    (b'{"client_id": "%s", "plan": "sleep \\ud800"}', "Input should be a valid string"),
    (b'{"client_id": "%s", "plan": "a \\udc00 b"}', "Input should be a valid string"),
    (b'{"client_id": "%s", "plan": "sleep \\u0000"}', "text must not contain NUL"),
]


@pytest.mark.parametrize(("template", "message"), NOTE_BODIES,
                         ids=["xff", "high-surrogate", "low-surrogate", "nul"])
async def test_bad_text_in_a_note_is_a_422_and_writes_nothing(
    service: Any, redis: Redis, database_url: str, template: bytes, message: str
) -> None:
    ws = uuid.uuid4()  # PostgreSQL's database is shared by the session's tests
    async with service(database_url=database_url) as (http, _):
        note = await add_note(http, ws, CLIENT, "Sleeping 6 hours.")
        base = f"/v1/workspaces/{ws}/sessions"
        created = await http.post(base, content=template % str(CLIENT).encode(),
                                  headers={**JSON, **auth(ws)})
        patch_body = template.replace(b'"client_id": "%s", ', b"")
        patched = await http.patch(f"{base}/{note['id']}", content=patch_body,
                                   headers={**JSON, **auth(ws)})
        for response in (created, patched):
            assert response.status_code == 422, response.text
            (error,) = response.json()["detail"]
            assert error["msg"].startswith(message), error
        after = (await http.get(f"{base}/{note['id']}", headers=auth(ws))).json()
        assert after["version"] == 1 and after["plan"] == note["plan"]


async def test_a_surrogate_is_echoed_as_its_escape(client: httpx.AsyncClient) -> None:
    body = b'{"client_id": "%s", "plan": "a \\ud800 b"}' % str(CLIENT).encode()
    response = await client.post(SESSIONS, content=body, headers={**JSON, **AUTH})
    assert response.json()["detail"][0]["input"] == "a \\ud800 b"


# --- PostgreSQL down: 503 with Retry-After, L1 keeps serving, Redis breaker untouched ----


@pytest.fixture
def doomed_postgres() -> Iterator[Service]:
    """A PostgreSQL of this test's own, which the test stops."""
    service = pg.start_private_postgres(name="postgres-doomed")
    yield service
    pg.stop(service)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "route"])
async def test_postgres_stopped_means_503_and_l1_hits_keep_serving(
    doomed_postgres: Service, redis_service: Service, redis: Redis, fast: bool
) -> None:
    url = pg.create_database(doomed_postgres, "aicache_doomed")
    settings = make_settings(redis_service.url, url, query_fast_path=fast,
                             breaker_failure_threshold=3)
    await set_flags(redis, l2=True, l1_percent=100)
    async with running_service(settings) as (http, app):
        note = await add_note(http, WS, CLIENT, "Sleeping 6 hours.")
        await ask(http, WS, CLIENT)
        assert (await ask(http, WS, CLIENT)).json()["cache"]["l1"] == "hit"

        # By pid: only the cluster this test started. In a thread: the service's loop must
        # keep running meanwhile, as it would in production (a loop frozen for longer than
        # OUTBOX_LEASE_SECONDS rightly stops serving L1 until it has read the outbox again).
        await asyncio.to_thread(pg.stop, doomed_postgres)

        async def one(i: int) -> httpx.Response:
            if i % 2:  # a cached answer
                return await http.post(QUERY, json={"query": QUESTION,
                                                     "client_id": str(CLIENT)}, headers=AUTH)
            return await http.post(QUERY, json={"query": f"question {i}?"},  # a miss
                                   headers=AUTH)

        responses = await asyncio.gather(*(one(i) for i in range(50)))
        for i, response in enumerate(responses):
            if i % 2:
                assert response.status_code == 200, response.text
                assert response.json()["cache"]["l1"] == "hit"
            else:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.json() == {
                    "detail": "the notes database is unavailable; try again"}
        for response in (
            await http.get(f"{SESSIONS}/{note['id']}", headers=AUTH),
            await http.post(SESSIONS, json={"client_id": str(CLIENT), "plan": "x"},
                            headers=AUTH),
            await http.patch(f"{SESSIONS}/{note['id']}", json={"plan": "y"}, headers=AUTH),
            await http.delete(f"{SESSIONS}/{note['id']}", headers=AUTH),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
        assert (await http.get("/readyz")).status_code == 503
        # Database errors are not Redis errors: nothing counted, the breaker stayed closed,
        # and L1 still serves after all of them.
        assert metric_value(app, "ai_agent_cache_circuit_open") == 0
        for op in ("lookup", "fill", "invalidate"):
            assert metric_value(app, "ai_agent_cache_errors_total", cache_layer="query_result",
                                op=op) == 0
        assert (await ask(http, WS, CLIENT)).json()["cache"]["l1"] == "hit"


class _BrokenDisk(LocalProvider):
    """An OSError that has nothing to do with the database: still a bug, still a 500."""

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        raise FileNotFoundError("model weights missing")


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "route"])
async def test_an_oserror_from_elsewhere_is_not_reported_as_the_database(
    service: Any, redis: Redis, fast: bool
) -> None:
    provider = _BrokenDisk(dimensions=256, embed_latency_seconds=0, chat_latency_seconds=0)
    async with service(provider=provider, query_fast_path=fast) as (http, _):
        with pytest.raises(FileNotFoundError):  # the in-process client re-raises a 500's cause
            await http.post(QUERY, json={"query": QUESTION}, headers=AUTH)
