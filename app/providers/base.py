"""The AI provider Protocol: embed texts, generate an answer from retrieved notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from uuid import UUID

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
EmbedInput = Literal["search_query", "search_document"]


@dataclass(frozen=True, slots=True)
class RetrievedNote:
    """One session note chosen by retrieval, with what generation needs to cite it."""

    session_id: UUID
    version: int
    score: float
    text: str


class ProviderError(Exception):
    """The provider failed. `temporary` errors (timeouts, 429, 5xx) may succeed if retried."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class Provider(Protocol):
    """What the query pipeline needs from an AI backend (Cohere, or the offline local one)."""

    @property
    def name(self) -> str: ...

    @property
    def embed_model(self) -> str:
        """Model name; part of every L2 key so that a model change never reuses vectors."""
        ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        """One float32 vector per text, in order. Raises ProviderError."""
        ...

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        """An answer to `question` grounded in `notes`. Raises ProviderError."""
        ...

    async def aclose(self) -> None: ...
