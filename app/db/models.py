"""Session notes (SOAP) as stored rows."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SessionNote(Base):
    __tablename__ = "session_notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    client_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    subjective: Mapped[str] = mapped_column(Text, nullable=False, default="")
    objective: Mapped[str] = mapped_column(Text, nullable=False, default="")
    assessment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    plan: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # Bumped on every update: cached answers remember (id, version) of their sources, which
    # is how verification tells a stale answer from a merely different one.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_session_notes_workspace_client", "workspace_id", "client_id"),)

    def text(self) -> str:
        return note_text(self.subjective, self.objective, self.assessment, self.plan)


class InvalidationIntent(Base):
    """The outbox: an invalidation owed to Redis, committed in the note write's transaction.

    A row exists from the commit of the write that made cached answers stale until their
    generations have been bumped in Redis; then it is deleted. While a row exists for a
    workspace no replica serves L1 answers for it (app/service/outbox.py). `client_id` set:
    that client's and the workspace-wide answers; null: every answer of the workspace.
    """

    __tablename__ = "cache_invalidation_outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    client_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_cache_invalidation_outbox_created", "created_at"),)


def note_text(subjective: str, objective: str, assessment: str, plan: str) -> str:
    return (
        f"Subjective: {subjective}\nObjective: {objective}\n"
        f"Assessment: {assessment}\nPlan: {plan}"
    )
