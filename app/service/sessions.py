"""Session note writes: embed, store, then invalidate — in that order.

The database commit happens before the generation bump, and the bump before the response:
once a write has returned, every later query sees new generations, and any answer filled
under the old ones is refused by the compare-and-set.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np

from app.db.models import note_text
from app.db.repository import NoteFields, NoteRecord, NotesRepository
from app.providers.base import Provider
from app.service.invalidation import Invalidator


class NoteNotFound(Exception):
    pass


class SessionService:
    def __init__(
        self, *, provider: Provider, notes: NotesRepository, invalidator: Invalidator
    ) -> None:
        self._provider = provider
        self._notes = notes
        self._invalidator = invalidator

    async def _embed(self, fields: NoteFields) -> bytes:
        text = note_text(fields.subjective, fields.objective, fields.assessment, fields.plan)
        vector = (await self._provider.embed([text], input_type="search_document"))[0]
        return np.asarray(vector, dtype=np.float32).tobytes()

    async def create(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, fields: NoteFields
    ) -> NoteRecord:
        embedding = await self._embed(fields)  # before any write: a failure leaves nothing
        record = await self._notes.create(workspace_id, client_id, fields, embedding)
        await self._invalidator.note_changed(workspace_id, client_id, "session_create")
        return record

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
        record = await self._notes.update(
            workspace_id, note_id, fields, embedding, expected_version=current.version
        )
        if record is None:
            raise NoteNotFound(note_id)
        await self._invalidator.note_changed(workspace_id, record.client_id, "session_update")
        return record

    async def delete(self, workspace_id: uuid.UUID, note_id: uuid.UUID) -> None:
        record = await self._notes.delete(workspace_id, note_id)
        if record is None:
            raise NoteNotFound(note_id)
        await self._invalidator.note_changed(workspace_id, record.client_id, "session_delete")
