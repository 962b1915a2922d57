"""The rollout plan: stages in order, the checks that judge them, and the global settings.

Every type here is frozen: a plan is loaded once (see `plan_loader`) and then only read.
Durations are stored unscaled, as written in the plan; `Plan.scaled` and `Plan.window_of`
apply `time_scale` so that a demo can run the same plan with days shrunk to seconds.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Final

from rollout.core.flags import FlagSettings

WINDOW_PLACEHOLDER: Final = "{window}"
# In a statistical check's count queries: the histogram bucket boundary (`le` label value)
# nearest the check's `slower_than` (DESIGN.md §7: latency judged as the share of slow answers).
BOUNDARY_PLACEHOLDER: Final = "{le}"


class CheckKind(StrEnum):
    GATE = "gate"  # must pass for the stage to advance
    GUARDRAIL = "guardrail"  # failing (N cycles, or 1 if critical) rolls the stage back
    BASELINE = "baseline"  # measured in the first stage; relative thresholds refer to it
    # Measured with an interval and reported at every transition and at the end; never
    # blocks an advance, never rolls back (DESIGN.md §7: the seed's improvement targets).
    OBJECTIVE = "objective"


class StatTest(StrEnum):
    """How a statistical check turns counts into a verdict (rollout.core.stats_design)."""

    # rate(stage) - rate(comparison) within `margin`; the comparison is a concurrent control
    # cohort (`control` counts) or the counts a baseline check recorded in the first stage.
    NON_INFERIORITY = "non_inferiority"
    # rate(stage) against a limit: absolute, or a baseline check's recorded rate x factor.
    LIMIT = "limit"


class Comparator(StrEnum):
    """How a measured value must relate to its limit for the check to pass."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def holds(self, value: float, limit: float) -> bool:
        return _COMPARE[self](value, limit)

    @property
    def negated(self) -> str:
        """The symbol that describes a failure, for reason lines like `212 ms > 180 ms`."""
        return _NEGATED[self]


_COMPARE: Final[dict[Comparator, Callable[[float, float], bool]]] = {
    Comparator.LT: operator.lt,
    Comparator.LE: operator.le,
    Comparator.GT: operator.gt,
    Comparator.GE: operator.ge,
}
_NEGATED: Final = {
    Comparator.LT: ">=",
    Comparator.LE: ">",
    Comparator.GT: "<=",
    Comparator.GE: "<",
}


class Unit(StrEnum):
    """How a value is shown to people; the comparison itself is always on the raw number."""

    RATIO = "ratio"  # 0..1, shown as a percentage
    SECONDS = "seconds"
    USD = "usd"
    BYTES = "bytes"
    COUNT = "count"
    FACTOR = "factor"  # a ratio of two measurements, e.g. cohort p95 / control p95
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class Threshold:
    """Either an absolute limit, or `baseline[name] * factor + margin`."""

    absolute: float | None = None
    baseline: str | None = None
    factor: float = 1.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        if (self.absolute is None) == (self.baseline is None):
            raise ValueError("a threshold is either absolute or relative to a baseline")

    def limit(self, baseline_values: Mapping[str, float]) -> float | None:
        """The number to compare against, or None when the baseline it needs is missing."""
        if self.absolute is not None:
            return self.absolute
        assert self.baseline is not None
        recorded = baseline_values.get(self.baseline)
        if recorded is None or not math.isfinite(recorded):
            return None
        return recorded * self.factor + self.margin


@dataclass(frozen=True, slots=True)
class Counts:
    """Two PromQL templates: events (errors, slow answers, stale audits, ...) and the trials
    they are among (queries, audits). `{window}` becomes the time since the evidence began."""

    events: str
    trials: str


