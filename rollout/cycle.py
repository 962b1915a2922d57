"""One controller cycle: read → decide → apply once → record (the argo-rollouts shape: all
I/O in this module, the verdict in the pure `rollout.core.decide`).

`run_cycle` and `run_command` take their ports and `now` as arguments, so tests (and the
Prometheus integration tests) call them directly; `Controller` adds the lease and a lock for
the long-running process.

Crash safety — why an *intent* record, and not "idempotent apply + decide again":
a stage change touches two systems that cannot share a transaction (the flag store, then
Redis). If the process dies after the flags were written but before the state was, the
stored state still names the old stage while the service already runs the new one. Simply
deciding again from the stored state would then *re-apply the old stage's flags*: an
advance would flap back and forth (and count twice once it re-advances), and — worse — an
interrupted rollback would re-expose the very stage that was just rolled back. So before
writing flags for a stage change the cycle stores the decision as an intent (fenced, like
every write); the commit that records the new state clears it in the same Lua script. The
next cycle that finds an intent reads the flag store:
  * it holds the intent's flags → the write happened: record the intended state once (the
    transition is counted and notified once, as "recovered"), then carry on;
  * it does not → the write never (fully) happened: drop the intent and decide again from
    the stored state (re-applying its flags repairs a half-written change);
  * it cannot be read → do nothing at all this cycle and keep the intent.
Ordinary cycles that change no stage need no intent: re-applying the current stage's flags
is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from rollout.core import decide as core
from rollout.core.checks import format_value, judge
from rollout.core.decide import Action, CommandRejected, Decision
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement, Observation, Observations
from rollout.core.plan import CheckSpec, Plan
from rollout.core.state import CONTROLLER, RolloutState
from rollout.metrics import (
    KIND_ADVANCE,
    KIND_COMPLETE,
    KIND_MANUAL_PROMOTE,
    KIND_MANUAL_ROLLBACK,
    KIND_ROLLBACK,
    ControllerMetrics,
)
from rollout.ports import (
    FlagError,
    FlagWrite,
    FlagWriter,
    MetricsSource,
    PermanentFlagError,
    ReportedFlags,
)

log = logging.getLogger("rollout.cycle")

__all__ = [
    "CommandFailed",
    "CommandRejected",
    "Controller",
    "FencedOut",
    "ManualCommand",
    "NotLeader",
    "Notification",
    "Notifier",
    "StateStore",
    "StoreError",
    "StoredSnapshot",
    "run_command",
    "run_cycle",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- ports owned by the runtime ------------------------------------------------------------


class StoreError(Exception):
    """The state store could not be read or written (Redis down, timeout)."""


class FencedOut(Exception):
    """A newer controller holds the lease: this process's fencing token is stale."""

    def __init__(self, token: int | None, current: int | None) -> None:
        super().__init__(
            f"fencing token {token} is stale (current {current}): another controller leads"
        )
        self.token = token
        self.current = current


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """What the store holds: the state (None before the first cycle), a pending transition
    intent, and the current fencing token (the latest one issued to any controller)."""

    state: RolloutState | None
    intent: Mapping[str, Any] | None = None
    fence: int = 0


