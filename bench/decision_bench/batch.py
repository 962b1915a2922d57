"""Many runs: each draws its traffic once and runs every plan on it (common random numbers),
spread over worker processes in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.decision_bench.simulate import Rollout, Scenario
from bench.decision_bench.traffic import Slices, Traffic, draw
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan

HEALTHY: Final = "healthy"
REGRESSION: Final = "regression"
SCENARIO_NAMES: Final = (HEALTHY, REGRESSION)


@dataclass(frozen=True, slots=True)
class Config:
    plans: tuple[tuple[str, Path], ...]  # (key, file): "new" first, then "old"
    runs: int
    rates: tuple[float, ...]
    cycle: timedelta
    seed: int
    healthy_cap: timedelta
    regression_cap: timedelta  # after the regression begins
    regression_stage: str
    exact: bool = False
    scenarios: tuple[str, ...] = SCENARIO_NAMES

    def scenario(self, name: str) -> Scenario:
        if name == HEALTHY:
            return Scenario(HEALTHY, self.healthy_cap)
        # The baseline stage comes first (about its bake); the cap counts from the promotion.
        return Scenario(REGRESSION, self.regression_cap + timedelta(days=2),
                        self.regression_stage)


@dataclass(frozen=True, slots=True)
class Task:
    rate_index: int
    scenario: str
    runs: tuple[int, ...]


_PLANS: dict[str, Plan] = {}


def load_plans(config: Config) -> dict[str, Plan]:
    """The plans, unscaled (time_scale 1: bakes in plan days)."""
    plans = {}
    for key, path in config.plans:
        plan = load_plan(path)
        plans[key] = replace(plan, settings=replace(plan.settings, time_scale=1.0))
    return plans


def _init(config: Config) -> None:
    _PLANS.update(load_plans(config))


def run_task(config: Config, task: Task) -> list[dict[str, Any]]:
    plans = _PLANS or load_plans(config)
    rate = config.rates[task.rate_index]
    traffic = Traffic(rate)
    scenario = config.scenario(task.scenario)
    slices = Slices.for_percents(s.flags.l1_percent for p in plans.values() for s in p.stages)
    cycles = int(scenario.cap / config.cycle) + 2
    scenario_index = SCENARIO_NAMES.index(task.scenario)
    rows = []
    for run in task.runs:
        rng = np.random.default_rng([config.seed, task.rate_index, scenario_index, run])
        draws = draw(rng, traffic, slices, cycles, config.cycle.total_seconds(),
                     scenario.regression)
        for key, plan in plans.items():
            outcome = Rollout(plan, traffic, slices, draws, config.cycle, scenario,
                              exact=config.exact).run()
            row = asdict(outcome)
            row.update(plan=key, rate=rate, scenario=task.scenario, run=run)
            rows.append(row)
    return rows


def tasks(config: Config, chunk: int = 20) -> Iterator[Task]:
    for rate_index in range(len(config.rates)):
        for scenario in config.scenarios:
            for first in range(0, config.runs, chunk):
                yield Task(rate_index, scenario,
                           tuple(range(first, min(config.runs, first + chunk))))


def run_all(config: Config, processes: int, progress: Any = None) -> list[dict[str, Any]]:
    work: Sequence[Task] = list(tasks(config))
    rows: list[dict[str, Any]] = []
    if processes <= 1:
        _init(config)
        for done, task in enumerate(work, 1):
            rows.extend(run_task(config, task))
            if progress is not None:
                progress(done, len(work))
        return rows
    with ProcessPoolExecutor(max_workers=processes, initializer=_init,
                             initargs=(config,)) as pool:
        futures = [pool.submit(run_task, config, task) for task in work]
        for done, future in enumerate(futures, 1):
            rows.extend(future.result())
            if progress is not None:
                progress(done, len(work))
    return rows


def default_processes() -> int:
    return max(1, min(2, os.cpu_count() or 1))
