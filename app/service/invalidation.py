"""O(1) invalidation of cached answers: generation bumps in Redis.

A note write bumps the generation of its client and of its workspace (so both the client's
answers and the workspace-wide answers become misses); an operator's workspace-wide
invalidation bumps the workspace's epoch and generation. This module only talks to Redis:
what makes an invalidation durable when Redis cannot take it (the outbox, the retries, no
L1 while one is pending) is app/service/outbox.py.
"""

from __future__ import annotations

import uuid

from app.cache.keys import KeyBuilder
from app.cache.store import CacheUnavailable, RedisCache
from app.metrics import ServiceMetrics


class Invalidator:
    def __init__(self, cache: RedisCache, keys: KeyBuilder, metrics: ServiceMetrics) -> None:
        self._cache = cache
        self._keys = keys
        self._metrics = metrics

    def generation_keys(self, workspace_id: uuid.UUID, client_id: uuid.UUID | None) -> list[str]:
        """What to bump: a client's answers and the workspace-wide ones (a note of that
        client changed), or every answer of the workspace (`client_id` None)."""
        if client_id is None:
            return [self._keys.workspace_epoch(workspace_id),
                    self._keys.workspace_generation(workspace_id)]
        return [self._keys.client_generation(workspace_id, client_id),
                self._keys.workspace_generation(workspace_id)]

    async def apply(self, workspace_id: uuid.UUID, client_id: uuid.UUID | None) -> None:
        """Bump the generations (one MULTI: all keys share the workspace's hash tag).
        Raises CacheUnavailable when Redis cannot take it."""
        await self.bump_keys(self.generation_keys(workspace_id, client_id))

    async def bump_keys(self, generation_keys: list[str]) -> None:
        """Bump these generation keys in one MULTI (give them keys of one workspace: one
        hash tag). Raises CacheUnavailable."""
        await self._cache.bump_generations(generation_keys)

    async def note_changed(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID, reason: str
    ) -> bool:
        """The bump alone, counted, without the outbox (what the service benchmark times);
        False if Redis could not take it. The service goes through the outbox instead."""
        self._metrics.cache_invalidations.labels(workspace_id=str(workspace_id),
                                                 reason=reason).inc()
        try:
            await self.apply(workspace_id, client_id)
        except CacheUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        """Nothing to release (kept for callers that close what they build)."""
