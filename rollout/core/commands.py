"""The manual commands, pure like `decide`: a person's pause, resume, promote and rollback
turned into a `Decision` (or `CommandRejected` saying why not)."""

from __future__ import annotations

from datetime import datetime

from rollout.core.decision import (
    ARROW,
    Action,
    CommandRejected,
    Decision,
    at,
    cooldown_until,
    locate,
)
from rollout.core.plan import Plan
from rollout.core.state import RolloutState


def pause(state: RolloutState, plan: Plan, now: datetime, who: str, why: str) -> Decision:
    state = _located_or_reject(state, plan)
    _require_who(who)
    if state.pause_info is not None:
        pause_info = state.pause_info
        raise CommandRejected(
            f"already paused by {pause_info.by} since {at(pause_info.at)}: {pause_info.why}"
        )
    here = state.stage_name
    return Decision(
        Action.PAUSE, here, here, f"paused by {who}: {_why(why)}",
        state.paused(who, _why(why), now), by=who,
    )


def resume(state: RolloutState, plan: Plan, now: datetime, who: str, why: str) -> Decision:
    state = _located_or_reject(state, plan)
    _require_who(who)
    if state.pause_info is None and not state.awaiting_resume:
        raise CommandRejected(
            f"nothing to resume: {state.stage_name} is neither paused nor holding after a rollback"
        )
    reason = f"resumed by {who}: {_why(why)}"
    if state.cooldown_until is not None and now < state.cooldown_until:
        reason += f"; the cooldown still runs until {at(state.cooldown_until)}"
    here = state.stage_name
    return Decision(Action.RESUME, here, here, reason, state.resumed(), by=who)


def promote(
    state: RolloutState,
    plan: Plan,
    now: datetime,
    who: str,
    why: str,
    *,
    full: bool = False,
) -> Decision:
    """Skip the bake and the gates, one stage (or straight to the last with `full`)."""
    state = _located_or_reject(state, plan)
    _require_who(who)
    if state.stage_index == plan.last_index:
        raise CommandRejected(f"already at the last stage {state.stage_name!r}")
    target_index = plan.last_index if full else state.stage_index + 1
    target = plan.stages[target_index].name
    here = state.stage_name
    reason = f"promoted by {who}: {_why(why)}: {here} {ARROW} {target}"
    missing = [c.name for c in plan.baseline_checks() if c.name not in state.baseline]
    if missing:
        reason += (
            f"; no baseline recorded for {', '.join(missing)}: checks relative to it report "
            "no_data until the baseline stage completes a bake"
        )
    if state.pause_info is not None:
        reason += "; the rollout stays paused"
    return Decision(
        Action.ADVANCE, here, target, reason,
        state.advanced(target_index, target, now), by=who,
    )


def rollback(
    state: RolloutState,
    plan: Plan,
    now: datetime,
    who: str,
    why: str,
    *,
    to: str | None = None,
) -> Decision:
    """Back to the previous stage, or to `to`; then the same cooldown and post-rollback
    hold as an automatic rollback, so the controller does not promote straight back."""
    _require_who(who)
    located = locate(state, plan)
    if located is None and to is None:
        raise CommandRejected(
            f"the state names stage {state.stage_name!r}, which the plan does not have; "
            f"name a target with --to (stages: {', '.join(plan.stage_names)})"
        )
    current_index = located.stage_index if located is not None else len(plan.stages)
    if to is None:
        if current_index == 0:
            raise CommandRejected(
                f"already at the first stage {state.stage_name!r}: nothing to roll back to"
            )
        target_index = current_index - 1
    else:
        found = plan.index_of(to)
        if found is None:
            raise CommandRejected(
                f"unknown stage {to!r} (stages: {', '.join(plan.stage_names)})"
            )
        if found >= current_index:
            raise CommandRejected(
                f"can only roll back to a stage before {state.stage_name!r}, not {to!r}"
            )
        target_index = found
    target = plan.stages[target_index].name
    here = state.stage_name
    reason = f"rolled back by {who}: {_why(why)}: {here} {ARROW} {target}"
    base = located if located is not None else state
    return Decision(
        Action.ROLLBACK, here, target, reason,
        base.rolled_back(
            target_index, target, now, reason,
            cooldown_until=cooldown_until(plan, now),
            await_resume=not plan.settings.auto_resume_after_rollback,
            by=who,
        ),
        by=who,
    )


def _located_or_reject(state: RolloutState, plan: Plan) -> RolloutState:
    located = locate(state, plan)
    if located is None:
        raise CommandRejected(
            f"the state names stage {state.stage_name!r}, which the plan does not have; "
            f"use `rollout rollback --to STAGE` (stages: {', '.join(plan.stage_names)})"
        )
    return located


def _require_who(who: str) -> None:
    if not who.strip():
        raise CommandRejected("say who you are: manual actions are logged with who and why")


def _why(why: str) -> str:
    return why.strip() or "no reason given"
