"""The bundled default plan scaled to seconds, for tests of the real controller: a plan day
is `day_seconds`, every window becomes `WINDOW` (the plan's `min_window`; with 1 s scrapes a
4 s window holds ~4 samples, so rate()/increase() always have two), small pass/failure
counts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import yaml

from rollout.core.flags import FlagSettings
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_default_plan, load_plan
from rollout.plans import default_plan_path

WINDOW = timedelta(seconds=4)
INTERVAL_SECONDS = 0.5
DAY_SECONDS = 1.0

OFF, DARK, L2, L1_10, L1_50, L1_100 = "off", "dark-launch", "l2", "l1-10", "l1-50", "l1-100"
STAGES = (OFF, DARK, L2, L1_10, L1_50, L1_100)


def demo_plan(
    *,
    day_seconds: float = DAY_SECONDS,
    window: timedelta = WINDOW,
    passes: int = 2,
    failures: int = 2,
    interval_seconds: float = INTERVAL_SECONDS,
) -> Plan:
    """The bundled default plan (every check and stage as shipped), scaled to seconds."""
    plan = load_default_plan()
    settings = replace(
        plan.settings,
        time_scale=day_seconds / 86400,
        min_window=window,
        passes_to_advance=passes,
        failures_to_rollback=failures,
        evaluation_interval=timedelta(seconds=interval_seconds),
    )
    return replace(plan, settings=settings)


def write_demo_plan_file(path: Path, *, window: timedelta = WINDOW, passes: int = 2,
                         failures: int = 2) -> Path:
    """`demo_plan()` as a YAML file for a `rollout run` process (days are scaled by the
    process's ROLLOUT_TIME_SCALE, the interval by ROLLOUT_INTERVAL_SECONDS)."""
    data = yaml.safe_load(default_plan_path().read_text())
    data["settings"].update(min_window=f"{window.total_seconds()}s", passes_to_advance=passes,
                            failures_to_rollback=failures)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_plan(path)  # exactly as the process will
    return path


def stage_flags(plan: Plan, stage: str) -> FlagSettings:
    index = plan.index_of(stage)
    assert index is not None, stage
    return plan.stages[index].flags


def longest_window(plan: Plan, stage: str) -> timedelta:
    index = plan.index_of(stage)
    assert index is not None, stage
    return max(plan.window_of(spec) for spec in plan.checks_for(index))


def judging_delay(plan: Plan, stage: str) -> timedelta:
    """How long after the service reports a stage's flags every check of it is judged
    (decide's rule): a threshold check needs its whole window inside the stage, a
    statistical one counts from the confirmation and needs only the shortest window."""
    index = plan.index_of(stage)
    assert index is not None, stage
    return max(plan.settings.min_window if spec.stat is not None else plan.window_of(spec)
               for spec in plan.checks_for(index))

