"""The controller's outbound ports: what the rollout core needs from the flag stores.

Adapters (rollout.adapters.*) implement these; the core and the cycle runner depend only on
this module, so Unleash and the local Redis flag store are interchangeable by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement


class FlagError(Exception):
    """A flag store could not be read or written. `message` is the store's own words."""

    def __init__(self, message: str, *, status: int | None = None, operation: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.operation = operation


class TemporaryFlagError(FlagError):
    """Worth retrying next cycle: connection refused, timeout, 5xx, 429, Redis down."""


class PermanentFlagError(FlagError):
    """Retrying will not help until a person acts: bad token (401/403), unknown project or
    environment (404), a request the store rejects (400/409/422)."""


@dataclass(frozen=True, slots=True)
class FlagWrite:
    """One write a writer made to reconcile a flag (for the event log and notifications)."""

    flag: str
    action: str  # e.g. "create", "enable", "disable", "update-strategy", "hset"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.flag}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What `apply` found and what it did. `writes` is empty when nothing had to change."""

    before: FlagSettings
    after: FlagSettings
    writes: tuple[FlagWrite, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the store did not already hold the settings (drift, a manual change, or
        the controller moving on): the writes say what was repaired."""
        return bool(self.writes)


@runtime_checkable
class FlagWriter(Protocol):
    """Reads and reconciles the three rollout flags in one flag store.

    Contract for every implementation:
    * `read()` returns what the service would apply now; a flag that is missing or
      unreadable as a value is off (0 %), as the service treats it.
    * `apply(s)` is idempotent: when the store already holds `s`, it writes nothing and
      returns `writes == ()`. Afterwards `read() == s`.
    * Failures raise TemporaryFlagError or PermanentFlagError, never anything else.
    """

    @property
    def target(self) -> str:
        """Where the flags live, for logs and status (never includes a secret)."""
        ...

    async def read(self) -> FlagSettings: ...

    async def apply(self, desired: FlagSettings) -> ApplyResult: ...

    async def aclose(self) -> None: ...


# --- Metrics in ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportedFlags:
    """What the service instances export as `ai_agent_flag_state{flag}` right now.

    `settings` is None when nothing is reported (no instance scraped, or Prometheus failed:
    then `error` says why) or when instances disagree (`consistent` is False).
    """

    settings: FlagSettings | None
    instances: int = 0
    consistent: bool = True
    error: str | None = None


@runtime_checkable
class MetricsSource(Protocol):
    """Where checks are measured (Prometheus). Never raises: failures are in the result.

    * `measure(query, sample_query)` runs both instant queries; an empty result, NaN or
      ±Inf is `value=None` (no data); a connection error, timeout or 4xx/5xx is `error=…`.
    * `reported_flags()` reads `ai_agent_flag_state` across service instances.
    """

    async def measure(self, query: str, sample_query: str | None) -> Measurement: ...

    async def reported_flags(self) -> ReportedFlags: ...

    async def aclose(self) -> None: ...
