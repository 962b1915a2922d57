"""Many runs: each draws its traffic once and runs every plan on it (common random numbers:
a difference between two plans is the plans', not the draws'), spread over worker
processes in chunks of runs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from rollout.core.plan import Plan
from rollout.simulate.run import Outcome, Rollout, RunSpec
from rollout.simulate.scenarios import Scenario, ScenarioSpec, bind
from rollout.simulate.traffic import Slices, Traffic, draw

Progress = Callable[[int, int], None]  # (runs done, runs in all)
CHUNK: Final = 10


@dataclass(frozen=True, slots=True)
class Batch:
    """What to simulate: every plan (the first is the one judged, the others compared) under
    one scenario, traffic and run settings, `runs` times."""

    plans: tuple[tuple[str, Plan], ...]  # (label, plan)
    scenario: ScenarioSpec
    traffic: Traffic
    spec: RunSpec
    runs: int
    # The random stream: run i draws from numpy's default_rng([*key, i]), whatever the
    # chunking and the number of processes.
    key: tuple[int, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.plans)


def unscaled(plan: Plan) -> Plan:
    """The plan in real time (time_scale 1): a demo's scale would shrink the bakes but not
    the cycle or the traffic."""
    return replace(plan, settings=replace(plan.settings, time_scale=1.0))


def bound(batch: Batch) -> list[Scenario]:
    """The scenario placed in each plan (raises ScenarioError naming the plan)."""
    return [bind(batch.scenario, plan, label) for label, plan in batch.plans]


def slices_of(batch: Batch) -> Slices:
    return Slices.for_percents(s.flags.l1_percent for _, p in batch.plans for s in p.stages)


def run_one(batch: Batch, scenarios: Sequence[Scenario], slices: Slices,
            run: int) -> list[Outcome]:
    """One run: its draws, then every plan on them."""
    rng = np.random.default_rng([*batch.key, run])
    cycles = math.ceil(batch.spec.cap / batch.spec.cycle) + 2
    draws = draw(rng, batch.traffic, slices, cycles, batch.spec.cycle.total_seconds(),
                 scenarios[0].regression)
    return [
        Rollout(plan, batch.traffic, slices, draws, scenario, batch.spec).run()
        for (_, plan), scenario in zip(batch.plans, scenarios, strict=True)
    ]


def _chunks(runs: int, size: int = CHUNK) -> Iterator[range]:
    for first in range(0, runs, size):
        yield range(first, min(runs, first + size))


_WORKER: dict[str, tuple[Batch, list[Scenario], Slices]] = {}


def _init(batch: Batch) -> None:
    _WORKER["batch"] = (batch, bound(batch), slices_of(batch))


def _run_chunk(runs: range) -> list[list[Outcome]]:
    batch, scenarios, slices = _WORKER["batch"]
    return [run_one(batch, scenarios, slices, run) for run in runs]


def run_batch(batch: Batch, processes: int = 1,
              progress: Progress | None = None) -> list[list[Outcome]]:
    """Every run's outcomes, per plan: result[p][i] is plan p's outcome in run i."""
    per_run: list[list[Outcome]] = []
    chunks = list(_chunks(batch.runs))
    if processes <= 1 or len(chunks) == 1:
        _init(batch)
        for runs in chunks:
            per_run.extend(_run_chunk(runs))
            if progress is not None:
                progress(len(per_run), batch.runs)
    else:
        with ProcessPoolExecutor(max_workers=processes, initializer=_init,
                                 initargs=(batch,)) as pool:
            for outcomes in pool.map(_run_chunk, chunks):
                per_run.extend(outcomes)
                if progress is not None:
                    progress(len(per_run), batch.runs)
    return [[run[p] for run in per_run] for p in range(len(batch.plans))]


def default_processes() -> int:
    return max(1, min(2, os.cpu_count() or 1))
