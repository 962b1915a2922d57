"""The query path: flags → one cache round trip → (embed → retrieve → generate) → fill.

This is the only place that decides what a request serves. The rules (DESIGN.md §3):
* shadow mode looks both layers up, counts hits/misses with mode="shadow", verifies what it
  found against the fresh result, and serves the fresh result;
* L2 on serves cached embeddings;
* L1 at p % serves cached answers to the workspaces in the sticky p % cohort.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from app import contract as c
from app.cache.codec import (
    CachedAnswer,
    CorruptValue,
    Envelope,
    SourceRef,
    decode_answer,
    decode_embedding,
    encode_answer,
    encode_embedding,
)
from app.cache.keys import KeyBuilder, L1Keys
from app.cache.store import CacheUnavailable, L1Lookup, RedisCache
from app.db.repository import NotesRepository
from app.flags.base import FlagSource
from app.metrics import ServiceMetrics
from app.providers.base import Provider, RetrievedNote, Vector
from app.service.invalidation import Invalidator
from app.service.retrieval import top_k
from app.settings import Settings

log = logging.getLogger(__name__)

# Cached and fresh embeddings of the same text agree to float16 precision (cos ≈ 0.99999);
# anything below this means the cache holds a different vector.
_EMBEDDING_MATCH_COSINE = 0.999


@dataclass(slots=True)
class LayerOutcome:
    """What one cache layer did for one request, for the body and the Cache-Status header."""

    name: str  # "ai-l1" | "ai-l2"
    status: str = "bypass"  # hit | miss | stale | bypass | shadow-hit | shadow-miss | error
    stored: bool = False

    def header(self) -> str:
        match self.status:
            case "hit":
                return f"{self.name}; hit"
            case "miss" | "stale":
                return f"{self.name}; fwd={self.status}" + ("; stored" if self.stored else "")
            case "shadow-hit" | "shadow-miss":
                return f"{self.name}; fwd=bypass; detail={self.status}"
            case "error":
                return f"{self.name}; fwd=bypass; detail=unavailable"
            case _:
                return f"{self.name}; fwd=bypass"


@dataclass(slots=True)
class QueryResult:
    answer: str
    sources: list[tuple[uuid.UUID, float]]
    l1: LayerOutcome = field(default_factory=lambda: LayerOutcome("ai-l1"))
    l2: LayerOutcome = field(default_factory=lambda: LayerOutcome("ai-l2"))

    @property
    def cache_status(self) -> str:
        # RFC 9211 lists the cache nearest the origin first: the embedding cache, then L1.
        return f"{self.l2.header()}, {self.l1.header()}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which layers this request looks up and which it serves from."""

    cohort: str
    l1_lookup: bool
    l1_serve: bool
    l2_lookup: bool
    l2_serve: bool


