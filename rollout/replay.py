"""`rollout replay`: the plan re-evaluated over recorded Prometheus data (DESIGN.md §7).

Every step is one controller cycle, run by the live controller's own code — `observe`
(the same queries, the counts since the evidence began, the control cohort, the placed
{le}), the same judgement and `decide(state, observations, plan, t)` — against a
`RecordedMetricsSource` evaluated as of `t` instead of now. Only the time differs.

What replay assumes, since it cannot know what it did not record:

* Nothing is written anywhere: the state moves by each Decision exactly as `decide`
  returns it, as if every flag write had succeeded at once.
* The flags the service ran are what it reported at `t` (`ai_agent_flag_state` as of `t`),
  read as the live controller reads them: after an advance replay waits, like the
  controller, until the recorded data shows the service reporting the new stage's flags.
  A replay whose decisions differ from what happened (another plan, another start) waits
  where the recorded service never ran its stage's flags.
* The controller's state at the start is unknown in general. By default replay starts in
  the plan's first stage at T1 with nothing recorded (the controller's fresh start), so it
  records the baseline from that stage as the controller did; `start_stage` starts
  elsewhere, without a baseline (checks against it have no data).
* Steps are evenly spaced from T1 (the controller's own cycles drift a little), so a
  decision lands within one step of the live one when the step is the controller's interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from rollout.core.decide import decide
from rollout.core.decision import Action, Decision
from rollout.core.observations import Observations
from rollout.core.plan import Plan
from rollout.core.state import RolloutState
from rollout.entries import check_record, reported_record
from rollout.observe import observe
from rollout.ports import RecordedMetricsSource, ReportedFlags
from rollout.records import CheckRecord, Record, ReportedFlagsRecord

# A replay is a loop of cycles; beyond this many it is a mistake (a 1s step over weeks),
# not a question anyone waits for.
MAX_STEPS: Final = 100_000


class ReplayRangeError(ValueError):
    """The window cannot be replayed; `option` names the command-line option at fault."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """From `start` to `end` (both included when `end` falls on a step), every `step`."""

    start: datetime
    end: datetime
    step: timedelta

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("replay times must be timezone-aware")
        if self.step <= timedelta(0):
            raise ReplayRangeError("--step", f"must be a positive duration, got {self.step}")
        if self.end <= self.start:
            raise ReplayRangeError("--to", f"{self.end.isoformat()} is not after --from "
                                           f"{self.start.isoformat()}")
        if self.count > MAX_STEPS:
            raise ReplayRangeError(
                "--step", f"{self.step} over {self.end - self.start} is {self.count} steps; at "
                f"most {MAX_STEPS} (use a larger step)")

    @property
    def count(self) -> int:
        return int((self.end - self.start) / self.step) + 1

    def moments(self) -> Iterator[datetime]:
        for index in range(self.count):
            yield self.start + index * self.step


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One replayed cycle: what it saw and what `decide` returned."""

    at: datetime
    state_before: RolloutState
    observations: Observations
    reported: ReportedFlags
    decision: Decision

    @property
    def state_after(self) -> RolloutState:
        return self.decision.state


def starting_state(plan: Plan, at: datetime, stage: str | None = None) -> RolloutState:
    """The state replay starts from: the plan's first stage at `at` (the controller's fresh
    start), or `stage` entered at `at` with nothing recorded. ValueError for a stage the
    plan does not have."""
    if stage is None:
        return RolloutState.initial(plan.stages[0].name, at)
    index = plan.index_of(stage)
    if index is None:
        raise ValueError(f"the plan has no stage {stage!r} (stages: {', '.join(plan.stage_names)})")
    return RolloutState(stage_index=index, stage_name=stage, entered_at=at)


async def replay_steps(
    plan: Plan, source: RecordedMetricsSource, window: ReplayWindow, state: RolloutState
) -> AsyncIterator[ReplayStep]:
    """Run the controller's cycle at every moment of `window`, from `state`, reading the
    world as it was then; the state moves by each decision."""
    for moment in window.moments():
        observations, reported = await observe(plan, state, source.as_of(moment), moment)
        decision = decide(state, observations, plan, moment)
        yield ReplayStep(moment, state, observations, reported, decision)
        state = decision.state


async def replay(
    plan: Plan,
    source: RecordedMetricsSource,
    window: ReplayWindow,
    state: RolloutState,
    *,
    on_step: Callable[[ReplayStep], None] | None = None,
) -> list[ReplayStep]:
    """Every step of `window` (see `replay_steps`)."""
    steps: list[ReplayStep] = []
    async for step in replay_steps(plan, source, window, state):
        steps.append(step)
        if on_step is not None:
            on_step(step)
    return steps


# --- what people and scripts read ---------------------------------------------------------------


