"""O(1) invalidation of cached answers, and what happens when Redis cannot take it.

A note write bumps the generation of its client and of its workspace (so both the client's
answers and the workspace-wide answers become misses). If Redis is unreachable at that
moment the write still succeeds — the database is the source of truth — but the bump is
kept and retried until it lands, and until then this replica serves no L1 answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from app.cache.keys import KeyBuilder
from app.cache.store import CacheUnavailable, RedisCache
from app.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(
        self,
        cache: RedisCache,
        keys: KeyBuilder,
        metrics: ServiceMetrics,
        *,
        retry_seconds: float = 0.5,
    ) -> None:
        self._cache = cache
        self._keys = keys
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._pending: dict[str, None] = {}  # ordered set of generation keys still to bump
        self._retry_task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    async def note_changed(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, reason: str
    ) -> bool:
        """A note of this client changed: its answers and the workspace-wide ones go stale."""
        keys = [
            self._keys.client_generation(workspace_id, client_id),
            self._keys.workspace_generation(workspace_id),
        ]
        return await self._bump(workspace_id, keys, reason)

    async def workspace(self, workspace_id: uuid.UUID, reason: str) -> bool:
        """Every cached answer of the workspace goes stale (operator action)."""
        keys = [
            self._keys.workspace_epoch(workspace_id),
            self._keys.workspace_generation(workspace_id),
        ]
        return await self._bump(workspace_id, keys, reason)

    async def _bump(self, workspace_id: uuid.UUID, keys: list[str], reason: str) -> bool:
        self._metrics.cache_invalidations.labels(workspace_id=str(workspace_id),
                                                 reason=reason).inc()
        try:
            await self._cache.bump_generations(keys)
        except CacheUnavailable:
            log.error("invalidation could not reach Redis; retrying, L1 serving suspended")
            self._pending.update(dict.fromkeys(keys))
            self._ensure_retry()
            return False
        return True

    def _ensure_retry(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.create_task(self._retry_until_done())

    async def _retry_until_done(self) -> None:
        while self._pending:
            await asyncio.sleep(self._retry_seconds)
            batch = list(self._pending)
            try:
                await self._cache.bump_generations(batch)
            except CacheUnavailable:
                continue
            for key in batch:
                self._pending.pop(key, None)
            log.info("pending invalidations applied; L1 serving resumes")

    async def aclose(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
