"""Flags from the local flag store: the Redis hash `ai-cache:flags` (DESIGN.md §3)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from app import contract
from app.flags.base import OFF, FlagSnapshot, FlagSourceState
from app.flags.bucketing import in_rollout

log = logging.getLogger(__name__)


def parse_local_flags(fields: Mapping[bytes | str, bytes | str]) -> FlagSnapshot:
    """Hash fields → snapshot. Missing or malformed fields mean off (fail safe)."""

    def text(name: str) -> str:
        raw = fields.get(name, fields.get(name.encode(), b""))
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def on(name: str) -> bool:
        return text(name).strip() == "1"

    try:
        percent = int(text(contract.LOCAL_FIELD_L1_PERCENT).strip() or 0)
    except ValueError:
        percent = 0
    if not 0 <= percent <= 100:
        percent = 0
    return FlagSnapshot(
        shadow=on(contract.LOCAL_FIELD_SHADOW),
        l2=on(contract.LOCAL_FIELD_L2),
        l1_percent=percent,
        source="local",
    )


class LocalFlagSource:
    """Reads the hash at most once per `cache_seconds`; keeps the last value if Redis fails.

    One key, one HGETALL: on a Redis Cluster the hash lives in one slot like any key.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        cache_seconds: float = 1.0,
        timeout_seconds: float = 0.2,
        group_id: str = contract.L1_ROLLOUT_GROUP_ID,
        key: str = contract.LOCAL_FLAGS_KEY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._group_id = group_id
        self._key = key
        self._clock = clock
        self._snapshot: FlagSnapshot = OFF
        self._read_at = float("-inf")
        self._have_read = False
        self._refresh: asyncio.Task[None] | None = None

    @property
    def state(self) -> FlagSourceState:
        return self._snapshot.source

    async def snapshot(self) -> FlagSnapshot:
        if self._clock() - self._read_at < self._cache_seconds:
            return self._snapshot
        # One refresh at a time; concurrent requests wait for it rather than stampeding Redis.
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._read())
        await asyncio.shield(self._refresh)
        return self._snapshot

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                fields = await self._redis.hgetall(self._key)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            fallback: FlagSourceState = "last-known" if self._have_read else "defaults"
            if self._snapshot.source != fallback:
                log.warning("flag store unreadable (%s); using %s flags", type(exc).__name__,
                            fallback)
            self._snapshot = FlagSnapshot(
                self._snapshot.shadow, self._snapshot.l2, self._snapshot.l1_percent, fallback
            ) if self._have_read else OFF
        else:
            self._snapshot = parse_local_flags(fields)
            self._have_read = True
        self._read_at = self._clock()

    def l1_enabled_for(self, snapshot: FlagSnapshot, workspace_id: str) -> bool:
        return in_rollout(workspace_id, self._group_id, snapshot.l1_percent)

    async def aclose(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
