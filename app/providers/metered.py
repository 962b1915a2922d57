"""Counts every upstream call and its cost, whichever provider is underneath."""

from __future__ import annotations

from collections.abc import Sequence

from app import contract
from app.metrics import ServiceMetrics
from app.providers.base import EmbedInput, Provider, ProviderError, RetrievedNote, Vector


class MeteredProvider:
    """A Provider that records `ai_agent_upstream_requests_total` and the cost counter."""

    def __init__(
        self, inner: Provider, metrics: ServiceMetrics, *, embed_price: float, chat_price: float
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._price = {contract.UPSTREAM_EMBED: embed_price, contract.UPSTREAM_CHAT: chat_price}

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def embed_model(self) -> str:
        return self._inner.embed_model

    @property
    def dimensions(self) -> int:
        return self._inner.dimensions

    def _count(self, kind: str, ok: bool) -> None:
        outcome = contract.OUTCOME_OK if ok else contract.OUTCOME_ERROR
        self._metrics.upstream_requests.labels(kind=kind, outcome=outcome).inc()
        # A failed call is still billed by most providers once it reached the model; we count
        # only successes so cost per query reflects answers, and errors show in the outcome.
        if ok:
            self._metrics.upstream_cost.labels(kind=kind).inc(self._price[kind])

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        try:
            vectors = await self._inner.embed(texts, input_type=input_type)
        except ProviderError:
            self._count(contract.UPSTREAM_EMBED, ok=False)
            raise
        self._count(contract.UPSTREAM_EMBED, ok=True)
        return vectors

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        try:
            answer = await self._inner.generate(question, notes)
        except ProviderError:
            self._count(contract.UPSTREAM_CHAT, ok=False)
            raise
        self._count(contract.UPSTREAM_CHAT, ok=True)
        return answer

    async def aclose(self) -> None:
        await self._inner.aclose()
