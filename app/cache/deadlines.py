"""Deadlines for Redis calls with one timer for all of them, instead of one per call.

`asyncio.timeout` arms and disarms a timer handle per call (a heap push, a cancelled
handle left in the heap, a context object): on an L1 hit, which is one Redis call, that is
a measurable share of the CPU (issue 15). Here a call registers its task and deadline in a
dict; one sweep, scheduled while any call is registered, runs every `tick` seconds and
cancels the tasks past their deadline. A call therefore gives up between its deadline and
one tick later (the cache's 50 ms budget becomes 50 to 55 ms), which is all a fail-open cache
needs.

The cancellation is turned into `TimeoutError` exactly as `asyncio.timeout` does it: only a
cancellation this sweep made, and only if nobody else cancelled the task meanwhile
(`Task.uncancel` counts them); any other cancellation propagates unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Deadlines:
    def __init__(self, tick_seconds: float = 0.01) -> None:
        self._tick = tick_seconds
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweep_armed = False

    @asynccontextmanager
    async def within(self, seconds: float) -> AsyncIterator[None]:
        """Give the body `seconds` (and up to one tick more), or raise TimeoutError."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel; plain asyncio.timeout then
            async with asyncio.timeout(seconds):
                yield
            return
        loop = task.get_loop()
        cancelling = task.cancelling()
        self._due[task] = loop.time() + seconds
        if not self._sweep_armed:
            self._sweep_armed = True
            loop.call_later(self._tick, self._sweep, loop)
        try:
            yield
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._due.pop(task, None)
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._due.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._due:
            loop.call_later(self._tick, self._sweep, loop)
        else:
            self._sweep_armed = False

    @property
    def registered(self) -> int:
        """Calls under a deadline right now (0 when idle: nothing is left behind)."""
        return len(self._due)