@runtime_checkable
class StateStore(Protocol):
    """Where the state, the decision log and the intent live. Every write is fenced."""

    async def load(self) -> StoredSnapshot: ...

    async def check_fence(self, token: int) -> None:
        """Raise FencedOut unless `token` is the current fencing token."""
        ...

    async def begin_transition(self, intent: Mapping[str, Any], token: int) -> None: ...

    async def commit(
        self,
        *,
        token: int,
        entry: Mapping[str, Any],
        state: RolloutState | None = None,
        clear_intent: bool = True,
        last_cycle: Mapping[str, Any] | None = None,
    ) -> str:
        """Atomically: store `state` (None keeps it), append `entry` to the log, clear the
        intent, store `last_cycle`. Returns the log entry's id."""
        ...

    async def history(self, limit: int = 50) -> list[dict[str, Any]]: ...

    async def last_cycle(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for people: a transition, a pause, a hold-too-long, drift, a failure."""

    event: str  # transition | pause | resume | overdue | drift | flag-write-failed | recovered
    title: str
    reason: str
    stage: str
    at: datetime
    by: str = CONTROLLER
    from_stage: str | None = None
    to_stage: str | None = None
    severity: Literal["info", "warning", "critical"] = "info"
    fields: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    async def notify(self, notification: Notification) -> None:
        """Deliver or log; must never raise (a failed notification never breaks a cycle)."""
        ...

    async def aclose(self) -> None: ...


class NullNotifier:
    """No webhook configured: notifications only appear in the logs."""

    async def notify(self, notification: Notification) -> None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class CyclePorts:
    plan: Plan
    store: StateStore
    flags: FlagWriter
    metrics_source: MetricsSource
    notifier: Notifier = field(default_factory=NullNotifier)
    metrics: ControllerMetrics | None = None
    instance_id: str = "controller"


# --- what a cycle did ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    desired: FlagSettings
    before: FlagSettings | None = None
    writes: tuple[FlagWrite, ...] = ()
    applied: bool = False
    error: str | None = None
    error_kind: Literal["temporary", "permanent"] | None = None
    drift: bool = False
    note: str = ""

    @property
    def result(self) -> Literal["failed", "skipped", "written", "unchanged"]:
        if self.error is not None:
            return "failed"
        if not self.applied:
            return "skipped"
        return "written" if self.writes else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "desired": flags_dict(self.desired),
            "before": None if self.before is None else flags_dict(self.before),
            "writes": [str(w) for w in self.writes],
            "applied": self.applied,
            "result": self.result,
            "error": self.error,
            "error_kind": self.error_kind,
            "drift": self.drift,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class CycleReport:
    """Everything one cycle (or command) saw and did; `entry` is what went to the log."""

    kind: Literal["cycle", "command", "dry-run"]
    at: datetime
    state_before: RolloutState
    decision: Decision | None
    observations: Observations | None = None
    reported: ReportedFlags | None = None
    flags: FlagOutcome | None = None
    committed: bool = False
    log_id: str | None = None
    recovery: str | None = None
    entry: Mapping[str, Any] = field(default_factory=dict)

    @property
    def state_after(self) -> RolloutState:
        if self.committed and self.decision is not None:
            return self.decision.state
        return self.state_before

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.entry)
        data.setdefault("at", _iso(self.at))
        data["committed"] = self.committed
        data["log_id"] = self.log_id
        data["state"] = self.state_after.to_dict()
        return data


@dataclass(frozen=True, slots=True)
class ManualCommand:
    name: Literal["pause", "resume", "promote", "rollback"]
    who: str
    why: str
    full: bool = False
    to: str | None = None


class CommandFailed(Exception):
    """A manual command was accepted but its flags could not be written: nothing changed."""

    def __init__(self, message: str, report: CycleReport) -> None:
        super().__init__(message)
        self.report = report


class NotLeader(Exception):
    """This process stands by; commands go to the leader."""


# --- reading the world ---------------------------------------------------------------------


async def observe(
    plan: Plan, state: RolloutState, source: MetricsSource, now: datetime
) -> tuple[Observations, ReportedFlags]:
    """Measure every check of the state's stage (guardrails included; the baseline checks in
    the first stage) and compare the flags the service reports with the stage's flags."""
    index = plan.index_of(state.stage_name)
    specs = plan.checks_for(index) if index is not None else ()
    # Identical queries (the same p95 for a gate and a guardrail of one window) run once.
    pending: dict[tuple[str, str | None], asyncio.Task[Measurement]] = {}
    async with asyncio.TaskGroup() as group:
        for spec in specs:
            key = (plan.render_query(spec), plan.render_sample_query(spec))
            if key not in pending:
                pending[key] = group.create_task(_measure(source, *key))
        flags_task = group.create_task(_reported_flags(source))
    checks = tuple(
        judge(
            spec,
            pending[(plan.render_query(spec), plan.render_sample_query(spec))].result(),
            state.baseline,
        )
        for spec in specs
    )
    reported = flags_task.result()
    desired = plan.stages[index].flags if index is not None else None
    match = (
        desired is not None and reported.consistent and reported.settings == desired
    )
    # The state remembers since when the flags have matched (decide keeps it in
    # flags_confirmed_at); a mismatch seen now starts the count again.
    since = (state.flags_confirmed_at or now) if match else None
    observations = Observations(
        at=now, checks=checks, flags_match=match, reported_flags=reported.settings,
        flags_matching_since=since,
    )
    return observations, reported


