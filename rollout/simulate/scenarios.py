"""The scenarios a plan is simulated under: what goes wrong (or not), from which stage, and
how much. A scenario is named and parameterised by the user (`ScenarioSpec`), then bound to
a plan (`Scenario`), which places its stage and says, stage by stage, which of its effects
the traffic shows.

* healthy      A/A: caching changes nothing the checks look at.
* l1-error     the L1 cohort's answers err at SIZE (healthy 1 %) from FROM_STAGE on.
* stale        SIZE of the L1 hits are stale from FROM_STAGE on (served hits' audits and
               shadow hits' verifications see them).
* latency      SIZE of the affected answers are slower than 2.04 s (healthy 5 %) from
               FROM_STAGE on: the L1 cohort's when that stage serves L1, else every answer.
* low-traffic  healthy, but the traffic falls to SIZE times the rate from FROM_STAGE on.
* outage       healthy, but Prometheus cannot be read for DURATION, AFTER the flags of
               FROM_STAGE were first confirmed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from rollout.core.plan import Plan
from rollout.simulate.traffic import HEALTHY, Effects, Regression, Traffic

HEALTHY_NAME: Final = "healthy"
L1_ERROR: Final = "l1-error"
STALE: Final = "stale"
LATENCY: Final = "latency"
LOW_TRAFFIC: Final = "low-traffic"
OUTAGE: Final = "outage"
NAMES: Final = (HEALTHY_NAME, L1_ERROR, STALE, LATENCY, LOW_TRAFFIC, OUTAGE)
# Scenarios whose runs are judged on catching a harm (the others on completing without a
# rollback).
HARMFUL: Final = frozenset({L1_ERROR, STALE, LATENCY})

_HEALTHY_TRAFFIC: Final = Traffic(0.0)


@dataclass(frozen=True, slots=True)
class _Defaults:
    from_stage: str | None = None
    size: float | None = None
    after: timedelta | None = None
    duration: timedelta | None = None


DEFAULTS: Final[dict[str, _Defaults]] = {
    HEALTHY_NAME: _Defaults(),
    L1_ERROR: _Defaults("l1-10", 0.03),
    STALE: _Defaults("l1-50", 0.01),
    LATENCY: _Defaults("l1-10", 0.10),
    LOW_TRAFFIC: _Defaults("dark-launch", 0.1),
    OUTAGE: _Defaults("l1-10", None, timedelta(hours=12), timedelta(hours=6)),
}


class ScenarioError(ValueError):
    """A scenario parameter that cannot be used, with the command-line option it came from."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A scenario as the user names it, defaults filled in."""

    name: str
    from_stage: str | None = None
    size: float | None = None
    after: timedelta | None = None
    duration: timedelta | None = None

    def describe(self) -> str:
        if self.name == HEALTHY_NAME:
            return "healthy (A/A): caching changes nothing the checks look at"
        stage = f"from {self.from_stage}"
        size = self.size if self.size is not None else 0.0
        if self.name == L1_ERROR:
            return (f"L1-cohort errors {_pct(_HEALTHY_TRAFFIC.error)} -> {_pct(size)} {stage}")
        if self.name == STALE:
            return f"{_pct(size)} of L1 hits stale {stage}"
        if self.name == LATENCY:
            return (f"answers slower than {_HEALTHY_TRAFFIC.slow_boundary:g} s "
                    f"{_pct(_HEALTHY_TRAFFIC.slow_share)} -> {_pct(size)} {stage}")
        if self.name == LOW_TRAFFIC:
            return f"traffic falls to {size:g} x the rate {stage}"
        after = self.after or timedelta()
        duration = self.duration or timedelta()
        return (f"Prometheus unreadable for {_hours(duration)}, {_hours(after)} after "
                f"{self.from_stage}'s flags were confirmed")


def _pct(value: float) -> str:
    return f"{value * 100:.3g} %"


def _hours(value: timedelta) -> str:
    return f"{value / timedelta(hours=1):g} h"