class QueryService:
    def __init__(
        self,
        *,
        settings: Settings,
        provider: Provider,
        notes: NotesRepository,
        cache: RedisCache,
        keys: KeyBuilder,
        envelope: Envelope,
        flags: FlagSource,
        metrics: ServiceMetrics,
        invalidator: Invalidator,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._provider = provider
        self._notes = notes
        self._cache = cache
        self._keys = keys
        self._envelope = envelope
        self._flags = flags
        self._metrics = metrics
        self._invalidator = invalidator
        self._rng = rng or random.Random()
        self._background: set[asyncio.Task[None]] = set()

    async def _plan(self, workspace_id: uuid.UUID) -> _Plan:
        flags = await self._flags.snapshot()
        in_cohort = flags.l1_percent > 0 and self._flags.l1_enabled_for(flags, str(workspace_id))
        # While an invalidation is still pending (Redis was unreachable when a note changed),
        # this replica must not serve answers that invalidation would have removed.
        l1_serve = in_cohort and not self._invalidator.pending
        return _Plan(
            cohort=c.COHORT_ON if in_cohort else c.COHORT_OFF,
            l1_lookup=l1_serve or flags.shadow,
            l1_serve=l1_serve,
            l2_lookup=flags.l2 or flags.shadow,
            l2_serve=flags.l2,
        )

    async def answer(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID | None, query: str
    ) -> QueryResult:
        started = time.perf_counter()
        plan = await self._plan(workspace_id)
        try:
            result = await self._answer(plan, workspace_id, client_id, query)
        except BaseException:
            self._metrics.queries.labels(outcome=c.OUTCOME_ERROR, l1=plan.cohort).inc()
            self._metrics.query_duration.labels(l1=plan.cohort).observe(
                time.perf_counter() - started
            )
            raise
        self._metrics.queries.labels(outcome=c.OUTCOME_OK, l1=plan.cohort).inc()
        self._metrics.query_duration.labels(l1=plan.cohort).observe(time.perf_counter() - started)
        return result

    def _count(self, layer: str, mode: str, ws: str, hit: bool) -> None:
        counter = self._metrics.cache_hits if hit else self._metrics.cache_misses
        counter.labels(workspace_id=ws, cache_layer=layer, mode=mode).inc()

    async def _answer(
        self, plan: _Plan, workspace_id: uuid.UUID, client_id: uuid.UUID | None, query: str
    ) -> QueryResult:
        ws = str(workspace_id)
        result_l1, result_l2 = LayerOutcome("ai-l1"), LayerOutcome("ai-l2")
        l1_keys = self._keys.l1(workspace_id, client_id, query) if plan.l1_lookup else None
        l2_key = self._l2_key(workspace_id, query) if plan.l2_lookup else None

        # One round trip for both layers; the generations come back with it, read before
        # any note is read (the order the compare-and-set fill relies on).
        lookup = await self._cache.lookup(l1_keys, l2_key)
        l1_mode = c.MODE_SERVE if plan.l1_serve else c.MODE_SHADOW
        cached_answer: CachedAnswer | None = None
        l1_found: L1Lookup | None = lookup.l1
        if l1_keys is not None:
            if lookup.l1_failed or l1_found is None:
                result_l1.status = "error"
            else:
                if l1_found.status == "hit" and l1_found.value is not None:
                    cached_answer = await self._open_answer(l1_keys.entry, l1_found.value)
                self._count(c.LAYER_QUERY_RESULT, l1_mode, ws, cached_answer is not None)
                if cached_answer is not None:
                    result_l1.status = "hit" if plan.l1_serve else "shadow-hit"
                elif plan.l1_serve:
                    result_l1.status = "stale" if l1_found.status == "stale" else "miss"
                else:
                    result_l1.status = "shadow-miss"

        if cached_answer is not None and plan.l1_serve and l1_found is not None:
            self._maybe_audit(workspace_id, client_id, query, l1_keys, l1_found, cached_answer)
            return QueryResult(
                answer=cached_answer.answer,
                sources=[(s.session_id, s.score) for s in cached_answer.sources],
                l1=result_l1,
                l2=result_l2,
            )

        vector = await self._embedding(plan, ws, l2_key, lookup.l2, lookup.l2_failed, query,
                                       result_l2)
        notes = await top_k(
            await self._notes.for_retrieval(workspace_id, client_id),
            vector,
            self._settings.retrieval_top_k,
        )
        text = await self._provider.generate(query, notes)
        fresh = CachedAnswer(
            answer=text,
            sources=tuple(SourceRef(n.session_id, n.version, n.score) for n in notes),
        )
        if cached_answer is not None and l1_keys is not None and l1_found is not None:
            # Shadow hit: would the cached answer have been right?
            await self._verify_answer(
                workspace_id, l1_keys, l1_found.generations, cached_answer, fresh
            )
        elif l1_keys is not None and l1_found is not None:
            result_l1.stored = await self._fill_l1(l1_keys, l1_found.generations, fresh)
        return QueryResult(
            answer=text,
            sources=[(n.session_id, n.score) for n in notes],
            l1=result_l1,
            l2=result_l2,
        )

    def _l2_key(self, workspace_id: uuid.UUID, query: str) -> str:
        scope = None if self._settings.l2_scope == "global" else workspace_id
        return self._keys.l2(scope, self._provider.embed_model, self._provider.dimensions, query)

    async def _embedding(
        self,
        plan: _Plan,
        ws: str,
        l2_key: str | None,
        found: bytes | None,
        failed: bool,
        query: str,
        outcome: LayerOutcome,
    ) -> Vector:
        if l2_key is None:
            return (await self._provider.embed([query], input_type="search_query"))[0]
        mode = c.MODE_SERVE if plan.l2_serve else c.MODE_SHADOW
        cached: Vector | None = None
        if failed:
            outcome.status = "error"
        else:
            if found is not None:
                cached = await self._open_embedding(l2_key, found)
            self._count(c.LAYER_EMBEDDING, mode, ws, cached is not None)
        if cached is not None and plan.l2_serve:
            outcome.status = "hit"
            return cached
        fresh = (await self._provider.embed([query], input_type="search_query"))[0]
        if cached is not None:
            outcome.status = "shadow-hit"
            self._verify_embedding(cached, fresh)
        elif not failed:
            outcome.status = "miss" if plan.l2_serve else "shadow-miss"
            outcome.stored = await self._fill_l2(l2_key, fresh)
        return fresh

    async def _open_answer(self, key: str, value: bytes) -> CachedAnswer | None:
        try:
            return decode_answer(self._envelope.open(value, key))
        except CorruptValue as exc:
            await self._drop_corrupt(key, c.LAYER_QUERY_RESULT, exc)
            return None

    async def _open_embedding(self, key: str, value: bytes) -> Vector | None:
        try:
            return decode_embedding(self._envelope.open(value, key), self._provider.dimensions)
        except CorruptValue as exc:
            await self._drop_corrupt(key, c.LAYER_EMBEDDING, exc)
            return None

    async def _drop_corrupt(self, key: str, layer: str, exc: CorruptValue) -> None:
        self._metrics.cache_errors.labels(cache_layer=layer, op="decode").inc()
        log.warning("dropping undecodable %s entry: %s", layer, exc)
        await self._cache.delete(key, layer)

    async def _fill_l2(self, key: str, vector: Vector) -> bool:
        value = self._envelope.seal(encode_embedding(vector, self._settings.l2_dtype), key)
        try:
            await self._cache.set_l2(key, value, self._settings.l2_ttl_seconds)
        except CacheUnavailable:
            return False
        return True

    async def _fill_l1(self, keys: L1Keys, generations: str, answer: CachedAnswer) -> bool:
        value = self._envelope.seal(encode_answer(answer), keys.entry)
        try:
            return await self._cache.fill_l1(
                keys, generations, value, self._settings.l1_ttl_seconds
            )
        except CacheUnavailable:
            return False

    def _verify_embedding(self, cached: Vector, fresh: Vector) -> None:
        denominator = float(np.linalg.norm(cached) * np.linalg.norm(fresh)) or 1e-12
        cosine = float(np.dot(cached, fresh)) / denominator
        result = c.VERIFY_MATCH if cosine >= _EMBEDDING_MATCH_COSINE else c.VERIFY_MISMATCH
        self._metrics.cache_verifications.labels(cache_layer=c.LAYER_EMBEDDING,
                                                 result=result).inc()

    async def _verify_answer(
        self,
        workspace_id: uuid.UUID,
        keys: L1Keys,
        generations: str,
        cached: CachedAnswer,
        fresh: CachedAnswer,
    ) -> None:
        """Compare by what answers are built from: the notes and their versions."""
        if cached.fingerprint() == fresh.fingerprint():
            result = c.VERIFY_MATCH
        else:
            # A note write between our lookup and our read of the notes is not evidence
            # against the cache: it invalidated the entry, as it should. Only judge when the
            # generations we looked up under are still current.
            if await self._cache.current_generations(keys) != generations:
                return
            current = await self._notes.current_versions(
                workspace_id, (s.session_id for s in cached.sources)
            )
            outdated = any(current.get(s.session_id) != s.version for s in cached.sources)
            result = c.VERIFY_STALE if outdated else c.VERIFY_MISMATCH
        self._metrics.cache_verifications.labels(cache_layer=c.LAYER_QUERY_RESULT,
                                                 result=result).inc()

    def _maybe_audit(
        self,
        workspace_id: uuid.UUID,
        client_id: uuid.UUID | None,
        query: str,
        keys: L1Keys | None,
        found: L1Lookup,
        cached: CachedAnswer,
    ) -> None:
        rate = self._settings.l1_audit_sample_rate
        if keys is None or rate <= 0 or self._rng.random() >= rate:
            return
        task = asyncio.create_task(
            self._audit(workspace_id, client_id, query, keys, found.generations, cached)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _audit(
        self,
        workspace_id: uuid.UUID,
        client_id: uuid.UUID | None,
        query: str,
        keys: L1Keys,
        generations: str,
        cached: CachedAnswer,
    ) -> None:
        """Re-derive which notes a served hit should have used (no generation: no chat cost)."""
        try:
            l2_key = self._l2_key(workspace_id, query)
            lookup = await self._cache.lookup(None, l2_key)
            vector = (
                await self._open_embedding(l2_key, lookup.l2) if lookup.l2 is not None else None
            )
            if vector is None:
                vector = (await self._provider.embed([query], input_type="search_query"))[0]
            notes: list[RetrievedNote] = await top_k(
                await self._notes.for_retrieval(workspace_id, client_id),
                vector,
                self._settings.retrieval_top_k,
            )
            fresh = CachedAnswer(
                answer="", sources=tuple(SourceRef(n.session_id, n.version, n.score) for n in notes)
            )
            await self._verify_answer(workspace_id, keys, generations, cached, fresh)
        except Exception:  # an audit must never hurt serving; it is evidence, not a path
            log.exception("L1 audit failed")

    async def drain(self) -> None:
        """Wait for background audits (used at shutdown and by tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