async def _measure(source: MetricsSource, query: str, sample_query: str | None) -> Measurement:
    try:
        return await source.measure(query, sample_query)
    except Exception as exc:  # the port promises not to raise; a bug must not stop the cycle
        log.exception("metrics source raised instead of reporting an error")
        return Measurement(value=None, error=f"{type(exc).__name__}: {exc}")


async def _reported_flags(source: MetricsSource) -> ReportedFlags:
    try:
        return await source.reported_flags()
    except Exception as exc:
        log.exception("metrics source raised while reading the reported flags")
        return ReportedFlags(settings=None, error=f"{type(exc).__name__}: {exc}")


# --- the cycle -------------------------------------------------------------------------------


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
    if snapshot.intent is not None and not dry_run:
        resolved = await _resolve_intent(ports, snapshot, now, token)
        if isinstance(resolved, CycleReport):
            return resolved
        state, recovery = resolved
    fresh = state is None
    if state is None:
        state = RolloutState.initial(ports.plan.stages[0].name, now)

    observations, reported = await observe(ports.plan, state, ports.metrics_source, now)
    decision = core.decide(state, observations, ports.plan, now)

    if dry_run:
        outcome = await _read_only_flags(ports, decision)
        entry = _entry(
            "dry-run", ports, now, None, decision=decision, observations=observations,
            reported=reported, flags=outcome, pending_intent=snapshot.intent,
        )
        return CycleReport(
            "dry-run", now, state, decision, observations, reported, outcome, entry=entry,
        )
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
    if snapshot.intent is not None:
        resolved = await _resolve_intent(ports, snapshot, now, token)
        if isinstance(resolved, CycleReport):
            raise CommandFailed(
                "an interrupted transition is still unresolved because the flag store cannot "
                f"be read ({resolved.entry.get('error')}); try again when it is back",
                resolved,
            )
        state, recovery = resolved
    if state is None:
        state = RolloutState.initial(ports.plan.stages[0].name, now)

    plan = ports.plan
    if command.name == "pause":
        decision = core.pause(state, plan, now, command.who, command.why)
    elif command.name == "resume":
        decision = core.resume(state, plan, now, command.who, command.why)
    elif command.name == "promote":
        decision = core.promote(state, plan, now, command.who, command.why, full=command.full)
    else:
        decision = core.rollback(state, plan, now, command.who, command.why, to=command.to)

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
        await store.begin_transition(_intent(ports, decision, desired, now, token), token)
    else:
        # Flag stores know nothing of fencing tokens: check ours right before writing, so a
        # controller that was paused mid-cycle does not reconcile over its successor.
        await store.check_fence(token)

    if desired is None:
        outcome = None
    elif decision.state.is_paused and not decision.changes_stage:
        # Paused means hands off: a person may be steering the flags by hand.
        outcome = await _read_only_flags(ports, decision)
        outcome = _replace_note(outcome, "paused: flags are not reconciled")
    else:
        outcome = await _apply(ports, desired, decision, fresh)

    failed = outcome is not None and outcome.error is not None
    entry = _entry(
        "flag-write-failed" if failed else kind, ports, now, token, decision=decision,
        observations=observations, reported=reported, flags=outcome, recovery=recovery,
        command=command, state_before=state_before,
    )
    summary = _last_cycle(entry) if kind == "cycle" else None
    # A failed write leaves the stored state as it was (streaks included): the next cycle
    # decides again from the same state and so retries the same write.
    log_id = await store.commit(
        token=token, entry=entry, state=None if failed else decision.state,
        clear_intent=True, last_cycle=summary,
    )
    report = CycleReport(
        kind, now, state_before, decision, observations, reported, outcome,
        committed=not failed, log_id=log_id, recovery=recovery, entry=entry,
    )
    _record_metrics(ports, report)
    _log(report)
    await _notify_all(ports, report)
    return report


