"""The nouns of the controller's runtime: what a cycle works with (`CyclePorts`), what a
person asks of it (`ManualCommand`), what a cycle did (`CycleReport`), and the errors the
runtime raises to its callers (the HTTP API, the CLI, the scheduler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rollout.core.decision import Decision
from rollout.core.observations import Observations
from rollout.core.plan import Plan
from rollout.core.state import RolloutState
from rollout.metrics import ControllerMetrics
from rollout.ports import (
    FlagWriter,
    MetricsSource,
    Notifier,
    NullNotifier,
    ReportedFlags,
    StateStore,
)
from rollout.records import CycleResult, FlagsRecord, LogEntry

CommandName = Literal["pause", "resume", "promote", "rollback"]


@dataclass(frozen=True, slots=True)
class CyclePorts:
    """The plan and one adapter per port; `metrics` is None where nobody scrapes (tests,
    the dry run)."""

    plan: Plan
    store: StateStore
    flags: FlagWriter
    metrics_source: MetricsSource
    notifier: Notifier = field(default_factory=NullNotifier)
    metrics: ControllerMetrics | None = None
    instance_id: str = "controller"


@dataclass(frozen=True, slots=True)
class ManualCommand:
    name: CommandName
    who: str
    why: str
    full: bool = False
    to: str | None = None


@dataclass(frozen=True, slots=True)
class CycleReport:
    """Everything one cycle (or command) saw and did; `entry` is what went to the log."""

    kind: Literal["cycle", "command", "dry-run"]
    at: datetime
    state_before: RolloutState
    decision: Decision | None
    entry: LogEntry
    observations: Observations | None = None
    reported: ReportedFlags | None = None
    flags: FlagsRecord | None = None
    committed: bool = False
    log_id: str | None = None
    recovery: str | None = None

    @property
    def state_after(self) -> RolloutState:
        if self.committed and self.decision is not None:
            return self.decision.state
        return self.state_before

    def result(self) -> CycleResult:
        return CycleResult.model_validate(
            self.entry.model_dump()
            | {"committed": self.committed, "log_id": self.log_id,
               "state": self.state_after.to_dict()}
        )


class CommandFailed(Exception):
    """A manual command was accepted but its flags could not be written: nothing changed."""

    def __init__(self, message: str, report: CycleReport) -> None:
        super().__init__(message)
        self.report = report


class StartupError(Exception):
    """`rollout run` cannot start with these settings (e.g. an unusable JWKS file); the
    message names the setting."""


class NotLeader(Exception):
    """This process stands by; commands go to the leader."""
