"""Deadlines with one shared timer (app/cache/deadlines.py) behave as asyncio.timeout does:
a body past its deadline ends in TimeoutError, a quick one is untouched, a cancellation
from outside stays a cancellation, and nothing stays registered."""

from __future__ import annotations

import asyncio

import pytest

from app.cache.deadlines import Deadlines


async def test_a_body_past_its_deadline_ends_in_timeout_error() -> None:
    deadlines = Deadlines(tick_seconds=0.005)
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with deadlines.within(0.02):
            await never.wait()
    assert deadlines.registered == 0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_quick_body_is_untouched_and_the_task_can_await_afterwards() -> None:
    deadlines = Deadlines(tick_seconds=0.005)
    async with deadlines.within(0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.03)  # past where the deadline was: nothing is cancelled late
    assert deadlines.registered == 0


async def test_many_concurrent_calls_share_the_sweep_and_each_gets_its_own_verdict() -> None:
    deadlines = Deadlines(tick_seconds=0.005)
    never = asyncio.Event()

    async def call(slow: bool) -> str:
        try:
            async with deadlines.within(0.02):
                await (never.wait() if slow else asyncio.sleep(0.001))
        except TimeoutError:
            return "timeout"
        return "ok"

    results = await asyncio.gather(*(call(i % 2 == 0) for i in range(20)))
    assert results == ["timeout", "ok"] * 10
    assert deadlines.registered == 0


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(tick_seconds=0.005)
    entered = asyncio.Event()

    async def call() -> None:
        async with deadlines.within(10):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.registered == 0


async def test_an_outside_cancellation_racing_the_deadline_is_not_swallowed() -> None:
    """Both the sweep and someone else cancel: the task must end cancelled, not timed out."""
    deadlines = Deadlines(tick_seconds=0.005)
    entered = asyncio.Event()

    async def call() -> None:
        async with deadlines.within(0.0):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()  # before the sweep has run: two cancellations requested
    await asyncio.sleep(0.02)
    with pytest.raises(asyncio.CancelledError):
        await task
