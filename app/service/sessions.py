"""Session note writes: embed, then store the note with its invalidation intent, then apply.

The note and its intent commit in one transaction (the outbox); the generation bump comes
after the commit and before the response. Once a write has returned, either every later
query sees new generations — any answer filled under the old ones is refused by the
compare-and-set — or the bump is still pending and no replica serves L1 answers of that
workspace until it lands (app/service/outbox.py).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np

from app.db.models import note_text
from app.db.repository import NoteFields, NoteRecord, NotesRepository
from app.providers.base import Provider
from app.service.outbox import InvalidationOutbox


class NoteNotFound(Exception):
    pass


class SessionService:
    def __init__(
        self, *, provider: Provider, notes: NotesRepository, outbox: InvalidationOutbox
    ) -> None:
        self._provider = provider
        self._notes = notes
        self._outbox = outbox

    async def _embed(self, fields: NoteFields) -> bytes:
        text = note_text(fields.subjective, fields.objective, fields.assessment, fields.plan)
        vector = (await self._provider.embed([text], input_type="search_document"))[0]
        return np.asarray(vector, dtype=np.float32).tobytes()

    async def create(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, fields: NoteFields
    ) -> NoteRecord:
        embedding = await self._embed(fields)  # before any write: a failure leaves nothing
        written = await self._notes.create_invalidating(workspace_id, client_id, fields,
                                                        embedding, "session_create")
        assert written.intent is not None
        await self._outbox.after_commit(written.intent)
        return written.record

    async def get(self, workspace_id: uuid.UUID, note_id: uuid.UUID) -> NoteRecord:
        record = await self._notes.get(workspace_id, note_id)
        if record is None:
            raise NoteNotFound(note_id)
        return record

    async def update(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, changes: dict[str, str]
    ) -> NoteRecord:
        current = await self.get(workspace_id, note_id)
        fields = replace(current.fields, **changes)
        embedding = await self._embed(fields)
        written = await self._notes.update_invalidating(
            workspace_id, note_id, fields, embedding, current.version, "session_update"
        )
        if written is None:
            raise NoteNotFound(note_id)
        assert written.intent is not None
        await self._outbox.after_commit(written.intent)
        return written.record

    async def delete(self, workspace_id: uuid.UUID, note_id: uuid.UUID) -> None:
        written = await self._notes.delete_invalidating(workspace_id, note_id, "session_delete")
        if written is None:
            raise NoteNotFound(note_id)
        assert written.intent is not None
        await self._outbox.after_commit(written.intent)
