"""How long the statistical checks of a plan need at a given traffic (DESIGN.md §7,
`rollout plan check FILE --traffic RATE`): for every statistical gate, guardrail and
objective of every stage, the trials a verdict needs for the plan's margins and limits, the
time that takes at that traffic, and whether it fits in the stage's (scaled) bake.

What is assumed, and why (one rule per kind of check; the options of `Assumptions`):

* A gate or an objective is asked how long a *healthy* stage takes to pass:
  - non-inferiority: the stage's rate equals its comparison's (A/A); the rate is
    `slow_share` for a check with `slower_than` (answers slower than about the baseline
    p95), `error_rate` for any other;
  - limit test: the true rate is `headroom` of the way to the good side of its limit:
    limit x (1 - headroom) when higher is worse (a stale rate of half the limit), limit x
    (1 + headroom) when higher is better (a hit rate 1.5 x its 30 % limit: the seed's 45 %),
    never past halfway to 0 or 1.
* A guardrail is asked how long it takes to *prove* a regression as far on the bad side:
  the comparison's rate plus margin x (1 + headroom) (non-inferiority), or the mirror of
  the healthy rate across the limit (limit test). A check with a limit relative to a
  baseline depends on the rate recorded in the first stage, so it is listed, not computed.
* Trials per second come from the traffic and the stage's flags, read off the trials
  query's selectors: audits of served L1 answers (`cache_layer="query_result"`) are the L1
  cohort's queries x `l1_hit_rate` (every served hit is audited); `l1="on"` counts the L1
  cohort (l1_percent of the traffic), `l1="off"` the rest; anything else one trial per
  query. A comparison with a baseline uses the counts recorded over the first stage's bake.
* Evidence of a check with `since` accumulates from that stage's start: trials of the
  earlier stages (over their whole bakes) count towards the verdict.

Pure: `rollout.core.stats` searches the sample sizes; the CLI renders the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Final

from rollout.core.flags import FlagSettings
from rollout.core.plan import CheckKind, CheckSpec, Plan, StatSpec, StatTest, human_duration
from rollout.core.stats import (
    StatVerdict,
    non_inferiority,
    samples_for_difference,
    samples_for_limit,
)
from rollout.core.stats_design import first_n

_MAX_N: Final = 1e10
_L1_AUDITS: Final = 'cache_layer="query_result"'


@dataclass(frozen=True, slots=True)
class Assumptions:
    """The traffic, and the true rates the checks are assumed to see (module docstring)."""

    traffic: float  # queries per second, the whole service
    error_rate: float = 0.01
    slow_share: float = 0.05
    headroom: float = 0.5
    l1_hit_rate: float = 0.3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.traffic) and self.traffic > 0):
            raise ValueError(f"traffic must be a positive number, got {self.traffic}")
        for name in ("error_rate", "slow_share", "headroom", "l1_hit_rate"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie between 0 and 1, got {value}")


class Awaited(StrEnum):
    """The verdict a row times: a healthy stage passing, or a regression proven."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckNeed:
    """One statistical check in one stage: what it waits for and how long that takes."""

    stage: str
    stage_index: int
    check: str
    label: str
    kind: CheckKind
    test: StatTest
    dry_run: bool
    awaited: Awaited
    comparison: str  # "control", "baseline" or "limit"
    rate: float | None  # the stage's assumed true rate
    against: float | None  # the comparison's assumed rate, or the limit
    margin: float | None  # non-inferiority only
    trials_per_second: float  # the trials this check counts (both cohorts with a control)
    samples: int | None  # trials a verdict needs; None: never at these rates, or unknown
    seconds: float | None  # time in this stage until then; None as for samples
    carried: float  # trials from earlier stages (`since`)
    bake_seconds: float
    # False: nothing to time: idle (no traffic for its counts under this stage's flags), or
    # the limit depends on a recorded baseline; `note` says which.
    timed: bool = True
    idle: bool = False
    note: str = ""

    @property
    def within_bake(self) -> bool | None:
        """Whether a verdict comes within the bake; None when there is nothing to time."""
        if not self.timed:
            return None
        return self.seconds is not None and self.seconds <= self.bake_seconds


