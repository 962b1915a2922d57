"""The fault scenario: notes changed behind the service's back, so L1 serves stale answers
until the controller rolls back."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

from rollout.records import LogEntry

# The service's default embedding size (app.settings); the fault writes embeddings like it.
EMBED_DIMENSIONS = 1024


async def write_notes_bypassing_the_service(database_url: str,
                                            notes: dict[uuid.UUID, list[str]]) -> int:
    """What a back-office import does wrong: update notes through the database layer, not
    the service, so no generation is bumped and L1 keeps serving answers built from the old
    notes. Embeddings are recomputed like the service would (only the invalidation is
    missing). Returns how many notes changed."""
    import numpy as np

    from app.db.models import note_text
    from app.db.repository import ConcurrentUpdate, NotesRepository, make_engine
    from app.providers.local import LocalProvider

    repo = NotesRepository(make_engine(database_url))
    provider = LocalProvider(dimensions=EMBED_DIMENSIONS, latency_scale=0.0)
    changed = 0
    try:
        for workspace, note_ids in notes.items():
            for note_id in note_ids:
                for _ in range(3):  # the generator may PATCH the same note meanwhile
                    current = await repo.get(workspace, uuid.UUID(note_id))
                    if current is None:
                        break
                    fields = dataclasses.replace(
                        current.fields,
                        plan="EHR import: medication changed to lithium 300 mg; review risks.")
                    vector = provider.embed_now(note_text(
                        fields.subjective, fields.objective, fields.assessment, fields.plan))
                    embedding = np.asarray(vector, dtype=np.float32).tobytes()
                    try:
                        await repo.update(workspace, uuid.UUID(note_id), fields, embedding,
                                          expected_version=current.version)
                    except ConcurrentUpdate:
                        continue
                    changed += 1
                    break
    finally:
        await repo.aclose()
    return changed


@dataclass
class FaultState:
    stage: str
    workspaces: list[uuid.UUID] = field(default_factory=list)
    injected_at: float | None = None
    notes_changed: int = 0
    rollback: LogEntry | None = None
    rolled_back_at: float | None = None
    invalidated_at: float | None = None
    cycles_to_rollback: int | None = None  # evaluations from the fault to the rollback

