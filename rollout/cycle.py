"""One controller cycle: read → decide → apply once → record (the argo-rollouts shape: the
verdict in the pure `rollout.core.decide`, the I/O here and behind `rollout.ports`).

`run_cycle` and `run_command` take their ports and `now` as arguments, so tests (and the
Prometheus integration tests) call them directly; `rollout.controller.Controller` adds the
lease and a lock for the long-running process. A stage change is bracketed by an intent
record so that a crash between the flag write and the state write is safe
(`rollout.recovery` says how).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from rollout.core import commands as core
from rollout.core.decide import decide
from rollout.core.decision import Decision
from rollout.core.flags import FlagSettings
from rollout.core.observations import Observations
from rollout.core.state import RolloutState
from rollout.entries import decision_entry
from rollout.metrics import transition_kind
from rollout.notices import log_decision, notify_all
from rollout.observe import observe
from rollout.ports import FencedOut, FlagError, PermanentFlagError, ReportedFlags
from rollout.records import FlagsRecord
from rollout.recovery import intent_for, resolve_intent
from rollout.runtime_types import CommandFailed, CyclePorts, CycleReport, ManualCommand

log = logging.getLogger("rollout.cycle")


async def run_cycle(
    ports: CyclePorts, *, now: datetime, token: int, dry_run: bool = False
) -> CycleReport:
    """One evaluation. Raises StoreError when the state cannot be read or written, and
    FencedOut when another controller has taken the lease; everything else (Prometheus
    down, the flag store failing, the webhook failing) is recorded and the cycle returns.

    With `dry_run` nothing is written anywhere (flags are only read) and `token` is unused.
    """
    snapshot = await ports.store.load()
    if not dry_run and snapshot.fence != token:
        raise FencedOut(token, snapshot.fence)
    state = snapshot.state
    recovery: str | None = None
    if snapshot.has_intent and not dry_run:
        resolved = await resolve_intent(ports, snapshot, now, token)
        if isinstance(resolved, CycleReport):
            return resolved
        state, recovery = resolved
    fresh = state is None
    if state is None:
        state = RolloutState.initial(ports.plan.stages[0].name, now)

    observations, reported = await observe(ports.plan, state, ports.metrics_source, now)
    decision = decide(state, observations, ports.plan, now)

    if dry_run:
        outcome = await _read_only_flags(ports, decision)
        entry = decision_entry(
            "dry-run", ports, now, None, decision=decision, observations=observations,
            reported=reported, flags=outcome, pending_intent=snapshot.intent,
        )
        return CycleReport("dry-run", now, state, decision, entry, observations, reported,
                           outcome)
    return await _act(
        ports, kind="cycle", now=now, token=token, state_before=state, decision=decision,
        observations=observations, reported=reported, fresh=fresh, recovery=recovery,
    )


async def run_command(
    ports: CyclePorts, command: ManualCommand, *, now: datetime, token: int
) -> CycleReport:
    """A person's pause/resume/promote/rollback, through the same apply-then-record path.

    Raises CommandRejected (the command does not apply to the state: nothing written),
    CommandFailed (the flags could not be written: logged, state unchanged), StoreError,
    FencedOut.
    """
    snapshot = await ports.store.load()
    if snapshot.fence != token:
        raise FencedOut(token, snapshot.fence)
    state = snapshot.state
    recovery: str | None = None
    if snapshot.has_intent:
        resolved = await resolve_intent(ports, snapshot, now, token)
        if isinstance(resolved, CycleReport):
            raise CommandFailed(
                "an interrupted transition is still unresolved because the flag store cannot "
                f"be read ({resolved.entry.error}); try again when it is back",
                resolved,
            )
        state, recovery = resolved
    if state is None:
        state = RolloutState.initial(ports.plan.stages[0].name, now)

    decision = _command_decision(ports, state, command, now)
    report = await _act(
        ports, kind="command", now=now, token=token, state_before=state, decision=decision,
        observations=None, reported=None, fresh=False, recovery=recovery, command=command,
    )
    if not report.committed:
        error = report.flags.error if report.flags is not None else "unknown error"
        raise CommandFailed(
            f"{command.name} accepted but the flags of {decision.target_stage} could not be "
            f"written ({error}); the state is unchanged",
            report,
        )
    return report


def _command_decision(ports: CyclePorts, state: RolloutState, command: ManualCommand,
                      now: datetime) -> Decision:
    plan, who, why = ports.plan, command.who, command.why
    if command.name == "pause":
        return core.pause(state, plan, now, who, why)
    if command.name == "resume":
        return core.resume(state, plan, now, who, why)
    if command.name == "promote":
        return core.promote(state, plan, now, who, why, full=command.full)
    return core.rollback(state, plan, now, who, why, to=command.to)


async def _act(
    ports: CyclePorts,
    *,
    kind: Literal["cycle", "command"],
    now: datetime,
    token: int,
    state_before: RolloutState,
    decision: Decision,
    observations: Observations | None,
    reported: ReportedFlags | None,
    fresh: bool,
    recovery: str | None,
    command: ManualCommand | None = None,
) -> CycleReport:
    """Apply the decision's flags once, then record: the state only if the flags are in."""
    plan, store = ports.plan, ports.store
    target_index = plan.index_of(decision.target_stage)
    desired = plan.stages[target_index].flags if target_index is not None else None

    if decision.changes_stage:
        assert desired is not None  # decide and the commands only target the plan's stages
        await store.begin_transition(intent_for(ports, decision, desired, now, token), token)
    else:
        # Flag stores know nothing of fencing tokens: check ours right before writing, so a
        # controller that was paused mid-cycle does not reconcile over its successor.
        await store.check_fence(token)

    if desired is None:
        outcome = None
    elif decision.state.is_paused and not decision.changes_stage:
        # Paused means hands off: a person may be steering the flags by hand.
        outcome = await _read_only_flags(ports, decision)
        outcome = outcome.with_note("paused: flags are not reconciled")
    else:
        outcome = await _apply(ports, desired, decision, fresh)

    failed = outcome is not None and outcome.error is not None
    entry = decision_entry(
        "flag-write-failed" if failed else kind, ports, now, token, decision=decision,
        observations=observations, reported=reported, flags=outcome, recovery=recovery,
        command=command, state_before=state_before,
    )
    # A failed write leaves the stored state as it was (streaks included): the next cycle
    # decides again from the same state and so retries the same write.
    log_id = await store.commit(
        token=token, entry=entry, state=None if failed else decision.state,
        clear_intent=True, last_cycle=entry.summary() if kind == "cycle" else None,
    )
    report = CycleReport(
        kind, now, state_before, decision, entry, observations, reported, outcome,
        committed=not failed, log_id=log_id, recovery=recovery,
    )
    _record_metrics(ports, report)
    log_decision(report)
    await notify_all(ports, report)
    return report


