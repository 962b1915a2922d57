"""An L1 audit counts "stale" only when the cache failed, not when it caught a write in
flight: a note write commits with its outbox intent and bumps the generations before it is
acknowledged, so an answer served in between is served before the write returned — which
the guarantee allows — and the audit must not count it against the cache (a false stale
would feed the stale-rate gate). Real app, real Redis, real SQLite and PostgreSQL; the note's
new version is written straight to the database, as the write's commit leaves it before its
generation bump.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from app import contract
from app.cache.codec import CachedAnswer, SourceRef, decode_answer
from app.db.models import SessionNote
from app.db.outbox import OutboxRepository
from tests.integration.test_durable_invalidation import database_url  # noqa: F401 - fixture
from tests.integration.test_query_api import CLIENT, add_note, ask
from tests.support.service import metric_value, set_flags

pytestmark = pytest.mark.integration


def stale_count(app: Any) -> float:
    return metric_value(app, contract.METRIC_CACHE_VERIFICATIONS,
                        cache_layer=contract.LAYER_QUERY_RESULT, result=contract.VERIFY_STALE)


@pytest.mark.parametrize("intent_pending", [True, False], ids=["write-in-flight", "cache-failed"])
async def test_stale_is_counted_only_without_a_write_in_flight(
    service: Any, redis: Redis, database_url: str, intent_pending: bool,  # noqa: F811
) -> None:
    ws = uuid.uuid4()
    await set_flags(redis, l1_percent=100)
    async with service(database_url=database_url) as (client, app):
        note = await add_note(client, ws, CLIENT, "Sleeping 6 hours.")
        await ask(client, ws, CLIENT)
        container = app.state.container
        [entry] = [k async for k in redis.scan_iter(f"ai-cache:l1:*{{{ws}}}*")]
        generations, sealed = (await redis.get(entry)).split(b"\n", 1)
        cached = decode_answer(container.queries._envelope.open(sealed, entry.decode()))
        keys = container.queries._keys.l1(ws, CLIENT, "How has the patient's sleep changed "
                                                      "since starting sertraline?")
        assert keys.entry == entry.decode()

        # The write's commit: the note's new version (and, while in flight, its intent).
        engine = container.notes._engine
        async with engine.begin() as conn:
            await conn.execute(update(SessionNote).where(SessionNote.id == uuid.UUID(note["id"]))
                               .values(version=SessionNote.version + 1))
        if intent_pending:
            await OutboxRepository(engine).record(ws, CLIENT, "note_updated")
        fresh = CachedAnswer("", tuple(SourceRef(s.session_id, s.version + 1, s.score)
                                       for s in cached.sources))
        before = stale_count(app)
        await container.queries._verify_answer(ws, keys, generations.decode(), cached, fresh)
        assert stale_count(app) - before == (0 if intent_pending else 1)


async def test_write_in_flight_asks_the_database(service: Any, redis: Redis,
                                                 database_url: str) -> None:  # noqa: F811
    ws = uuid.uuid4()
    async with service(database_url=database_url) as (_, app):
        outbox = app.state.container.outbox
        assert await outbox.write_in_flight(ws) is False
        intent = await OutboxRepository(app.state.container.notes._engine).record(
            ws, None, "workspace_invalidated")
        assert await outbox.write_in_flight(ws) is True
        assert await outbox.write_in_flight(uuid.uuid4()) is False  # another workspace's
        await OutboxRepository(app.state.container.notes._engine).remove([intent.id])
        assert await outbox.write_in_flight(ws) is False
