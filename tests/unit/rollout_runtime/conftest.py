"""A harness around run_cycle/run_command with in-memory ports and a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rollout.core.plan import Plan
from rollout.cycle import run_command, run_cycle
from rollout.metrics import ControllerMetrics
from rollout.runtime_types import CyclePorts, CycleReport, ManualCommand
from tests.unit.rollout_runtime.fakes import (
    T0,
    FakeFlagWriter,
    FakeMetricsSource,
    FakeStore,
    RecordingNotifier,
    small_plan,
)


@dataclass
class Harness:
    plan: Plan = field(default_factory=small_plan)
    store: FakeStore = field(default_factory=FakeStore)
    flags: FakeFlagWriter = field(default_factory=FakeFlagWriter)
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    source: FakeMetricsSource = field(init=False)
    metrics: ControllerMetrics = field(init=False)
    token: int = field(init=False)
    now: datetime = T0

    def __post_init__(self) -> None:
        self.source = FakeMetricsSource(self.flags)
        self.metrics = ControllerMetrics(self.registry, self.plan)
        self.token = self.store.issue_token()

    def ports(self) -> CyclePorts:
        return CyclePorts(plan=self.plan, store=self.store, flags=self.flags,
                          metrics_source=self.source, notifier=self.notifier,
                          metrics=self.metrics, instance_id="test-1")

    def restart(self) -> None:
        """A new controller process: fresh metrics, a new fencing token, same Redis."""
        self.registry = CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry, self.plan)
        self.notifier = RecordingNotifier()
        self.token = self.store.issue_token()

    async def cycle(self, after: timedelta | None = None, **kwargs: Any) -> CycleReport:
        if after is not None:
            self.now = T0 + after
        return await run_cycle(self.ports(), now=self.now, token=self.token, **kwargs)

    async def command(self, name: str, *, after: timedelta | None = None,
                      who: str = "alice", why: str = "testing", **kwargs: Any) -> CycleReport:
        if after is not None:
            self.now = T0 + after
        command = ManualCommand(name=name, who=who, why=why, **kwargs)  # type: ignore[arg-type]
        return await run_command(self.ports(), command, now=self.now, token=self.token)

    def stage(self) -> str | None:
        state = self.store.stored_state()
        return None if state is None else state.stage_name

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def walk_to_mid(self) -> None:
        await self.cycle(timedelta(0))
        report = await self.cycle(timedelta(seconds=70))
        assert self.stage() == "mid", report.entry.reason


@pytest.fixture
def h() -> Harness:
    return Harness()
