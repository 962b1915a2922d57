"""In-memory fakes of the controller's ports, for pure unit tests of the runtime logic.

They keep the contracts that matter to the cycle: the store checks fencing tokens on every
write, the flag writer is idempotent and can fail on demand, the metrics source never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement
from rollout.core.plan import CheckKind, CheckSpec, Comparator, Plan, PlanSettings, Stage, Threshold
from rollout.core.state import RolloutState
from rollout.ports import (
    ApplyResult,
    FencedOut,
    FlagError,
    FlagWrite,
    FlagWriter,
    Leader,
    Notification,
    ReportedFlags,
    StoredSnapshot,
)
from rollout.records import CycleSummary, IntentRecord, LogEntry

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=10)
BAKE = timedelta(minutes=1)


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs (not an Exception on purpose,
    so no `except Exception` in the code under test can swallow it)."""


def check(name: str, kind: CheckKind, *, critical: bool = False, limit: float = 1.0,
          dry_run: bool = False) -> CheckSpec:
    rule: dict[str, Any] = {}
    if kind is not CheckKind.BASELINE:
        rule = {"comparator": Comparator.LE, "threshold": Threshold(absolute=limit)}
    return CheckSpec(name=name, kind=kind, query=f"{name}[{{window}}]", window=WINDOW,
                     sample_query=f"{name}_n[{{window}}]", min_sample=10, critical=critical,
                     dry_run=dry_run, **rule)


OFF = FlagSettings()
MID = FlagSettings(shadow=True)
TOP = FlagSettings(shadow=True, l2=True, l1_percent=100)


def small_plan(**settings: Any) -> Plan:
    values: dict[str, Any] = {
        "passes_to_advance": 1, "failures_to_rollback": 2, "cooldown": timedelta(minutes=5),
        "auto_resume_after_rollback": False, "min_window": timedelta(seconds=1),
        "hold_too_long": timedelta(hours=1),
    }
    values.update(settings)
    return Plan(
        stages=(
            Stage("off", OFF, BAKE, (check("base", CheckKind.BASELINE),)),
            Stage("mid", MID, BAKE, (check("gate", CheckKind.GATE),)),
            Stage("top", TOP, BAKE, (check("gate", CheckKind.GATE),)),
        ),
        guardrails=(check("errors", CheckKind.GUARDRAIL, critical=True),
                    check("latency", CheckKind.GUARDRAIL)),
        settings=PlanSettings(**values),
    )


