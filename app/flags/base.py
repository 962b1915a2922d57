"""What the caching code asks of flags, whatever their source (local Redis hash or Unleash)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

FlagSourceState = Literal["unleash", "local", "last-known", "defaults"]


@dataclass(frozen=True, slots=True)
class FlagSnapshot:
    """The flags as one source saw them at one moment. Unknown or unreadable means off."""

    shadow: bool = False
    l2: bool = False
    l1_percent: int = 0
    source: FlagSourceState = "defaults"


OFF = FlagSnapshot()


class FlagSource(Protocol):
    """Answers flag questions for a request. Must be cheap: it is called on every request."""

    @property
    def state(self) -> FlagSourceState:
        """Where the flags currently come from (reported on /readyz)."""
        ...

    async def snapshot(self) -> FlagSnapshot:
        """The global on/off flags and the L1 percentage; cached by the source."""
        ...

    def l1_enabled_for(self, snapshot: FlagSnapshot, workspace_id: str) -> bool:
        """Whether this workspace is in the L1 cohort under `snapshot` (sticky bucketing)."""
        ...

    async def aclose(self) -> None: ...
