"""Every port of the controller: what the runtime needs from the world, and their errors.

    FlagWriter     the flag store (Unleash Admin API, or the local Redis hash)
    MetricsSource  where checks are measured (Prometheus)
    RecordedMetricsSource  the same, as of a past moment (rollout replay)
    StateStore     the state, the decision log and the transition intent (Redis)
    Lease          leadership with a fencing token (Redis)
    Notifier       messages for people (a Slack-compatible webhook)
    CallerVerifier who calls the HTTP API, and in which role (bearer JWT or static token)

Adapters (rollout.adapters.*) implement these and import only this module, rollout.records
and rollout.core; the runtime depends on the Protocols, and rollout.composition is the one
place that picks an adapter for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement
from rollout.core.state import CONTROLLER, RolloutState
from rollout.records import CycleSummary, IntentRecord, LogEntry
from rollout.redaction import masked

# --- flags out --------------------------------------------------------------------------------


class FlagError(Exception):
    """A flag store could not be read or written. `message` is the store's own words, with
    the credentials of any URL in it (and in `operation`) masked: it is logged and shown."""

    def __init__(self, message: str, *, status: int | None = None, operation: str = "") -> None:
        message = masked(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.operation = masked(operation)


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


@runtime_checkable
class RecordedMetricsSource(Protocol):
    """Metrics as they were (`rollout replay`): `as_of(t)` is a MetricsSource whose queries
    are evaluated at the past moment `t` instead of now — the same queries, the same
    judgement, only the time differs. `t` is timezone-aware."""

    def as_of(self, moment: datetime) -> MetricsSource: ...

    async def aclose(self) -> None: ...


# --- the controller's memory ------------------------------------------------------------------


class StoreError(Exception):
    """The state store could not be read or written (Redis down, timeout). Its message is
    masked like FlagError's."""

    def __init__(self, message: str) -> None:
        super().__init__(masked(message))


class FencedOut(Exception):
    """A newer controller holds the lease: this process's fencing token is stale."""

    def __init__(self, token: int | None, current: int | None) -> None:
        super().__init__(
            f"fencing token {token} is stale (current {current}): another controller leads"
        )
        self.token = token
        self.current = current


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """What the store holds: the state (None before the first cycle), a pending transition
    intent (or the raw text of one this version cannot read), and the current fencing token
    (the latest one issued to any controller)."""

    state: RolloutState | None
    intent: IntentRecord | None = None
    fence: int = 0
    unreadable_intent: str | None = None

    @property
    def has_intent(self) -> bool:
        return self.intent is not None or self.unreadable_intent is not None


@dataclass(frozen=True, slots=True)
class Leader:
    """Who holds the lease now, and for how much longer (None: nobody, or no expiry)."""

    holder: str | None
    ttl_ms: int | None = None


@runtime_checkable
class StateStore(Protocol):
    """Where the state, the decision log and the intent live. Every controller write is
    fenced; only `append_unfenced` (a person's hand edit, logged by the CLI) is not."""

    async def load(self) -> StoredSnapshot: ...

    async def check_fence(self, token: int) -> None:
        """Raise FencedOut unless `token` is the current fencing token."""
        ...

    async def begin_transition(self, intent: IntentRecord, token: int) -> None: ...

    async def commit(
        self,
        *,
        token: int,
        entry: LogEntry,
        state: RolloutState | None = None,
        clear_intent: bool = True,
        last_cycle: CycleSummary | None = None,
    ) -> str:
        """Atomically: store `state` (None keeps it), append `entry` to the log, clear the
        intent, store `last_cycle`. Returns the log entry's id."""
        ...

    async def append_unfenced(self, entry: LogEntry) -> str: ...

    async def history(self, limit: int = 50) -> list[LogEntry]:
        """The newest `limit` entries, newest first, each with its `id`."""
        ...

    async def last_cycle(self) -> CycleSummary | None: ...

    async def leader(self) -> Leader: ...

    async def rollout_names(self) -> list[str]:
        """The names of every rollout this store holds keys of, sorted."""
        ...

    async def eviction_risk(self) -> str | None:
        """A warning when the store may lose the controller's keys under memory pressure."""
        ...

    async def aclose(self) -> None: ...


# --- leadership -------------------------------------------------------------------------------


@runtime_checkable
class Lease(Protocol):
    """Leadership with a fencing token (see rollout.adapters.redis_lease)."""

    @property
    def owner(self) -> str: ...

    @property
    def token(self) -> int | None: ...

    @property
    def is_leader(self) -> bool: ...

    async def refresh(self) -> bool:
        """Acquire or renew; True while this process leads."""
        ...

    async def release(self) -> None: ...

    async def holder(self) -> str | None:
        """Who holds the lease now (any process), None when nobody does."""
        ...

    def lost(self) -> None:
        """Forget leadership now (a write was fenced out)."""
        ...


# --- messages for people ----------------------------------------------------------------------

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for people: a transition, a pause, a hold-too-long, drift, a failure."""

    event: str  # transition | pause | resume | overdue | drift | flag-write-failed | recovered
    title: str
    reason: str
    stage: str
    at: datetime
    by: str = CONTROLLER
    from_stage: str | None = None
    to_stage: str | None = None
    severity: Severity = "info"
    fields: Mapping[str, str] = field(default_factory=dict)
    # Lines under the reason: a transition's evidence (each deciding check with its estimate,
    # bound, margin or limit, n and verdict) and the stage's objectives with their intervals.
    details: tuple[str, ...] = ()


@runtime_checkable
class Notifier(Protocol):
    async def notify(self, notification: Notification) -> None:
        """Deliver or log; must never raise (a failed notification never breaks a cycle)."""
        ...

    async def aclose(self) -> None: ...


class NullNotifier:
    """No webhook configured: notifications only appear in the logs."""

    async def notify(self, notification: Notification) -> None:
        return None

    async def aclose(self) -> None:
        return None


# --- callers of the HTTP API ------------------------------------------------------------------

VIEWER, OPERATOR = "viewer", "operator"


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller. `role` is as the token says: `operator` steers the rollout,
    `viewer` (or any other role) only reads; `via` is "jwt" or "static"."""

    who: str
    role: str
    via: str

    @property
    def may_steer(self) -> bool:
        return self.role == OPERATOR


class CallerRejected(Exception):
    """The credentials are unusable (401): missing, malformed, expired, badly signed. The
    message is for the caller and never contains the token."""


@runtime_checkable
class CallerVerifier(Protocol):
    @property
    def configured(self) -> bool:
        """False when no static token and no JWT key is set: commands are disabled."""
        ...

    async def verify(self, token: str) -> Caller:
        """The caller this bearer token names; raises CallerRejected."""
        ...
