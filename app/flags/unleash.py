"""Flags from a real Unleash server through the official SDK (`UnleashClient`).

`is_enabled` costs ~50 µs a call, too much for every request on the hit path, so decisions
are cached: the global on/off flags once per toggle change, the L1 cohort once per workspace
per toggle change. The cache is keyed by the raw feature payload the SDK holds, so any
change the SDK applies (fetch, or load from its on-disk backup) invalidates every decision,
and every cached answer is what `is_enabled` itself would say.

The SDK's FileCache is the last-known store: a restart while Unleash is down loads the
flags it last fetched from disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from UnleashClient.cache import FileCache
from UnleashClient.clients.unleash_client import UnleashClient
from UnleashClient.constants import ETAG, FEATURES_URL
from UnleashClient.events import BaseEvent, UnleashEventType
from UnleashClient.utils import InstanceAllowType

from app import contract
from app.flags.base import OFF, FlagSnapshot, FlagSourceState
from app.settings import Settings

log = logging.getLogger(__name__)

# Beyond this many workspaces the decision table is simply rebuilt: it is a cache.
_MAX_CACHED_DECISIONS = 200_000


class _TrackingFileCache(FileCache):
    """The SDK's on-disk cache, noting when a fetch last succeeded (it stores an ETag then)."""

    def __init__(self, name: str, directory: str) -> None:
        super().__init__(name, directory=directory)
        self.last_success: float | None = None

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        if key in (ETAG, FEATURES_URL) and value:
            self.last_success = time.monotonic()


class _ToggleChanges:
    """Counts the SDK's FETCHED/READY events, which it emits only after its evaluation engine
    holds the new toggles. Reacting to the raw payload instead would race the SDK's thread:
    the payload lands in the cache a moment before the engine evaluates it."""

    def __init__(self) -> None:
        self.count = 0

    def on_event(self, event: BaseEvent) -> None:
        if event.event_type in (UnleashEventType.FETCHED, UnleashEventType.READY):
            self.count += 1  # one writer (the SDK's event thread); readers only compare


def l1_percent_from_payload(raw: Any, flag: str = contract.FLAG_L1_QUERY_RESULTS) -> int:
    """The rollout percentage the payload gives the L1 flag (for the gauge and /readyz).

    Decisions never rely on this number alone: a workspace's cohort always comes from
    `is_enabled`. A flag that is on with a strategy we do not parse reports 100.
    """
    try:
        payload = json.loads(raw) if isinstance(raw, str | bytes) else raw
        features = payload.get("features", []) if isinstance(payload, dict) else []
    except (ValueError, AttributeError):
        return 0
    for feature in features:
        if feature.get("name") != flag:
            continue
        if not feature.get("enabled", False):
            return 0
        strategies = feature.get("strategies") or []
        for strategy in strategies:
            if strategy.get("name") == "flexibleRollout":
                try:
                    return max(0, min(100, int(strategy.get("parameters", {}).get("rollout", 0))))
                except (TypeError, ValueError):
                    return 0
        return 100
    return 0


class UnleashFlagSource:
    def __init__(self, client: UnleashClient, cache: _TrackingFileCache, changes: _ToggleChanges,
                 *, refresh_seconds: float, check_seconds: float, stickiness: str) -> None:
        self._client = client
        self._cache = cache
        self._changes = changes
        self._seen_changes = -1  # evaluate on the first snapshot, whatever the SDK has
        self._stale_after = 3 * refresh_seconds
        self._check_seconds = check_seconds
        self._stickiness = stickiness
        self._payload: Any = None
        self._checked_at = float("-inf")
        self._snapshot = OFF
        self._decisions: dict[str, bool] = {}
        self._reported_state: FlagSourceState | None = None

    @classmethod
    async def start(cls, settings: Settings) -> UnleashFlagSource:
        if not settings.unleash_url:
            raise ValueError("UNLEASH_URL is not set")
        token = settings.unleash_api_token.get_secret_value() if settings.unleash_api_token else ""
        cache_dir = Path(settings.unleash_cache_dir)
        await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
        cache = _TrackingFileCache(f"{settings.unleash_app_name}-{settings.unleash_environment}",
                                   str(cache_dir))
        changes = _ToggleChanges()
        client = UnleashClient(
            url=settings.unleash_url,
            app_name=settings.unleash_app_name,
            environment=settings.unleash_environment,
            instance_id=settings.instance_name,
            refresh_interval=settings.unleash_refresh_seconds,
            custom_headers={"Authorization": token},
            request_timeout=2,
            request_retries=0,
            disable_metrics=True,
            disable_registration=True,
            cache=cache,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
            event_callback=changes.on_event,
        )
        # The first fetch is a blocking HTTP call: keep it off the event loop. If Unleash is
        # down the SDK falls back to the features it last stored on disk.
        await asyncio.to_thread(client.initialize_client)
        source = cls(client, cache, changes, refresh_seconds=settings.unleash_refresh_seconds,
                     check_seconds=settings.flag_cache_seconds, stickiness=settings.l1_stickiness)
        await source.snapshot()
        log.info("unleash flags: source=%s %s", source.state, source._snapshot)
        return source

    @property
    def state(self) -> FlagSourceState:
        if self._payload is None:
            return "defaults"
        success = self._cache.last_success
        if success is not None and time.monotonic() - success <= self._stale_after:
            return "unleash"
        return "last-known"

    async def snapshot(self) -> FlagSnapshot:
        now = time.monotonic()
        if now - self._checked_at < self._check_seconds:
            return self._snapshot
        self._checked_at = now
        changes = self._changes.count
        if changes != self._seen_changes:
            self._seen_changes = changes
            self._payload = self._cache.get(FEATURES_URL)
            self._decisions = {}
            self._snapshot = self._evaluate()
        state = self.state
        if self._snapshot.source != state and self._payload is not None:
            self._snapshot = FlagSnapshot(self._snapshot.shadow, self._snapshot.l2,
                                          self._snapshot.l1_percent, state)
        if state != self._reported_state:
            level = logging.INFO if state == "unleash" else logging.WARNING
            log.log(level, "unleash flag source: %s -> %s", self._reported_state or "start", state)
            self._reported_state = state
        return self._snapshot

    def _evaluate(self) -> FlagSnapshot:
        if not self._payload:
            return OFF
        return FlagSnapshot(
            shadow=bool(self._client.is_enabled(contract.FLAG_SHADOW_MODE, {})),
            l2=bool(self._client.is_enabled(contract.FLAG_L2_EMBEDDINGS, {})),
            l1_percent=l1_percent_from_payload(self._payload),
            source=self.state,
        )

    def l1_enabled_for(self, snapshot: FlagSnapshot, workspace_id: str) -> bool:
        decision = self._decisions.get(workspace_id)
        if decision is None:
            if len(self._decisions) >= _MAX_CACHED_DECISIONS:
                self._decisions = {}
            decision = bool(self._client.is_enabled(
                contract.FLAG_L1_QUERY_RESULTS, {self._stickiness: workspace_id}
            ))
            self._decisions[workspace_id] = decision
        return decision

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.destroy)
