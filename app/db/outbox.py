"""The invalidation outbox in the notes database (table `cache_invalidation_outbox`).

A note write stages its intent with `stage_intent` inside its own transaction, so the write
and the intent commit together or not at all. The rest of this module reads what is still
pending and removes what has been applied to Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.errors import DatabaseError
from app.db.models import InvalidationIntent


@dataclass(frozen=True, slots=True)
class Intent:
    """One invalidation owed to Redis. `client_id` None: the whole workspace."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    client_id: uuid.UUID | None
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxSnapshot:
    """What one read of the outbox found.

    `intents` are the oldest pending intents (at most the limit asked for); `workspaces` is
    every workspace with a pending intent, complete even when `intents` was cut at the limit.
    """

    intents: tuple[Intent, ...]
    workspaces: frozenset[uuid.UUID]
    total: int


def stage_intent(
    session: AsyncSession, workspace_id: uuid.UUID, client_id: uuid.UUID | None, reason: str
) -> Intent:
    """Add an intent to the caller's transaction (it commits or rolls back with it).

    The id is made here, not by the database: no flush, so the row travels with the
    transaction's other statements at commit.
    """
    intent = Intent(uuid.uuid4(), workspace_id, client_id, reason)
    session.add(InvalidationIntent(
        id=intent.id, workspace_id=workspace_id, client_id=client_id, reason=reason,
        created_at=datetime.now(UTC),
    ))
    return intent


class OutboxRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def record(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID | None, reason: str
    ) -> Intent:
        """An intent on its own (an operator's invalidation: no note changes with it)."""
        try:
            async with self._sessions.begin() as session:
                return stage_intent(session, workspace_id, client_id, reason)
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc

    async def snapshot(self, limit: int) -> OutboxSnapshot:
        """The pending intents, oldest first. One small query while the outbox holds at most
        `limit` rows (the usual case: empty); two more when it holds more."""
        columns = (InvalidationIntent.id, InvalidationIntent.workspace_id,
                   InvalidationIntent.client_id, InvalidationIntent.reason)
        oldest = select(*columns).order_by(InvalidationIntent.created_at).limit(limit + 1)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(oldest)).all()
                if len(rows) <= limit:
                    intents = tuple(Intent(*row) for row in rows)
                    return OutboxSnapshot(intents, frozenset(i.workspace_id for i in intents),
                                          len(intents))
                workspaces = (await conn.execute(
                    select(InvalidationIntent.workspace_id).distinct())).scalars().all()
                total = (await conn.execute(
                    select(func.count()).select_from(InvalidationIntent))).scalar_one()
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
        return OutboxSnapshot(tuple(Intent(*row) for row in rows[:limit]),
                              frozenset(workspaces), int(total))

    async def pending_for(self, workspace_id: uuid.UUID) -> bool:
        """Whether an intent of this workspace is in the outbox: a write to its notes has
        committed and its invalidation is not yet applied (or its row not yet removed)."""
        query = (select(InvalidationIntent.id)
                 .where(InvalidationIntent.workspace_id == workspace_id).limit(1))
        try:
            async with self._engine.connect() as conn:
                return (await conn.execute(query)).first() is not None
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc

    async def remove(self, ids: Collection[uuid.UUID]) -> None:
        """Delete intents that have been applied (absent ones are fine: another replica
        applied and removed them first)."""
        if not ids:
            return
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    delete(InvalidationIntent).where(InvalidationIntent.id.in_(list(ids)))
                    .execution_options(synchronize_session=False))
        except SQLAlchemyError as exc:
            raise DatabaseError(type(exc).__name__) from exc
