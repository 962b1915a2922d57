"""Where the rollout is, as one typed snapshot (`StatusView`) built from the stored state
and the last cycle. `/api/status` serves it, and `rollout status`, the status page and the
demo render this same model."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rollout.core.flags import FlagSettings
from rollout.core.plan import CheckSpec, Plan
from rollout.core.state import RolloutState
from rollout.records import CheckRecord, CycleSummary, FlagsRecord, IntentRecord
from rollout.redaction import masked_model


class View(BaseModel):
    # Lenient on read: a newer controller's extra fields must not break an older CLI.
    model_config = ConfigDict(frozen=True, extra="ignore")


class StageView(View):
    index: int
    name: str
    flags: FlagSettings
    bake_seconds: float
    position: Literal["done", "current", "complete", "pending"]


class PauseView(View):
    by: str
    why: str
    at: datetime


class RollbackView(View):
    from_stage: str
    to_stage: str
    at: datetime
    reason: str
    by: str


class FlagsView(View):
    desired: FlagSettings | None = None
    reported: FlagSettings | None = None
    confirmed_at: datetime | None = None
    last_write: FlagsRecord | None = None


class DecisionView(View):
    at: datetime | None = None
    action: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    reason: str | None = None
    instance: str | None = None


class LeaderView(View):
    instance_id: str | None = None
    is_leader: bool | None = None
    holder: str | None = None


class IntentView(View):
    at: datetime
    action: str
    from_stage: str
    to_stage: str
    by: str


class PlanCheckView(View):
    """One check of the current stage as the plan defines it: what the page and `rollout
    status` need to tell a check not judged yet from one that passed."""

    check: str
    label: str
    kind: str
    statistical: bool
    dry_run: bool = False
    # From when the controller judges it (the flags' confirmation plus the window it needs,
    # as rollout.core.decide does); None while the service has not reported the flags.
    judged_from: datetime | None = None


class StatusView(View):
    initialised: bool
    stage: str
    stage_index: int | None
    stages: tuple[StageView, ...]
    entered_at: datetime
    time_in_stage_seconds: float
    bake_seconds: float | None
    bake_remaining_seconds: float | None
    pass_streak: int
    passes_to_advance: int
    failure_streaks: dict[str, int]
    baseline: dict[str, float]
    paused: bool
    pause: PauseView | None = None
    cooldown_until: datetime | None = None
    in_cooldown: bool
    awaiting_resume: bool
    completed_at: datetime | None = None
    last_rollback: RollbackView | None = None
    flags: FlagsView
    # The last cycle's checks of this stage, objectives included, each statistical one with
    # its evidence (estimate, bounds, margin or limit, n, and what more a verdict needs).
    checks: tuple[CheckRecord, ...] = ()
    plan_checks: tuple[PlanCheckView, ...] = ()
    last_decision: DecisionView | None = None
    last_evaluation_at: datetime | None = None
    leader: LeaderView
    pending_intent: IntentView | None = None
    time_scale: float
    now: datetime

    @property
    def enforced_checks(self) -> tuple[CheckRecord, ...]:
        """The gates, guardrails and baseline checks of the last cycle: what decides."""
        return tuple(check for check in self.checks if not check.is_objective)

    @property
    def objectives(self) -> tuple[CheckRecord, ...]:
        """The stage's objectives with their intervals (met / missed / inconclusive): reported
        at every transition and, once the rollout is complete, its final word."""
        return tuple(check for check in self.checks if check.is_objective)

    def headline(self) -> str:
        """The state in a few words, for a page title or a terminal's first line."""
        if self.paused:
            return "paused"
        if self.completed_at is not None:
            return "complete"
        if self.in_cooldown:
            return "cooling down after a rollback"
        if self.awaiting_resume:
            return "holding after a rollback until resumed"
        decision = self.last_decision
        return (decision.action if decision else None) or "not evaluated yet"


