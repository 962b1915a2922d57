"""Reads and writes of session notes through SQLAlchemy 2 async (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.errors import DatabaseError
from app.db.models import Base, SessionNote, note_text
from app.db.outbox import Intent, stage_intent


@dataclass(frozen=True, slots=True)
class NoteFields:
    subjective: str
    objective: str
    assessment: str
    plan: str


@dataclass(frozen=True, slots=True)
class NoteRecord:
    id: uuid.UUID
    workspace_id: uuid.UUID
    client_id: uuid.UUID
    fields: NoteFields
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NoteForRetrieval:
    id: uuid.UUID
    version: int
    embedding: bytes
    text: str


@dataclass(frozen=True, slots=True)
class NoteWrite:
    """A committed note write, and the invalidation intent committed with it (if asked)."""

    record: NoteRecord
    intent: Intent | None


def _stage(
    session: AsyncSession, workspace_id: uuid.UUID, client_id: uuid.UUID, reason: str | None
) -> Intent | None:
    return None if reason is None else stage_intent(session, workspace_id, client_id, reason)


def _record(row: SessionNote) -> NoteRecord:
    return NoteRecord(
        id=row.id, workspace_id=row.workspace_id, client_id=row.client_id,
        fields=NoteFields(row.subjective, row.objective, row.assessment, row.plan),
        version=row.version, created_at=row.created_at, updated_at=row.updated_at,
    )


def make_engine(database_url: str) -> AsyncEngine:
    url = _async_url(database_url)
    if url.startswith("sqlite"):
        # SQLite serialises writers; a busy timeout turns contention into waiting, not errors.
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _async_url(url: str) -> str:
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://"),
                          ("sqlite://", "sqlite+aiosqlite://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


class NotesRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create_schema(self) -> None:
        """Create the tables that are missing. Replicas or workers starting together race
        for it: one that loses ("already exists") finds the tables made and goes on."""
        for attempt in (1, 2):
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(Base.metadata.create_all)
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 2:
                    raise

    async def ping(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except (SQLAlchemyError, OSError):
            return False

    async def create(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, fields: NoteFields, embedding: bytes
    ) -> NoteRecord:
        """Write a note and nothing else: no invalidation is owed (see `create_invalidating`)."""
        return (await self._create(workspace_id, client_id, fields, embedding, None)).record

    async def create_invalidating(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, fields: NoteFields,
        embedding: bytes, reason: str,
    ) -> NoteWrite:
        """Write a note and its invalidation intent in one transaction."""
        return await self._create(workspace_id, client_id, fields, embedding, reason)

    async def _create(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, fields: NoteFields, embedding: bytes,
        reason: str | None,
    ) -> NoteWrite:
        now = datetime.now(UTC)
        row = SessionNote(
            id=uuid.uuid4(), workspace_id=workspace_id, client_id=client_id,
            subjective=fields.subjective, objective=fields.objective,
            assessment=fields.assessment, plan=fields.plan, version=1,
            embedding=embedding, created_at=now, updated_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
                intent = _stage(session, workspace_id, client_id, reason)
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
        return NoteWrite(_record(row), intent)

    async def get(self, workspace_id: uuid.UUID, note_id: uuid.UUID) -> NoteRecord | None:
        try:
            async with self._sessions() as session:
                row = await session.get(SessionNote, note_id)
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
        if row is None or row.workspace_id != workspace_id:
            return None
        return _record(row)

    async def update(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, fields: NoteFields, embedding: bytes,
        expected_version: int,
    ) -> NoteRecord | None:
        """`update_invalidating` without an invalidation intent."""
        written = await self._update(workspace_id, note_id, fields, embedding, expected_version,
                                     None)
        return written.record if written is not None else None

    async def update_invalidating(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, fields: NoteFields, embedding: bytes,
        expected_version: int, reason: str,
    ) -> NoteWrite | None:
        """The update below, and its invalidation intent in the same transaction (staged only
        when the guarded UPDATE wrote the row: a 409 or a 404 leaves no intent)."""
        return await self._update(workspace_id, note_id, fields, embedding, expected_version,
                                  reason)

    async def _update(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, fields: NoteFields, embedding: bytes,
        expected_version: int, reason: str | None,
    ) -> NoteWrite | None:
        """Write all four fields and their embedding if the note is still at
        `expected_version`; None if there is no such note in the workspace.

        One conditional `UPDATE … WHERE id = ? AND workspace_id = ? AND version = ?`, judged
        by its row count: the database compares and writes atomically on SQLite (one writer
        at a time) and on PostgreSQL (a concurrent writer re-checks the WHERE against the
        committed row). So of two writers that read the same version exactly one wins and
        the other gets `ConcurrentUpdate` (409) — never two 200s with one value lost. The
        caller read `fields` at `expected_version` and embedded exactly them, so the stored
        text and the stored embedding always come from the same write.
        """
        now = datetime.now(UTC)
        guarded = (
            update(SessionNote)
            .where(SessionNote.id == note_id, SessionNote.workspace_id == workspace_id,
                   SessionNote.version == expected_version)
            .values(subjective=fields.subjective, objective=fields.objective,
                    assessment=fields.assessment, plan=fields.plan, embedding=embedding,
                    version=expected_version + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        try:
            async with self._sessions.begin() as session:
                result = cast("CursorResult[Any]", await session.execute(guarded))
                written = result.rowcount
                # Read back in the same transaction: our write is still the latest.
                row = await session.get(SessionNote, note_id, populate_existing=True)
                if row is None or row.workspace_id != workspace_id:
                    return None
                if written != 1:
                    raise ConcurrentUpdate(note_id)
                intent = _stage(session, workspace_id, row.client_id, reason)
                return NoteWrite(_record(row), intent)
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc

    async def delete(self, workspace_id: uuid.UUID, note_id: uuid.UUID) -> NoteRecord | None:
        """`delete_invalidating` without an invalidation intent."""
        written = await self._delete(workspace_id, note_id, None)
        return written.record if written is not None else None

    async def delete_invalidating(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, reason: str
    ) -> NoteWrite | None:
        """Delete a note and stage its invalidation intent in one transaction."""
        return await self._delete(workspace_id, note_id, reason)

    async def _delete(
        self, workspace_id: uuid.UUID, note_id: uuid.UUID, reason: str | None
    ) -> NoteWrite | None:
        try:
            async with self._sessions.begin() as session:
                row = await session.get(SessionNote, note_id)
                if row is None or row.workspace_id != workspace_id:
                    return None
                record = _record(row)
                await session.execute(delete(SessionNote).where(SessionNote.id == note_id))
                intent = _stage(session, workspace_id, record.client_id, reason)
            return NoteWrite(record, intent)
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc

    async def for_retrieval(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID | None, *, with_text: bool = True
    ) -> Sequence[NoteForRetrieval]:
        """Rows for ranking (Core, not ORM objects: this runs on every miss and audit).
        `with_text=False` skips the note texts, for callers that only rank."""
        ranked = select(SessionNote.id, SessionNote.version, SessionNote.embedding)
        texts = select(SessionNote.id, SessionNote.version, SessionNote.embedding,
                       SessionNote.subjective, SessionNote.objective, SessionNote.assessment,
                       SessionNote.plan)
        scope = [SessionNote.workspace_id == workspace_id]
        if client_id is not None:
            scope.append(SessionNote.client_id == client_id)
        try:
            async with self._engine.connect() as conn:
                if not with_text:
                    return [NoteForRetrieval(i, v, e, "")
                            for i, v, e in (await conn.execute(ranked.where(*scope))).all()]
                rows = (await conn.execute(texts.where(*scope))).all()
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
        return [NoteForRetrieval(i, v, e, note_text(s, o, a, p)) for i, v, e, s, o, a, p in rows]

    async def current_versions(
        self, workspace_id: uuid.UUID, note_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, int]:
        ids = list(note_ids)
        if not ids:
            return {}
        query = select(SessionNote.id, SessionNote.version).where(
            SessionNote.workspace_id == workspace_id, SessionNote.id.in_(ids)
        )
        try:
            async with self._sessions() as session:
                rows = (await session.execute(query)).all()
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
        return {row[0]: row[1] for row in rows}

    async def aclose(self) -> None:
        await self._engine.dispose()


class ConcurrentUpdate(Exception):
    """The note changed between read and write; the client should retry."""
