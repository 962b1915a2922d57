"""The controller's brain: `decide(state, observations, plan, now) -> Decision`, pure (the
manual commands are in rollout.core.commands). No clock, no I/O: the runner passes `now`
and applies the Decision (flags first, then the new state), so every branch is testable
with a table.

Order of precedence in `decide`, most cautious first:
  paused → cooldown → flags not yet reported by the service → guardrails (rollback) →
  post-rollback hold → complete → advance → hold.

Statistical checks (DESIGN.md §7) arrive already judged from counts since the stage's flags
were confirmed (rollout.core.evidence): a guardrail's `fail` is a proven breach and rolls
back at once, to the stage its kind of breach names; a gate must `pass`, `inconclusive`
holds; objectives are only reported, at every transition and at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from rollout.core.decision import (
    ARROW,
    Action,
    Decision,
    at,
    cooldown_until,
    locate,
)
from rollout.core.observations import Observation, Observations, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Plan, human_duration
from rollout.core.state import RolloutState


@dataclass(frozen=True, slots=True)
class _Judged:
    spec: CheckSpec
    observation: Observation
    ready: bool  # its whole window lies after the service reported this stage's flags


# --- the cycle ------------------------------------------------------------------------------
def decide(  # noqa: PLR0911  (one return per rule, in the precedence order of the module doc)
    state: RolloutState, observations: Observations, plan: Plan, now: datetime
) -> Decision:
    located = locate(state, plan)
    if located is None:
        return Decision(
            Action.HOLD, state.stage_name, state.stage_name,
            f"the state names stage {state.stage_name!r}, which the plan does not have "
            f"(stages: {', '.join(plan.stage_names)}); move it with `rollout rollback --to`",
            state,
        )
    state = located
    here = state.stage_name
    confirmed_at = _flags_confirmed_at(state, observations, now)

    if state.pause_info is not None:
        pause = state.pause_info
        return _hold(
            plan, state.with_flags_confirmed_at(confirmed_at), now,
            f"paused by {pause.by} at {at(pause.at)}: {pause.why}",
        )

    if state.cooldown_until is not None and now < state.cooldown_until:
        rollback = state.last_rollback
        after = "" if rollback is None else (
            f" after {rollback.from_stage} {ARROW} {rollback.to_stage} ({rollback.reason})"
        )
        return _hold(
            plan,
            state.with_cycle(
                pass_streak=0, failure_streaks=state.failure_streaks,
                flags_confirmed_at=confirmed_at,
            ),
            now,
            f"cooling down{after} until {at(state.cooldown_until)} "
            f"({human_duration(state.cooldown_until - now)} left)",
        )

    stage = plan.stages[state.stage_index]
    if not observations.flags_match or confirmed_at is None:
        reported = (
            "nothing" if observations.reported_flags is None
            else observations.reported_flags.describe()
        )
        # When the metrics themselves cannot be read (Prometheus down), that is why nothing is
        # reported: say so, rather than send people to debug the service.
        failed = [o.message for o in observations.checks if o.verdict is Verdict.ERROR]
        unreadable = "" if not failed else f"; error: {failed[0]}" + (
            f" (and {len(failed) - 1} more checks)" if len(failed) > 1 else ""
        )
        if failed and observations.reported_flags is None and state.flags_confirmed_at:
            # Unreadable is not a mismatch: the service was last seen running this stage's
            # flags, so the evidence since then stands; a scrape outage must not restart it.
            return _hold(
                plan,
                state.with_cycle(pass_streak=0, failure_streaks=state.failure_streaks,
                                 flags_confirmed_at=state.flags_confirmed_at),
                now,
                f"cannot read the metrics{unreadable}; the evidence since "
                f"{at(state.flags_confirmed_at)} is kept",
            )
        return _hold(
            plan,
            state.with_cycle(
                pass_streak=0, failure_streaks=state.failure_streaks, flags_confirmed_at=None
            ),
            now,
            f"waiting for the service to report {here}'s flags ({stage.flags.describe()}); "
            f"it reports {reported}{unreadable}",
        )

    judged = _judge_all(plan, state.stage_index, observations, confirmed_at, now)
    enforced = [j for j in judged if j.spec.is_enforced]
    failure_streaks = _next_failure_streaks(state.failure_streaks, enforced)

    breaches = [
        j for j in enforced
        if j.spec.kind is CheckKind.GUARDRAIL
        and failure_streaks.get(j.spec.name, 0) >= plan.failures_to_rollback(j.spec)
    ]
    if breaches and state.stage_index > 0:
        return _automatic_rollback(plan, state, now, breaches, failure_streaks)

    all_pass = all(_allows_advance(j) for j in enforced)
    pass_streak = state.pass_streak + 1 if all_pass else 0
    cycled = state.with_cycle(
        pass_streak=pass_streak, failure_streaks=failure_streaks, flags_confirmed_at=confirmed_at
    )
    findings = _findings(plan, judged, failure_streaks, confirmed_at, now)

    if state.awaiting_resume:
        rollback = state.last_rollback
        why = "" if rollback is None else f" from {rollback.from_stage} ({rollback.reason})"
        return _hold(
            plan, cycled, now,
            _join(f"holding at {here} after the rollback{why} until a person resumes "
                  "(`rollout resume`)", *findings),
        )

    if state.completed_at is not None:
        return _hold(
            plan, cycled, now,
            _join(f"rollout complete since {at(state.completed_at)}; guardrails still watched",
                  *findings, _objectives(judged)),
        )

    bake = plan.bake_of(state.stage_index)
    baked_for = now - state.entered_at
    needed = plan.settings.passes_to_advance
    if all_pass and baked_for >= bake and pass_streak >= needed:
        # The stage's own checks are the evidence people want in the notification; the
        # guardrails' values are in the decision log with everything else.
        evidence = "; ".join(
            j.observation.message for j in enforced if j.spec.kind is not CheckKind.GUARDRAIL
        )
        if state.stage_index == 0 and evidence:
            evidence = f"baseline recorded: {evidence}"
        passed = _join(
            f"after the {human_duration(bake)} bake, all checks passed {pass_streak} cycles "
            "in a row",
            evidence,
            _objectives(judged),
        )
        if state.stage_index == plan.last_index:
            return Decision(
                Action.COMPLETE, here, here,
                f"{passed}: {here} is the last stage, rollout complete",
                cycled.completed(now),
            )
        target = plan.stages[state.stage_index + 1].name
        first = state.stage_index == 0
        return Decision(
            Action.ADVANCE, here, target, f"{passed}: {here} {ARROW} {target}",
            cycled.advanced(
                state.stage_index + 1, target, now,
                baseline=_recorded_baseline(judged) if first else None,
                baseline_counts=_recorded_counts(judged) if first else None,
            ),
        )

    progress: list[str] = []
    if baked_for < bake:
        progress.append(f"baking {human_duration(baked_for)} of {human_duration(bake)}")
    progress.append(f"{pass_streak}/{needed} passing cycles")
    return _hold(plan, cycled, now, _join(*findings, *progress))


def _automatic_rollback(
    plan: Plan,
    state: RolloutState,
    now: datetime,
    breaches: list[_Judged],
    failure_streaks: Mapping[str, int],
) -> Decision:
    # The most cautious of the breaches' targets wins.
    target_index = min(_rollback_index(plan, state, breach.spec) for breach in breaches)
    target = plan.stages[target_index].name
    lines = []
    for breach in breaches:
        streak = failure_streaks[breach.spec.name]
        cycles = "" if streak == 1 else f" for {streak} cycles"
        critical = " [critical]" if breach.spec.critical else ""
        lines.append(f"{breach.observation.message}{cycles}{critical}")
    reason = f"{'; '.join(lines)}: {state.stage_name} {ARROW} {target}"
    return Decision(
        Action.ROLLBACK, state.stage_name, target, reason,
        state.rolled_back(
            target_index, target, now, reason,
            cooldown_until=cooldown_until(plan, now),
            await_resume=not plan.settings.auto_resume_after_rollback,
        ),
    )


def _rollback_index(plan: Plan, state: RolloutState, spec: CheckSpec) -> int:
    """The stage a breach of `spec` goes back to: its `rollback_to` when that lies before the
    current stage, else one stage back."""
    named = plan.index_of(spec.rollback_to) if spec.rollback_to is not None else None
    if named is not None and named < state.stage_index:
        return named
    return state.stage_index - 1


def _judge_all(
    plan: Plan,
    stage_index: int,
    observations: Observations,
    confirmed_at: datetime,
    now: datetime,
) -> list[_Judged]:
    judged = []
    for spec in plan.checks_for(stage_index):
        observation = observations.get(spec.name) or Observation(
            check=spec.name, verdict=Verdict.NO_DATA, value=None, sample=None, limit=None,
            message=f"{spec.display_name}: not measured this cycle",
        )
        judged.append(_Judged(spec, observation, now - confirmed_at >= _needs(plan, spec)))
    return judged


def _needs(plan: Plan, spec: CheckSpec) -> timedelta:
    """How long after the flags were confirmed a check is judged: a threshold check needs
    its whole window inside the stage; a statistical one counts from the confirmation and
    only needs the shortest window Prometheus can take an increase over."""
    return plan.settings.min_window if spec.stat is not None else plan.window_of(spec)


def _allows_advance(item: _Judged) -> bool:
    """Gates (and threshold guardrails) must pass. A statistical guardrail only proves harm:
    it must not fail nor be unmeasurable; inconclusive or no data (no such cohort or cache
    layer in this stage) is the gates' business."""
    verdict = item.observation.verdict
    if item.spec.kind is CheckKind.GUARDRAIL and item.spec.stat is not None:
        return verdict in {Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.NO_DATA}
    return item.ready and verdict is Verdict.PASS


