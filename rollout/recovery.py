"""Crash safety of a stage change: the intent record, and what the next cycle does with one.

Why an *intent* record, and not "idempotent apply + decide again": a stage change touches
two systems that cannot share a transaction (the flag store, then Redis). If the process
dies after the flags were written but before the state was, the stored state still names
the old stage while the service already runs the new one. Simply deciding again from the
stored state would then *re-apply the old stage's flags*: an advance would flap back and
forth (and count twice once it re-advances), and — worse — an interrupted rollback would
re-expose the very stage that was just rolled back. So before writing flags for a stage
change the cycle stores the decision as an intent (fenced, like every write); the commit
that records the new state clears it in the same Lua script. The next cycle that finds an
intent reads the flag store:
  * it holds the intent's flags → the write happened: record the intended state once (the
    transition is counted and notified once, as "recovered"), then carry on;
  * it does not → the write never (fully) happened: drop the intent and decide again from
    the stored state (re-applying its flags repairs a half-written change);
  * it cannot be read → do nothing at all this cycle and keep the intent.
Ordinary cycles that change no stage need no intent: re-applying the current stage's flags
is idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime

from rollout.core.decision import Decision
from rollout.core.flags import FlagSettings
from rollout.core.state import RolloutState
from rollout.entries import base_entry
from rollout.metrics import transition_kind
from rollout.notices import safe_notify
from rollout.ports import FlagError, Notification, StoredSnapshot
from rollout.records import FlagsRecord, IntentRecord
from rollout.runtime_types import CyclePorts, CycleReport

log = logging.getLogger("rollout.recovery")

Resolved = tuple[RolloutState | None, str]


def intent_for(
    ports: CyclePorts, decision: Decision, desired: FlagSettings, now: datetime, token: int
) -> IntentRecord:
    return IntentRecord(
        at=now, instance=ports.instance_id, fence=token, action=decision.action.value,
        by=decision.by, from_stage=decision.from_stage, to_stage=decision.target_stage,
        reason=decision.reason, kind=transition_kind(decision), flags=desired,
        state=decision.state.to_dict(),
    )


async def resolve_intent(
    ports: CyclePorts, snapshot: StoredSnapshot, now: datetime, token: int
) -> Resolved | CycleReport:
    """Finish or drop the transition a previous controller started (see the module doc).

    Returns the state to decide from and a note, or — when the flag store cannot be read —
    the report of a cycle that did nothing but log that it is blocked."""
    intent = snapshot.intent
    intended = None
    if intent is not None:
        try:
            intended = RolloutState.from_dict(intent.state)
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    else:
        problem = "not a transition intent"
    if intent is None or intended is None:
        return await _drop_unreadable(ports, snapshot, now, token, problem)
    try:
        current = await ports.flags.read()
    except FlagError as exc:
        return await _blocked(ports, snapshot, intent, now, token, exc)
    if current == intent.flags:
        return await _record_once(ports, intent, intended, current, now, token)

    note = (
        f"dropped interrupted transition {intent.summary()}: the flag store holds "
        f"{current.describe()}, not {intent.flags.describe()}; the transition did not happen"
    )
    entry = base_entry("intent-abandoned", ports, now, token, intent=intent, note=note)
    await ports.store.commit(token=token, entry=entry, clear_intent=True)
    log.warning(note, extra={"event": "intent-abandoned"})
    return snapshot.state, note


async def _drop_unreadable(ports: CyclePorts, snapshot: StoredSnapshot, now: datetime,
                           token: int, problem: str) -> Resolved:
    note = f"unreadable intent record dropped ({problem})"
    entry = base_entry("intent-abandoned", ports, now, token, note=note,
                       raw=snapshot.unreadable_intent)
    await ports.store.commit(token=token, entry=entry, clear_intent=True)
    log.error("dropped an unreadable transition intent: %s", problem)
    return snapshot.state, note


async def _blocked(ports: CyclePorts, snapshot: StoredSnapshot, intent: IntentRecord,
                   now: datetime, token: int, exc: FlagError) -> CycleReport:
    note = (
        f"interrupted transition {intent.summary()} unresolved: cannot read the flags "
        f"({exc.message}); doing nothing until they can be read"
    )
    entry = base_entry("recovery-blocked", ports, now, token, intent=intent, note=note,
                       error=exc.message)
    log_id = await ports.store.commit(token=token, entry=entry, clear_intent=False)
    log.warning(note)
    before = snapshot.state or RolloutState.initial(ports.plan.stages[0].name, now)
    return CycleReport("cycle", now, before, None, entry, committed=False, log_id=log_id,
                       recovery=note)


async def _record_once(ports: CyclePorts, intent: IntentRecord, intended: RolloutState,
                       current: FlagSettings, now: datetime, token: int) -> Resolved:
    note = (
        f"recovered interrupted transition {intent.summary()}: the flag store holds "
        f"{intent.to_stage}'s flags, recording the transition once"
    )
    entry = base_entry(
        "recovered", ports, now, token, action=intent.action, by=intent.by,
        from_stage=intent.from_stage, to_stage=intent.to_stage, reason=intent.reason,
        note=note, flags=FlagsRecord(desired=intent.flags, before=current, applied=True),
    )
    await ports.store.commit(token=token, entry=entry, state=intended, clear_intent=True)
    if ports.metrics is not None:
        if intent.kind is not None:
            ports.metrics.record_transition(intent.from_stage, intent.to_stage, intent.kind)
        ports.metrics.record_state(intended)
    log.warning(note, extra={"event": "recovered", "stage": intended.stage_name})
    await safe_notify(ports, Notification(
        event="recovered",
        title=f"Rollout transition recovered: {intent.summary()}",
        reason=f"{intent.reason} ({note})",
        stage=intended.stage_name, at=now, by=intent.by,
        from_stage=intent.from_stage, to_stage=intent.to_stage, severity="warning",
    ))
    return intended, note
