"""`ServiceReplica` plays the service: it polls the flag store the way the service does,
adopts a new flag state once it has been stable for `adopt_after` seconds (the SDK's
refresh), and makes the FakeExporter report those flags (`ai_agent_flag_state`) and behave
like the service would under them (`ServiceProfile`: L2 makes answers faster and cheaper, L1
hits take ~20 ms). So the controller's "wait until the service reports the new flags, then
one full window" is exercised for real."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from app import contract
from rollout.core.flags import FlagSettings
from rollout.ports import FlagError
from tests.support.fake_exporter import FakeExporter, Latency, Scenario

# Enough that every min_sample of the default plan is met over a 4 s window, including the
# smaller L1 cohort at 10 % (800 x 0.1 x 4 = 320 >= 200) and the baseline (>= 1000).
TRAFFIC_RPS = 800.0


@dataclass(frozen=True)
class ServiceProfile:
    """How the service's latency and spend respond to the flags (the seed's anchors: a full
    RAG answer ~1.75 s and $0.017, an L1 hit ~20 ms)."""

    full_seconds: float = 1.75
    l2_seconds: float = 1.1
    l1_hit_seconds: float = 0.02
    full_cost_usd: float = 0.017
    l2_cost_usd: float = 0.012
    l1_cost_usd: float = 0.005

    def scenario_for(self, scenario: Scenario, flags: FlagSettings) -> Scenario:
        share = flags.l1_percent / 100
        base_cost = self.l2_cost_usd if flags.l2 else self.full_cost_usd
        return replace(
            scenario,
            shadow=flags.shadow,
            l2=flags.l2,
            l1_percent=flags.l1_percent,
            l1_share=None,
            latency_off=Latency(self.l2_seconds if flags.l2 else self.full_seconds),
            latency_on=Latency(self.l1_hit_seconds),
            cost_per_query_usd=base_cost - share * (base_cost - self.l1_cost_usd),
        )


PROFILE = ServiceProfile()


def histogram_p95(seconds: float) -> float:
    """What histogram_quantile(0.95) reads when every answer takes `seconds`: 95 % of the
    way through the service's bucket that holds it (linear interpolation)."""
    bounds = contract.QUERY_DURATION_BUCKETS
    upper = next(b for b in bounds if b >= seconds)
    lower = max((b for b in bounds if b < upper), default=0.0)
    return lower + (upper - lower) * 0.95


# What stage `off` records for the profile: no errors, every answer 1.75 s, $0.017 a query.
BASELINE: Mapping[str, float] = {
    "baseline_error_rate": 0.0,
    "baseline_p95_seconds": histogram_p95(PROFILE.full_seconds),
    "baseline_cost_per_query_usd": 0.017,
}


def base_scenario(**overrides: Any) -> Scenario:
    scenario = PROFILE.scenario_for(
        Scenario(requests_per_second=TRAFFIC_RPS), FlagSettings()
    )
    return replace(scenario, **overrides)


class FlagReader(Protocol):
    async def read(self) -> FlagSettings: ...


class ServiceReplica:
    """The service, as far as the controller can see it: follows the flag store."""

    def __init__(
        self,
        exporter: FakeExporter,
        flags: FlagReader,
        *,
        profile: ServiceProfile = PROFILE,
        adopt_after: float = 1.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self.exporter = exporter
        self._flags = flags
        self.profile = profile
        self.adopt_after = adopt_after
        self.poll_seconds = poll_seconds
        self.adopted: list[tuple[float, FlagSettings]] = []  # (monotonic, flags) in order
        self.read_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._seen: FlagSettings | None = None
        self._seen_since = 0.0

    @property
    def scenario(self) -> Scenario:
        """The live scenario: set error rates, traffic, ... on it at any time."""
        return self.exporter.scenario

    @property
    def flags(self) -> FlagSettings | None:
        return self.adopted[-1][1] if self.adopted else None

    @property
    def adopted_flags(self) -> list[FlagSettings]:
        return [flags for _, flags in self.adopted]

    def adopt(self, flags: FlagSettings) -> None:
        """Apply `flags` now (setup, or a stable read): one atomic scenario swap, so the
        exporter never mixes the flags of one stage with the behaviour of another."""
        self.exporter.scenario = self.profile.scenario_for(self.exporter.scenario, flags)
        if self.flags != flags:
            self.adopted.append((time.monotonic(), flags))
        self._seen, self._seen_since = flags, time.monotonic()

    def start(self) -> ServiceReplica:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="replica")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._poll_once()
            await asyncio.sleep(self.poll_seconds)

    async def _poll_once(self) -> None:
        try:
            current = await self._flags.read()
        except (FlagError, RuntimeError, OSError):
            self.read_errors += 1  # the service keeps its last flags, as the real one does
            return
        now = time.monotonic()
        if current != self._seen:
            self._seen, self._seen_since = current, now
        if current != self.flags and now - self._seen_since >= self.adopt_after:
            self.adopt(current)