def _objectives(judged: list[_Judged]) -> str:
    """The stage's objectives with their intervals, for transitions and the final word."""
    lines = [
        j.observation.message for j in judged if j.spec.kind is CheckKind.OBJECTIVE and j.ready
    ]
    return f"objectives: {'; '.join(lines)}" if lines else ""


def _next_failure_streaks(
    previous: Mapping[str, int], enforced: list[_Judged]
) -> dict[str, int]:
    streaks = dict(previous)
    for item in enforced:
        if item.spec.kind is not CheckKind.GUARDRAIL or not item.ready:
            continue
        name = item.spec.name
        if item.observation.verdict is Verdict.FAIL:
            streaks[name] = streaks.get(name, 0) + 1
        elif item.observation.verdict is Verdict.PASS:
            streaks.pop(name, None)
        # no_data / error leave the streak as it was: an outage between two failures is
        # neither evidence of recovery nor of harm, and must not hide a real breach.
    return streaks


def _findings(
    plan: Plan,
    judged: list[_Judged],
    failure_streaks: Mapping[str, int],
    confirmed_at: datetime,
    now: datetime,
) -> list[str]:
    """What stands between this cycle and an advance, worst first, then dry-run results."""
    failing: list[str] = []
    unknown: list[str] = []
    dry_run: list[str] = []
    waiting = [j for j in judged if not j.ready and j.spec.is_enforced]
    for item in judged:
        if not item.ready or item.observation.verdict is Verdict.PASS:
            continue
        if item.spec.kind is CheckKind.OBJECTIVE:
            continue  # reported with the objectives, never standing in the way
        message = item.observation.message
        if item.spec.dry_run:
            dry_run.append(f"dry-run {item.observation.verdict}: {message}")
        elif item.observation.verdict is Verdict.INCONCLUSIVE:
            unknown.append(message)  # the message says how much more it needs
        elif item.observation.verdict is Verdict.FAIL:
            if item.spec.kind is CheckKind.GUARDRAIL:
                streak = failure_streaks.get(item.spec.name, 0)
                message += f" [{streak}/{plan.failures_to_rollback(item.spec)} failing cycles]"
            failing.append(message)
        else:
            unknown.append(f"{item.observation.verdict}: {message}")
    findings = failing + unknown
    if waiting:
        ready_at = confirmed_at + max(_needs(plan, j.spec) for j in waiting)
        findings.append(
            f"not judging {_names(j.spec.name for j in waiting)} for "
            f"{human_duration(ready_at - now)} more: a full window must follow the service "
            f"reporting the flags at {at(confirmed_at)}"
        )
    return findings + dry_run


