"""The demo's async part: traffic, the controller, watching it roll out, the fault, the end.

It reads the controller's /api/status and /api/history into the same typed models the CLI
and the status page use (StatusView, LogEntry), and the webhook sink's alerts and
notifications, into the LiveModel the view renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from app import contract
from app.flags.bucketing import in_rollout
from devstack.demo.fault import FaultState, write_notes_bypassing_the_service
from devstack.demo.profiles import DemoFailed
from devstack.demo.stack import Demo
from devstack.demo.stages import STAGE_CHANGES, entry_ts
from devstack.demo.view import LiveModel, TrafficWindow
from devstack.traffic.generator import TrafficGenerator, TrafficShape
from rollout.records import LogEntry
from rollout.status import StatusView

_ENTRIES = TypeAdapter(list[LogEntry])
# A statistical guardrail needs enough stale audits to prove its limit against the clean
# audits the stage already counted (seconds here); give up on a rollback after this long.
FAULT_PATIENCE = 90.0


def alert_line(payload: dict[str, Any]) -> list[str]:
    lines = []
    for alert in payload.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        lines.append(f"{str(alert.get('status', '')).upper()} {labels.get('alertname')}: "
                     f"{notes.get('summary', '')}")
    return lines


def _stream_order(entry: LogEntry) -> tuple[int, int]:
    ms, _, seq = (entry.id or "0-0").partition("-")
    return int(ms or 0), int(seq or 0)


def _confirmed_for(status: StatusView) -> float | None:
    """Seconds since the service reported the stage's flags, None while it has not."""
    confirmed = status.flags.confirmed_at
    return None if confirmed is None else (status.now - confirmed).total_seconds()


