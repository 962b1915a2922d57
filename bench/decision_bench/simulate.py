"""One rollout through the pure core: synthetic traffic in, `decide` every cycle that can
change anything, the state moved by each Decision.

A run starts in the plan's first stage (`RolloutState.initial`). Every cycle the counters
grow by that cycle's traffic under the flags of the stage the state names; the cycle after
a transition is the one where the service reports the new flags (flags confirmed one cycle
after each transition), and a statistical check counts from there (or from its `since`
stage's confirmation), a threshold check over its sliding window: what rollout/observe.py
would read from Prometheus. Each check is judged with the real `judge` / `judge_counts`
and the cycle with the real `decide`.

Skipping, exactly: a cycle at which no guardrail can fail (screened by the point estimate,
then judged with the real statistics) and the stage cannot advance (not baked, or some
enforced check does not pass) can only HOLD, and `decide` would change nothing in the
state but the pass streak, which is then 0. Such cycles are not handed to `decide`; the
streak is set to 0 as `decide` would (before the bake it is not yet needed: an advance
needs the last passes_to_advance cycles to pass, and those are all evaluated). `exact=True`
hands every cycle to `decide` (the tests compare both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from bench.decision_bench.clock import T0, index_of, time_of
from bench.decision_bench.tracks import Track, Window, track
from bench.decision_bench.traffic import GAUGES, Counters, Draws, Slices, Traffic, emit
from rollout.core.decide import decide
from rollout.core.decision import Action, Decision
from rollout.core.observations import Observations
from rollout.core.plan import CheckKind, Plan
from rollout.core.state import RolloutState

# A visit's arrays reach this far past its bake before they are extended.
_HORIZON_PAST_BAKE = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # "healthy" | "regression"
    cap: timedelta  # the simulated time a run may take
    # The regression scenario: once the first stage is left (baseline recorded), the state
    # is promoted to this stage, where the L1 cohort's errors rise.
    regression_stage: str | None = None

    @property
    def regression(self) -> bool:
        return self.regression_stage is not None


@dataclass(slots=True)
class Outcome:
    outcome: str  # completed | rolled_back | advanced | held
    stage: str  # where the run ended
    seconds: float  # time to the outcome (regression: since the regression began)
    rollback_to: str | None = None
    reason: str = ""
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)
    decide_calls: int = 0
    objectives: dict[str, str] = field(default_factory=dict)


class Rollout:
    def __init__(
        self, plan: Plan, traffic: Traffic, slices: Slices, draws: Draws, cycle: timedelta,
        scenario: Scenario, *, exact: bool = False,
    ) -> None:
        self.plan, self.traffic, self.slices, self.draws = plan, traffic, slices, draws
        self.cycle, self.scenario, self.exact = cycle, scenario, exact
        self.cycles = min(draws.cycles, math.ceil(scenario.cap / cycle) + 1)
        self.counters = Counters(draws.cycles)
        self.state = RolloutState.initial(plan.stage_names[0], T0)
        self.outcome: Outcome | None = None
        self.transitions: list[tuple[float, str, str, str]] = []
        self.decide_calls = 0
        self.regression_began: int | None = None
        self.objectives = {s.name for s in plan.all_checks() if s.kind is CheckKind.OBJECTIVE}

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> Outcome:
        visit = self._enter(0)
        t = 0
        while self.outcome is None:
            found = visit.next_cycle(t)
            if found is None:
                break
            t = found
            decision = self._cycle(visit, t)
            if decision.action is Action.HOLD:
                t += 1
                continue
            visit = self._transition(decision, t)
            t += 1
        if self.outcome is None:
            self.outcome = Outcome("held", self.state.stage_name,
                                   self._since_start(self.cycles - 1))
        self.outcome.transitions = self.transitions
        self.outcome.decide_calls = self.decide_calls
        return self.outcome

    def _since_start(self, t: int) -> float:
        start = self.regression_began if self.regression_began is not None else 0
        return (t - start) * self.cycle.total_seconds()

    def _enter(self, first: int) -> Visit:
        """A new stage visit from cycle `first` (its flags' confirmation)."""
        return Visit(self, first)

    def traffic_until(self, start: int, stop: int) -> None:
        """The counters of cycles start..stop-1 under the current stage's flags."""
        start = max(start, 1)  # cycle 0 is the counters' starting point
        if start < stop:
            flags = self.plan.stages[self.state.stage_index].flags
            emitted = emit(self.draws, self.traffic, self.slices, flags,
                           self.scenario.regression, start, stop, self.cycle.total_seconds())
            self.counters.apply(start, emitted)

    def _cycle(self, visit: Visit, t: int) -> Decision:
        now = time_of(t, self.cycle)
        checks = []
        for item in visit.tracks:
            observed = item.observation(t)
            item.check(t, observed)
            checks.append(observed)
        stage = self.plan.stages[self.state.stage_index]
        observations = Observations(
            at=now, checks=tuple(checks), flags_match=True, reported_flags=stage.flags,
            flags_matching_since=self.state.flags_confirmed_at or now,
        )  # fmt: skip
        decision = decide(self.state, observations, self.plan, now)
        self.decide_calls += 1
        self.state = decision.state
        if decision.action is Action.COMPLETE:
            self.outcome = Outcome("completed", decision.from_stage, self._since_start(t),
                                   reason=decision.reason)
            self.outcome.objectives = {
                o.check: o.verdict.value for o in checks if o.check in self.objectives
            }
        return decision

    def _transition(self, decision: Decision, t: int) -> Visit:
        seconds = (t * self.cycle).total_seconds()
        self.transitions.append((seconds, decision.action.value, decision.from_stage,
                                 decision.target_stage))
        if decision.action is Action.COMPLETE:
            return Visit(self, t + 1)
        if decision.action is Action.ROLLBACK:
            self.outcome = Outcome("rolled_back", decision.from_stage, self._since_start(t),
                                   rollback_to=decision.target_stage, reason=decision.reason)
            return Visit(self, t + 1)
        regression = self.scenario.regression_stage
        if regression is not None:
            if decision.from_stage == regression:
                self.outcome = Outcome("advanced", decision.target_stage, self._since_start(t),
                                       reason=decision.reason)
                return Visit(self, t + 1)
            if self.regression_began is None:
                # Promoted straight to the regression's stage, baseline recorded, as a
                # person would with `rollout promote`.
                index = self.plan.index_of(regression)
                assert index is not None
                self.state = self.state.advanced(index, regression, time_of(t, self.cycle))
                self.regression_began = t
                self.transitions.append((seconds, "promote", decision.target_stage, regression))
        return self._enter(t + 1)


class Visit:
    """The cycles of one stage visit: its checks' tracks and which cycles need `decide`."""

    def __init__(self, rollout: Rollout, first: int) -> None:
        self.rollout, self.first = rollout, first
        self.plan, self.state = rollout.plan, rollout.state
        self.tracks: Sequence[Track] = ()
        self.last = first
        # The stage's flags apply to the traffic after the transition cycle, first - 1.
        self.emitted = first
        if rollout.outcome is None and first < rollout.cycles:
            self._cover(self._horizon())

    def _horizon(self) -> int:
        bake = self.plan.bake_of(self.rollout.state.stage_index)
        ahead = math.ceil((bake + _HORIZON_PAST_BAKE) / self.rollout.cycle)
        return min(self.rollout.cycles, self.first + max(ahead, 2))

    def _cover(self, last: int) -> None:
        """(Re)build the tracks for cycles first..last-1."""
        rollout = self.rollout
        state = rollout.state
        rollout.traffic_until(self.emitted, last)
        self.emitted = last
        window = Window(self.first, last, rollout.cycle, rollout.counters.cumulative, GAUGES)
        index = state.stage_index
        self.tracks = [track(spec, window, self.plan, state)
                       for spec in self.plan.checks_for(index)]
        self.last = last
        size = last - self.first
        enforced = [t for t in self.tracks if t.enforced]
        self.guardrails = [t for t in enforced if t.guardrail]
        # Gates first (the usual blockers), guardrails last.
        self.order = [t for t in enforced if not t.guardrail] + self.guardrails
        trigger = np.zeros(size, dtype=np.bool_)
        for item in self.guardrails:
            trigger |= item.can_fail()
        allowed = np.ones(size, dtype=np.bool_)
        for item in enforced:
            allowed &= item.may_allow()
        # The cycles from passes_to_advance - 1 before the bake's end on can build the
        # streak an advance needs.
        passes = self.plan.settings.passes_to_advance
        entered = index_of(state.entered_at, rollout.cycle)
        bake_cycles = math.ceil(self.plan.bake_of(index) / rollout.cycle)
        cycles = np.arange(self.first, last)
        streak_building = cycles + (passes - 1) >= entered + bake_cycles
        self.trigger = trigger
        self.interesting = _next_true(trigger | (streak_building & allowed))
        self.streak_building = streak_building

    def next_cycle(self, t: int) -> int | None:
        """The first cycle from t on that `decide` must see, or None at the cap."""
        rollout = self.rollout
        while t < rollout.cycles:
            if t >= self.last:
                self._cover(min(rollout.cycles, self.last + (self.last - self.first)))
            if rollout.exact or t == self.first or rollout.state.failure_streaks:
                return t
            i = t - self.first
            jump = int(self.interesting[i])
            if jump > i:
                self._skip()
                t = self.first + jump
                continue
            if self.trigger[i] and any(
                g.can_fail()[i] and not g.allows(t) for g in self.guardrails
            ):
                return t
            if self.streak_building[i] and self._may_advance(t):
                return t
            self._skip()
            t += 1
        return None

    def _may_advance(self, t: int) -> bool:
        """Every enforced check allows an advance at t. The check that blocked last is
        asked first: it most likely still blocks."""
        for position, item in enumerate(self.order):
            if not item.allows(t):
                if position:
                    self.order.insert(0, self.order.pop(position))
                return False
        return True

    def _skip(self) -> None:
        """A cycle `decide` would only HOLD: its pass streak is 0."""
        state = self.rollout.state
        if state.pass_streak:
            self.rollout.state = state.with_cycle(
                pass_streak=0, failure_streaks=state.failure_streaks,
                flags_confirmed_at=state.flags_confirmed_at,
            )


def _next_true(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """For every position, the first position at or after it where mask is true (len if
    none)."""
    size = mask.shape[0]
    positions = np.where(mask, np.arange(size), size)
    return np.minimum.accumulate(positions[::-1])[::-1].astype(np.int64)