@dataclass(frozen=True, slots=True)
class PlanCheck:
    assumptions: Assumptions
    rows: tuple[CheckNeed, ...]
    warnings: tuple[str, ...]


def check_plan(plan: Plan, assumptions: Assumptions) -> PlanCheck:
    rows = tuple(
        _need(plan, index, check, assumptions)
        for index in range(1, len(plan.stages))
        for check in plan.checks_for(index)
        if check.stat is not None
    )
    warnings = (*_baseline_warnings(plan, assumptions),
                *(w for row in rows if (w := _warning(row, assumptions)) is not None))
    return PlanCheck(assumptions, rows, warnings)


def _baseline_warnings(plan: Plan, a: Assumptions) -> list[str]:
    """The first stage advances only once every baseline check has its minimum sample in its
    window: at low traffic it never does, and nothing after it is ever judged."""
    first = plan.stages[0]
    warnings = []
    for check in plan.checks_for(0):
        if check.kind is not CheckKind.BASELINE or check.sample_query is None:
            continue
        window = plan.window_of(check).total_seconds()
        got = trials_per_second(check.sample_query, first.flags, a) * window
        if got < check.min_sample:
            warnings.append(
                f"{first.name}: baseline {check.name} needs {check.min_sample:g} samples in "
                f"its {human_duration_seconds(window)} window, gets ≈{got:.0f} at "
                f"{a.traffic:g} queries/s: {first.name} never records its baseline and "
                "the rollout holds there for good")
    return warnings


# --- traffic -------------------------------------------------------------------------------------
def trials_per_second(template: str, flags: FlagSettings, assumptions: Assumptions) -> float:
    """The trials a counts query sees per second, from its selectors (module docstring)."""
    cohort = flags.l1_percent / 100
    if _L1_AUDITS in template:
        return assumptions.traffic * cohort * assumptions.l1_hit_rate
    if 'l1="on"' in template:
        return assumptions.traffic * cohort
    if 'l1="off"' in template:
        return assumptions.traffic * (1 - cohort)
    return assumptions.traffic


# --- one row -------------------------------------------------------------------------------------
def _need(plan: Plan, index: int, check: CheckSpec, a: Assumptions) -> CheckNeed:
    stat = check.stat
    assert stat is not None
    awaited = Awaited.FAIL if check.kind is CheckKind.GUARDRAIL else Awaited.PASS
    row = _Row(plan, index, check, awaited, a)
    if stat.test is StatTest.LIMIT:
        return _limit_need(row)
    return _difference_need(row)


def _limit_need(row: _Row) -> CheckNeed:
    stat, a = row.stat, row.assumptions
    assert stat.limit is not None
    if stat.limit.absolute is None:
        return row.untimed(None, None, "limit",
                           f"limit relative to baseline {stat.limit.baseline}, once recorded")
    limit = stat.limit.absolute
    rate = _limit_rate(limit, stat.higher_is_worse, row.awaited, a.headroom)
    if trials_per_second(stat.counts.trials, row.flags, a) == 0:
        return row.idle(rate, limit, "limit")
    alpha, alpha_fail = row.plan.alphas(row.check)
    return row.done(rate, limit, _for_limit(rate, limit, alpha, alpha_fail,
                                            stat.higher_is_worse), "limit")


