"""From runs to figures: the share of runs rolled back (false or true) with a 95 % interval,
where and why; the time to detect a harm and to complete; the runs held past a stage's bake;
and, for two plans run on the same draws, their ratios."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollout.core.plan import Plan
from rollout.simulate.run import COMPLETED, HELD, ROLLED_BACK, Outcome, RunSpec
from rollout.simulate.scenarios import Scenario

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Share:
    """count of runs among `runs`, with its 95 % Wilson score interval."""

    count: int
    runs: int
    low: float
    high: float

    @property
    def share(self) -> float:
        return self.count / self.runs if self.runs else math.nan


def share(count: int, runs: int) -> Share:
    low, high = wilson(count, runs)
    return Share(count, runs, low, high)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class Quantiles:
    """Median and 95th percentile in seconds (None: no run to take them from)."""

    count: int
    median: float | None
    p95: float | None


def quantiles(values: Sequence[float]) -> Quantiles:
    if not values:
        return Quantiles(0, None, None)
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return Quantiles(len(ordered), at(0.5), at(0.95))


@dataclass(frozen=True, slots=True)
class Summary:
    """One plan's runs under one scenario."""

    label: str
    runs: int
    rolled_back: Share  # any rollback
    false_rollback: Share  # before the harm began (every rollback when there is none)
    true_rollback: Share  # after the harm began
    caught_in_stage: Share | None  # rolled back in the harm's stage: before the next stage
    missed: Share | None  # completed with the harm
    never_reached: Share | None  # the harm's stage never entered (held, or rolled back)
    completed: Share
    held: Share  # still going at the cap
    past_bake: Share  # held longer than a stage's bake needs
    rollbacks: dict[str, int]  # "l1-10 -> l2": runs
    breached: dict[str, int]  # guardrail: runs it rolled back
    held_at: dict[str, int]  # stage: runs still there at the cap
    past_bake_at: dict[str, int]  # stage: runs held past its bake there
    time_to_complete: Quantiles
    time_to_detect: Quantiles  # from the harm's start (healthy: the run's) to the rollback
    time_past_bake: Quantiles  # the longest overrun of each run held past a bake
    bakes_seconds: float  # the bakes of the stages a complete run goes through
    examples: tuple[str, ...]  # a few rollback reasons
    decide_calls_mean: float


def summarise(label: str, outcomes: Sequence[Outcome], plan: Plan, scenario: Scenario,
              spec: RunSpec) -> Summary:
    n = len(outcomes)
    rolled = [o for o in outcomes if o.outcome == ROLLED_BACK]
    began = [o for o in rolled if o.began is not None and o.seconds >= o.began]
    harmful = scenario.harmful
    true = began if harmful else []
    true_ids = {id(o) for o in true}
    false = [o for o in rolled if id(o) not in true_ids]
    tolerance = _tolerance(plan, spec)
    late = [o for o in outcomes if any(v > tolerance for v in o.overruns.values())]
    stage = scenario.spec.from_stage
    detected = true if harmful else rolled
    return Summary(
        label=label, runs=n,
        rolled_back=share(len(rolled), n),
        false_rollback=share(len(false), n),
        true_rollback=share(len(true), n),
        caught_in_stage=share(sum(1 for o in true if o.stage == stage), n) if harmful else None,
        missed=share(sum(1 for o in outcomes if o.outcome == COMPLETED and o.began is not None),
                     n) if harmful else None,
        never_reached=share(sum(1 for o in outcomes if o.began is None), n)
        if scenario.from_index is not None else None,
        completed=share(sum(1 for o in outcomes if o.outcome == COMPLETED), n),
        held=share(sum(1 for o in outcomes if o.outcome == HELD), n),
        past_bake=share(len(late), n),
        rollbacks=dict(Counter(f"{o.stage} -> {o.rollback_to}" for o in rolled).most_common()),
        breached=dict(Counter(name for o in rolled for name in o.breached).most_common()),
        held_at=dict(Counter(o.stage for o in outcomes if o.outcome == HELD).most_common()),
        past_bake_at=dict(Counter(name for o in late for name, v in o.overruns.items()
                                  if v > tolerance).most_common()),
        time_to_complete=quantiles([o.seconds for o in outcomes if o.outcome == COMPLETED]),
        time_to_detect=quantiles([o.seconds - (o.began or 0.0) if harmful else o.seconds
                                  for o in detected]),
        time_past_bake=quantiles([max(o.overruns.values()) for o in late]),
        bakes_seconds=_bakes(plan, spec).total_seconds(),
        examples=tuple(dict.fromkeys(o.reason for o in rolled))[:3],
        decide_calls_mean=sum(o.decide_calls for o in outcomes) / n if n else math.nan,
    )  # fmt: skip


def _tolerance(plan: Plan, spec: RunSpec) -> float:
    """How far past its bake a healthy stage ends anyway: the passing cycles an advance
    needs after the bake, the flags' confirmation and their delay, one cycle of rounding."""
    cycles = plan.settings.passes_to_advance + 2 + spec.delay_cycles
    return (cycles * spec.cycle).total_seconds()


def _bakes(plan: Plan, spec: RunSpec) -> timedelta:
    """The bakes of the stages a complete run goes through (the first, then from the start
    stage when it is promoted there)."""
    first = plan.index_of(spec.start_at) if spec.start_at is not None else None
    indices = [0, *range(first if first is not None else 1, len(plan.stages))]
    return sum((plan.bake_of(i) for i in indices), timedelta())


def ratio(other: float | None, this: float | None) -> float | None:
    """other / this, None when either is missing or this is 0."""
    if other is None or this is None or this == 0 or math.isnan(other) or math.isnan(this):
        return None
    return other / this
