"""What `decide` and the manual commands return: an `Action`, a `Decision` with its reason
and the state to store, or `CommandRejected`; and the few helpers both sides share."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from rollout.core.plan import Plan
from rollout.core.state import CONTROLLER, RolloutState

ARROW = "\u2192"  # the arrow of `l1-50 → l1-10` in reason lines


class Action(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"
    COMPLETE = "complete"
    # Only the manual commands produce these two; `decide` never pauses or resumes.
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, why (with the numbers), and the state to store once it is done.

    The runner writes the target stage's flags before storing `state`: a stage is recorded
    only after its flags were written, so a crash in between is repaired by reconciling.
    """

    action: Action
    from_stage: str
    target_stage: str
    reason: str
    state: RolloutState
    by: str = CONTROLLER
    # True on the one cycle where a stage has been held past bake + hold_too_long:
    # the runner notifies once, the state remembers that it did.
    overdue: bool = False

    @property
    def changes_stage(self) -> bool:
        return self.from_stage != self.target_stage

    @property
    def is_manual(self) -> bool:
        return self.by != CONTROLLER


class CommandRejected(ValueError):
    """A manual command that cannot apply to the current state; the message says why."""



def cooldown_until(plan: Plan, now: datetime) -> datetime | None:
    cooldown = plan.scaled(plan.settings.cooldown)
    return now + cooldown if cooldown > timedelta(0) else None


def locate(state: RolloutState, plan: Plan) -> RolloutState | None:
    """The state with its index matched to the plan by stage name (the name is what was
    written to the flags; an index can shift when a plan gains a stage)."""
    index = plan.index_of(state.stage_name)
    if index is None:
        return None
    if index == state.stage_index:
        return state
    return replace(state, stage_index=index)


def at(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