def _difference_need(row: _Row) -> CheckNeed:
    stat, a = row.stat, row.assumptions
    base = a.slow_share if stat.slower_than is not None else a.error_rate
    step = 0.0 if row.awaited is Awaited.PASS else stat.margin * (1 + a.headroom)
    rate = min(max(base + (step if stat.higher_is_worse else -step), 0.0), 1.0)
    alpha, alpha_fail = row.plan.alphas(row.check)
    per_second = trials_per_second(stat.counts.trials, row.flags, a)
    if stat.control is not None:
        control = trials_per_second(stat.control.trials, row.flags, a)
        if per_second == 0 or control == 0:
            return row.idle(rate, base, "control")
        needed = _for_difference(rate, base, stat.margin, alpha, alpha_fail,
                                 per_second / (per_second + control), stat.higher_is_worse)
        return row.done(rate, base, needed, "control")
    assert stat.baseline is not None
    if per_second == 0:
        return row.idle(rate, base, "baseline")
    recorded = _baseline_trials(row.plan, stat.baseline, a)
    needed = _against_baseline(rate, base, recorded, stat.margin, alpha, alpha_fail,
                               stat.higher_is_worse)
    note = "" if needed is not None else (
        f"the baseline's {recorded:,.0f} recorded trials are too few for the margin"
    )
    return row.done(rate, base, needed, "baseline", note=note)


@dataclass(frozen=True, slots=True)
class _Row:
    plan: Plan
    index: int
    check: CheckSpec
    awaited: Awaited
    assumptions: Assumptions

    @property
    def stat(self) -> StatSpec:
        assert self.check.stat is not None
        return self.check.stat

    @property
    def flags(self) -> FlagSettings:
        return self.plan.stages[self.index].flags

    def rate_in(self, flags: FlagSettings) -> float:
        """The check's trials per second under a stage's flags (both cohorts with a
        control)."""
        stat = self.check.stat
        assert stat is not None
        rate = trials_per_second(stat.counts.trials, flags, self.assumptions)
        if stat.control is not None:
            rate += trials_per_second(stat.control.trials, flags, self.assumptions)
        return rate

    def done(self, rate: float | None, against: float | None, samples: int | None,
             comparison: str, note: str = "", *, timed: bool = True,
             idle: bool = False) -> CheckNeed:
        stat = self.check.stat
        assert stat is not None
        per_second = self.rate_in(self.plan.stages[self.index].flags)
        carried = self._carried()
        seconds = None
        if samples is not None and per_second > 0:
            seconds = max(0.0, samples - carried) / per_second
        return CheckNeed(
            stage=self.plan.stages[self.index].name, stage_index=self.index,
            check=self.check.name, label=self.check.display_name, kind=self.check.kind,
            test=stat.test, dry_run=self.check.dry_run, awaited=self.awaited,
            comparison=comparison, rate=rate, against=against,
            margin=stat.margin if stat.test is StatTest.NON_INFERIORITY else None,
            trials_per_second=per_second, samples=samples, seconds=seconds,
            carried=carried, bake_seconds=self.plan.bake_of(self.index).total_seconds(),
            timed=timed, idle=idle, note=note,
        )  # fmt: skip

    def untimed(self, rate: float | None, against: float | None, comparison: str,
                note: str) -> CheckNeed:
        return self.done(rate, against, None, comparison, note, timed=False)

    def idle(self, rate: float, against: float, comparison: str) -> CheckNeed:
        which = "control " if comparison == "control" else ""
        return self.done(rate, against, None, comparison,
                         f"idle: no {which}traffic at L1 {self.flags.l1_percent} %",
                         timed=False, idle=True)

    def _carried(self) -> float:
        """Trials counted in the stages before this one since the evidence began (`since`),
        each over its whole bake."""
        stat = self.check.stat
        assert stat is not None
        start = self.plan.index_of(stat.since) if stat.since is not None else None
        if start is None or start >= self.index:
            return 0.0
        return sum(self.rate_in(self.plan.stages[earlier].flags)
                   * self.plan.bake_of(earlier).total_seconds()
                   for earlier in range(start, self.index))


