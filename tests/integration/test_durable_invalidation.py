"""Durable invalidation (issue 11, point 2): no stale answer after an acknowledged write, when
Redis is unreachable from the writer, across a kill -9 and a restart, and across replicas.

Real SQLite and PostgreSQL, real Redis behind a TCP proxy the tests cut (tests/support/
tcp_proxy.py), real service processes where a restart is needed. An answer is stale when it
cites a note version older than the acknowledged one (the local provider cites
`[session <id>, v<version>]`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from app.db.outbox import OutboxRepository
from app.db.repository import ConcurrentUpdate, NoteFields, NotesRepository
from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.services.common import Service
from tests.integration.test_invalidation_race import cited_versions
from tests.integration.test_query_api import add_note, ask
from tests.support.auth import SECRET, auth
from tests.support.service import (
    make_settings,
    metric_value,
    running_service,
    set_flags,
    wait_for,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

CLIENT = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
# Lease and poll of the service's defaults; the writer waits 1.1 leases when Redis is away.
LEASE = 1.0


def workspace() -> uuid.UUID:
    """A workspace of this test's own: PostgreSQL's database is shared by the whole run."""
    return uuid.uuid4()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def proxy(redis_service: Service) -> AsyncIterator[TcpProxy]:
    assert redis_service.port is not None
    started = await TcpProxy("127.0.0.1", redis_service.port).start()
    yield started
    await started.close()


async def outbox_rows(app: Any, ws: uuid.UUID) -> int:
    outbox = OutboxRepository(app.state.container.notes._engine)
    snapshot = await outbox.snapshot(1000)
    return sum(1 for i in snapshot.intents if i.workspace_id == ws)


async def generations(redis: Redis, ws: uuid.UUID) -> dict[bytes, bytes]:
    return {k: await redis.get(k) async for k in redis.scan_iter(f"ai-cache:gen:{{{ws}}}:*")}


def versions(response: httpx.Response) -> set[int]:
    return set(cited_versions(response.json()["answer"]).values())


# --- the write and its intent: one transaction ----------------------------------------


async def test_a_write_commits_its_intent_and_applies_it_at_once(
    service: Any, redis: Redis, database_url: str
) -> None:
    ws = workspace()
    await set_flags(redis, l1_percent=100)
    async with service(database_url=database_url) as (client, app):
        note = await add_note(client, ws, CLIENT, "Sleeping 6 hours.")
        before = await generations(redis, ws)
        url = f"/v1/workspaces/{ws}/sessions/{note['id']}"
        assert (await client.patch(url, json={"plan": "CBT-I."},
                                   headers=auth(ws))).status_code == 200
        after = await generations(redis, ws)
        assert before and all(after[k] != v for k, v in before.items())
        assert (await client.delete(url, headers=auth(ws))).status_code == 204

        async def removed() -> bool:  # applied by the writer, removed in the background
            return await outbox_rows(app, ws) == 0

        await wait_for(removed, timeout=10, what="the applied intents to be removed")
        assert metric_value(app, "ai_agent_cache_invalidation_intents_applied_total",
                            via="write") == 3
        assert metric_value(app, "ai_agent_cache_invalidation_intents_applied_total",
                            via="relay") == 0
        assert metric_value(app, "ai_agent_cache_invalidations_total", workspace_id=str(ws),
                            reason="session_update") == 1

        async def nothing_pending() -> bool:  # as of the replica's next outbox read
            return (await client.get("/readyz")).json()["l1_invalidations_pending"] is False

        await wait_for(nothing_pending, timeout=10, what="/readyz to see no pending intent")


async def test_a_failed_intent_insert_rolls_the_note_write_back(
    service: Any, redis: Redis, database_url: str
) -> None:
    """A real database failure between the note statement and the intent's insert (the
    outbox table is gone): 503, and neither the note change nor an intent is stored."""
    ws = workspace()
    async with service(database_url=database_url) as (client, app):
        note = await add_note(client, ws, CLIENT, "Sleeping 6 hours.")
        notes: NotesRepository = app.state.container.notes
        engine = notes._engine
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE cache_invalidation_outbox"))
        try:
            base = f"/v1/workspaces/{ws}/sessions"
            created = await client.post(base, json={"client_id": str(CLIENT), "plan": "x"},
                                        headers=auth(ws))
            patched = await client.patch(f"{base}/{note['id']}", json={"plan": "changed"},
                                         headers=auth(ws))
            deleted = await client.delete(f"{base}/{note['id']}", headers=auth(ws))
            assert [r.status_code for r in (created, patched, deleted)] == [503, 503, 503]
            kept = await notes.get(ws, uuid.UUID(note["id"]))
            assert kept is not None and kept.version == 1 and kept.fields.plan != "changed"
            assert [r.id for r in await notes.for_retrieval(ws, None)] == [kept.id]
        finally:
            await notes.create_schema()
        assert await outbox_rows(app, ws) == 0


async def test_an_error_after_the_note_statement_leaves_neither(
    service: Any, redis: Redis, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace()
    async with service(database_url=database_url) as (client, app):
        note_id = uuid.UUID((await add_note(client, ws, CLIENT, "Sleeping 6 hours."))["id"])
        notes: NotesRepository = app.state.container.notes

        def crash(*_: Any) -> None:
            raise RuntimeError("between the note and its intent")

        monkeypatch.setattr("app.db.repository.stage_intent", crash)
        fields = NoteFields("s", "o", "a", "p")
        with pytest.raises(RuntimeError):
            await notes.update_invalidating(ws, note_id, fields, b"e", 1, "session_update")
        with pytest.raises(RuntimeError):
            await notes.create_invalidating(ws, CLIENT, fields, b"e", "session_create")
        with pytest.raises(RuntimeError):
            await notes.delete_invalidating(ws, note_id, "session_delete")
        monkeypatch.undo()
        kept = await notes.get(ws, note_id)
        assert kept is not None and kept.version == 1 and kept.fields != fields
        assert len(await notes.for_retrieval(ws, None)) == 1
        # A lost version check (409) stages nothing either.
        with pytest.raises(ConcurrentUpdate):
            await notes.update_invalidating(ws, note_id, fields, b"e", 7, "session_update")
        assert await outbox_rows(app, ws) == 0


# --- Redis unreachable from the only replica --------------------------------------------


async def test_an_unapplied_invalidation_is_kept_fences_l1_and_is_retried(
    proxy: TcpProxy, redis: Redis, sqlite_url: str
) -> None:
    ws = workspace()
    await set_flags(redis, l1_percent=100)
    settings = make_settings(proxy.url(), sqlite_url, redis_timeout_seconds=0.2,
                             breaker_failure_threshold=2)
    async with running_service(settings) as (client, app):
        note = await add_note(client, ws, CLIENT, "Sleeping 6 hours.")
        await ask(client, ws, CLIENT)
        assert (await ask(client, ws, CLIENT)).json()["cache"]["l1"] == "hit"

        proxy.cut()
        patched = await client.patch(f"/v1/workspaces/{ws}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 8 hours."},
                                     headers=auth(ws))
        assert patched.status_code == 200 and patched.json()["version"] == 2
        assert await outbox_rows(app, ws) == 1
        assert (await client.get("/readyz")).json()["l1_invalidations_pending"] is True
        invalidated = await client.post(f"/v1/workspaces/{ws}/cache/invalidate",
                                        headers=auth(ws, role="operator"))
        assert invalidated.json() == {"scope": "workspace", "applied": False}
        assert await outbox_rows(app, ws) == 2

        proxy.restore()
        stale = 0

        async def served_fresh_from_l1() -> bool:
            nonlocal stale
            response = await ask(client, ws, CLIENT)
            stale += 1 in versions(response)
            return response.json()["cache"]["l1"] == "hit" and versions(response) == {2}

        await wait_for(served_fresh_from_l1, timeout=20, what="L1 back, with the new note")
        assert stale == 0
        assert await outbox_rows(app, ws) == 0
        assert metric_value(app, "ai_agent_cache_invalidation_intents_applied_total",
                            via="relay") == 2
        assert metric_value(app, "ai_agent_cache_invalidation_retries_total",
                            outcome="error") >= 1
        assert (await client.get("/readyz")).json()["l1_invalidations_pending"] is False


# --- two replicas, the writer cut from Redis --------------------------------------------


async def test_replica_b_serves_nothing_stale_while_the_writer_cannot_reach_redis(
    redis_service: Service, redis: Redis, database_url: str
) -> None:
    """Replica A writes through a proxy the test cuts; replica B reaches Redis through a
    proxy that first refuses B's own invalidations (so nothing but the fence protects B:
    the stale entry stays current in Redis), then lets them through (B's relay applies the
    intent A left). Queries sent to B after A's 200: none may cite the old version."""
    assert redis_service.port is not None
    proxy_a = await TcpProxy("127.0.0.1", redis_service.port).start()
    proxy_b = await TcpProxy("127.0.0.1", redis_service.port).start()
    ws = workspace()
    await set_flags(redis, l1_percent=100)
    common: dict[str, Any] = {"redis_timeout_seconds": 0.2}
    settings_a = make_settings(proxy_a.url(), database_url, breaker_failure_threshold=2,
                               **common)
    # B's breaker must not open on its refused bumps: its lookups are what could go stale.
    settings_b = make_settings(proxy_b.url(), database_url, breaker_failure_threshold=10_000,
                               **common)
    try:
        async with running_service(settings_a) as (a, app_a), \
                running_service(settings_b) as (b, app_b):
            note = await add_note(a, ws, CLIENT, "Sleeping 6 hours.")

            async def b_serves_v1_from_l1() -> bool:
                # Polled: on a loaded machine one fill or lookup may miss its 0.2 s budget.
                answer = await ask(b, ws, CLIENT)
                return answer.json()["cache"]["l1"] == "hit" and versions(answer) == {1}

            await wait_for(b_serves_v1_from_l1, timeout=20, what="B to serve v1 from L1")

            proxy_a.cut()
            proxy_b.refuse(b"MULTI")  # B's generation bumps fail; its lookups do not
            before = await generations(redis, ws)
            patched = await a.patch(f"/v1/workspaces/{ws}/sessions/{note['id']}",
                                    json={"subjective": "Sleeping 8 hours."}, headers=auth(ws))
            assert patched.status_code == 200 and patched.json()["version"] == 2

            answers: list[httpx.Response] = []
            # Phase 1: nobody can invalidate. The old entry is still current in Redis — a
            # replica without the fence would serve it — and B must not, through two more
            # refused attempts of B's relay.
            refused_at_ack = proxy_b.refused_count
            while proxy_b.refused_count < refused_at_ack + 2 or len(answers) < 5:
                answers.append(await ask(b, ws, CLIENT))
            assert await generations(redis, ws) == before
            assert answers and all(r.json()["cache"]["l1"] == "bypass" for r in answers)

            # Phase 2: B may invalidate again; its relay applies the intent A left.
            proxy_b.restore()

            async def fresh_hit_on_b() -> bool:
                answers.append(await ask(b, ws, CLIENT))
                latest = answers[-1]
                return latest.json()["cache"]["l1"] == "hit" and versions(latest) == {2}

            await wait_for(fresh_hit_on_b, timeout=20, what="B serving the new note from L1")
            stale = [r for r in answers if 1 in versions(r)]
            assert stale == [], f"{len(stale)} of {len(answers)} answers on B were stale"
            assert metric_value(app_b, "ai_agent_cache_invalidation_intents_applied_total",
                                via="relay") == 1
            assert metric_value(app_a, "ai_agent_cache_invalidation_intents_applied_total",
                                via="write") == 1  # the create, before the cut
            assert await outbox_rows(app_b, ws) == 0
    finally:
        await proxy_a.close()
        await proxy_b.close()


