"""The query path: flags → one cache round trip → (embed → retrieve → generate) → fill.

This is the only place that decides what a request serves. The rules (DESIGN.md §3):
* shadow mode looks both layers up, counts hits/misses with mode="shadow", verifies what it
  found against the fresh result, and serves the fresh result;
* L2 on serves cached embeddings;
* L1 at p % serves cached answers to the workspaces in the sticky p % cohort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from app import contract as c
from app.cache.codec import (
    CachedAnswer,
    CorruptValue,
    Envelope,
    OutdatedValue,
    SourceRef,
    StoredAnswer,
    answer_fragment,
    decode_answer,
    decode_embedding,
    encode_answer,
    encode_embedding,
)
from app.cache.keys import KeyBuilder, L1Keys, normalise
from app.cache.store import CacheUnavailable, L1Lookup, L2Write, RedisCache
from app.db.repository import NotesRepository
from app.flags.base import FlagSource
from app.ids import uuid_text
from app.metrics import ServiceMetrics
from app.providers.base import Provider, RetrievedNote, Vector
from app.service.budget import RateBudget
from app.service.outbox import InvalidationOutbox
from app.service.retrieval import top_k
from app.settings import Settings

log = logging.getLogger(__name__)

# Cached and fresh embeddings of the same text agree to float16 precision (cos ≈ 0.99999);
# anything below this means the cache holds a different vector.
_EMBEDDING_MATCH_COSINE = 0.999
# A float16 query vector (from L2) and a float32 one can order two notes whose scores are
# this close either way; a difference only there is not a wrong answer.
_BOUNDARY_SCORE_EPSILON = 1e-3


def same_sources(cached: StoredAnswer | CachedAnswer, fresh: CachedAnswer) -> bool:
    """Whether two answers were built from the same notes, up to a near-tie at the k-th
    place. A note present in both at different versions is never the same."""
    if cached.fingerprint() == fresh.fingerprint():
        return True
    old = {s.session_id: s for s in cached.sources}
    new = {s.session_id: s for s in fresh.sources}
    if any(old[i].version != new[i].version for i in old.keys() & new.keys()):
        return False
    only_old, only_new = old.keys() - new.keys(), new.keys() - old.keys()
    if len(only_old) != len(only_new):
        return False
    # Swapped notes must sit at the bottom of both lists with (nearly) the same scores.
    floor_old = min(s.score for s in cached.sources)
    floor_new = min(s.score for s in fresh.sources)
    swapped_old = sorted(old[i].score for i in only_old)
    swapped_new = sorted(new[i].score for i in only_new)
    return all(
        abs(a - b) <= _BOUNDARY_SCORE_EPSILON
        and a <= floor_old + _BOUNDARY_SCORE_EPSILON
        and b <= floor_new + _BOUNDARY_SCORE_EPSILON
        for a, b in zip(swapped_old, swapped_new, strict=True)
    )


@dataclass(slots=True)
class LayerOutcome:
    """What one cache layer did for one request, for the body and the Cache-Status header."""

    name: str  # "ai-l1" | "ai-l2"
    status: str = "bypass"  # hit | miss | stale | bypass | shadow-hit | shadow-miss | error

    def header(self) -> str:
        match self.status:
            case "hit":
                return f"{self.name}; hit"
            case "miss" | "stale":
                # No `stored`: the caches are filled after the response is sent.
                return f"{self.name}; fwd={self.status}"
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
    # The response's `answer` and `sources` members, rendered: by the fresh path (once, for
    # the response and the value it stores), or as stored (an L1 hit: then `answer` is
    # empty, the text is only in the fragment).
    body_fragment: bytes | None = None
    # What is left to do once the response is sent (filling the caches): whoever sends the
    # response awaits it afterwards. It never raises.
    after: Callable[[], Awaitable[None]] | None = None

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
        outbox: InvalidationOutbox,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._provider = provider
        self._notes = notes
        self._cache = cache
        self._keys = keys
        self._envelope = envelope
        self._flags = flags
        self._metrics = metrics
        self._outbox = outbox
        self._rng = rng or random.Random()
        self._clock = clock
        # Audits are evidence for the stale-rate gate, not a per-request duty: their CPU must
        # not grow with the hit rate (a few a second already give thousands per window).
        self._audit_budget = RateBudget(settings.l1_audit_max_per_second, clock())
        self._background: set[asyncio.Task[None]] = set()
        self._fills_running = 0

    async def _plan(self, workspace_id: uuid.UUID) -> _Plan:
        flags = await self._flags.snapshot()
        in_cohort = flags.l1_percent > 0 and self._flags.l1_enabled_for(
            flags, uuid_text(workspace_id))
        # While an invalidation of this workspace is pending (Redis was unreachable when a
        # note changed) or this replica's view of the outbox is too old to know, no L1 answer
        # may be served — nor looked up in shadow: an entry that is stale for a known reason
        # is no evidence against the cache.
        l1_allowed = (in_cohort or flags.shadow) and self._outbox.allows(workspace_id)
        l1_serve = in_cohort and l1_allowed
        return _Plan(
            cohort=c.COHORT_ON if in_cohort else c.COHORT_OFF,
            l1_lookup=l1_allowed,
            l1_serve=l1_serve,
            l2_lookup=flags.l2 or flags.shadow,
            l2_serve=flags.l2,
        )

    async def answer(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID | None, query: str
    ) -> QueryResult:
        started = time.perf_counter()
        # The cache key's canonical form is also what the provider sees: two questions that
        # share an entry send the same text upstream, so no input alone makes a cached value
        # disagree with a fresh one (a verification mismatch).
        query = normalise(query)
        plan = await self._plan(workspace_id)
        try:
            result = await self._answer(plan, workspace_id, client_id, query)
        except BaseException:
            self._metrics.queries_by[c.OUTCOME_ERROR, plan.cohort].inc()
            self._metrics.query_duration_by[plan.cohort].observe(time.perf_counter() - started)
            raise
        self._metrics.queries_by[c.OUTCOME_OK, plan.cohort].inc()
        self._metrics.query_duration_by[plan.cohort].observe(time.perf_counter() - started)
        return result

    def _count(self, layer: str, mode: str, ws: str, hit: bool) -> None:
        self._metrics.count_lookup(hit, ws, layer, mode)

    async def _answer(
        self, plan: _Plan, workspace_id: uuid.UUID, client_id: uuid.UUID | None, query: str
    ) -> QueryResult:
        ws = uuid_text(workspace_id)
        result_l1, result_l2 = LayerOutcome("ai-l1"), LayerOutcome("ai-l2")
        digest = self._keys.digest(query) if plan.l1_lookup or plan.l2_lookup else None
        l1_keys = self._keys.l1(workspace_id, client_id, query, digest) if plan.l1_lookup else None
        l2_key = self._l2_key(workspace_id, query, digest) if plan.l2_lookup else None

        # One round trip for both layers; the generations come back with it, read before
        # any note is read (the order the compare-and-set fill relies on). A served L1 hit
        # needs no embedding, so then the L2 value is not even sent back.
        lookup = await self._cache.lookup(l1_keys, l2_key, l2_on_l1_hit=not plan.l1_serve)
        l1_mode = c.MODE_SERVE if plan.l1_serve else c.MODE_SHADOW
        cached_answer: StoredAnswer | None = None
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
                answer="",
                sources=[(s.session_id, s.score) for s in cached_answer.sources],
                l1=result_l1,
                l2=result_l2,
                body_fragment=cached_answer.body_fragment,
            )

        vector, l2_write = await self._embedding(plan, ws, l2_key, lookup.l2, lookup.l2_failed,
                                                 query, result_l2)
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
        sources = [(n.session_id, n.score) for n in notes]
        fragment = answer_fragment(text, sources)
        after: Callable[[], Awaitable[None]] | None = None
        if cached_answer is not None and l1_keys is not None and l1_found is not None:
            # Shadow hit: would the cached answer have been right?
            await self._verify_answer(
                workspace_id, l1_keys, l1_found.generations, cached_answer, fresh
            )
        elif l1_keys is not None and l1_found is not None:
            # Filled once the response is sent. A late fill is safe: the compare-and-set
            # stores nothing if a write changed the generations since the lookup. The
            # embedding rides along with the answer: one round trip fills both layers.
            after = self._after_response(self._fill(l1_keys, l1_found.generations, fresh,
                                                    fragment, l2_write))
            l2_write = None
        if l2_write is not None:
            after = self._after_response(self._set_l2(l2_write))
        return QueryResult(
            answer=text,
            sources=sources,
            l1=result_l1,
            l2=result_l2,
            body_fragment=fragment,
            after=after,
        )

    def _after_response(self, fill: Callable[[], Awaitable[object]]
                        ) -> Callable[[], Awaitable[None]]:
        """`fill`, to run after the response, unless `CACHE_FILL_MAX_RUNNING` fills are
        running already (Redis is slow): then it is dropped, and counted. A dropped fill
        costs a later miss, never a wrong answer."""

        async def run() -> None:
            if self._fills_running >= self._settings.cache_fill_max_running:
                self._metrics.cache_fills_dropped.inc()
                return
            self._fills_running += 1
            try:
                await fill()
            except Exception:  # the response is gone: nobody else could hear of it
                log.exception("cache fill failed")
            finally:
                self._fills_running -= 1

        return run

    def _l2_key(self, workspace_id: uuid.UUID, query: str, digest: str | None = None) -> str:
        scope = None if self._settings.l2_scope == "global" else workspace_id
        return self._keys.l2(scope, self._provider.embed_model, self._provider.dimensions, query,
                             digest)

    async def _embedding(
        self,
        plan: _Plan,
        ws: str,
        l2_key: str | None,
        found: bytes | None,
        failed: bool,
        query: str,
        outcome: LayerOutcome,
    ) -> tuple[Vector, L2Write | None]:
        """The query's embedding, and the L2 write to make once the request is done."""
        if l2_key is None:
            return (await self._provider.embed([query], input_type="search_query"))[0], None
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
            return cached, None
        fresh = (await self._provider.embed([query], input_type="search_query"))[0]
        if cached is not None:
            outcome.status = "shadow-hit"
            self._verify_embedding(cached, fresh)
            return fresh, None
        if failed:
            return fresh, None
        outcome.status = "miss" if plan.l2_serve else "shadow-miss"
        value = self._envelope.seal(encode_embedding(fresh, self._settings.l2_dtype), l2_key)
        return fresh, L2Write(l2_key, value, self._settings.l2_ttl_seconds)

    async def _open_answer(self, key: str, value: bytes) -> StoredAnswer | None:
        try:
            return decode_answer(self._envelope.open(value, key))
        except OutdatedValue:  # written by an earlier version: a miss, the fill replaces it
            return None
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

    def _set_l2(self, write: L2Write) -> Callable[[], Awaitable[object]]:
        async def set_l2() -> None:
            with contextlib.suppress(CacheUnavailable):  # counted by the cache
                await self._cache.set_l2(write)

        return set_l2

    def _fill(
        self,
        keys: L1Keys,
        generations: str,
        answer: CachedAnswer,
        fragment: bytes,
        l2_write: L2Write | None,
    ) -> Callable[[], Awaitable[object]]:
        async def fill() -> None:
            value = self._envelope.seal(encode_answer(answer, fragment), keys.entry)
            with contextlib.suppress(CacheUnavailable):  # counted by the cache
                await self._cache.fill(keys, generations, value, self._settings.l1_ttl_seconds,
                                       l2_write)

        return fill

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
        cached: StoredAnswer,
        fresh: CachedAnswer,
    ) -> None:
        """Compare by what answers are built from: the notes and their versions."""
        if same_sources(cached, fresh):
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
            if outdated and await self._write_in_flight(workspace_id, keys, generations):
                return
            result = c.VERIFY_STALE if outdated else c.VERIFY_MISMATCH
        self._metrics.cache_verifications.labels(cache_layer=c.LAYER_QUERY_RESULT,
                                                 result=result).inc()

    async def _write_in_flight(self, workspace_id: uuid.UUID, keys: L1Keys,
                               generations: str) -> bool:
        """Newer notes than the served answer's, yet its generations still current: either
        a write committed and its invalidation is being applied right now (it commits with
        an outbox intent and bumps the generations before it is acknowledged: the answer
        was served before the write returned, which the guarantee allows), or the cache
        failed. Only the second is evidence of a stale answer."""
        if await self._outbox.write_in_flight(workspace_id):
            return True
        return await self._cache.current_generations(keys) != generations

    def _maybe_audit(
        self,
        workspace_id: uuid.UUID,
        client_id: uuid.UUID | None,
        query: str,
        keys: L1Keys | None,
        found: L1Lookup,
        cached: StoredAnswer,
    ) -> None:
        rate = self._settings.l1_audit_sample_rate
        if keys is None or rate <= 0 or self._rng.random() >= rate:
            return
        if not self._audit_budget.take(self._clock()):
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
        cached: StoredAnswer,
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
                await self._notes.for_retrieval(workspace_id, client_id, with_text=False),
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
