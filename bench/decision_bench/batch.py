"""The benchmark's runs, through the product's simulator (rollout.simulate): per rate and
scenario, each run draws its traffic once and runs every plan on it (common random
numbers), spread over worker processes in chunks.

Its two scenarios in the simulator's terms: *healthy* is `healthy` over the whole plan;
*regression* is `l1-error` (the L1 cohort errs at 3 %) from the regression stage, promoted
there once the baseline is recorded (`start_at`) and ended when that stage advances
(`stop_when_left`), with times counted from the promotion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.simulate.batch import Batch, bound, default_processes, run_one, slices_of, unscaled
from rollout.simulate.run import RunSpec
from rollout.simulate.scenarios import HEALTHY_NAME, L1_ERROR, ScenarioSpec, scenario_spec
from rollout.simulate.traffic import Traffic

HEALTHY: Final = "healthy"
REGRESSION: Final = "regression"
SCENARIO_NAMES: Final = (HEALTHY, REGRESSION)
REGRESSION_ERROR: Final = 0.03  # the L1 cohort's error rate in the regression scenario

__all__ = ["HEALTHY", "REGRESSION", "SCENARIO_NAMES", "Config", "default_processes",
           "load_plans", "run_all", "run_task", "tasks"]


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

    def scenario(self, name: str) -> ScenarioSpec:
        if name == HEALTHY:
            return scenario_spec(HEALTHY_NAME)
        return scenario_spec(L1_ERROR, from_stage=self.regression_stage, size=REGRESSION_ERROR)

    def run_spec(self, name: str) -> RunSpec:
        if name == HEALTHY:
            return RunSpec(self.cycle, self.healthy_cap, exact=self.exact)
        # The baseline stage comes first (about its bake); the cap counts from the promotion.
        return RunSpec(self.cycle, self.regression_cap + timedelta(days=2),
                       start_at=self.regression_stage, stop_when_left=True, exact=self.exact)


@dataclass(frozen=True, slots=True)
class Task:
    rate_index: int
    scenario: str
    runs: tuple[int, ...]


_PLANS: dict[str, Plan] = {}


def load_plans(config: Config) -> dict[str, Plan]:
    """The plans, unscaled (time_scale 1: bakes in plan days)."""
    return {key: unscaled(load_plan(path)) for key, path in config.plans}


def _init(config: Config) -> None:
    _PLANS.update(load_plans(config))


def batch_of(config: Config, plans: dict[str, Plan], rate_index: int, scenario: str) -> Batch:
    """One rate and scenario as the simulator's batch; run i draws from
    default_rng([seed, rate index, scenario index, i])."""
    return Batch(
        plans=tuple(plans.items()), scenario=config.scenario(scenario),
        traffic=Traffic(config.rates[rate_index]), spec=config.run_spec(scenario),
        runs=config.runs,
        key=(config.seed, rate_index, SCENARIO_NAMES.index(scenario)),
    )  # fmt: skip


def run_task(config: Config, task: Task) -> list[dict[str, Any]]:
    plans = _PLANS or load_plans(config)
    batch = batch_of(config, plans, task.rate_index, task.scenario)
    scenarios, slices = bound(batch), slices_of(batch)
    rows = []
    for run in task.runs:
        for key, outcome in zip(plans, run_one(batch, scenarios, slices, run), strict=True):
            row = asdict(outcome)
            if task.scenario == REGRESSION:  # times from the regression's start
                row["seconds"] = outcome.since_began
            row.update(plan=key, rate=batch.traffic.rate, scenario=task.scenario, run=run)
            rows.append(row)
    return rows


def tasks(config: Config, chunk: int = 20) -> Iterator[Task]:
    for rate_index in range(len(config.rates)):
        for scenario in config.scenarios:
            for first in range(0, config.runs, chunk):
                yield Task(rate_index, scenario,
                           tuple(range(first, min(config.runs, first + chunk))))


def run_all(config: Config, processes: int,
            progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
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
