"""The long-running controller: acts only while it holds the lease, never runs a cycle and
a command at the same time, and steps down the moment a write is fenced out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from rollout.cycle import run_command, run_cycle
from rollout.ports import FencedOut, Lease, StoreError
from rollout.runtime_types import CyclePorts, CycleReport, ManualCommand, NotLeader

log = logging.getLogger("rollout.cycle")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Controller:
    """The process-level front of run_cycle/run_command (scheduled by rollout.scheduler)."""

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
