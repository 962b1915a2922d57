"""The controller's own metrics (DESIGN.md §6), on a registry the caller owns.

The contract names come from app.contract; the two extra series below are the controller's
own (dashboards draw thresholds and "time in stage" from them) and live here because the
service never exports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.contract import (
    METRIC_ROLLOUT_CHECK_VALUE,
    METRIC_ROLLOUT_CHECKS,
    METRIC_ROLLOUT_IS_LEADER,
    METRIC_ROLLOUT_LAST_EVALUATION,
    METRIC_ROLLOUT_PAUSED,
    METRIC_ROLLOUT_STAGE_INDEX,
    METRIC_ROLLOUT_STAGE_INFO,
    METRIC_ROLLOUT_TRANSITIONS,
)
from rollout.core.decision import Action, Decision
from rollout.core.observations import Observation, Verdict
from rollout.core.plan import Plan
from rollout.core.state import RolloutState

METRIC_ROLLOUT_CHECK_THRESHOLD: Final = "rollout_check_threshold"
METRIC_ROLLOUT_STAGE_ENTERED: Final = "rollout_stage_entered_timestamp_seconds"

# Values of the `kind` label of rollout_transitions_total.
KIND_ADVANCE: Final = "advance"
KIND_ROLLBACK: Final = "rollback"
KIND_COMPLETE: Final = "complete"
KIND_MANUAL_PROMOTE: Final = "manual-promote"
KIND_MANUAL_ROLLBACK: Final = "manual-rollback"
TRANSITION_KINDS: Final = (
    KIND_ADVANCE, KIND_ROLLBACK, KIND_COMPLETE, KIND_MANUAL_PROMOTE, KIND_MANUAL_ROLLBACK,
)


class ControllerMetrics:
    """Gauges and counters of one controller process. Pass a fresh registry per test."""

    def __init__(self, registry: CollectorRegistry, plan: Plan) -> None:
        self._plan = plan
        self.stage_index = Gauge(
            METRIC_ROLLOUT_STAGE_INDEX, "Index of the current rollout stage (0 = off).",
            registry=registry,
        )
        self.stage_info = Gauge(
            METRIC_ROLLOUT_STAGE_INFO, "1 for the current rollout stage, 0 for the others.",
            ["stage"], registry=registry,
        )
        self.paused = Gauge(
            METRIC_ROLLOUT_PAUSED, "1 while a person has paused the rollout.", registry=registry,
        )
        self.transitions = Counter(
            METRIC_ROLLOUT_TRANSITIONS, "Stage transitions recorded by the controller.",
            ["from_stage", "to_stage", "kind"], registry=registry,
        )
        self.checks = Counter(
            METRIC_ROLLOUT_CHECKS, "Check evaluations by verdict.", ["check", "verdict"],
            registry=registry,
        )
        self.check_value = Gauge(
            METRIC_ROLLOUT_CHECK_VALUE,
            "Last measured value of each check of the current stage (absent: no data).",
            ["check"], registry=registry,
        )
        self.check_threshold = Gauge(
            METRIC_ROLLOUT_CHECK_THRESHOLD,
            "Resolved limit of each check of the current stage (relative ones multiplied out).",
            ["check"], registry=registry,
        )
        self.last_evaluation = Gauge(
            METRIC_ROLLOUT_LAST_EVALUATION, "Unix time of the last completed evaluation cycle.",
            registry=registry,
        )
        self.stage_entered = Gauge(
            METRIC_ROLLOUT_STAGE_ENTERED, "Unix time the current stage was entered.",
            registry=registry,
        )
        self.is_leader = Gauge(
            METRIC_ROLLOUT_IS_LEADER, "1 while this process holds the controller lease.",
            registry=registry,
        )
        # Every stage is present from the start so that dashboards can draw the timeline.
        for stage in plan.stage_names:
            self.stage_info.labels(stage=stage).set(0)
        for check in plan.all_checks():
            for verdict in Verdict:
                self.checks.labels(check=check.name, verdict=verdict.value)

    def record_state(self, state: RolloutState) -> None:
        index = self._plan.index_of(state.stage_name)
        self.stage_index.set(state.stage_index if index is None else index)
        for stage in self._plan.stage_names:
            self.stage_info.labels(stage=stage).set(1 if stage == state.stage_name else 0)
        self.paused.set(1 if state.is_paused else 0)
        self.stage_entered.set(state.entered_at.timestamp())

    def record_observations(self, observations: Iterable[Observation]) -> None:
        # Only the current stage's checks keep a value: a stale gauge from the previous
        # stage would draw a line that no longer means anything.
        self.check_value.clear()
        self.check_threshold.clear()
        for observation in observations:
            self.checks.labels(check=observation.check, verdict=observation.verdict.value).inc()
            if observation.value is not None and math.isfinite(observation.value):
                self.check_value.labels(check=observation.check).set(observation.value)
            if observation.limit is not None and math.isfinite(observation.limit):
                self.check_threshold.labels(check=observation.check).set(observation.limit)

    def record_transition(self, from_stage: str, to_stage: str, kind: str) -> None:
        self.transitions.labels(from_stage=from_stage, to_stage=to_stage, kind=kind).inc()

    def record_evaluation(self, now: datetime) -> None:
        self.last_evaluation.set(now.timestamp())

    def set_leader(self, leader: bool) -> None:
        self.is_leader.set(1 if leader else 0)


def transition_kind(decision: Decision) -> str | None:
    """The `kind` label of rollout_transitions_total, None when nothing moved."""
    if decision.action is Action.ADVANCE:
        return KIND_MANUAL_PROMOTE if decision.is_manual else KIND_ADVANCE
    if decision.action is Action.ROLLBACK:
        return KIND_MANUAL_ROLLBACK if decision.is_manual else KIND_ROLLBACK
    if decision.action is Action.COMPLETE:
        return KIND_COMPLETE
    return None
