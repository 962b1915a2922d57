"""The rollout flags as Unleash holds them: feature state, strategies, and the canonical shape.

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
A disabled flag reads as 0 whatever its rollout, and an enabled one as the largest share any
active strategy exposes (an upper bound if someone added constraints).

Nothing here does I/O: `unleash_admin` reads and writes, this module only translates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from app.contract import (
    FLAG_L1_QUERY_RESULTS,
    FLAG_L2_EMBEDDINGS,
    FLAG_SHADOW_MODE,
    L1_ROLLOUT_GROUP_ID,
)
from rollout.core.flags import FlagSettings

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

    @classmethod
    def from_api(cls, flag: str, environment: str, raw_env: Mapping[str, Any]) -> FlagState:
        """One entry of a feature's `environments`, as the Admin API returns it."""
        return cls(
            flag=flag, environment=environment, exists=True,
            enabled=bool(raw_env.get("enabled")),
            strategies=tuple(Strategy.from_api(s) for s in raw_env.get("strategies") or ()),
        )

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

    @property
    def has_full_strategy(self) -> bool:
        # Any unconditional full-exposure strategy will do (the UI adds flexibleRollout 100
        # when a flag without strategies is switched on): equivalent, so not drift.
        return any(s.unconditional and s.exposure == 100 for s in self.strategies)


def settings_of(states: Mapping[str, FlagState]) -> FlagSettings:
    return FlagSettings(
        shadow=states[FLAG_SHADOW_MODE].fully_on,
        l2=states[FLAG_L2_EMBEDDINGS].fully_on,
        l1_percent=states[FLAG_L1_QUERY_RESULTS].exposure,
    )


def exposures_of(settings: FlagSettings) -> dict[str, int]:
    """The share of traffic each flag must expose for `settings`."""
    return {
        FLAG_SHADOW_MODE: 100 if settings.shadow else 0,
        FLAG_L2_EMBEDDINGS: 100 if settings.l2 else 0,
        FLAG_L1_QUERY_RESULTS: settings.l1_percent,
    }


def current_exposure(state: FlagState) -> int:
    """What a flag exposes now, as the canonical shape would hold it (for bootstrap)."""
    if state.flag == FLAG_L1_QUERY_RESULTS:
        return state.exposure
    return 100 if state.fully_on else 0


def default_strategy_body() -> dict[str, Any]:
    return {"name": DEFAULT_STRATEGY, "parameters": {}, "constraints": [], "segments": []}


def feature_body(flag: str) -> dict[str, Any]:
    return {
        "name": flag, "type": "release", "impressionData": False,
        "description": _DESCRIPTIONS.get(flag, ""),
    }


def rollout_parameters(percent: int, stickiness: str) -> dict[str, str]:
    return {"rollout": str(percent), "stickiness": stickiness, "groupId": L1_ROLLOUT_GROUP_ID}


def rollout_body(percent: int, stickiness: str, keep: Strategy | None) -> dict[str, Any]:
    # PUT replaces the whole strategy: anything not sent is reset, so every field that
    # matters for bucketing is always written.
    return {
        "name": FLEXIBLE_ROLLOUT,
        "title": keep.title if keep else None,
        "parameters": rollout_parameters(percent, stickiness),
        "constraints": [],
        "segments": [],
        "variants": list(keep.variants) if keep else [],
        "disabled": False,
    }


def is_canonical_rollout(strategy: Strategy, percent: int, stickiness: str) -> bool:
    return (
        strategy.name == FLEXIBLE_ROLLOUT
        and strategy.unconditional
        and dict(strategy.parameters) == rollout_parameters(percent, stickiness)
    )


def rollout_to_keep(strategies: Sequence[Strategy]) -> Strategy | None:
    rollouts = [s for s in strategies if s.name == FLEXIBLE_ROLLOUT]
    # Keep the strategy that already carries our groupId, so its id (and history) stays.
    return next((s for s in rollouts if s.parameters.get("groupId") == L1_ROLLOUT_GROUP_ID),
                rollouts[0] if rollouts else None)