class Runner:
    """The async part: traffic, the controller, watching, the fault, the end."""

    def __init__(self, demo: Demo, model: LiveModel) -> None:
        self.demo = demo
        self.model = model
        self.plan = demo.plan
        self.traffic = TrafficWindow()
        self.fault = FaultState(stage=demo.args.fault_stage) if demo.args.fault else None
        self.history: list[LogEntry] = []  # oldest first
        self._entries: dict[str, LogEntry] = {}
        self.stop_traffic = asyncio.Event()
        self.generator = TrafficGenerator(
            demo.replicas, demo.issuer,
            TrafficShape(workspaces=demo.args.workspaces), seed=demo.args.seed,
            observers=[self.traffic])
        self.alerts_seen = 0
        self.notes_seen = 0
        self.controller_started_at: float | None = None  # epoch seconds

    def judged_after(self, stage_name: str) -> float:
        """Seconds after the service reported a stage's flags until every check of the stage
        is judged: a statistical check after min_window, a threshold check after its window
        (as rollout.core.decide judges them)."""
        index = self.plan.index_of(stage_name)
        assert index is not None
        return max((self.plan.settings.min_window if c.stat is not None
                    else self.plan.window_of(c)).total_seconds()
                   for c in self.plan.checks_for(index))

    def cohort_line(self) -> str:
        shares = self.generator.workspace_shares()
        parts = []
        for percent in (10, 50):
            members = [ws for ws in shares
                       if in_rollout(str(ws), contract.L1_ROLLOUT_GROUP_ID, percent)]
            parts.append(f"{percent} %: {len(members)} of {len(shares)} workspaces, "
                         f"{sum(shares[ws] for ws in members) * 100:.0f} % of the traffic")
        return "sticky L1 cohorts (per workspace) — " + "; ".join(parts)

    async def run(self, client: httpx.AsyncClient, load: httpx.AsyncClient,
                  on_tick: Callable[[], None]) -> None:
        """`client` talks to the controller and the operator endpoints; `load` carries the
        generated traffic (see devstack.traffic.transport.load_client)."""
        demo, model = self.demo, self.model
        model.phase = "seeding notes"
        await self.generator.seed_notes(load)
        model.event(self.cohort_line())
        # The cap only matters on an overloaded machine: ~6 s worth of requests in flight.
        traffic = asyncio.create_task(self.generator.run(
            load, rate=demo.profile.rate, stop=self.stop_traffic, drain_timeout=10,
            max_in_flight=int(demo.profile.rate * 6)))
        try:
            model.phase = "starting the controller"
            self.controller_started_at = time.time()
            await asyncio.to_thread(demo.start_controller)
            model.event(f"controller started: plan days of {demo.day_seconds:.3g} s "
                        f"(time scale {self.demo.time_scale:.3g}), evaluating every "
                        f"{demo.profile.interval:g} s")
            for line in demo.attach_lines():
                model.event(line)
            model.phase = "rolling out"
            deadline = time.monotonic() + demo.profile.max_minutes * 60
            while True:
                status = await self._poll(client)
                on_tick()
                if status is not None and await self._step(client, status):
                    break
                if traffic.done():
                    raise DemoFailed(f"the traffic generator stopped: {traffic.exception()}")
                if time.monotonic() > deadline:
                    raise DemoFailed(self._stuck(status))
                await asyncio.sleep(0.5)
            model.phase = "finishing"
            await self._poll(client, history_limit=1000)
            on_tick()
        finally:
            self.stop_traffic.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(traffic, timeout=15)

    def _stuck(self, status: StatusView | None) -> str:
        if status is None:
            return "the controller never answered /api/status"
        reason = status.last_decision.reason if status.last_decision else None
        return (f"not done after {self.demo.profile.max_minutes:g} min: at stage "
                f"{status.stage} — {reason}")

    async def _poll(self, client: httpx.AsyncClient,
                    history_limit: int = 60) -> StatusView | None:
        model = self.model
        model.traffic = self.traffic.snapshot() | {"shed": float(self.generator.stats.shed)}
        for alert in self.demo.sink.received("/alertmanager")[self.alerts_seen:]:
            model.alerts.extend((alert.at, line) for line in alert_line(alert.body))
            self.alerts_seen += 1
        for note in self.demo.sink.received("/rollout")[self.notes_seen:]:
            # The headline; the reason is already on screen as the decision.
            headline = str(note.body.get("text", "")).split("\n", 1)[0]
            model.notifications.append((note.at, re.sub(r"^:[a-z_]+:\s*", "", headline)))
            self.notes_seen += 1
        try:
            status = StatusView.model_validate_json(
                (await client.get(f"{self.demo.controller_url}/api/status", timeout=5)).content)
            fetched = await self._history(client, history_limit)
            if self._entries and fetched and not any(e.id in self._entries for e in fetched):
                # Polls failed for a while (an overloaded machine): fetch the gap too.
                fetched = await self._history(client, 1000)
        except (httpx.HTTPError, ValueError, ValidationError):
            return model.status
        for entry in fetched:
            self._entries.setdefault(str(entry.id), entry)
        # Stream ids (`ms-seq`) order the log; polls may have arrived out of order.
        self.history = sorted(self._entries.values(), key=_stream_order)
        model.decisions = [e for e in self.history
                           if e.transition in (*STAGE_CHANGES, "complete")]
        if status.initialised:
            model.status = status
        return model.status if status.initialised else None

    async def _history(self, client: httpx.AsyncClient, limit: int) -> list[LogEntry]:
        response = await client.get(f"{self.demo.controller_url}/api/history",
                                    params={"limit": limit}, timeout=10)
        return _ENTRIES.validate_python(response.json()["entries"])

    async def _step(self, client: httpx.AsyncClient, status: StatusView) -> bool:
        """Fault handling and the end condition; True when the demo is done."""
        interval = self.demo.profile.interval
        stage = status.stage
        last = self.plan.stage_names[-1]
        if self.fault is None:
            # Healthy: done when the controller completes the rollout (its last stage's gates
            # passed); if they never do, the deadline says what they still needed.
            return status.completed_at is not None

        fault = self.fault
        if fault.injected_at is None:
            if fault.stage == last:
                # The whole rollout first: the fault hits after `completed`, where the
                # guardrails still watch (DESIGN.md §7).
                if status.completed_at is not None:
                    await self._inject(status)
                return False
            confirmed = _confirmed_for(status)
            # Inject once the stage's checks are judged, so that the guardrail has passed
            # on this stage's own evidence before the fault.
            if (stage == fault.stage and confirmed is not None
                    and confirmed >= self.judged_after(stage) + 2 * interval):
                await self._inject(status)
            return False
        if fault.rollback is None:
            rollback = next((e for e in self.history if e.transition == "rollback"
                             and entry_ts(e) >= fault.injected_at - 1), None)
            if rollback is not None:
                fault.rollback = rollback
                fault.rolled_back_at = entry_ts(rollback)
                fault.cycles_to_rollback = sum(
                    1 for e in self.history if e.kind == "cycle" and e.at is not None
                    and fault.injected_at < entry_ts(e) <= fault.rolled_back_at)
                self.model.event(
                    f"rolled back {rollback.from_stage} → {rollback.to_stage} "
                    f"{fault.rolled_back_at - fault.injected_at:.1f} s after the fault "
                    f"({fault.cycles_to_rollback} evaluations)")
                await self._on_call(client)
            elif time.time() - fault.injected_at > FAULT_PATIENCE:
                raise DemoFailed(f"no rollback {time.time() - fault.injected_at:.0f} s after "
                                 f"the fault; the controller says: "
                                 f"{status.last_decision.reason if status.last_decision else ''}")
            return False
        # After the rollback: watch the lower stage until its checks were judged again
        # (min_window after the service reported its flags) and the controller holds.
        confirmed = _confirmed_for(status)
        return (confirmed is not None
                and confirmed >= self.judged_after(stage) + 3 * interval)

    async def _inject(self, status: StatusView) -> None:
        fault = self.fault
        assert fault is not None
        shares = self.generator.workspace_shares()
        desired = status.flags.desired
        percent = desired.l1_percent if desired is not None else 0
        serving = [ws for ws in sorted(shares, key=shares.__getitem__, reverse=True)
                   if in_rollout(str(ws), contract.L1_ROLLOUT_GROUP_ID, percent)]
        fault.workspaces = serving[:2]
        share = sum(shares[ws] for ws in fault.workspaces)
        fault.injected_at = time.time()
        fault.notes_changed = await write_notes_bypassing_the_service(
            self.demo.database_url,
            {ws: list(self.generator.notes[ws]) for ws in fault.workspaces})
        self.model.event(
            f"FAULT at {fault.stage}: an EHR import rewrote {fault.notes_changed} notes of "
            f"{len(fault.workspaces)} workspaces ({share * 100:.0f} % of the traffic) straight "
            "in the database — no invalidation, so L1 serves answers built from old notes")

    async def _on_call(self, client: httpx.AsyncClient) -> None:
        """The runbook's step 2 (AIAgentCacheStaleOrMismatch): drop the affected answers."""
        fault = self.fault
        assert fault is not None
        for ws in fault.workspaces:
            response = await client.post(
                f"{self.demo.replicas[0]}/v1/workspaces/{ws}/cache/invalidate", json={},
                headers=self.demo.issuer.headers([ws], role="operator", sub="demo-on-call"),
                timeout=10)
            response.raise_for_status()
        fault.invalidated_at = time.time()
        self.model.event(f"on-call (scripted, runbook step 2): invalidated the cached answers "
                         f"of the {len(fault.workspaces)} affected workspaces; the controller "
                         "holds until someone runs `rollout resume`")