def build_status(
    plan: Plan,
    state: RolloutState | None,
    last_cycle: CycleSummary | None,
    now: datetime,
    *,
    instance_id: str | None = None,
    is_leader: bool | None = None,
    holder: str | None = None,
    intent: IntentRecord | None = None,
) -> StatusView:
    initialised = state is not None
    if state is None:
        state = RolloutState.initial(plan.stages[0].name, now)
    index = plan.index_of(state.stage_name)
    bake = plan.bake_of(index).total_seconds() if index is not None else None
    in_stage = max(0.0, (now - state.entered_at).total_seconds())
    cycle = last_cycle
    # Checks measured in another stage say nothing about this one.
    checks_current = (cycle is not None
                      and cycle.from_stage == state.stage_name == cycle.to_stage)
    pause, rollback = state.pause_info, state.last_rollback
    plan_checks = () if index is None else tuple(
        PlanCheckView(check=spec.name, label=spec.display_name, kind=str(spec.kind),
                      statistical=spec.stat is not None, dry_run=spec.dry_run,
                      judged_from=None if state.flags_confirmed_at is None
                      else state.flags_confirmed_at + _judged_after(plan, spec))
        for spec in plan.checks_for(index))
    # Masked: the API, the unauthenticated page and the CLI show it, and a stored check or
    # flag error may quote a URL with its credentials (rollout.redaction).
    return masked_model(StatusView(
        initialised=initialised,
        stage=state.stage_name,
        stage_index=index,
        stages=tuple(_stage_view(plan, i, index, state) for i in range(len(plan.stages))),
        entered_at=state.entered_at,
        time_in_stage_seconds=in_stage,
        bake_seconds=bake,
        bake_remaining_seconds=None if bake is None else max(0.0, bake - in_stage),
        pass_streak=state.pass_streak,
        passes_to_advance=plan.settings.passes_to_advance,
        failure_streaks=dict(state.failure_streaks),
        baseline=dict(state.baseline),
        paused=state.is_paused,
        pause=None if pause is None else PauseView(by=pause.by, why=pause.why, at=pause.at),
        cooldown_until=state.cooldown_until,
        in_cooldown=state.in_cooldown(now),
        awaiting_resume=state.awaiting_resume,
        completed_at=state.completed_at,
        last_rollback=None if rollback is None else RollbackView(
            from_stage=rollback.from_stage, to_stage=rollback.to_stage, at=rollback.at,
            reason=rollback.reason, by=rollback.by),
        flags=FlagsView(
            desired=plan.stages[index].flags if index is not None else None,
            reported=(cycle.reported_flags.settings
                      if cycle is not None and cycle.reported_flags else None),
            confirmed_at=state.flags_confirmed_at,
            last_write=cycle.flags if cycle is not None else None,
        ),
        checks=cycle.checks if cycle is not None and checks_current else (),
        plan_checks=plan_checks,
        last_decision=None if cycle is None else DecisionView(
            at=cycle.at, action=cycle.action, from_stage=cycle.from_stage,
            to_stage=cycle.to_stage, reason=cycle.reason, instance=cycle.instance),
        last_evaluation_at=cycle.at if cycle is not None else None,
        leader=LeaderView(instance_id=instance_id, is_leader=is_leader, holder=holder),
        pending_intent=None if intent is None else IntentView(
            at=intent.at, action=intent.action, from_stage=intent.from_stage,
            to_stage=intent.to_stage, by=intent.by),
        time_scale=plan.settings.time_scale,
        now=now,
    ))


def _judged_after(plan: Plan, spec: CheckSpec) -> timedelta:
    # The rule of rollout.core.decide._needs: a statistical check counts from the flags'
    # confirmation and needs the shortest window; a threshold check its whole window.
    return plan.settings.min_window if spec.stat is not None else plan.window_of(spec)


def _stage_view(plan: Plan, i: int, current: int | None, state: RolloutState) -> StageView:
    position: Literal["done", "current", "complete", "pending"] = "pending"
    if current is not None and i < current:
        position = "done"
    elif i == current:
        position = "complete" if state.completed_at is not None else "current"
    stage = plan.stages[i]
    return StageView(index=i, name=stage.name, flags=stage.flags,
                     bake_seconds=plan.bake_of(i).total_seconds(), position=position)
