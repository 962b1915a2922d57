"""The rollout flags in Unleash, through its Admin API (httpx, async).

`UnleashAdmin` reads the three flags of one project and environment and writes them into
the canonical shape described in `unleash_flags` (which also translates FlagSettings into
feature state and strategies); `unleash_http` does the requests and maps errors onto the
FlagWriter port's (TemporaryFlagError / PermanentFlagError; nothing is retried here).

`apply()` writes only what differs from the canonical shape, in an order that never
exposes more traffic than the old or the new setting: switch off before lowering, raise the
percentage before switching on, delete stray strategies after the PUT.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

from app.contract import ALL_FLAGS, DEFAULT_STICKINESS, FLAG_L1_QUERY_RESULTS
from rollout.adapters.unleash_flags import (
    DEFAULT_STRATEGY,
    FLEXIBLE_ROLLOUT,
    FlagState,
    Strategy,
    current_exposure,
    default_strategy_body,
    exposures_of,
    feature_body,
    is_canonical_rollout,
    rollout_body,
    rollout_to_keep,
    settings_of,
)
from rollout.adapters.unleash_http import DEFAULT_TIMEOUT, UnleashHttp
from rollout.core.flags import FlagSettings
from rollout.ports import ApplyResult, FlagWrite, PermanentFlagError
from rollout.redaction import masked

# The names this module had before it was split, for whoever imported them from here.
__all__ = [
    "DEFAULT_STRATEGY",
    "DEFAULT_TIMEOUT",
    "FLEXIBLE_ROLLOUT",
    "FlagState",
    "Strategy",
    "UnleashAdmin",
]


class UnleashAdmin:
    """Typed, idempotent access to the three rollout flags over Unleash's Admin API.

    `api_url` is the API root (`…/api`, as UNLEASH_URL is written for the SDKs) or the
    server base; `admin_token` must be an admin token. Implements rollout.ports.FlagWriter.
    """

    def __init__(
        self,
        api_url: str,
        admin_token: str,
        *,
        environment: str = "development",
        project: str = "default",
        stickiness: str = DEFAULT_STICKINESS,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = UnleashHttp(api_url, admin_token, timeout=timeout, transport=transport)
        self.api_url = self._http.api_url
        self.environment = environment
        self.project = project
        self.stickiness = stickiness

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"unleash {masked(self.api_url)} project={self.project} env={self.environment}"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- FlagWriter ---------------------------------------------------------------------

    async def read(self) -> FlagSettings:
        """The settings as the service would apply them now. Missing flags read as off."""
        states = {flag: await self.flag_state(flag) for flag in ALL_FLAGS}
        return settings_of(states)

    async def apply(self, desired: FlagSettings) -> ApplyResult:
        """Make Unleash hold `desired` (creating missing flags); write only what differs."""
        states = {flag: await self.flag_state(flag) for flag in ALL_FLAGS}
        before = settings_of(states)
        wanted = exposures_of(desired)
        # Shrinking changes first: a rollback never passes through a wider exposure.
        order = sorted(ALL_FLAGS, key=lambda f: wanted[f] > states[f].exposure)
        writes: list[FlagWrite] = []
        for flag in order:
            writes += await self._reconcile(states[flag], wanted[flag])
        return ApplyResult(before=before, after=desired, writes=tuple(writes))

    # --- single-flag operations ---------------------------------------------------------

    async def flag_state(self, flag: str, environment: str | None = None) -> FlagState:
        env = environment or self.environment
        feature = await self._http.request("GET", self._feature_path(flag), allow_404=True)
        if feature is None:
            return FlagState(flag=flag, environment=env, exists=False)
        for raw_env in feature.get("environments") or ():
            if raw_env.get("name") == env:
                return FlagState.from_api(flag, env, raw_env)
        raise PermanentFlagError(
            f"environment {env!r} is not enabled for project {self.project!r} in Unleash "
            f"(flag {flag!r}); enable it in the project or set UNLEASH_ENVIRONMENT",
            status=404, operation=f"GET {self._feature_path(flag)}",
        )

    async def set_enabled(self, flag: str, enabled: bool,
                          environment: str | None = None) -> tuple[FlagWrite, ...]:
        """Switch a flag on or off in one environment; no write if it already is."""
        state = await self.flag_state(flag, environment)
        self._require(state)
        if state.enabled == enabled:
            return ()
        return (await self._switch(state, enabled),)

    async def set_rollout(self, percent: int, *, flag: str = FLAG_L1_QUERY_RESULTS,
                          environment: str | None = None) -> tuple[FlagWrite, ...]:
        """Set the flexibleRollout percentage in place (one strategy, stickiness and groupId
        always sent); the environment switch is left as it is."""
        FlagSettings(l1_percent=percent)  # validates 0..100
        state = await self.flag_state(flag, environment)
        self._require(state)
        return tuple(await self._ensure_rollout_strategy(state, percent))

    async def bootstrap(self, environment: str | None = None) -> tuple[FlagWrite, ...]:
        """Create the three flags if missing and normalise their strategies, keeping what
        they currently expose (new flags start off). Running it twice writes nothing."""
        env = environment or self.environment
        states = {flag: await self.flag_state(flag, env) for flag in ALL_FLAGS}
        writes: list[FlagWrite] = []
        for flag in ALL_FLAGS:
            writes += await self._reconcile(states[flag], current_exposure(states[flag]))
        return tuple(writes)

    # --- reconciliation -----------------------------------------------------------------

    async def _reconcile(self, state: FlagState, exposure: int) -> list[FlagWrite]:
        writes: list[FlagWrite] = []
        if not state.exists:
            writes.append(await self._create(state.flag))
            state = await self.flag_state(state.flag, state.environment)
        on = exposure > 0
        if state.enabled and not on:
            writes.append(await self._switch(state, False))
        if state.flag == FLAG_L1_QUERY_RESULTS:
            writes += await self._ensure_rollout_strategy(state, exposure)
        else:
            writes += await self._ensure_default_strategy(state)
        if on and not state.enabled:
            writes.append(await self._switch(state, True))
        return writes

    async def _ensure_default_strategy(self, state: FlagState) -> list[FlagWrite]:
        if state.has_full_strategy:
            return []
        await self._http.request("POST", self._strategies_path(state),
                                 json=default_strategy_body())
        return [FlagWrite(state.flag, "add-strategy", f"{DEFAULT_STRATEGY} in {state.environment}")]

    async def _ensure_rollout_strategy(self, state: FlagState, percent: int) -> list[FlagWrite]:
        writes: list[FlagWrite] = []
        keep = rollout_to_keep(state.strategies)
        if keep is None:
            created = await self._http.request(
                "POST", self._strategies_path(state),
                json=rollout_body(percent, self.stickiness, None))
            writes.append(FlagWrite(
                state.flag, "add-strategy",
                f"{FLEXIBLE_ROLLOUT} rollout={percent}% in {state.environment}"))
            keep_id = str((created or {}).get("id", ""))
        else:
            keep_id = keep.id
            if not is_canonical_rollout(keep, percent, self.stickiness):
                await self._http.request("PUT", f"{self._strategies_path(state)}/{keep.id}",
                                         json=rollout_body(percent, self.stickiness, keep))
                old = keep.parameters.get("rollout", "?")
                writes.append(FlagWrite(state.flag, "update-strategy",
                                        f"rollout {old}% -> {percent}% in {state.environment}"))
        for stray in state.strategies:
            if stray.id != keep_id:
                await self._http.request("DELETE", f"{self._strategies_path(state)}/{stray.id}")
                writes.append(FlagWrite(state.flag, "delete-strategy",
                                        f"stray {stray.name} {stray.id} in {state.environment}"))
        return writes

    async def _switch(self, state: FlagState, enabled: bool) -> FlagWrite:
        action = "on" if enabled else "off"
        await self._http.request("POST", f"{self._env_path(state)}/{action}")
        return FlagWrite(state.flag, "enable" if enabled else "disable", state.environment)

    async def _create(self, flag: str) -> FlagWrite:
        try:
            await self._http.request("POST", f"/admin/projects/{self.project}/features",
                                     json=feature_body(flag))
        except PermanentFlagError as exc:
            if exc.status != 409:
                raise
            # Flag names are global in Unleash: "not in our project" plus "exists" means it
            # lives in another project or in the archive, which only a person should resolve.
            raise PermanentFlagError(
                f"{exc.message} (flag {flag!r} is not in project {self.project!r}: it is in "
                "another project or archived; revive or move it, or fix the project setting)",
                status=exc.status, operation=exc.operation,
            ) from exc
        return FlagWrite(flag, "create", f"project {self.project}")

    def _require(self, state: FlagState) -> None:
        if not state.exists:
            raise PermanentFlagError(
                f"flag {state.flag!r} does not exist in Unleash project {self.project!r}; "
                "run the bootstrap (scripts/unleash-start or UnleashAdmin.bootstrap())",
                status=404, operation=f"GET {self._feature_path(state.flag)}",
            )

    # --- Admin API paths ----------------------------------------------------------------

    def _feature_path(self, flag: str) -> str:
        return f"/admin/projects/{self.project}/features/{flag}"

    def _env_path(self, state: FlagState) -> str:
        return f"{self._feature_path(state.flag)}/environments/{state.environment}"

    def _strategies_path(self, state: FlagState) -> str:
        return f"{self._env_path(state)}/strategies"