def _limit_rate(limit: float, higher_is_worse: bool, awaited: Awaited, headroom: float) -> float:
    """The true rate a limit test is assumed to see: `headroom` of the limit on the good
    side (healthy) or on the bad side (a regression), never past halfway to 0 or 1."""
    good_side = awaited is Awaited.PASS
    below = good_side == higher_is_worse
    if below:
        return limit * (1 - headroom)
    return min(limit * (1 + headroom), (1 + limit) / 2)


def _baseline_trials(plan: Plan, name: str, a: Assumptions) -> float:
    """The trials a baseline check records over the first stage's bake."""
    baseline = next((c for c in plan.baseline_checks() if c.name == name), None)
    if baseline is None or baseline.counts is None:
        return 0.0
    per_second = trials_per_second(baseline.counts.trials, plan.stages[0].flags, a)
    return per_second * plan.bake_of(0).total_seconds()


# --- sample sizes (cached: the same check often has the same rates in several stages) -------
@lru_cache(maxsize=1024)
def _for_limit(rate: float, limit: float, alpha: float, alpha_fail: float,
               higher_is_worse: bool) -> int | None:
    return samples_for_limit(rate, limit, alpha, alpha_fail, higher_is_worse=higher_is_worse,
                             max_n=_MAX_N)


@lru_cache(maxsize=1024)
def _for_difference(rate: float, base: float, margin: float, alpha: float, alpha_fail: float,
                    share: float, higher_is_worse: bool) -> int | None:
    return samples_for_difference(rate, base, margin, alpha, alpha_fail, treatment_share=share,
                                  higher_is_worse=higher_is_worse, max_n=_MAX_N)


@lru_cache(maxsize=1024)
def _against_baseline(rate: float, base: float, recorded: float, margin: float, alpha: float,
                      alpha_fail: float, higher_is_worse: bool) -> int | None:
    """Trials of the stage until non-inferiority against fixed baseline counts reaches the
    verdict the rates imply (the baseline does not grow: it was recorded in the first stage)."""
    if recorded <= 0:
        return None
    harm = (rate - base - margin) if higher_is_worse else (-margin - (rate - base))
    if harm == 0:
        return None
    wanted = StatVerdict.FAIL if harm > 0 else StatVerdict.PASS

    def reached(n: float) -> bool:
        judgement = non_inferiority(rate * n, n, base * recorded, recorded, margin, alpha,
                                    alpha_fail, higher_is_worse=higher_is_worse)
        return judgement.verdict is wanted

    return first_n(reached, _MAX_N)


# --- warnings ------------------------------------------------------------------------------------
def _warning(row: CheckNeed, a: Assumptions) -> str | None:
    """Where a stage cannot decide within its bake: a gate holds the stage, a guardrail may
    miss a regression before the rollout moves on, an objective ends inconclusive. Dry runs
    never act: no warning."""
    where = f"{row.stage}: {row.kind} {row.check}"
    gate = row.kind is CheckKind.GATE
    if row.dry_run or (row.within_bake is not False and not (row.idle and gate)):
        return None
    if row.seconds is None:
        why = row.note or "the assumed rates need more than 10^10 trials"
        verb = "pass" if gate else "decide"
        consequence = ": the stage holds for good" if gate else ""
        return f"{where} can never {verb} at {a.traffic:g} queries/s ({why}){consequence}"
    took, bake = human_duration_seconds(row.seconds), human_duration_seconds(row.bake_seconds)
    consequence = {
        CheckKind.GATE: f"to pass, longer than its {bake} bake: the stage holds until then",
        CheckKind.GUARDRAIL: f"to prove a regression of the assumed size, longer than the "
                             f"{bake} bake: the rollout may advance before it is caught here",
    }.get(row.kind, f"to be met, longer than the {bake} bake: it will be reported "
                    "inconclusive when the stage ends")
    return f"{where} needs ≈{took} at {a.traffic:g} queries/s {consequence}"


def human_duration_seconds(seconds: float) -> str:
    if seconds >= 1e9:
        return f"{seconds / (86400 * 365):.3g} years"
    return human_duration(timedelta(seconds=round(seconds)))
