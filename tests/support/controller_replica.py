"""`ServiceReplica` plays the service: it polls the flag store the way the service does,
adopts a new flag state once it has been stable for `adopt_after` seconds (the SDK's
refresh), and makes the exporter report those flags (`ai_agent_flag_state`) and answer like
the service would under them (tests/support/controller_traffic.py: random arrivals and
outcomes, L2 answers faster and cheaper, L1 hits ~20 ms and free). So the controller's "wait
until the service reports the new flags, then judge the counts since" is exercised for real.

A replica can be given `faults`: changes to its scenario while it runs a given stage's flags
(stale answers once it serves 50 % from L1, say). They start and end with those flags, in the
same scenario swap, so no count of another stage carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from rollout.core.boundaries import nearest_boundary
from rollout.core.flags import FlagSettings
from rollout.core.plan import Plan
from rollout.ports import FlagError
from tests.support.controller_traffic import PROFILE, histogram_quantile
from tests.support.fake_exporter import FakeExporter, Scenario

# Queries a second: with the plans' margins, every gate reaches its verdict within seconds
# of a stage being judged (the smallest, the L1 cohort at 10 % against its control, needs
# ~10-20 thousand queries; the stale-rate bound 0.1 % ~4 200 audits since l1-10). The
# baseline is what `off` counted in its 4 s window: at 2,000/s (~10,000 queries) a healthy
# run's error-rate gate (margin +0.5 pp) stayed inconclusive in ~3 % of draws (an unlucky
# low baseline never catches up); at 5,000/s (~25,000) in none of 300 (judge_counts).
# Counts are binomial draws per tick: the rate costs no CPU.
TRAFFIC_RPS = 5000.0
# Both cohorts fail this often: errors are noise the checks must see through, not zero.
ERROR_RATE = 0.01
# The boundary the default plan's slow-answer checks count from (slower_than: 2.0).
SLOW_SECONDS = nearest_boundary(2.0)


def flags_scenario(scenario: Scenario, flags: FlagSettings) -> Scenario:
    """`scenario` running `flags` (the traffic follows them: controller_traffic)."""
    return replace(scenario, shadow=flags.shadow, l2=flags.l2, l1_percent=flags.l1_percent,
                   l1_share=None)


# What stage `off` records for the profile: every answer a full one, ERROR_RATE of them
# failing; the counts as if `off` had seen BASELINE_QUERIES queries.
BASELINE_QUERIES = 60_000
_SLOW_SHARE = PROFILE.miss.share_slower(SLOW_SECONDS)
_COST_CAP_USD = 0.05  # the default plan counts spend as a share of $0.05 per answer
BASELINE: Mapping[str, float] = {
    "baseline_error_rate": ERROR_RATE,
    "baseline_p95_seconds": histogram_quantile(0.95, [(1.0, PROFILE.miss)]),
    "baseline_slow_share": _SLOW_SHARE,
    "baseline_cost_per_query_usd": PROFILE.miss_cost_usd,
}
BASELINE_COUNTS: Mapping[str, tuple[float, float]] = {
    "baseline_error_rate": (ERROR_RATE * BASELINE_QUERIES, BASELINE_QUERIES),
    "baseline_slow_share": (_SLOW_SHARE * BASELINE_QUERIES, BASELINE_QUERIES),
    "baseline_cost_per_query_usd": (
        PROFILE.miss_cost_usd / _COST_CAP_USD * BASELINE_QUERIES, BASELINE_QUERIES
    ),
}


def baseline_for(plan: Plan) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """BASELINE and BASELINE_COUNTS for exactly the plan's baseline checks (a check the
    profile knows nothing about fails here, not in a decision far away)."""
    names = {check.name for check in plan.baseline_checks()}
    unknown = names - set(BASELINE)
    assert not unknown, f"no baseline value for {sorted(unknown)} in controller_replica"
    recorded = {c.name for c in plan.baseline_checks() if c.counts is not None}
    return ({n: v for n, v in BASELINE.items() if n in names},
            {n: v for n, v in BASELINE_COUNTS.items() if n in recorded})


def base_scenario(**overrides: Any) -> Scenario:
    """The healthy service at `off`: TRAFFIC_RPS, ERROR_RATE in both cohorts, every hit
    verified, nothing stale."""
    scenario = Scenario(requests_per_second=TRAFFIC_RPS, error_rate_on=ERROR_RATE,
                        error_rate_off=ERROR_RATE, verified_fraction=1.0)
    return replace(flags_scenario(scenario, FlagSettings()), **overrides)


class FlagReader(Protocol):
    async def read(self) -> FlagSettings: ...


class ServiceReplica:
    """The service, as far as the controller can see it: follows the flag store."""

    def __init__(
        self,
        exporter: FakeExporter,
        flags: FlagReader,
        *,
        faults: Mapping[FlagSettings, Mapping[str, Any]] | None = None,
        adopt_after: float = 1.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self.exporter = exporter
        self._flags = flags
        self.faults = dict(faults or {})
        self.adopt_after = adopt_after
        self.poll_seconds = poll_seconds
        self.adopted: list[tuple[float, FlagSettings]] = []  # (monotonic, flags) in order
        self.read_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._seen: FlagSettings | None = None
        self._seen_since = 0.0
        self._undo: dict[str, Any] = {}  # what the current fault replaced

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
        exporter never mixes the flags of one stage with the behaviour of another. The
        previous flags' fault ends, this one's (if any) begins, in the same swap."""
        healthy = replace(self.exporter.scenario, **self._undo)
        fault = dict(self.faults.get(flags, {}))
        self._undo = {name: getattr(healthy, name) for name in fault}
        self.exporter.scenario = replace(flags_scenario(healthy, flags), **fault)
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
