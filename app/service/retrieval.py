"""Top-k cosine retrieval over a client's (or a workspace's) note embeddings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from app.db.repository import NoteForRetrieval
from app.providers.base import RetrievedNote, Vector

# Below this many notes the matrix product takes well under a millisecond: not worth a
# thread hop. Above it, keep the event loop free.
_OFFLOAD_ABOVE = 2_000


def _top_k(notes: Sequence[NoteForRetrieval], query: Vector, k: int) -> list[RetrievedNote]:
    if not notes:
        return []
    matrix = np.stack([np.frombuffer(n.embedding, dtype=np.float32) for n in notes])
    if matrix.shape[1] != query.shape[0]:
        # Notes embedded by another model: incomparable, so nothing is relevant.
        return []
    norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    scores = (matrix @ query) / np.maximum(norms, 1e-12)
    # Ties are broken by note id, so equal scores (identical notes) rank the same way on
    # every request: verification compares rankings and must not see coin flips.
    order = sorted(range(len(notes)), key=lambda i: (-float(scores[i]), str(notes[i].id)))
    best = order[: min(k, len(notes))]
    return [
        RetrievedNote(notes[i].id, notes[i].version, float(scores[i]), notes[i].text)
        for i in best
    ]


async def top_k(notes: Sequence[NoteForRetrieval], query: Vector, k: int) -> list[RetrievedNote]:
    if len(notes) > _OFFLOAD_ABOVE:
        return await asyncio.to_thread(_top_k, notes, query, k)
    return _top_k(notes, query, k)