async def _apply(
    ports: CyclePorts, desired: FlagSettings, decision: Decision, fresh: bool
) -> FlagOutcome:
    try:
        result = await ports.flags.apply(desired)
    except FlagError as exc:
        return FlagOutcome(
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
    return FlagOutcome(
        desired=desired, before=result.before, writes=result.writes, applied=True,
        drift=drift, note=note,
    )


async def _read_only_flags(ports: CyclePorts, decision: Decision) -> FlagOutcome:
    index = ports.plan.index_of(decision.target_stage)
    desired = ports.plan.stages[index].flags if index is not None else FlagSettings()
    try:
        before = await ports.flags.read()
    except FlagError as exc:
        return FlagOutcome(desired=desired, note=f"could not read the flags: {exc.message}")
    return FlagOutcome(desired=desired, before=before, drift=before != desired)


def _replace_note(outcome: FlagOutcome, note: str) -> FlagOutcome:
    return FlagOutcome(
        desired=outcome.desired, before=outcome.before, writes=outcome.writes,
        applied=outcome.applied, error=outcome.error, error_kind=outcome.error_kind,
        drift=outcome.drift, note=f"{note}; {outcome.note}" if outcome.note else note,
    )


# --- interrupted transitions -------------------------------------------------------------------


def _intent(
    ports: CyclePorts, decision: Decision, desired: FlagSettings, now: datetime, token: int
) -> dict[str, Any]:
    return {
        "at": _iso(now),
        "instance": ports.instance_id,
        "fence": token,
        "action": decision.action.value,
        "by": decision.by,
        "from_stage": decision.from_stage,
        "to_stage": decision.target_stage,
        "reason": decision.reason,
        "kind": transition_kind(decision),
        "flags": flags_dict(desired),
        "state": decision.state.to_dict(),
    }


async def _resolve_intent(
    ports: CyclePorts, snapshot: StoredSnapshot, now: datetime, token: int
) -> tuple[RolloutState | None, str] | CycleReport:
    """Finish or drop the transition a previous controller started (see the module doc)."""
    intent = snapshot.intent
    assert intent is not None
    before_state = snapshot.state or RolloutState.initial(ports.plan.stages[0].name, now)
    summary = (
        f"{intent.get('from_stage')} \u2192 {intent.get('to_stage')} "
        f"({intent.get('action')} by {intent.get('by')} at {intent.get('at')})"
    )
    try:
        wanted = _flags_from(intent["flags"])
        intended = RolloutState.from_dict(intent["state"])
    except (KeyError, TypeError, ValueError) as exc:
        entry = _base_entry("intent-abandoned", ports, now, token) | {
            "intent": dict(intent),
            "note": f"unreadable intent record dropped ({type(exc).__name__}: {exc})",
        }
        await ports.store.commit(token=token, entry=entry, clear_intent=True)
        log.error("dropped an unreadable transition intent: %s", exc)
        return snapshot.state, entry["note"]
    try:
        current = await ports.flags.read()
    except FlagError as exc:
        note = (
            f"interrupted transition {summary} unresolved: cannot read the flags "
            f"({exc.message}); doing nothing until they can be read"
        )
        entry = _base_entry("recovery-blocked", ports, now, token) | {
            "intent": dict(intent), "note": note, "error": exc.message,
        }
        log_id = await ports.store.commit(token=token, entry=entry, clear_intent=False)
        log.warning(note)
        return CycleReport(
            "cycle", now, before_state, None, committed=False, log_id=log_id, recovery=note,
            entry=entry,
        )

    if current == wanted:
        note = (
            f"recovered interrupted transition {summary}: the flag store holds "
            f"{intent.get('to_stage')}'s flags, recording the transition once"
        )
        entry = _base_entry("recovered", ports, now, token) | {
            "action": intent.get("action"), "by": intent.get("by"),
            "from_stage": intent.get("from_stage"), "to_stage": intent.get("to_stage"),
            "reason": intent.get("reason"), "note": note,
            "flags": {"desired": flags_dict(wanted), "before": flags_dict(current),
                      "writes": [], "applied": True, "result": "unchanged"},
        }
        await ports.store.commit(token=token, entry=entry, state=intended, clear_intent=True)
        kind = intent.get("kind")
        if ports.metrics is not None:
            if isinstance(kind, str):
                ports.metrics.record_transition(
                    str(intent.get("from_stage")), str(intent.get("to_stage")), kind
                )
            ports.metrics.record_state(intended)
        log.warning(note, extra={"event": "recovered", "stage": intended.stage_name})
        await _safe_notify(ports, Notification(
            event="recovered",
            title=f"Rollout transition recovered: {summary}",
            reason=f"{intent.get('reason')} ({note})",
            stage=intended.stage_name, at=now, by=str(intent.get("by")),
            from_stage=str(intent.get("from_stage")), to_stage=str(intent.get("to_stage")),
            severity="warning",
        ))
        return intended, note

    note = (
        f"dropped interrupted transition {summary}: the flag store holds "
        f"{current.describe()}, not {wanted.describe()}; the transition did not happen"
    )
    entry = _base_entry("intent-abandoned", ports, now, token) | {
        "intent": dict(intent), "note": note,
    }
    await ports.store.commit(token=token, entry=entry, clear_intent=True)
    log.warning(note, extra={"event": "intent-abandoned"})
    return snapshot.state, note


# --- recording ---------------------------------------------------------------------------------


def transition_kind(decision: Decision) -> str | None:
    """The `kind` label of rollout_transitions_total, None when nothing moved."""
    if decision.action is Action.ADVANCE:
        return KIND_MANUAL_PROMOTE if decision.is_manual else KIND_ADVANCE
    if decision.action is Action.ROLLBACK:
        return KIND_MANUAL_ROLLBACK if decision.is_manual else KIND_ROLLBACK
    if decision.action is Action.COMPLETE:
        return KIND_COMPLETE
    return None


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


def _log(report: CycleReport) -> None:
    decision = report.decision
    if decision is None:
        return
    extra = {
        "event": report.entry.get("kind"), "stage": decision.from_stage,
        "action": decision.action.value, "target": decision.target_stage, "by": decision.by,
    }
    moved = (
        f"{decision.from_stage} \u2192 {decision.target_stage}"
        if decision.changes_stage else f"at {decision.from_stage}"
    )
    flags = report.flags
    if flags is not None and flags.error is not None:
        log.error("%s %s NOT applied: flag write failed (%s): %s", decision.action, moved,
                  flags.error, decision.reason, extra=extra)
        return
    level = logging.INFO
    if decision.action is Action.ROLLBACK or (flags is not None and flags.drift):
        level = logging.WARNING
    log.log(level, "%s %s: %s", decision.action, moved, decision.reason, extra=extra)
    if flags is not None and flags.drift:
        log.warning("flag drift at %s: %s", decision.target_stage,
                    "; ".join(str(w) for w in flags.writes) or flags.note, extra=extra)


async def _notify_all(ports: CyclePorts, report: CycleReport) -> None:
    for notification in notifications_for(report):
        await _safe_notify(ports, notification)


async def _safe_notify(ports: CyclePorts, notification: Notification) -> None:
    try:
        await ports.notifier.notify(notification)
    except Exception:
        log.exception("notifier failed (ignored): %s", notification.title)


_TITLES: Mapping[str, str] = {
    KIND_ADVANCE: "Rollout advanced",
    KIND_ROLLBACK: "Rollout ROLLED BACK",
    KIND_COMPLETE: "Rollout complete",
    KIND_MANUAL_PROMOTE: "Rollout promoted by {by}",
    KIND_MANUAL_ROLLBACK: "Rollout rolled back by {by}",
}


def notifications_for(report: CycleReport) -> list[Notification]:
    """Transition, pause/resume, hold-too-long, drift and failed writes: each is one message."""
    decision = report.decision
    if decision is None:
        return []
    found: list[Notification] = []
    flags = report.flags
    here, there = decision.from_stage, decision.target_stage
    moved = f"{here} \u2192 {there}" if decision.changes_stage else here

    def add(event: str, title: str, reason: str, severity: Literal[
            "info", "warning", "critical"] = "info") -> None:
        found.append(Notification(
            event=event, title=title, reason=reason, stage=report.state_after.stage_name,
            at=report.at, by=decision.by, from_stage=here, to_stage=there, severity=severity,
        ))

    if flags is not None and flags.error is not None:
        if decision.changes_stage or decision.is_manual:
            add("flag-write-failed",
                f"Rollout {decision.action} {moved} NOT applied: flag write failed",
                f"{flags.error} (state unchanged, retried next cycle). Wanted: "
                f"{decision.reason}", "critical")
        return found
    if not report.committed:
        return found

    kind = transition_kind(decision)
    if kind is not None:
        severity: Literal["info", "warning", "critical"] = (
            "critical" if kind == KIND_ROLLBACK else "warning" if decision.is_manual else "info"
        )
        title = _TITLES[kind].format(by=decision.by)
        add("transition", f"{title}: {moved}", decision.reason, severity)
    elif decision.action is Action.PAUSE:
        add("pause", f"Rollout paused by {decision.by} at {here}", decision.reason, "warning")
    elif decision.action is Action.RESUME:
        add("resume", f"Rollout resumed by {decision.by} at {here}", decision.reason)
    if decision.overdue:
        add("overdue", f"Rollout held too long at {here}", decision.reason, "warning")
    if flags is not None and flags.drift and flags.applied:
        what = "; ".join(str(w) for w in flags.writes)
        add("drift", f"Flag drift repaired at {there}",
            f"the flag store did not hold {there}'s flags: {what}", "warning")
    return found


# --- log entries -------------------------------------------------------------------------------


def _base_entry(kind: str, ports: CyclePorts, now: datetime, token: int | None) -> dict[str, Any]:
    return {"kind": kind, "at": _iso(now), "instance": ports.instance_id, "fence": token}


def _entry(
    kind: str,
    ports: CyclePorts,
    now: datetime,
    token: int | None,
    *,
    decision: Decision,
    observations: Observations | None,
    reported: ReportedFlags | None,
    flags: FlagOutcome | None,
    recovery: str | None = None,
    command: ManualCommand | None = None,
    state_before: RolloutState | None = None,
    pending_intent: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    entry = _base_entry(kind, ports, now, token)
    entry.update({
        "action": decision.action.value,
        "by": decision.by,
        "from_stage": decision.from_stage,
        "to_stage": decision.target_stage,
        "reason": decision.reason,
        "transition": transition_kind(decision) if flags is None or flags.error is None
        else None,
        "overdue": decision.overdue,
        "paused": decision.state.is_paused,
    })
    if command is not None:
        entry["command"] = {
            "name": command.name, "who": command.who, "why": command.why,
            "full": command.full, "to": command.to,
        }
    if observations is not None:
        entry["checks"] = [check_dict(ports.plan, o) for o in observations.checks]
        entry["flags_match"] = observations.flags_match
    if reported is not None:
        entry["reported_flags"] = {
            "settings": None if reported.settings is None else flags_dict(reported.settings),
            "instances": reported.instances, "consistent": reported.consistent,
            "error": reported.error,
        }
    if flags is not None:
        entry["flags"] = flags.to_dict()
    if recovery is not None:
        entry["recovery"] = recovery
    if pending_intent is not None:
        entry["pending_intent"] = dict(pending_intent)
    if state_before is not None and state_before.stage_name != decision.from_stage:
        entry["state_stage"] = state_before.stage_name
    return entry


def _last_cycle(entry: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("at", "instance", "action", "from_stage", "to_stage", "reason", "checks",
            "flags", "flags_match", "reported_flags", "overdue", "kind")
    return {k: entry[k] for k in keep if k in entry}


def check_dict(plan: Plan, observation: Observation) -> dict[str, Any]:
    spec = _spec(plan, observation.check)
    unit = spec.unit if spec is not None else None
    return {
        "check": observation.check,
        "label": spec.display_name if spec is not None else observation.check,
        "kind": spec.kind.value if spec is not None else None,
        "verdict": observation.verdict.value,
        "value": _finite(observation.value),
        "limit": _finite(observation.limit),
        "sample": _finite(observation.sample),
        "comparator": spec.comparator.value if spec is not None and spec.comparator else None,
        "value_text": _shown(observation.value, unit),
        "limit_text": _shown(observation.limit, unit),
        "critical": spec.critical if spec is not None else False,
        "dry_run": spec.dry_run if spec is not None else False,
        "message": observation.message,
        "error": observation.error,
    }


def _spec(plan: Plan, name: str) -> CheckSpec | None:
    for spec in plan.all_checks():
        if spec.name == name:
            return spec
    return None


def _shown(value: float | None, unit: Any) -> str | None:
    if value is None or not math.isfinite(value) or unit is None:
        return None
    return format_value(value, unit)


def _finite(value: float | None) -> float | None:
    # JSON has no NaN/Inf; the verdict already says why there is no number.
    return value if value is not None and math.isfinite(value) else None


def flags_dict(settings: FlagSettings) -> dict[str, Any]:
    return {"shadow": settings.shadow, "l2": settings.l2, "l1_percent": settings.l1_percent}


def _flags_from(data: Any) -> FlagSettings:
    return FlagSettings(
        shadow=bool(data["shadow"]), l2=bool(data["l2"]), l1_percent=int(data["l1_percent"])
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# --- the long-running controller -----------------------------------------------------------


@runtime_checkable
class Lease(Protocol):
    """Leadership with a fencing token (see rollout.lease.RedisLease)."""

    @property
    def owner(self) -> str: ...

    @property
    def token(self) -> int | None: ...

    @property
    def is_leader(self) -> bool: ...

    async def refresh(self) -> bool:
        """Acquire or renew; True while this process leads."""
        ...

    async def release(self) -> None: ...

    async def holder(self) -> str | None:
        """Who holds the lease now (any process), None when nobody does."""
        ...

    def lost(self) -> None:
        """Forget leadership now (a write was fenced out)."""
        ...


class Controller:
    """The process-level front of run_cycle/run_command: acts only while it holds the lease,
    and never runs a cycle and a command at the same time."""

    def __init__(
        self,
        ports: CyclePorts,
        lease: Lease,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ports = ports
        self.lease = lease
        self._clock = clock
        self._lock = asyncio.Lock()
        self.last_report: CycleReport | None = None
        self.last_error: str | None = None
        self._standing_by = False

    @property
    def is_leader(self) -> bool:
        return self.lease.is_leader

    async def refresh_lease(self) -> bool:
        try:
            leader = await self.lease.refresh()
        except Exception as exc:
            # Every few seconds while Redis is down: one line each, not a traceback.
            log.warning("lease refresh failed: %s: %s", type(exc).__name__, exc)
            leader = self.lease.is_leader
        if not leader and not self._standing_by:
            with contextlib.suppress(Exception):
                holder = await self.lease.holder()
                log.info("standing by; the lease is held by %s", holder or "nobody yet",
                         extra={"event": "standby", "leader": holder})
        self._standing_by = not leader
        if self.ports.metrics is not None:
            self.ports.metrics.set_leader(leader)
            if not leader:
                # A standby still shows where the rollout is, so any replica's /metrics is
                # truthful; only rollout_is_leader says who acts.
                with contextlib.suppress(Exception):
                    snapshot = await self.ports.store.load()
                    if snapshot.state is not None:
                        self.ports.metrics.record_state(snapshot.state)
        return leader

    async def tick(self) -> CycleReport | None:
        """One scheduled evaluation; None when standing by or when it could not run."""
        if not self.lease.is_leader or self.lease.token is None:
            return None
        async with self._lock:
            token = self.lease.token
            if token is None or not self.lease.is_leader:
                return None
            try:
                report = await run_cycle(self.ports, now=self._clock(), token=token)
            except FencedOut as exc:
                log.error("stepping down: %s", exc)
                self._lost()
                self.last_error = str(exc)
                return None
            except StoreError as exc:
                log.error("cycle skipped: the state store failed: %s", exc)
                self.last_error = str(exc)
                return None
            self.last_report = report
            self.last_error = None
            return report

    async def command(self, command: ManualCommand) -> CycleReport:
        if not self.lease.is_leader or self.lease.token is None:
            raise NotLeader("this controller is standing by; send commands to the leader")
        async with self._lock:
            token = self.lease.token
            if token is None:
                raise NotLeader("this controller lost the lease")
            try:
                return await run_command(self.ports, command, now=self._clock(), token=token)
            except FencedOut as exc:
                self._lost()
                raise NotLeader(str(exc)) from exc

    async def dry_run(self) -> CycleReport:
        return await run_cycle(self.ports, now=self._clock(), token=0, dry_run=True)

    def now(self) -> datetime:
        return self._clock()

    async def wait_idle(self, within_seconds: float) -> bool:
        """Wait until no cycle or command runs; False if one still runs after that long."""
        try:
            async with asyncio.timeout(within_seconds), self._lock:
                return True
        except TimeoutError:
            return False

    def _lost(self) -> None:
        self.lease.lost()
        if self.ports.metrics is not None:
            self.ports.metrics.set_leader(False)

    async def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await self.lease.release()
        if self.ports.metrics is not None:
            self.ports.metrics.set_leader(False)
