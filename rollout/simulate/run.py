"""One rollout through the pure core: synthetic traffic in, `decide` every cycle that can
change anything, the state moved by each Decision.

A run starts in the plan's first stage (`RolloutState.initial`). Every cycle the counters
grow by that cycle's traffic under the flags the service applies and the scenario's effects
in that stage. After a transition the service reports the new flags one cycle later (plus
the flag delay, cycles in which `decide` sees the old flags and holds), and a statistical
check counts from that confirmation (or from its `since` stage's), a threshold check over
its sliding window: what rollout/observe.py would read from Prometheus. Each check is
judged with the real `judge` / `judge_counts` and the cycle with the real `decide`.

A metrics outage makes every check an error and the flags unreadable for its cycles, as
rollout/observe.py reports a Prometheus it cannot reach; `decide` then holds and forgets the
confirmation, so the stage's evidence starts again when the metrics come back.

Skipping, exactly: a cycle at which no guardrail can fail (screened by the point estimate,
then judged with the real statistics) and the stage cannot advance (not baked, or some
enforced check does not pass) can only HOLD, and `decide` would change nothing in the
state but the pass streak, which is then 0. Such cycles are not handed to `decide`; the
streak is set to 0 as `decide` would (before the bake it is not yet needed: an advance
needs the last passes_to_advance cycles to pass, and those are all evaluated).
`exact=True` hands every cycle to `decide` (the tests compare both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from rollout.core.decide import decide
from rollout.core.decision import Action, Decision
from rollout.core.flags import FlagSettings
from rollout.core.observations import Observation, Observations, Verdict
from rollout.core.plan import CheckKind, Plan
from rollout.core.state import RolloutState
from rollout.simulate.clock import T0, index_of, time_of
from rollout.simulate.scenarios import Scenario
from rollout.simulate.tracks import Track, Window, track
from rollout.simulate.traffic import GAUGES, Counters, Draws, Emission, Slices, Traffic, emit

# A visit's arrays reach this far past its bake before they are extended.
_HORIZON_PAST_BAKE = timedelta(days=2)

COMPLETED = "completed"
ROLLED_BACK = "rolled_back"
ADVANCED = "advanced"  # left the scenario's stage (only with RunSpec.stop_when_left)
HELD = "held"  # still going at the cap


@dataclass(frozen=True, slots=True)
class RunSpec:
    """How a run is simulated, whatever the plan."""

    cycle: timedelta  # simulated time between two evaluation cycles
    cap: timedelta  # the simulated time a run may take, from its start
    flag_delay: timedelta = timedelta()  # the service applies new flags this much later
    start_at: str | None = None  # after the first stage, promote straight to this stage
    stop_when_left: bool = False  # end the run when the scenario's stage advances
    exact: bool = False  # hand every cycle to decide

    @property
    def delay_cycles(self) -> int:
        return int(self.flag_delay / self.cycle)


@dataclass(slots=True)
class Outcome:
    outcome: str  # completed | rolled_back | advanced | held
    stage: str  # where the run ended
    seconds: float  # from the run's start to the outcome
    began: float | None = None  # when the scenario's stage was entered (None: never)
    rollback_to: str | None = None
    reason: str = ""
    breached: tuple[str, ...] = ()  # the guardrails failing at the rollback
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)
    decide_calls: int = 0
    objectives: dict[str, str] = field(default_factory=dict)
    overruns: dict[str, float] = field(default_factory=dict)  # stage: seconds past its bake

    @property
    def since_began(self) -> float | None:
        return None if self.began is None else self.seconds - self.began


class Rollout:
    def __init__(
        self, plan: Plan, traffic: Traffic, slices: Slices, draws: Draws, scenario: Scenario,
        spec: RunSpec,
    ) -> None:
        self.plan, self.traffic, self.slices, self.draws = plan, traffic, slices, draws
        self.scenario, self.spec = scenario, spec
        self.cycle = spec.cycle
        self.exact = spec.exact
        self.cycles = min(draws.cycles, math.ceil(spec.cap / self.cycle) + 1)
        self.counters = Counters(draws.cycles)
        self.emitted = 1  # the counters are written for cycles before this one
        self.state = RolloutState.initial(plan.stage_names[0], T0)
        self.outcome: Outcome | None = None
        self.transitions: list[tuple[float, str, str, str]] = []
        self.decide_calls = 0
        self.began: int | None = 0 if scenario.from_index == 0 else None
        self.pending_until = 0  # cycles before this one see the previous stage's flags
        self.previous_flags: FlagSettings | None = None
        self.outage: range | None = None
        self.overruns: dict[str, float] = {}
        self.objectives = {s.name for s in plan.all_checks() if s.kind is CheckKind.OBJECTIVE}

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> Outcome:
        t = 0
        visit: Visit | None = None
        while self.outcome is None and t < self.cycles:
            if t < self.pending_until or (self.outage is not None and t in self.outage):
                self._blind_cycle(t, outage=t >= self.pending_until)
                visit = None  # the confirmation is forgotten: evidence starts again
                t += 1
                continue
            if visit is None:
                visit = self._enter(t)
            stop = self._next_outage(t)
            found = visit.next_cycle(t, stop)
            if found is None:
                t = stop
                continue
            t = found
            decision = self._cycle(visit, t)
            if decision.action is not Action.HOLD:
                self._transition(decision, t)
                visit = None
            t += 1
        if self.outcome is None:
            last = self.cycles - 1
            self._overrun(last, self.state)
            self.outcome = Outcome(HELD, self.state.stage_name, self._seconds(last))
        self.outcome.began = None if self.began is None else self._seconds(self.began)
        self.outcome.transitions = self.transitions
        self.outcome.decide_calls = self.decide_calls
        self.outcome.overruns = self.overruns
        return self.outcome

    def _seconds(self, t: int) -> float:
        return t * self.cycle.total_seconds()

    def _enter(self, first: int) -> Visit:
        """A stage visit from cycle `first`, its flags' confirmation; the first visit of the
        scenario's stage places an outage."""
        outage = self.scenario.outage
        if (outage is not None and self.outage is None
                and self.state.stage_index == self.scenario.from_index):
            after, duration = outage
            start = first + math.ceil(after / self.cycle)
            self.outage = range(start, start + max(1, math.ceil(duration / self.cycle)))
        return Visit(self, first)

    def _next_outage(self, t: int) -> int:
        if self.outage is not None and t < self.outage.start:
            return min(self.outage.start, self.cycles)
        return self.cycles

    def emit_until(self, stop: int, stage_index: int) -> None:
        """The counters up to cycle `stop` under a stage's flags and the scenario's effects
        there."""
        start = self.emitted
        stop = min(stop, self.draws.cycles)
        if start < stop:
            what = Emission(self.plan.stages[stage_index].flags,
                            self.scenario.effects(stage_index), start, stop,
                            self.cycle.total_seconds())
            self.counters.apply(start, emit(self.draws, self.traffic, self.slices, what))
            self.emitted = stop

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
        if decision.action is not Action.HOLD:
            self._overrun(t, self.state)
        self.state = decision.state
        if decision.action is Action.COMPLETE:
            self.outcome = Outcome(COMPLETED, decision.from_stage, self._seconds(t),
                                   reason=decision.reason)
            self.outcome.objectives = {
                o.check: o.verdict.value for o in checks if o.check in self.objectives
            }
        elif decision.action is Action.ROLLBACK:
            guardrails = self._guardrails()
            self.outcome = Outcome(
                ROLLED_BACK, decision.from_stage, self._seconds(t),
                rollback_to=decision.target_stage, reason=decision.reason,
                breached=tuple(o.check for o in checks
                               if o.check in guardrails and o.verdict is Verdict.FAIL),
            )  # fmt: skip
        return decision

    def _guardrails(self) -> set[str]:
        return {g.name for g in self.plan.guardrails if g.is_enforced}

    def _blind_cycle(self, t: int, *, outage: bool) -> None:
        """A cycle in which the service's flags cannot be confirmed: still the previous
        stage's (flag delay), or nothing readable at all (metrics outage)."""
        now = time_of(t, self.cycle)
        if outage:
            checks = tuple(
                Observation(check=spec.name, verdict=Verdict.ERROR, value=None, sample=None,
                            limit=None, message=f"{spec.display_name}: Prometheus unreadable "
                            "(simulated outage)", error="simulated outage")
                for spec in self.plan.checks_for(self.state.stage_index)
            )  # fmt: skip
            observations = Observations(at=now, checks=checks)
        else:
            observations = Observations(at=now, reported_flags=self.previous_flags)
        decision = decide(self.state, observations, self.plan, now)
        self.decide_calls += 1
        self.state = decision.state
        if decision.action is not Action.HOLD:  # decide never acts on unconfirmed flags
            raise AssertionError(f"cycle {t}: {decision.action} without flags: "
                                 f"{decision.reason}")

    def _overrun(self, t: int, state: RolloutState) -> None:
        """Remember how long the state's stage was held past its bake at t, if it was."""
        index = state.stage_index
        entered = index_of(state.entered_at, self.cycle)
        past = self._seconds(t - entered) - self.plan.bake_of(index).total_seconds()
        name = state.stage_name
        if past > 0:
            self.overruns[name] = max(self.overruns.get(name, 0.0), past)

    def _transition(self, decision: Decision, t: int) -> None:
        seconds = self._seconds(t)
        self.transitions.append((seconds, decision.action.value, decision.from_stage,
                                 decision.target_stage))
        if decision.action in {Action.COMPLETE, Action.ROLLBACK}:
            return  # the outcome is set: the run ends
        from_index = self.plan.index_of(decision.from_stage)
        assert from_index is not None
        if self.spec.stop_when_left and from_index == self.scenario.from_index:
            self.outcome = Outcome(ADVANCED, decision.target_stage, seconds,
                                   reason=decision.reason)
            return
        start_at = self.spec.start_at
        if start_at is not None and from_index == 0 and decision.target_stage != start_at:
            # Promoted straight to the start stage, baseline recorded, as a person would
            # with `rollout promote`.
            index = self.plan.index_of(start_at)
            assert index is not None
            self.state = self.state.advanced(index, start_at, time_of(t, self.cycle))
            self.transitions.append((seconds, "promote", decision.target_stage, start_at))
        if self.began is None and self.state.stage_index == self.scenario.from_index:
            self.began = t
        # The service applies the new flags after the delay: until then the traffic is the
        # previous stage's, and decide sees those flags reported.
        self.emitted = min(self.emitted, t + 1)
        self.pending_until = t + 1 + self.spec.delay_cycles
        self.emit_until(self.pending_until, from_index)
        self.previous_flags = self.plan.stages[from_index].flags


class Visit:
    """The cycles of one stage visit from its flags' confirmation: its checks' tracks and
    which cycles need `decide`."""

    def __init__(self, rollout: Rollout, first: int) -> None:
        self.rollout, self.first = rollout, first
        self.plan = rollout.plan
        self.tracks: Sequence[Track] = ()
        self.last = first
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
        index = state.stage_index
        rollout.emit_until(last, index)
        window = Window(self.first, last, rollout.cycle, rollout.counters.cumulative, GAUGES)
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

    def next_cycle(self, t: int, stop: int) -> int | None:
        """The first cycle from t on, before `stop`, that `decide` must see (None: none)."""
        rollout = self.rollout
        while t < stop:
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
