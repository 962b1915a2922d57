"""The rollout flags in Unleash, through its Admin API (httpx, async).

Canonical shape the adapter reads, writes and repairs, per environment, in one project:

* `ai-cache-shadow-mode`, `ai-cache-l2-embeddings` (on/off): the environment's `enabled`
  switch, with one `default` strategy so that "on" means everyone. A flag that is on but
  only through constrained strategies reads as off and `apply` adds the `default` strategy.
* `ai-cache-l1-query-results`: exactly one `flexibleRollout` strategy with parameters
  `rollout` (the percentage), `stickiness` (default `userId`, the workspace id) and
  `groupId` = the flag name (it seeds Unleash's murmur3 bucketing, so it must never change:
  a workspace in the 10 % stays in the 50 %).

**L1 at 0 %** is stored as the environment switched *off* and the strategy's rollout set to 0,
so a person who flips the switch in the UI exposes nobody, and SDKs skip the flag entirely.
`read()` reports 0 for a disabled flag whatever its rollout, and for an enabled one the
largest share any active strategy exposes (an upper bound if someone added constraints).
`apply()` writes only what differs from the canonical shape, in an order that never
exposes more traffic than the old or the new setting: switch off before lowering, raise the
percentage before switching on, delete stray strategies after the PUT.

Errors: TemporaryFlagError for connection errors, timeouts, 5xx and 429; PermanentFlagError
for 401/403/404/400/409/422 and any other 4xx, with the server's own message. Nothing is
retried here: the controller's next cycle is the retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import httpx

from app.contract import (
    ALL_FLAGS,
    DEFAULT_STICKINESS,
    FLAG_L1_QUERY_RESULTS,
    FLAG_L2_EMBEDDINGS,
    FLAG_SHADOW_MODE,
    L1_ROLLOUT_GROUP_ID,
)
from rollout.core.flags import FlagSettings
from rollout.ports import (
    ApplyResult,
    FlagError,
    FlagWrite,
    PermanentFlagError,
    TemporaryFlagError,
)

DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=2.0, pool=2.0)
FLEXIBLE_ROLLOUT: Final = "flexibleRollout"
DEFAULT_STRATEGY: Final = "default"

_DESCRIPTIONS: Final = {
    FLAG_SHADOW_MODE: "Dark launch: do every L1/L2 lookup and verify it, always serve fresh. "
                      "Written by the rollout controller.",
    FLAG_L2_EMBEDDINGS: "Serve embeddings from the L2 cache. Written by the rollout controller.",
    FLAG_L1_QUERY_RESULTS: "Serve answers from the L1 cache for this share of workspaces "
                           "(flexibleRollout; keep groupId). Written by the rollout controller.",
}


@dataclass(frozen=True, slots=True)
class Strategy:
    """One activation strategy of a flag in one environment, as the Admin API returns it."""

    id: str
    name: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[Any, ...] = ()
    segments: tuple[Any, ...] = ()
    variants: tuple[Any, ...] = ()
    disabled: bool = False
    title: str | None = None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Strategy:
        return cls(
            id=str(raw.get("id", "")),
            name=str(raw.get("name", "")),
            parameters={str(k): str(v) for k, v in (raw.get("parameters") or {}).items()},
            constraints=tuple(raw.get("constraints") or ()),
            segments=tuple(raw.get("segments") or ()),
            variants=tuple(raw.get("variants") or ()),
            disabled=bool(raw.get("disabled") or False),
            title=raw.get("title"),
        )

    @property
    def rollout(self) -> int | None:
        """The flexibleRollout percentage, clamped; an unparsable value counts as 0 because
        the SDKs then match nobody."""
        if self.name != FLEXIBLE_ROLLOUT:
            return None
        try:
            return min(100, max(0, int(self.parameters.get("rollout", "0"))))
        except ValueError:
            return 0

    @property
    def exposure(self) -> int:
        """Largest share of traffic this strategy can enable (constraints only narrow it)."""
        if self.disabled:
            return 0
        rollout = self.rollout
        return 100 if rollout is None else rollout

    @property
    def unconditional(self) -> bool:
        return not self.disabled and not self.constraints and not self.segments


@dataclass(frozen=True, slots=True)
class FlagState:
    """A flag in one environment: whether it exists, its switch, and its strategies."""

    flag: str
    environment: str
    exists: bool
    enabled: bool = False
    strategies: tuple[Strategy, ...] = ()

    @property
    def rollout(self) -> int | None:
        """The L1-style rollout percentage (first flexibleRollout strategy), if any."""
        for strategy in self.strategies:
            if strategy.rollout is not None:
                return strategy.rollout
        return None

    @property
    def exposure(self) -> int:
        """What share of traffic the flag enables now (0 when off or missing)."""
        if not self.exists or not self.enabled:
            return 0
        active = [s for s in self.strategies if not s.disabled]
        if not active:
            return 100  # Unleash evaluates an enabled flag without strategies as on
        return max(s.exposure for s in active)

    @property
    def fully_on(self) -> bool:
        if not self.exists or not self.enabled:
            return False
        active = [s for s in self.strategies if not s.disabled]
        return not active or any(s.unconditional and s.exposure == 100 for s in active)


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
        root = api_url.rstrip("/")
        self.api_url = root if root.endswith("/api") else f"{root}/api"
        self.environment = environment
        self.project = project
        self.stickiness = stickiness
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": admin_token, "Accept": "application/json",
                     "User-Agent": "ai-cache-rollout-controller"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"unleash {self.api_url} project={self.project} env={self.environment}"

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
        return _settings_of(states)

    async def apply(self, desired: FlagSettings) -> ApplyResult:
        """Make Unleash hold `desired` (creating missing flags); write only what differs."""
        states = {flag: await self.flag_state(flag) for flag in ALL_FLAGS}
        before = _settings_of(states)
        wanted = {
            FLAG_SHADOW_MODE: 100 if desired.shadow else 0,
            FLAG_L2_EMBEDDINGS: 100 if desired.l2 else 0,
            FLAG_L1_QUERY_RESULTS: desired.l1_percent,
        }
        # Shrinking changes first: a rollback never passes through a wider exposure.
        order = sorted(ALL_FLAGS, key=lambda f: wanted[f] > states[f].exposure)
        writes: list[FlagWrite] = []
        for flag in order:
            writes += await self._reconcile(states[flag], wanted[flag])
        return ApplyResult(before=before, after=desired, writes=tuple(writes))

    # --- single-flag operations ---------------------------------------------------------

    async def flag_state(self, flag: str, environment: str | None = None) -> FlagState:
        env = environment or self.environment
        feature = await self._request("GET", self._feature_path(flag), allow_404=True)
        if feature is None:
            return FlagState(flag=flag, environment=env, exists=False)
        for raw_env in feature.get("environments") or ():
            if raw_env.get("name") == env:
                return FlagState(
                    flag=flag, environment=env, exists=True,
                    enabled=bool(raw_env.get("enabled")),
                    strategies=tuple(Strategy.from_api(s) for s in raw_env.get("strategies") or ()),
                )
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
            state = states[flag]
            keep = state.exposure if flag == FLAG_L1_QUERY_RESULTS else (
                100 if state.fully_on else 0)
            writes += await self._reconcile(state, keep)
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
        # Any unconditional full-exposure strategy will do (the UI adds flexibleRollout 100
        # when a flag without strategies is switched on): equivalent, so not drift.
        if any(s.unconditional and s.exposure == 100 for s in state.strategies):
            return []
        await self._request("POST", self._strategies_path(state),
                            json={"name": DEFAULT_STRATEGY, "parameters": {},
                                  "constraints": [], "segments": []})
        return [FlagWrite(state.flag, "add-strategy", f"{DEFAULT_STRATEGY} in {state.environment}")]

    def _rollout_body(self, state: FlagState, percent: int,
                      keep: Strategy | None) -> dict[str, Any]:
        # PUT replaces the whole strategy: anything not sent is reset, so every field that
        # matters for bucketing is always written.
        return {
            "name": FLEXIBLE_ROLLOUT,
            "title": keep.title if keep else None,
            "parameters": {"rollout": str(percent), "stickiness": self.stickiness,
                           "groupId": L1_ROLLOUT_GROUP_ID},
            "constraints": [],
            "segments": [],
            "variants": list(keep.variants) if keep else [],
            "disabled": False,
        }

    def _is_canonical(self, strategy: Strategy, percent: int) -> bool:
        return (
            strategy.name == FLEXIBLE_ROLLOUT
            and strategy.unconditional
            and dict(strategy.parameters) == {"rollout": str(percent),
                                              "stickiness": self.stickiness,
                                              "groupId": L1_ROLLOUT_GROUP_ID}
        )

    async def _ensure_rollout_strategy(self, state: FlagState, percent: int) -> list[FlagWrite]:
        writes: list[FlagWrite] = []
        rollouts = [s for s in state.strategies if s.name == FLEXIBLE_ROLLOUT]
        # Keep the strategy that already carries our groupId, so its id (and history) stays.
        keep = next((s for s in rollouts if s.parameters.get("groupId") == L1_ROLLOUT_GROUP_ID),
                    rollouts[0] if rollouts else None)
        if keep is None:
            created = await self._request("POST", self._strategies_path(state),
                                          json=self._rollout_body(state, percent, None))
            writes.append(FlagWrite(
                state.flag, "add-strategy",
                f"{FLEXIBLE_ROLLOUT} rollout={percent}% in {state.environment}"))
            keep_id = str((created or {}).get("id", ""))
        else:
            keep_id = keep.id
            if not self._is_canonical(keep, percent):
                await self._request("PUT", f"{self._strategies_path(state)}/{keep.id}",
                                    json=self._rollout_body(state, percent, keep))
                old = keep.parameters.get("rollout", "?")
                writes.append(FlagWrite(state.flag, "update-strategy",
                                        f"rollout {old}% -> {percent}% in {state.environment}"))
        for stray in state.strategies:
            if stray.id != keep_id:
                await self._request("DELETE", f"{self._strategies_path(state)}/{stray.id}")
                writes.append(FlagWrite(state.flag, "delete-strategy",
                                        f"stray {stray.name} {stray.id} in {state.environment}"))
        return writes

    async def _switch(self, state: FlagState, enabled: bool) -> FlagWrite:
        action = "on" if enabled else "off"
        await self._request("POST", f"{self._env_path(state)}/{action}")
        return FlagWrite(state.flag, "enable" if enabled else "disable", state.environment)

    async def _create(self, flag: str) -> FlagWrite:
        try:
            await self._request("POST", f"/admin/projects/{self.project}/features", json={
                "name": flag, "type": "release", "impressionData": False,
                "description": _DESCRIPTIONS.get(flag, ""),
            })
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

    # --- HTTP ---------------------------------------------------------------------------

    def _feature_path(self, flag: str) -> str:
        return f"/admin/projects/{self.project}/features/{flag}"

    def _env_path(self, state: FlagState) -> str:
        return f"{self._feature_path(state.flag)}/environments/{state.environment}"

    def _strategies_path(self, state: FlagState) -> str:
        return f"{self._env_path(state)}/strategies"

    async def _request(self, method: str, path: str, *, json: Any = None,
                       allow_404: bool = False) -> Any:
        operation = f"{method} {self.api_url}{path}"
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise TemporaryFlagError(
                f"Unleash did not answer {operation} in time ({type(exc).__name__}, "
                f"read timeout {self._timeout.read}s)", operation=operation,
            ) from exc
        except httpx.TransportError as exc:
            raise TemporaryFlagError(
                f"cannot reach Unleash for {operation}: {type(exc).__name__}: {exc}",
                operation=operation,
            ) from exc
        if response.status_code == 404 and allow_404:
            return None
        if response.status_code >= 400:
            raise _http_error(response, operation)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentFlagError(
                f"Unleash answered {operation} with {response.status_code} but not JSON "
                f"(is UNLEASH_URL the Unleash API URL?): {response.text[:200]!r}",
                status=response.status_code, operation=operation,
            ) from exc


def _settings_of(states: Mapping[str, FlagState]) -> FlagSettings:
    return FlagSettings(
        shadow=states[FLAG_SHADOW_MODE].fully_on,
        l2=states[FLAG_L2_EMBEDDINGS].fully_on,
        l1_percent=states[FLAG_L1_QUERY_RESULTS].exposure,
    )


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        details = body.get("details")
        messages: list[str] = []
        if isinstance(body.get("message"), str):
            messages.append(body["message"])
        if isinstance(details, Sequence):
            messages += [str(d.get("message")) for d in details
                         if isinstance(d, Mapping) and d.get("message")
                         and d.get("message") not in messages]
        if messages:
            return "; ".join(messages)
    return str(body)[:300]


_HINTS: Final = {
    401: "the admin token was rejected: check UNLEASH_ADMIN_TOKEN",
    403: "the token may not use the Admin API: UNLEASH_ADMIN_TOKEN must be an admin token "
         "(like '*:*.<secret>'), not a client/backend token",
    404: "check the project, environment and flag names",
    429: "Unleash is rate limiting; the next cycle retries",
}


def _http_error(response: httpx.Response, operation: str) -> FlagError:
    status = response.status_code
    hint = _HINTS.get(status)
    message = (f"Unleash answered {status} {response.reason_phrase} to {operation}: "
               f"{_server_message(response)}" + (f" ({hint})" if hint else ""))
    if status == 429 or status >= 500:
        return TemporaryFlagError(message, status=status, operation=operation)
    return PermanentFlagError(message, status=status, operation=operation)