@dataclass(frozen=True, slots=True)
class StatSpec:
    """A check judged by an anytime-valid bound on counts (DESIGN.md §7).

    `alpha` bounds the probability of ever wrongly passing (showing no harm when there is
    harm beyond the margin); `alpha_fail` of ever wrongly failing (a false rollback, or a
    false "missed" objective). None takes the plan's default for the check's role.
    `since` names an earlier stage: evidence then accumulates from the confirmation of that
    stage's flags in the current ascent (integrity audits across the L1 stages).
    `slower_than` resolves `{le}` in the queries to the bucket boundary nearest it.
    """

    test: StatTest
    counts: Counts
    control: Counts | None = None
    baseline: str | None = None
    margin: float = 0.0
    limit: Threshold | None = None
    higher_is_worse: bool = True
    alpha: float | None = None
    alpha_fail: float | None = None
    since: str | None = None
    slower_than: Threshold | None = None

    def __post_init__(self) -> None:
        if self.test is StatTest.NON_INFERIORITY:
            if (self.control is None) == (self.baseline is None):
                raise ValueError(
                    "a non-inferiority test compares with a control cohort or a baseline"
                )
            if self.limit is not None:
                raise ValueError("a non-inferiority test has a margin, not a limit")
        else:
            if self.limit is None:
                raise ValueError("a limit test needs a limit")
            if self.control is not None or self.baseline is not None:
                raise ValueError("a limit test has no control and no baseline counts")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError("margin must be a number >= 0")
        for name in ("alpha", "alpha_fail"):
            level = getattr(self, name)
            if level is not None and not 0 < level < 0.5:
                raise ValueError(f"{name} must lie between 0 and 0.5")

    @property
    def comparison(self) -> str:
        """What the stage is compared with, as people read it in a reason line."""
        if self.control is not None:
            return "control cohort"
        if self.baseline is not None:
            return "baseline (time-confounded)"
        return "limit"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One PromQL measurement and the rule that turns it into a verdict.

    `query` and `sample_query` are templates: `{window}` is replaced by the (scaled)
    window. `sample_query` counts the traffic behind `query` over the same window; below
    `min_sample` the verdict is `no_data` rather than a judgement on a handful of requests.
    """

    name: str
    kind: CheckKind
    query: str
    window: timedelta
    # A statistical check: judged from counts since its evidence began (`query` is then its
    # point estimate for dashboards and the log, `comparator`/`threshold` unused).
    stat: StatSpec | None = None
    # A baseline check's counts, recorded with its value for the non-inferiority tests
    # against the baseline in the stages before a control cohort exists.
    counts: Counts | None = None
    comparator: Comparator | None = None
    threshold: Threshold | None = None
    sample_query: str | None = None
    min_sample: float = 0.0
    critical: bool = False
    dry_run: bool = False
    unit: Unit = Unit.NUMBER
    label: str = ""
    description: str = ""
    # Where a proven breach of this guardrail goes (DESIGN.md §7: a stale L1 answer to the
    # last stage that serves none); None steps back one stage.
    rollback_to: str | None = None

    def __post_init__(self) -> None:
        if self.rollback_to is not None and self.kind is not CheckKind.GUARDRAIL:
            raise ValueError(f"check {self.name!r}: only a guardrail has a rollback_to")
        if self.kind is CheckKind.BASELINE:
            if self.comparator is not None or self.threshold is not None:
                raise ValueError(f"baseline check {self.name!r} takes no comparator or threshold")
        elif self.stat is not None:
            if self.comparator is not None or self.threshold is not None:
                raise ValueError(
                    f"statistical check {self.name!r} takes no comparator or threshold"
                )
        elif self.kind is CheckKind.OBJECTIVE:
            raise ValueError(f"objective {self.name!r} needs a statistical test")
        elif self.comparator is None or self.threshold is None:
            raise ValueError(f"check {self.name!r} needs a comparator and a threshold")
        if self.counts is not None and self.kind is not CheckKind.BASELINE:
            raise ValueError(f"check {self.name!r}: only a baseline check records counts")
        if self.min_sample > 0 and self.sample_query is None:
            raise ValueError(f"check {self.name!r} has min_sample but no sample_query")
        if self.window <= timedelta(0):
            raise ValueError(f"check {self.name!r} needs a positive window")

    @property
    def display_name(self) -> str:
        return self.label or self.name

    @property
    def is_enforced(self) -> bool:
        """Acted on: not a dry run and not an objective (objectives are only reported)."""
        return not self.dry_run and self.kind is not CheckKind.OBJECTIVE


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    flags: FlagSettings
    bake: timedelta
    checks: tuple[CheckSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class PlanSettings:
    passes_to_advance: int = 3  # M
    failures_to_rollback: int = 3  # N
    cooldown: timedelta = timedelta(hours=1)
    auto_resume_after_rollback: bool = False
    time_scale: float = 1.0
    # Scaled windows never shrink below this: rate() needs at least two scrapes in range.
    min_window: timedelta = timedelta(seconds=30)
    evaluation_interval: timedelta = timedelta(seconds=60)
    hold_too_long: timedelta | None = timedelta(days=2)
    # Error levels of the statistical checks, by role (DESIGN.md §7). A gate's alpha bounds
    # a wrong advance; a guardrail's alpha_fail a false rollback, which is spent across
    # every guardrail of every stage, hence far smaller.
    gate_alpha: float = 0.05
    guardrail_alpha_fail: float = 0.0005
    objective_alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.passes_to_advance < 1 or self.failures_to_rollback < 1:
            raise ValueError("passes_to_advance and failures_to_rollback must be at least 1")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError("time_scale must be a positive number")


@dataclass(frozen=True, slots=True)
class Plan:
    stages: tuple[Stage, ...]
    guardrails: tuple[CheckSpec, ...] = ()
    settings: PlanSettings = field(default_factory=PlanSettings)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a plan needs at least one stage")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")

    # --- stages ---------------------------------------------------------------------------
    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def last_index(self) -> int:
        return len(self.stages) - 1

    def index_of(self, stage_name: str) -> int | None:
        for index, stage in enumerate(self.stages):
            if stage.name == stage_name:
                return index
        return None

    # --- checks ---------------------------------------------------------------------------
    def checks_for(self, stage_index: int) -> tuple[CheckSpec, ...]:
        """Every check judged in a stage: the global guardrails (not in the baseline stage,
        which has nothing below it to roll back to) followed by the stage's own checks."""
        stage = self.stages[stage_index]
        guardrails = self.guardrails if stage_index > 0 else ()
        return guardrails + stage.checks

    def all_checks(self) -> Iterator[CheckSpec]:
        yield from self.guardrails
        for stage in self.stages:
            yield from stage.checks

    def baseline_checks(self) -> tuple[CheckSpec, ...]:
        return tuple(c for c in self.stages[0].checks if c.kind is CheckKind.BASELINE)

    # --- time -----------------------------------------------------------------------------
    def scaled(self, duration: timedelta) -> timedelta:
        return duration * self.settings.time_scale

    def bake_of(self, stage_index: int) -> timedelta:
        return self.scaled(self.stages[stage_index].bake)

    def window_of(self, check: CheckSpec) -> timedelta:
        return max(self.scaled(check.window), self.settings.min_window)

    def render_query(self, check: CheckSpec) -> str:
        return check.query.replace(WINDOW_PLACEHOLDER, promql_duration(self.window_of(check)))

    def render_sample_query(self, check: CheckSpec) -> str | None:
        if check.sample_query is None:
            return None
        window = promql_duration(self.window_of(check))
        return check.sample_query.replace(WINDOW_PLACEHOLDER, window)

    def failures_to_rollback(self, check: CheckSpec) -> int:
        """A proven breach (an anytime-valid bound) or a critical one acts at once; a plain
        threshold must fail N cycles in a row."""
        if check.critical or check.stat is not None:
            return 1
        return self.settings.failures_to_rollback

    def alphas(self, check: CheckSpec) -> tuple[float, float]:
        """(alpha, alpha_fail) of a statistical check: its own, else its role's default."""
        assert check.stat is not None
        settings = self.settings
        if check.kind is CheckKind.GUARDRAIL:
            default_alpha, default_fail = settings.gate_alpha, settings.guardrail_alpha_fail
        elif check.kind is CheckKind.OBJECTIVE:
            default_alpha = default_fail = settings.objective_alpha
        else:
            default_alpha = default_fail = settings.gate_alpha
        return (
            check.stat.alpha if check.stat.alpha is not None else default_alpha,
            check.stat.alpha_fail if check.stat.alpha_fail is not None else default_fail,
        )


_PROMQL_UNITS: Final = (
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)


def promql_duration(duration: timedelta) -> str:
    """The largest PromQL unit that expresses the duration exactly (`1h`, `90s`, `1500ms`).

    Sub-millisecond remainders are rounded: Prometheus cannot express them anyway.
    """
    millis = max(1, round(duration / timedelta(milliseconds=1)))
    for suffix, unit in _PROMQL_UNITS:
        unit_ms = round(unit / timedelta(milliseconds=1))
        if millis % unit_ms == 0:
            return f"{millis // unit_ms}{suffix}"
    raise AssertionError("unreachable: every whole number of milliseconds has a unit")


def human_duration(duration: timedelta) -> str:
    """Two most significant units, for reason lines: `2d 4h`, `12m 30s`, `0.5s`."""
    total = duration.total_seconds()
    if total < 0:
        return "-" + human_duration(-duration)
    if total < 60 and total != int(total):
        return f"{total:.3g}s"
    seconds = int(total)
    parts: list[str] = []
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{suffix}")
    return " ".join(parts[:2]) or "0s"