class ReplayDecision(Record):
    """One replayed decision with the evidence it rests on (every check of the stage)."""

    kind: Literal["decision"] = "decision"
    at: datetime
    action: str
    from_stage: str
    to_stage: str
    reason: str
    flags_match: bool
    reported_flags: ReportedFlagsRecord
    checks: tuple[CheckRecord, ...] = ()

    @property
    def moved(self) -> bool:
        return self.to_stage != self.from_stage


class ReplayHolds(Record):
    """Consecutive holds in one stage between two decisions, condensed: how many, when, and
    the last one's reason (what the stage was still waiting for)."""

    kind: Literal["holds"] = "holds"
    stage: str
    steps: int
    first_at: datetime
    last_at: datetime
    last_reason: str


class ReplayReport(Record):
    """The whole replay: its inputs and assumptions, then the decisions in order."""

    prometheus: str
    plan: str
    time_scale: float
    start: datetime
    end: datetime
    step_seconds: float
    steps: int
    start_stage: str
    started_fresh: bool
    final_stage: str
    completed: bool
    transitions: tuple[str, ...]
    entries: tuple[ReplayDecision | ReplayHolds, ...]
    warnings: tuple[str, ...] = ()


def decision_record(plan: Plan, step: ReplayStep) -> ReplayDecision:
    decision = step.decision
    return ReplayDecision(
        at=step.at, action=decision.action.value, from_stage=decision.from_stage,
        to_stage=decision.target_stage, reason=decision.reason,
        flags_match=step.observations.flags_match, reported_flags=reported_record(step.reported),
        checks=tuple(check_record(plan, o) for o in step.observations.checks),
    )


def is_notable(step: ReplayStep) -> bool:
    """A decision worth showing on its own: anything but a hold."""
    return step.decision.action is not Action.HOLD


def condensed(plan: Plan, steps: Sequence[ReplayStep], *,
              every_step: bool = False) -> tuple[ReplayDecision | ReplayHolds, ...]:
    """Each decision that is not a hold in full, and each run of holds as one entry (every
    step in full with `every_step`). The last step is always shown in full: where the
    replay ended and on what evidence."""
    entries: list[ReplayDecision | ReplayHolds] = []
    run: list[ReplayStep] = []

    def close_run() -> None:
        if run:
            entries.append(ReplayHolds(
                stage=run[0].decision.from_stage, steps=len(run), first_at=run[0].at,
                last_at=run[-1].at, last_reason=run[-1].decision.reason))
            run.clear()

    for number, step in enumerate(steps):
        last = number == len(steps) - 1
        if every_step or is_notable(step) or last:
            close_run()
            entries.append(decision_record(plan, step))
        else:
            if run and run[-1].decision.from_stage != step.decision.from_stage:
                close_run()
            run.append(step)
    close_run()
    return tuple(entries)


def transitions_of(steps: Sequence[ReplayStep]) -> tuple[str, ...]:
    """`off → dark-launch (advance) at …`, one per stage change or completion."""
    return tuple(
        f"{s.decision.from_stage} \u2192 {s.decision.target_stage} ({s.decision.action.value}) "
        f"at {s.at.isoformat(timespec='milliseconds')}"
        for s in steps if s.decision.changes_stage or s.decision.action is Action.COMPLETE
    )


def warnings_of(steps: Sequence[ReplayStep]) -> tuple[str, ...]:
    """What makes a replay worth less than it looks: no flags ever reported (wrong URL or
    times), every query failing."""
    warnings: list[str] = []
    if steps and all(s.reported.instances == 0 for s in steps):
        warnings.append("Prometheus holds no ai_agent_flag_state in this window: no service "
                        "was recorded (wrong --prometheus, --from or --to?), so every step "
                        "waits for the service")
    errors = [s for s in steps if s.observations.checks
              and all(o.error is not None for o in s.observations.checks)]
    if errors:
        warnings.append(f"{len(errors)} of {len(steps)} steps could not measure any check "
                        f"(first: {errors[0].observations.checks[0].error})")
    return tuple(warnings)


def report_of(
    plan: Plan, steps: Sequence[ReplayStep], window: ReplayWindow, *, prometheus: str,
    plan_source: str, started_fresh: bool, every_step: bool = False,
) -> ReplayReport:
    assert steps, "a window has at least one step"
    final = steps[-1].state_after
    return ReplayReport(
        prometheus=prometheus, plan=plan_source, time_scale=plan.settings.time_scale,
        start=window.start, end=window.end, step_seconds=window.step.total_seconds(),
        steps=len(steps), start_stage=steps[0].state_before.stage_name,
        started_fresh=started_fresh, final_stage=final.stage_name,
        completed=final.completed_at is not None, transitions=transitions_of(steps),
        entries=condensed(plan, steps, every_step=every_step), warnings=warnings_of(steps),
    )