def scenario_spec(
    name: str, *, from_stage: str | None = None, size: float | None = None,
    after: timedelta | None = None, duration: timedelta | None = None,
) -> ScenarioSpec:
    """The named scenario with its defaults; an option it does not take is an error."""
    if name not in DEFAULTS:
        raise ScenarioError("--scenario", f"unknown scenario {name!r}; choose one of "
                                          f"{', '.join(NAMES)}")
    defaults = DEFAULTS[name]
    given = {"--from-stage": from_stage, "--size": size, "--after": after,
             "--duration": duration}
    taken = {"--from-stage": defaults.from_stage, "--size": defaults.size,
             "--after": defaults.after, "--duration": defaults.duration}
    for option, value in given.items():
        if value is not None and taken[option] is None:
            raise ScenarioError(option, f"the {name} scenario takes no {option}")
    spec = ScenarioSpec(
        name,
        from_stage if from_stage is not None else defaults.from_stage,
        size if size is not None else defaults.size,
        after if after is not None else defaults.after,
        duration if duration is not None else defaults.duration,
    )  # fmt: skip
    _check_values(spec)
    return spec


def _check_values(spec: ScenarioSpec) -> None:
    size = spec.size
    if size is not None:
        low, high, what = {
            L1_ERROR: (_HEALTHY_TRAFFIC.error, 1.0, "an error rate above the healthy "
                                                   f"{_HEALTHY_TRAFFIC.error:g} and below 1"),
            STALE: (0.0, 1.0, "a share of L1 hits between 0 and 1 (exclusive)"),
            LATENCY: (_HEALTHY_TRAFFIC.slow_share, 0.5,
                      f"a share of slow answers above the healthy "
                      f"{_HEALTHY_TRAFFIC.slow_share:g} and at most 0.5"),
            LOW_TRAFFIC: (0.0, 1.0, "a fraction of the rate between 0 and 1 (exclusive)"),
        }[spec.name]
        inside = low < size <= high if spec.name == LATENCY else low < size < high
        if not inside:
            raise ScenarioError("--size", f"must be {what}, got {size:g}")
    if spec.after is not None and spec.after < timedelta():
        raise ScenarioError("--after", "must not be negative")
    if spec.duration is not None and spec.duration <= timedelta():
        raise ScenarioError("--duration", "must be longer than 0")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario placed in one plan."""

    spec: ScenarioSpec
    from_index: int | None  # the stage its effects start in (None: healthy)
    whole_service: bool  # errors and latency hit every answer (the stage serves no L1)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def harmful(self) -> bool:
        return self.spec.name in HARMFUL

    @property
    def regression(self) -> Regression:
        """What the draws must hold for this scenario."""
        size = self.spec.size
        return Regression(
            error=size if self.name == L1_ERROR else None,
            slow_share=size if self.name == LATENCY else None,
            stale=size if self.name == STALE else None,
            traffic_factor=size if self.name == LOW_TRAFFIC else None,
        )

    def effects(self, stage_index: int) -> Effects:
        """What the traffic of a stage shows: the effects apply from the scenario's stage on
        (a rollback below it ends them)."""
        if self.from_index is None or stage_index < self.from_index or self.name == OUTAGE:
            return HEALTHY
        return Effects(errors=self.name == L1_ERROR, slow=self.name == LATENCY,
                       stale=self.name == STALE, low_traffic=self.name == LOW_TRAFFIC,
                       whole_service=self.whole_service)

    @property
    def outage(self) -> tuple[timedelta, timedelta] | None:
        """(after the scenario stage's flags were confirmed, how long) for an outage."""
        if self.name != OUTAGE or self.spec.after is None or self.spec.duration is None:
            return None
        return self.spec.after, self.spec.duration


def bind(spec: ScenarioSpec, plan: Plan, plan_name: str = "the plan") -> Scenario:
    """Place the scenario in a plan: its stage must exist there, and serve what it breaks."""
    if spec.from_stage is None:
        return Scenario(spec, None, whole_service=False)
    index = plan.index_of(spec.from_stage)
    if index is None:
        close = difflib.get_close_matches(spec.from_stage, plan.stage_names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ScenarioError("--from-stage", f"{plan_name} has no stage {spec.from_stage!r}"
                                            f"{hint}; its stages: {', '.join(plan.stage_names)}")
    flags = plan.stages[index].flags
    if spec.name == L1_ERROR and flags.l1_percent == 0:
        raise ScenarioError("--from-stage", f"{spec.from_stage} serves no L1 cohort in "
                                            f"{plan_name} (l1_percent 0)")
    if spec.name == STALE and flags.l1_percent == 0 and not flags.shadow:
        raise ScenarioError("--from-stage", f"{spec.from_stage} neither serves nor shadows "
                                            f"L1 in {plan_name}: stale answers would not show")
    return Scenario(spec, index, whole_service=flags.l1_percent == 0)