def _recorded_counts(judged: list[_Judged]) -> dict[str, tuple[float, float]]:
    return {
        j.spec.name: j.observation.counts
        for j in judged
        if j.spec.kind is CheckKind.BASELINE
        and j.observation.verdict is Verdict.PASS
        and j.observation.counts is not None
    }


def _recorded_baseline(judged: list[_Judged]) -> dict[str, float]:
    return {
        j.spec.name: j.observation.value
        for j in judged
        if j.spec.kind is CheckKind.BASELINE
        and j.observation.verdict is Verdict.PASS
        and j.observation.value is not None
    }


def _flags_confirmed_at(
    state: RolloutState, observations: Observations, now: datetime
) -> datetime | None:
    """When this stage's metrics start: the service reporting its flags, never earlier than
    the stage itself (metrics from before belong to the previous stage), never later than
    now. A later `flags_matching_since` wins: the runner saw a mismatch we did not."""
    if not observations.flags_match:
        return None
    since = observations.flags_matching_since
    if state.flags_confirmed_at is None:
        confirmed = max(since or now, state.entered_at)
    elif since is None:
        confirmed = state.flags_confirmed_at
    else:
        confirmed = max(state.flags_confirmed_at, since)
    return min(confirmed, now)


def _hold(plan: Plan, state: RolloutState, now: datetime, reason: str) -> Decision:
    overdue = _is_newly_overdue(plan, state, now)
    if overdue:
        held = now - state.entered_at - plan.bake_of(state.stage_index)
        reason = f"{reason}; held {human_duration(held)} past the bake (hold-too-long)"
        state = state.overdue_notified(now)
    return Decision(
        Action.HOLD, state.stage_name, state.stage_name, reason, state, overdue=overdue
    )


