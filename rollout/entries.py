"""The decision log's format: how a cycle's decision, observations and flag writes become a
`LogEntry` (and its checks `CheckRecord`s) for the store, the API and people."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from rollout.core.checks import format_value
from rollout.core.decision import Decision
from rollout.core.observations import Evidence, Observation, Observations
from rollout.core.plan import CheckSpec, Plan, Unit
from rollout.core.state import RolloutState
from rollout.formatting import estimate_text, target_text
from rollout.metrics import transition_kind
from rollout.ports import ReportedFlags
from rollout.records import (
    CheckRecord,
    CommandRecord,
    EntryKind,
    EvidenceRecord,
    FlagsRecord,
    IntentRecord,
    LogEntry,
    ReportedFlagsRecord,
)
from rollout.runtime_types import CyclePorts, ManualCommand


def base_entry(kind: EntryKind, ports: CyclePorts, now: datetime, token: int | None,
               **fields: Any) -> LogEntry:
    return LogEntry(kind=kind, at=now, instance=ports.instance_id, fence=token, **fields)


def decision_entry(
    kind: EntryKind,
    ports: CyclePorts,
    now: datetime,
    token: int | None,
    *,
    decision: Decision,
    observations: Observations | None,
    reported: ReportedFlags | None,
    flags: FlagsRecord | None,
    recovery: str | None = None,
    command: ManualCommand | None = None,
    state_before: RolloutState | None = None,
    pending_intent: IntentRecord | None = None,
) -> LogEntry:
    moved_stage = state_before is not None and state_before.stage_name != decision.from_stage
    return base_entry(
        kind, ports, now, token,
        action=decision.action.value,
        by=decision.by,
        from_stage=decision.from_stage,
        to_stage=decision.target_stage,
        reason=decision.reason,
        transition=transition_kind(decision) if flags is None or flags.error is None else None,
        overdue=decision.overdue,
        paused=decision.state.is_paused,
        command=None if command is None else CommandRecord(
            name=command.name, who=command.who, why=command.why, full=command.full,
            to=command.to),
        checks=() if observations is None else tuple(
            check_record(ports.plan, o) for o in observations.checks),
        flags_match=None if observations is None else observations.flags_match,
        reported_flags=None if reported is None else reported_record(reported),
        flags=flags,
        recovery=recovery,
        pending_intent=pending_intent,
        state_stage=state_before.stage_name if moved_stage and state_before else None,
    )


def reported_record(reported: ReportedFlags) -> ReportedFlagsRecord:
    return ReportedFlagsRecord(settings=reported.settings, instances=reported.instances,
                               consistent=reported.consistent, error=reported.error)


def check_record(plan: Plan, observation: Observation) -> CheckRecord:
    spec = _spec(plan, observation.check)
    unit = spec.unit if spec is not None else None
    record = CheckRecord(
        check=observation.check,
        label=spec.display_name if spec is not None else observation.check,
        kind=spec.kind.value if spec is not None else None,
        verdict=observation.verdict.value,
        value=_finite(observation.value),
        limit=_finite(observation.limit),
        sample=_finite(observation.sample),
        comparator=spec.comparator.value if spec is not None and spec.comparator else None,
        value_text=_shown(observation.value, unit),
        limit_text=_shown(observation.limit, unit),
        critical=spec.critical if spec is not None else False,
        dry_run=spec.dry_run if spec is not None else False,
        message=observation.message,
        error=observation.error,
        unit=unit.value if unit is not None else None,
        evidence=evidence_record(observation.evidence),
    )
    if record.evidence is None:
        return record
    # A statistical check's value is an estimate (a difference reads in pp, with its sign)
    # and its limit what the bound must show: the same texts as its evidence.
    return record.model_copy(update={"value_text": estimate_text(record),
                                     "limit_text": target_text(record)})


def evidence_record(evidence: Evidence | None) -> EvidenceRecord | None:
    """The evidence as stored; None when there is none, or when a number in it is not finite
    (JSON has no NaN/Inf, and the verdict and message still say what was seen)."""
    if evidence is None:
        return None
    numbers = (evidence.estimate, evidence.lower, evidence.upper, evidence.limit,
               evidence.alpha, evidence.alpha_fail, evidence.events, evidence.trials)
    if not all(math.isfinite(number) for number in numbers):
        return None
    return EvidenceRecord(
        test=evidence.test, comparison=evidence.comparison, estimate=evidence.estimate,
        lower=evidence.lower, upper=evidence.upper, limit=evidence.limit,
        higher_is_worse=evidence.higher_is_worse, alpha=evidence.alpha,
        alpha_fail=evidence.alpha_fail, events=evidence.events, trials=evidence.trials,
        control_events=_finite(evidence.control_events),
        control_trials=_finite(evidence.control_trials),
        needed_more=_finite(evidence.needed_more), seconds_more=_finite(evidence.seconds_more),
    )


def _spec(plan: Plan, name: str) -> CheckSpec | None:
    for spec in plan.all_checks():
        if spec.name == name:
            return spec
    return None


def _shown(value: float | None, unit: Unit | None) -> str | None:
    if value is None or not math.isfinite(value) or unit is None:
        return None
    return format_value(value, unit)


def _finite(value: float | None) -> float | None:
    # JSON has no NaN/Inf; the verdict already says why there is no number.
    return value if value is not None and math.isfinite(value) else None
