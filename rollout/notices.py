"""What people are told about a cycle: the notifications (a transition, a pause, a hold too
long, repaired drift, a failed flag write) and the log lines, in one wording. A transition
lists the evidence it rests on and the stage's objectives (DESIGN.md §7)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from rollout.core.decision import Action, Decision
from rollout.core.plan import Plan
from rollout.formatting import transition_evidence
from rollout.metrics import (
    KIND_ADVANCE,
    KIND_COMPLETE,
    KIND_MANUAL_PROMOTE,
    KIND_MANUAL_ROLLBACK,
    KIND_ROLLBACK,
    transition_kind,
)
from rollout.next_step import next_step
from rollout.ports import Notification, Severity
from rollout.runtime_types import CyclePorts, CycleReport
from rollout.status import build_status

log = logging.getLogger("rollout.cycle")

_TITLES: Final[Mapping[str, str]] = {
    KIND_ADVANCE: "Rollout advanced",
    KIND_ROLLBACK: "Rollout ROLLED BACK",
    KIND_COMPLETE: "Rollout complete",
    KIND_MANUAL_PROMOTE: "Rollout promoted by {by}",
    KIND_MANUAL_ROLLBACK: "Rollout rolled back by {by}",
}


def notifications_for(report: CycleReport, plan: Plan | None = None) -> list[Notification]:
    """Transition, pause/resume, hold-too-long, drift and failed writes: each is one message.
    With the plan, a transition also says what happens next (rollout.next_step)."""
    decision = report.decision
    if decision is None:
        return []
    flags = report.flags
    if flags is not None and flags.error is not None:
        if not (decision.changes_stage or decision.is_manual):
            return []
        return [_notice(report, decision, "flag-write-failed",
                        f"Rollout {decision.action} {_moved(decision)} NOT applied: flag write "
                        "failed",
                        f"{flags.error} (state unchanged, retried next cycle). Wanted: "
                        f"{decision.reason}", "critical")]
    if not report.committed:
        return []
    found = []
    here, there = decision.from_stage, decision.target_stage
    kind = transition_kind(decision)
    if kind is not None:
        severity: Severity = (
            "critical" if kind == KIND_ROLLBACK else "warning" if decision.is_manual else "info"
        )
        title = _TITLES[kind].format(by=decision.by)
        found.append(_notice(report, decision, "transition", f"{title}: {_moved(decision)}",
                             decision.reason, severity,
                             details=transition_evidence(report.entry.checks,
                                                         decision.action)
                             + _what_next(plan, report)))
    elif decision.action is Action.PAUSE:
        found.append(_notice(report, decision, "pause",
                             f"Rollout paused by {decision.by} at {here}", decision.reason,
                             "warning"))
    elif decision.action is Action.RESUME:
        found.append(_notice(report, decision, "resume",
                             f"Rollout resumed by {decision.by} at {here}", decision.reason))
    if decision.overdue:
        found.append(_notice(report, decision, "overdue", f"Rollout held too long at {here}",
                             decision.reason, "warning"))
    if flags is not None and flags.drift and flags.applied:
        found.append(_notice(report, decision, "drift", f"Flag drift repaired at {there}",
                             f"the flag store did not hold {there}'s flags: "
                             f"{'; '.join(flags.writes)}", "warning"))
    return found


def _notice(report: CycleReport, decision: Decision, event: str, title: str, reason: str,
            severity: Severity = "info", *, details: tuple[str, ...] = ()) -> Notification:
    return Notification(
        event=event, title=title, reason=reason, stage=report.state_after.stage_name,
        at=report.at, by=decision.by, from_stage=decision.from_stage,
        to_stage=decision.target_stage, severity=severity, details=details,
    )


def _what_next(plan: Plan | None, report: CycleReport) -> tuple[str, ...]:
    if plan is None:
        return ()
    status = build_status(plan, report.state_after, None, report.at)
    headline, *blockers = next_step(status).lines()
    return (f"What happens next: {headline}", *blockers)


def _moved(decision: Decision) -> str:
    if decision.changes_stage:
        return f"{decision.from_stage} \u2192 {decision.target_stage}"
    return decision.from_stage


async def notify_all(ports: CyclePorts, report: CycleReport) -> None:
    for notification in notifications_for(report, ports.plan):
        await safe_notify(ports, notification)


async def safe_notify(ports: CyclePorts, notification: Notification) -> None:
    try:
        await ports.notifier.notify(notification)
    except Exception:
        log.exception("notifier failed (ignored): %s", notification.title)


def log_decision(report: CycleReport) -> None:
    """One log line per decision; warnings for rollbacks and drift, an error for a failed
    write (the level is what an on-call filter keys on)."""
    decision = report.decision
    if decision is None:
        return
    extra = {
        "event": report.entry.kind, "stage": decision.from_stage,
        "action": decision.action.value, "target": decision.target_stage, "by": decision.by,
    }
    moved = _moved(decision) if decision.changes_stage else f"at {decision.from_stage}"
    flags = report.flags
    if flags is not None and flags.error is not None:
        log.error("%s %s NOT applied: flag write failed (%s): %s", decision.action, moved,
                  flags.error, decision.reason, extra=extra)
        return
    drift = flags is not None and flags.drift
    level = logging.WARNING if decision.action is Action.ROLLBACK or drift else logging.INFO
    log.log(level, "%s %s: %s", decision.action, moved, decision.reason, extra=extra)
    if flags is not None and drift:
        log.warning("flag drift at %s: %s", decision.target_stage,
                    "; ".join(flags.writes) or flags.note, extra=extra)