def _is_newly_overdue(plan: Plan, state: RolloutState, now: datetime) -> bool:
    limit = overdue_after(plan)
    if limit is None or state.completed_at is not None or state.overdue_notified_at is not None:
        return False
    return now >= state.entered_at + plan.bake_of(state.stage_index) + limit


# An overdue notice needs at least this many evaluations past the bake (and one window).
OVERDUE_MIN_CYCLES: Final = 10


def overdue_after(plan: Plan) -> timedelta | None:
    """How long past its bake a stage is held before "held too long" is notified:
    hold_too_long scaled with the plan's time scale, but never less than the shortest
    window plus ten evaluation intervals — what judging a stage takes in real time, which
    no time scale shortens (evidence needs samples). Without the floor a scaled demo (bakes
    of seconds) was "held too long" at nearly every stage (issue 13)."""
    limit = plan.settings.hold_too_long
    if limit is None:
        return None
    floor = plan.settings.min_window + OVERDUE_MIN_CYCLES * plan.settings.evaluation_interval
    return max(plan.scaled(limit), floor)


def _names(names: Iterable[str], shown: int = 3) -> str:
    listed = list(names)
    if len(listed) <= shown:
        return ", ".join(listed)
    return f"{', '.join(listed[:shown])} and {len(listed) - shown} more"


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)
