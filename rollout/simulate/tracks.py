"""One check through one stage visit: its counts (or value) at every cycle of the visit, read
through its own PromQL from the simulated counters, its real verdict at any cycle, and cheap
screens that say at which cycles that verdict could matter.

A threshold check's verdict is computed for every cycle at once, the same rules as
`rollout.core.checks.judge` (and checked against it at every cycle `decide` is called). A
statistical check's verdict comes from the same statistics `judge_counts` calls, on the
same counts, only at the cycles that need it; the screens use the point estimate, which the
anytime-valid bounds always enclose: no FAIL where the estimate is within the margin, no
PASS where it is beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from rollout.core.boundaries import render_counts, resolve_boundary
from rollout.core.checks import judge
from rollout.core.evidence import judge_counts, with_recorded_counts
from rollout.core.observations import Measurement, Observation, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Comparator, Counts, Plan, StatSpec, StatTest
from rollout.core.state import RolloutState
from rollout.core.stats import limit_test, non_inferiority
from rollout.simulate.clock import index_of
from rollout.simulate.promql import Array, Frame, Metric, single
from rollout.simulate.traffic import grid

Mask = npt.NDArray[np.bool_]
_COMPARATORS: Final[dict[Comparator, Callable[[Array, float], Mask]]] = {
    Comparator.LT: np.less, Comparator.LE: np.less_equal,
    Comparator.GT: np.greater, Comparator.GE: np.greater_equal,
}
# Verdict codes of the vectorised threshold judgement.
NO_DATA, PASS, FAIL = 0, 1, 2
_CODES: Final = {NO_DATA: Verdict.NO_DATA, PASS: Verdict.PASS, FAIL: Verdict.FAIL}


@dataclass(frozen=True, slots=True)
class Window:
    """The cycles a visit covers and where it looks."""

    first: int  # the visit's first cycle (its flags confirmation)
    last: int  # one past the last cycle covered
    cycle: timedelta
    counters: Mapping[Metric, Array]
    gauges: Mapping[Metric, float]

    @property
    def cycles(self) -> npt.NDArray[np.int64]:
        return np.arange(self.first, self.last, dtype=np.int64)

    def frame(self, starts: npt.NDArray[np.int64], seconds: Array) -> Frame:
        return Frame(self.counters, self.gauges, starts, self.cycles, seconds)


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class Track:
    """The common face of both kinds of check."""

    spec: CheckSpec
    enforced: bool
    guardrail: bool

    def __init__(self, spec: CheckSpec, window: Window) -> None:
        self.spec, self.window = spec, window
        self.enforced = spec.is_enforced
        self.guardrail = spec.kind is CheckKind.GUARDRAIL

    def at(self, t: int) -> int:
        return t - self.window.first

    def observation(self, t: int) -> Observation:
        raise NotImplementedError

    def verdict(self, t: int) -> Verdict:
        """The verdict the real judgement gives at cycle t (computed only when asked)."""
        raise NotImplementedError

    def can_fail(self) -> Mask:
        """Cycles at which this check might count as failing (a superset)."""
        raise NotImplementedError

    def may_allow(self) -> Mask:
        """Cycles at which this check might allow an advance (a superset)."""
        raise NotImplementedError

    def allows(self, t: int) -> bool:
        """Whether it allows an advance at t (decide's `_allows_advance`)."""
        raise NotImplementedError

    def check(self, t: int, observed: Observation) -> None:
        """The real judgement agrees with what the screens assumed."""
        raise NotImplementedError


class ThresholdTrack(Track):
    """A threshold check over its sliding window (and a baseline check's counts)."""

    def __init__(self, spec: CheckSpec, window: Window, plan: Plan, state: RolloutState) -> None:
        super().__init__(spec, window)
        self.baseline = state.baseline
        span = plan.window_of(spec)
        lag = max(1, math.ceil(span / window.cycle))
        cycles = window.cycles
        starts = np.maximum(cycles - lag, 0)
        seconds = np.full(cycles.shape, span.total_seconds())
        frame = window.frame(starts, seconds)
        self.value = single(plan.render_query(spec), frame)
        sample_query = plan.render_sample_query(spec)
        self.sample = None if sample_query is None else single(sample_query, frame)
        elapsed = (cycles - window.first) * window.cycle.total_seconds()
        self.ready = elapsed >= span.total_seconds()
        self.counts: tuple[Array, Array] | None = None
        if spec.counts is not None:
            since = window.frame(np.full(cycles.shape, window.first),
                                 np.maximum(elapsed, plan.settings.min_window.total_seconds()))
            self.counts = (_count(spec.counts.events, since), _count(spec.counts.trials, since))
        self.codes = self._codes()
        self.failing = self._failing(plan.failures_to_rollback(spec))

    def _codes(self) -> npt.NDArray[np.int8]:
        spec, value = self.spec, self.value
        data = np.isfinite(value)
        if spec.min_sample > 0:
            sample = self.sample if self.sample is not None else np.full(value.shape, math.nan)
            data &= np.isfinite(sample) & (sample >= spec.min_sample)
        codes = np.where(data, PASS, NO_DATA).astype(np.int8)
        if spec.kind is CheckKind.BASELINE:
            if self.counts is not None:
                events, trials = self.counts
                usable = np.isfinite(events) & (events >= 0) & np.isfinite(trials) & (trials > 0)
                codes = np.where(usable, codes, NO_DATA).astype(np.int8)
            return codes
        assert spec.threshold is not None and spec.comparator is not None
        limit = spec.threshold.limit(self.baseline)
        if limit is None:
            return np.full(value.shape, NO_DATA, dtype=np.int8)
        holds = _COMPARATORS[spec.comparator](np.nan_to_num(value), limit)
        return np.where(data & ~holds, FAIL, codes).astype(np.int8)

    def observation(self, t: int) -> Observation:
        i = self.at(t)
        sample = None if self.sample is None else _optional(self.sample[i])
        observed = judge(self.spec, Measurement(_optional(self.value[i]), sample), self.baseline)
        if self.counts is None:
            return observed
        events, trials = self.counts
        return with_recorded_counts(
            observed, Measurement(_optional(events[i]), _optional(trials[i]))
        )

    def verdict(self, t: int) -> Verdict:
        return _CODES[int(self.codes[self.at(t)])]

    def _failing(self, needed: int) -> Mask:
        """The failing cycles that can matter: a guardrail rolls back after `needed`
        failing cycles in a row (no_data in between leaves the streak as it was, a pass
        clears it), so a run of fewer failures ended by a pass changes nothing `decide`
        would keep. A run still going at the visit's last cycle counts."""
        judged = np.flatnonzero(self.ready & (self.codes != NO_DATA))
        failed = self.codes[judged] == FAIL
        mask = np.zeros(self.codes.shape, dtype=np.bool_)
        if not failed.any():
            return mask
        edges = np.diff(np.concatenate(([0], failed.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for start, end in zip(starts, ends, strict=True):
            if end - start >= needed or end == len(failed):
                mask[judged[start:end]] = True
        return mask

    def can_fail(self) -> Mask:
        return self.failing

    def may_allow(self) -> Mask:
        return np.asarray((self.codes == PASS) & self.ready, dtype=np.bool_)

    def allows(self, t: int) -> bool:
        i = self.at(t)
        return bool(self.ready[i] and self.codes[i] == PASS)

    def check(self, t: int, observed: Observation) -> None:
        expected = self.verdict(t)
        if observed.verdict is not expected:
            raise AssertionError(
                f"{self.spec.name} at cycle {t}: judge says {observed.verdict}, the "
                f"vectorised judgement {expected} ({observed.message})"
            )


def _count(template: str, frame: Frame) -> Array:
    return single(template, frame)


class StatTrack(Track):
    """A statistical check: counts since its evidence began, judged by the real statistics."""

    def __init__(self, spec: CheckSpec, window: Window, plan: Plan, state: RolloutState) -> None:
        super().__init__(spec, window)
        stat = spec.stat
        assert stat is not None
        self.stat, self.plan = stat, plan
        self.baseline_counts = state.baseline_counts
        self.boundary: float | None = None
        self.missing_boundary = False
        if stat.slower_than is not None:
            self.boundary = resolve_boundary(stat.slower_than, state.baseline)
            self.missing_boundary = self.boundary is None
            if self.boundary is not None and self.boundary not in grid():
                raise ValueError(f"{spec.name}: le={self.boundary} is not simulated "
                                 f"(the latency grid is {grid()})")
        cycles = window.cycles
        since = state.confirmed_at_of(stat.since) if stat.since is not None else None
        start = window.first if since is None else index_of(since, window.cycle)
        elapsed = (cycles - start) * window.cycle.total_seconds()
        self.elapsed = np.maximum(elapsed, plan.settings.min_window.total_seconds())
        frame = window.frame(np.full(cycles.shape, start), self.elapsed)
        nothing = np.full(cycles.shape, math.nan)
        counted: tuple[Array, Array] = (nothing, nothing)
        if not self.missing_boundary:
            counted = self._read(stat.counts, frame, plan)
        self.events, self.trials = counted
        self.control: tuple[Array, Array] | None = None
        if stat.control is not None and not self.missing_boundary:
            self.control = self._read(stat.control, frame, plan)
        self.limit = resolve_limit(stat, self.baseline_counts)
        self.alpha, self.alpha_fail = plan.alphas(spec)
        self.compared = self._comparison(cycles.shape)
        self.estimate, self.has_data = self._estimates()
        self.failing = self._can_fail()
        self.allowing = self._may_allow()
        self.cache: dict[int, Verdict] = {}

    def _read(self, counts: Counts, frame: Frame, plan: Plan) -> tuple[Array, Array]:
        events, trials = render_counts(counts, plan.settings.min_window, self.boundary)
        return single(events, frame), single(trials, frame)

    def _comparison(self, shape: tuple[int, ...]) -> tuple[Array, Array] | None:
        """The comparison's counts at every cycle: the control cohort's, or the recorded
        baseline's (constant)."""
        if self.stat.control is not None:
            return self.control
        if self.stat.baseline is not None:
            recorded = self.baseline_counts.get(self.stat.baseline)
            if recorded is not None:
                return np.full(shape, recorded[0]), np.full(shape, recorded[1])
        return None

    def _estimates(self) -> tuple[Array, Mask]:
        events, trials = self.events, self.trials
        usable = np.isfinite(events) & (events >= 0) & np.isfinite(trials) & (trials > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.minimum(events, trials) / trials
        if self.stat.test is StatTest.LIMIT:
            return rate, usable & (self.limit is not None)
        if self.compared is None:
            return rate, np.zeros(rate.shape, dtype=np.bool_)
        c_events, c_trials = self.compared
        c_usable = np.isfinite(c_events) & (c_events >= 0) & np.isfinite(c_trials) & (c_trials > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            c_rate = np.minimum(c_events, c_trials) / c_trials
        return rate - c_rate, usable & c_usable

    def _threshold(self) -> float:
        assert self.limit is not None
        if self.stat.test is StatTest.NON_INFERIORITY and not self.stat.higher_is_worse:
            return -self.limit
        return self.limit

    def can_fail(self) -> Mask:
        return self.failing

    def may_allow(self) -> Mask:
        return self.allowing

    def _can_fail(self) -> Mask:
        if self.limit is None:
            return np.zeros(self.estimate.shape, dtype=np.bool_)
        beyond = (self.estimate > self._threshold() if self.stat.higher_is_worse
                  else self.estimate < self._threshold())
        return self.has_data & beyond

    def _may_allow(self) -> Mask:
        if self.guardrail:  # fails only on proven harm: anything else allows
            return np.ones(self.estimate.shape, dtype=np.bool_)
        if self.limit is None:
            return np.zeros(self.estimate.shape, dtype=np.bool_)
        within = (self.estimate <= self._threshold() if self.stat.higher_is_worse
                  else self.estimate >= self._threshold())
        ready = self.window.cycles > self.window.first
        return self.has_data & within & ready

    def _measurement(self, i: int) -> Measurement:
        control = None
        if self.control is not None:
            control = Measurement(_optional(self.control[0][i]), _optional(self.control[1][i]))
        return Measurement(
            _optional(self.events[i]), _optional(self.trials[i]), control=control,
            elapsed_seconds=float(self.elapsed[i]),
        )

    def observation(self, t: int) -> Observation:
        if self.missing_boundary:
            return Observation(
                check=self.spec.name, verdict=Verdict.NO_DATA, value=None, sample=None,
                limit=None, message=f"{self.spec.display_name}: no baseline recorded yet to "
                "place the slow-answer boundary",
            )  # fmt: skip
        return judge_counts(self.spec, self._measurement(self.at(t)), self.plan,
                            self.baseline_counts)

    def verdict(self, t: int) -> Verdict:
        """judge_counts's verdict without its "how much more" estimate (text only)."""
        if t in self.cache:
            return self.cache[t]
        i = self.at(t)
        verdict = Verdict.NO_DATA
        if self.has_data[i]:
            events, trials = float(self.events[i]), float(self.trials[i])
            events = min(events, trials)
            assert self.limit is not None
            stat = self.stat
            if stat.test is StatTest.LIMIT:
                judgement = limit_test(events, trials, self.limit, self.alpha, self.alpha_fail,
                                       higher_is_worse=stat.higher_is_worse)
            else:
                assert self.compared is not None
                c_events, c_trials = float(self.compared[0][i]), float(self.compared[1][i])
                judgement = non_inferiority(
                    events, trials, min(c_events, c_trials), c_trials, self.limit,
                    self.alpha, self.alpha_fail, higher_is_worse=stat.higher_is_worse,
                )  # fmt: skip
            verdict = Verdict(judgement.verdict.value)
        self.cache[t] = verdict
        return verdict

    def allows(self, t: int) -> bool:
        i = self.at(t)
        if self.guardrail:
            return not (self.failing[i] and self.verdict(t) is Verdict.FAIL)
        return bool(self.allowing[i]) and self.verdict(t) is Verdict.PASS

    def check(self, t: int, observed: Observation) -> None:
        i = self.at(t)
        verdict = observed.verdict
        screened = (verdict is Verdict.FAIL and not self.failing[i]) or (
            verdict is Verdict.PASS and not self.guardrail and not self.allowing[i]
            and t > self.window.first
        )
        known = self.cache.get(t)
        if screened or (known is not None and known is not verdict):
            raise AssertionError(
                f"{self.spec.name} at cycle {t}: judge_counts says {verdict}, the screen "
                f"or the statistics said otherwise ({known}; {observed.message})"
            )


def resolve_limit(stat: StatSpec, baseline_counts: Mapping[str, tuple[float, float]]
                  ) -> float | None:
    """The margin, or the limit with a relative one resolved against the recorded rate
    (as rollout.core.evidence does)."""
    if stat.test is StatTest.NON_INFERIORITY:
        return stat.margin
    assert stat.limit is not None
    rates = {name: e / n for name, (e, n) in baseline_counts.items() if n > 0}
    resolved = stat.limit.limit(rates)
    return None if resolved is None else min(max(resolved, 0.0), 1.0)


def track(spec: CheckSpec, window: Window, plan: Plan, state: RolloutState) -> Track:
    if spec.stat is not None:
        return StatTrack(spec, window, plan, state)
    return ThresholdTrack(spec, window, plan, state)