# --- kill -9 after an acknowledged write, restart ----------------------------------------


class ServiceProcess:
    """`python -m app` on a free port; stopped by its pid only."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(self.port)], cwd=REPO_ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.proc.poll() is None, "the service process exited"
            try:
                return (await self.http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(answers, timeout=60, what="the service process to be ready",
                       interval=0.1)

    async def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await self.http.aclose()


@pytest.fixture
def process_env(proxy: TcpProxy, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "REDIS_URL": proxy.url(), "AUTH_JWT_SECRET": SECRET,
           "SERVICE_API_TOKEN": "", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
           "AI_LATENCY_SCALE": "0", "LOCAL_EMBEDDING_DIMENSIONS": "256",
           "L1_AUDIT_SAMPLE_RATE": "0", "FLAG_CACHE_SECONDS": "0",
           "REDIS_TIMEOUT_SECONDS": "0.2", "BREAKER_RESET_SECONDS": "0.2",
           "LOG_FORMAT": "json"}


async def test_kill_9_after_an_acknowledged_write_with_redis_away_serves_nothing_stale(
    proxy: TcpProxy, redis: Redis, process_env: dict[str, str]
) -> None:
    ws = workspace()
    await set_flags(redis, l1_percent=100)
    first = ServiceProcess(process_env)
    try:
        await first.ready()
        note = await add_note(first.http, ws, CLIENT, "Sleeping 6 hours.")
        await ask(first.http, ws, CLIENT)
        cached = await ask(first.http, ws, CLIENT)
        assert cached.json()["cache"]["l1"] == "hit" and versions(cached) == {1}

        proxy.cut()
        patched = await first.http.patch(f"/v1/workspaces/{ws}/sessions/{note['id']}",
                                         json={"subjective": "Sleeping 8 hours."},
                                         headers=auth(ws))
        assert patched.status_code == 200 and patched.json()["version"] == 2
        await first.kill9()
    finally:
        await first.stop()
    proxy.restore()
    # What the issue found: the old answer is still in Redis under current generations.
    assert [k async for k in redis.scan_iter(f"ai-cache:l1:*{{{ws}}}*")]

    second = ServiceProcess(process_env)
    try:
        await second.ready()
        answers: list[httpx.Response] = []

        async def fresh_hit() -> bool:
            answers.append(await ask(second.http, ws, CLIENT))
            return answers[-1].json()["cache"]["l1"] == "hit" and versions(answers[-1]) == {2}

        await wait_for(fresh_hit, timeout=30, what="L1 back with the new note after restart")
        stale = [r for r in answers if 1 in versions(r)]
        assert stale == [], f"{len(stale)} of {len(answers)} answers after restart were stale"
        exported = (await second.http.get("/metrics")).text
        assert 'ai_agent_cache_invalidation_intents_applied_total{via="relay"} 1.0' in exported
    finally:
        await second.stop()