class FakeStore:
    """StateStore in memory, with the same fencing rule as the Redis one."""

    def __init__(self) -> None:
        self.fence = 0
        self.state: dict[str, Any] | None = None
        self.intent: IntentRecord | None = None
        self.unreadable_intent: str | None = None
        self.log: list[LogEntry] = []
        self.last: CycleSummary | None = None
        self.holder: str | None = None
        # Called at the start of commit with its arguments; may raise SimulatedCrash.
        self.before_commit: Callable[[LogEntry, RolloutState | None], None] | None = None

    def issue_token(self) -> int:
        self.fence += 1
        return self.fence

    def stored_state(self) -> RolloutState | None:
        return None if self.state is None else RolloutState.from_dict(self.state)

    async def load(self) -> StoredSnapshot:
        return StoredSnapshot(state=self.stored_state(), intent=self.intent, fence=self.fence,
                              unreadable_intent=self.unreadable_intent)

    async def check_fence(self, token: int) -> None:
        if token != self.fence:
            raise FencedOut(token, self.fence)

    async def begin_transition(self, intent: IntentRecord, token: int) -> None:
        await self.check_fence(token)
        self.intent = intent

    async def commit(self, *, token: int, entry: LogEntry,
                     state: RolloutState | None = None, clear_intent: bool = True,
                     last_cycle: CycleSummary | None = None) -> str:
        if self.before_commit is not None:
            self.before_commit(entry, state)
        await self.check_fence(token)
        if state is not None:
            self.state = state.to_dict()
        entry_id = await self.append_unfenced(entry)
        if clear_intent:
            self.intent = None
            self.unreadable_intent = None
        if last_cycle is not None:
            self.last = last_cycle
        return entry_id

    async def append_unfenced(self, entry: LogEntry) -> str:
        entry_id = f"{len(self.log) + 1}-0"
        self.log.append(entry.model_copy(update={"id": entry_id}))
        return entry_id

    async def history(self, limit: int = 50) -> list[LogEntry]:
        return list(reversed(self.log))[:limit]

    async def last_cycle(self) -> CycleSummary | None:
        return self.last

    async def leader(self) -> Leader:
        return Leader(self.holder)

    async def rollout_names(self) -> list[str]:
        return ["default"] if self.log or self.state is not None else []

    async def eviction_risk(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None

    def kinds(self) -> list[str]:
        return [e.kind for e in self.log]


class FakeFlagWriter:
    """FlagWriter over a variable; `fail_with` makes the next writes (and reads) raise."""

    target = "fake flag store"

    def __init__(self, settings: FlagSettings = OFF) -> None:
        self.settings = settings
        self.applied: list[FlagSettings] = []  # every apply() that wrote something
        self.fail_with: FlagError | None = None
        self.fail_reads_with: FlagError | None = None
        self.crash_on_apply = False

    async def read(self) -> FlagSettings:
        if self.fail_reads_with is not None:
            raise self.fail_reads_with
        return self.settings

    async def apply(self, desired: FlagSettings) -> ApplyResult:
        if self.fail_with is not None:
            raise self.fail_with
        if self.crash_on_apply:
            raise SimulatedCrash("died before writing the flags")
        before = self.settings
        writes: tuple[FlagWrite, ...] = ()
        if before != desired:
            writes = (FlagWrite("fake", "set", f"{before.describe()} -> {desired.describe()}"),)
            self.settings = desired
            self.applied.append(desired)
        return ApplyResult(before=before, after=desired, writes=writes)

    async def aclose(self) -> None:
        return None


_NAME = re.compile(r"^([a-z_]+?)(_n)?\[")


@dataclass
class FakeMetricsSource:
    """Values by check name; the sample of every check is `sample`. The service reports
    whatever the flag store holds (as if it re-read its flags at once), unless `reported`
    is set. `flags` is a FakeFlagWriter or a real FlagWriter (read through its `read`)."""

    flags: FakeFlagWriter | FlagWriter
    values: dict[str, float | None] = field(default_factory=dict)
    sample: float = 1000.0
    error: str | None = None
    reported: ReportedFlags | None = None
    queries: list[str] = field(default_factory=list)
    raise_on_measure: bool = False

    async def measure(self, query: str, sample_query: str | None) -> Measurement:
        self.queries.append(query)
        if self.raise_on_measure:
            raise RuntimeError("bug in the adapter")
        if self.error is not None:
            return Measurement(value=None, error=self.error)
        match = _NAME.match(query)
        name = match.group(1) if match else query
        return Measurement(value=self.values.get(name, 0.5), sample=self.sample)

    async def reported_flags(self) -> ReportedFlags:
        if self.reported is not None:
            return self.reported
        if isinstance(self.flags, FakeFlagWriter):
            return ReportedFlags(settings=self.flags.settings, instances=1)
        return ReportedFlags(settings=await self.flags.read(), instances=1)

    async def aclose(self) -> None:
        return None


class RecordingNotifier:
    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[Notification] = []
        self.fail = fail

    async def notify(self, notification: Notification) -> None:
        if self.fail:
            raise RuntimeError("webhook exploded")
        self.sent.append(notification)

    def events(self) -> list[str]:
        return [n.event for n in self.sent]

    async def aclose(self) -> None:
        return None


class FakeLease:
    """Lease whose leadership the test decides; tokens come from the FakeStore."""

    def __init__(self, store: FakeStore, owner: str = "test-1", *, leader: bool = True) -> None:
        self._store = store
        self._owner = owner
        self._token: int | None = store.issue_token() if leader else None
        self.released = False

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def token(self) -> int | None:
        return self._token

    @property
    def is_leader(self) -> bool:
        return self._token is not None

    async def refresh(self) -> bool:
        return self.is_leader

    async def release(self) -> None:
        self.released = True
        self._token = None

    async def holder(self) -> str | None:
        return self._owner if self.is_leader else None

    def lost(self) -> None:
        self._token = None
