"""An offline, deterministic provider with the seed's latencies, for demos and tests.

Embeddings are signed feature hashes of words and word pairs (similar texts get similar
vectors, no model needed); answers are extractive: the note sentences that share the most
words with the question.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Sequence

import mmh3
import numpy as np

from app.providers.base import EmbedInput, ProviderError, RetrievedNote, Vector

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


class LocalProvider:
    """Feature-hashing embeddings and extractive answers, with simulated latency and errors."""

    def __init__(
        self,
        *,
        dimensions: int = 1024,
        embed_latency_seconds: float = 0.5,
        chat_latency_seconds: float = 1.25,
        latency_scale: float = 1.0,
        error_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._dimensions = dimensions
        self.embed_latency = embed_latency_seconds * latency_scale
        self.chat_latency = chat_latency_seconds * latency_scale
        self.error_rate = error_rate
        self._rng = rng or random.Random()

    @property
    def name(self) -> str:
        return "local"

    @property
    def embed_model(self) -> str:
        return "local-hash-v1"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def _upstream(self, latency: float, what: str) -> None:
        if latency > 0:
            await asyncio.sleep(latency)
        if self.error_rate and self._rng.random() < self.error_rate:
            raise ProviderError(f"local provider: injected {what} failure", temporary=True)

    def embed_now(self, text: str) -> Vector:
        """The embedding without latency or failures (used by tests and the benchmark)."""
        words = _words(text)
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        vector = np.zeros(self._dimensions, dtype=np.float32)
        for feature in features:
            h = mmh3.hash(feature, 17, signed=False)
            vector[h % self._dimensions] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        await self._upstream(self.embed_latency, "embed")
        return [self.embed_now(text) for text in texts]

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        await self._upstream(self.chat_latency, "chat")
        if not notes:
            return "No session notes match this question."
        asked = set(_words(question))
        lines = []
        for note in notes[:3]:
            sentences = [s.strip() for s in _SENTENCE.split(note.text) if s.strip()]
            best = max(sentences, key=lambda s: len(asked & set(_words(s))), default="")
            lines.append(f"- {best} [session {note.session_id}, v{note.version}]")
        return "From the session notes:\n" + "\n".join(lines)

    async def aclose(self) -> None:
        return None
