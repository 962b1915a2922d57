"""No lost update: two PATCHes of one note that read the same version → one 200, one 409.

Both requests are held after their read (at the embedding, which every PATCH computes
between reading the note and writing it) until both have read, so every round really
overlaps; on SQLite the old read-compare-write in Python answered both 200 here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from app.db.models import note_text
from app.db.repository import ConcurrentUpdate, NoteFields, NotesRepository
from app.providers.base import EmbedInput, Vector
from app.providers.local import LocalProvider
from tests.integration import test_sessions_api
from tests.support.auth import auth

WS = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
AUTH = auth(WS)
CLIENT = uuid.UUID("00000000-0000-4000-8000-0000000000d2")
NOTE = {"client_id": str(CLIENT), "subjective": "Sleeps badly.", "objective": "Tired.",
        "assessment": "Insomnia.", "plan": "Sleep hygiene."}
FIELDS = ("subjective", "objective", "assessment", "plan")
ROUNDS = 12

database_url = test_sessions_api.database_url  # the fixture: SQLite, then PostgreSQL


class RendezvousProvider(LocalProvider):
    """Local provider whose note embeddings wait, while armed, until `parties` writers have
    all reached them (so all of them have read the note before any of them writes)."""

    def __init__(self) -> None:
        super().__init__(dimensions=256, latency_scale=0.0)
        self.barrier: asyncio.Barrier | None = None

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        if self.barrier is not None and input_type == "search_document":
            await asyncio.wait_for(self.barrier.wait(), timeout=10)
        return await super().embed(texts, input_type=input_type)

    def stored_form(self, fields: dict[str, Any]) -> bytes:
        text = note_text(*(fields[f] for f in FIELDS))
        return np.asarray(self.embed_now(text), dtype=np.float32).tobytes()


async def _stored(app: Any, note_id: str) -> tuple[dict[str, Any], bytes]:
    """The note as the database holds it, and its stored embedding."""
    notes: NotesRepository = app.state.container.notes
    record = await notes.get(WS, uuid.UUID(note_id))
    assert record is not None
    rows = [r for r in await notes.for_retrieval(WS, CLIENT) if r.id == record.id]
    fields = {f: getattr(record.fields, f) for f in FIELDS}
    return {**fields, "version": record.version}, rows[0].embedding


async def _race(client: httpx.AsyncClient, provider: RendezvousProvider, url: str,
                bodies: Sequence[dict[str, str]]) -> list[httpx.Response]:
    provider.barrier = asyncio.Barrier(len(bodies))
    try:
        return list(await asyncio.gather(
            *(client.patch(url, json=body, headers=AUTH) for body in bodies)))
    finally:
        provider.barrier = None


async def _create(client: httpx.AsyncClient) -> str:
    created = await client.post(f"/v1/workspaces/{WS}/sessions", json=NOTE, headers=AUTH)
    assert created.status_code == 201, created.text
    note_id: str = created.json()["id"]
    return note_id


@pytest.mark.parametrize("fields", [("plan", "plan"), ("plan", "subjective")],
                         ids=["same-field", "different-fields"])
async def test_two_concurrent_patches_one_wins_one_409_nothing_lost(
    service: Any, redis: Redis, database_url: str, fields: tuple[str, str]
) -> None:
    provider = RendezvousProvider()
    async with service(provider=provider, database_url=database_url) as (client, app):
        note_id = await _create(client)
        url = f"/v1/workspaces/{WS}/sessions/{note_id}"
        before, _ = await _stored(app, note_id)
        for round_no in range(ROUNDS):
            bodies = [{field: f"{field} from writer {w} in round {round_no}."}
                      for w, field in enumerate(fields)]
            responses = await _race(client, provider, url, bodies)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200, 409], [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 200).json()
            loser = next(r for r in responses if r.status_code == 409)
            assert "retry" in loser.json()["detail"]
            stored, embedding = await _stored(app, note_id)
            # The acknowledged value is the stored one: the winner's body on top of the
            # note as it was, at exactly one version later.
            assert stored == {**{f: winner[f] for f in FIELDS}, "version": winner["version"]}
            assert stored["version"] == before["version"] + 1
            won = bodies[[r.status_code for r in responses].index(200)]
            assert stored == {**before, **won, "version": stored["version"]}
            # The embedding is the stored text's, never the other writer's mix.
            assert embedding == provider.stored_form(stored)
            before = stored


async def test_patches_one_after_another_all_apply(service: Any, redis: Redis,
                                                   database_url: str) -> None:
    provider = RendezvousProvider()
    async with service(provider=provider, database_url=database_url) as (client, app):
        note_id = await _create(client)
        url = f"/v1/workspaces/{WS}/sessions/{note_id}"
        for version, body in enumerate(
                [{"plan": "CBT-I."}, {"subjective": "Sleeps better."}, {"objective": "Rested."}],
                start=2):
            response = await client.patch(url, json=body, headers=AUTH)
            assert response.status_code == 200 and response.json()["version"] == version
        stored, embedding = await _stored(app, note_id)
        assert stored == {"subjective": "Sleeps better.", "objective": "Rested.",
                          "assessment": "Insomnia.", "plan": "CBT-I.", "version": 4}
        assert embedding == provider.stored_form(stored)


async def test_the_repository_compares_the_version_in_the_update(
    service: Any, redis: Redis, database_url: str
) -> None:
    async with service(database_url=database_url) as (client, app):
        notes: NotesRepository = app.state.container.notes
        note_id = uuid.UUID(await _create(client))
        fields = NoteFields("s", "o", "a", "p")
        written = await notes.update(WS, note_id, fields, b"e1", expected_version=1)
        assert written is not None and written.version == 2 and written.fields == fields
        with pytest.raises(ConcurrentUpdate):
            await notes.update(WS, note_id, NoteFields("x", "x", "x", "x"), b"e2",
                               expected_version=1)
        assert await notes.update(uuid.uuid4(), note_id, fields, b"e3", expected_version=2) \
            is None
        assert await notes.update(WS, uuid.uuid4(), fields, b"e4", expected_version=2) is None
        kept = await notes.get(WS, note_id)
        assert kept is not None and kept.version == 2 and kept.fields == fields
        rows = await notes.for_retrieval(WS, CLIENT)  # PostgreSQL's database is per run
        assert [r.embedding for r in rows if r.id == note_id] == [b"e1"]
