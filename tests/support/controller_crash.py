"""A controller process that dies at a chosen commit, for the recovery tests."""

from __future__ import annotations

from collections.abc import Callable

from rollout.adapters.redis_state import RedisStateStore
from rollout.core.state import RolloutState
from rollout.ports import Leader, StoredSnapshot
from rollout.records import CycleSummary, IntentRecord, LogEntry


class SimulatedCrash(BaseException):
    """The controller process dies here (a BaseException: no `except Exception` swallows it)."""


class CrashingStore:
    """A StateStore that dies at the first commit `crash_on(entry, state)` picks, before
    anything of that commit reaches Redis (as a kill -9 between the two writes would)."""

    def __init__(self, inner: RedisStateStore,
                 crash_on: Callable[[LogEntry, RolloutState | None], bool]) -> None:
        self.inner = inner
        self.crash_on = crash_on
        self.crashed = False

    async def load(self) -> StoredSnapshot:
        return await self.inner.load()

    async def check_fence(self, token: int) -> None:
        await self.inner.check_fence(token)

    async def begin_transition(self, intent: IntentRecord, token: int) -> None:
        await self.inner.begin_transition(intent, token)

    async def commit(self, *, token: int, entry: LogEntry,
                     state: RolloutState | None = None, clear_intent: bool = True,
                     last_cycle: CycleSummary | None = None) -> str:
        if not self.crashed and self.crash_on(entry, state):
            self.crashed = True
            raise SimulatedCrash(f"killed before recording {entry.from_stage} -> "
                                 f"{entry.to_stage}")
        return await self.inner.commit(token=token, entry=entry, state=state,
                                       clear_intent=clear_intent, last_cycle=last_cycle)

    async def append_unfenced(self, entry: LogEntry) -> str:
        return await self.inner.append_unfenced(entry)

    async def history(self, limit: int = 50) -> list[LogEntry]:
        return await self.inner.history(limit)

    async def last_cycle(self) -> CycleSummary | None:
        return await self.inner.last_cycle()

    async def leader(self) -> Leader:
        return await self.inner.leader()

    async def rollout_names(self) -> list[str]:
        return await self.inner.rollout_names()

    async def eviction_risk(self) -> str | None:
        return await self.inner.eviction_risk()

    async def aclose(self) -> None:
        await self.inner.aclose()