async def _apply(
    ports: CyclePorts, desired: FlagSettings, decision: Decision, fresh: bool
) -> FlagsRecord:
    try:
        result = await ports.flags.apply(desired)
    except FlagError as exc:
        return FlagsRecord(
            desired=desired,
            error=exc.message,
            error_kind="permanent" if isinstance(exc, PermanentFlagError) else "temporary",
            note=f"writing to {ports.flags.target} failed; retried next cycle",
        )
    drift = result.changed and not decision.changes_stage and not fresh
    note = ""
    if result.changed and fresh:
        note = "first cycle: flags initialised to the first stage"
    elif drift:
        note = "drift repaired: the flag store did not hold the stage's flags"
    return FlagsRecord(
        desired=desired, before=result.before, writes=tuple(str(w) for w in result.writes),
        applied=True, drift=drift, note=note,
    )


async def _read_only_flags(ports: CyclePorts, decision: Decision) -> FlagsRecord:
    index = ports.plan.index_of(decision.target_stage)
    desired = ports.plan.stages[index].flags if index is not None else FlagSettings()
    try:
        before = await ports.flags.read()
    except FlagError as exc:
        return FlagsRecord(desired=desired, note=f"could not read the flags: {exc.message}")
    return FlagsRecord(desired=desired, before=before, drift=before != desired)


def _record_metrics(ports: CyclePorts, report: CycleReport) -> None:
    metrics = ports.metrics
    if metrics is None:
        return
    if report.observations is not None:
        metrics.record_observations(report.observations.checks)
        metrics.record_evaluation(report.at)
    decision = report.decision
    if decision is not None and report.committed:
        kind = transition_kind(decision)
        if kind is not None:
            metrics.record_transition(decision.from_stage, decision.target_stage, kind)
    metrics.record_state(report.state_after)
