"""`rollout run`: the evaluation loop (APScheduler) and the HTTP API (uvicorn) in one event
loop. The only module that imports APScheduler.

Two interval jobs, both `max_instances=1, coalesce=True` (a slow cycle is never overlapped
by the next one, and missed runs collapse into one):
  * `lease`: acquire or renew the lease every ttl/3, so a standby takes over within about
    one ttl after the leader stops renewing;
  * `cycle`: one evaluation per interval; does nothing while standing by.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rollout.composition import Runtime, open_callers
from rollout.controller import Controller
from rollout.ports import CallerVerifier
from rollout.redaction import masked
from rollout.server import create_app

log = logging.getLogger("rollout.scheduler")


def build_scheduler(
    controller: Controller,
    *,
    interval_seconds: float,
    lease_seconds: float,
) -> AsyncIOScheduler:
    """Both jobs run once right away (lease first), then on their intervals."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    now = datetime.now(UTC)
    scheduler.add_job(
        controller.refresh_lease, "interval", seconds=max(0.2, lease_seconds / 3),
        id="lease", name="controller lease", max_instances=1, coalesce=True,
        next_run_time=now, misfire_grace_time=None,
    )
    scheduler.add_job(
        controller.tick, "interval", seconds=interval_seconds,
        id="cycle", name="rollout evaluation", max_instances=1, coalesce=True,
        next_run_time=now + timedelta(milliseconds=200), misfire_grace_time=None,
    )
    return scheduler


async def run_controller(runtime: Runtime) -> None:
    """Serve until SIGINT/SIGTERM, then give the lease up so a standby takes over at once."""
    settings = runtime.settings
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runtime.aclose)
        callers = await open_callers(settings, stack)
        await runtime.check_state_redis()
        await _serve(runtime, callers)


async def _serve(runtime: Runtime, callers: CallerVerifier) -> None:
    settings = runtime.settings
    controller = runtime.controller
    app = create_app(controller, registry=runtime.registry, callers=callers)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.rollout_host, port=settings.rollout_port, log_config=None,
        access_log=False, lifespan="off",
    ))
    scheduler = build_scheduler(
        controller, interval_seconds=runtime.interval_seconds,
        lease_seconds=settings.rollout_lease_seconds,
    )
    scheduler.start()
    previous = _quiet_signals()
    log.info(
        "controller %s: evaluating every %ss, lease %ss, plan %s (time scale %g), metrics from "
        "%s, flags -> %s, state in %s, HTTP on %s:%s",
        settings.rollout_instance_id, runtime.interval_seconds,
        settings.rollout_lease_seconds, settings.rollout_plan or "bundled default",
        runtime.plan.settings.time_scale, masked(settings.prometheus_url),
        masked(runtime.flags.target),
        runtime.store.keys.state, settings.rollout_host, settings.rollout_port,
        extra={"event": "start", "instance": settings.rollout_instance_id},
    )
    try:
        await server.serve()
    finally:
        scheduler.shutdown(wait=False)
        # A cycle may be mid-flight: let it finish (bounded) rather than cut a flag write.
        await _wait_for_running_jobs(controller)
        await controller.shutdown()
        log.info("controller %s stopped", settings.rollout_instance_id,
                 extra={"event": "stop"})
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_signals() -> dict[int, Any]:
    """uvicorn handles SIGINT/SIGTERM while it serves, then re-raises the signal to whatever
    handler was installed before it: with the default one the process would die right there,
    before the lease is released and the clients closed. This handler lets the cleanup run."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def noted(sig: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(sig).name)

    return {sig: signal.signal(sig, noted) for sig in (signal.SIGINT, signal.SIGTERM)}


async def _wait_for_running_jobs(controller: Controller, within_seconds: float = 10.0) -> None:
    if not await controller.wait_idle(within_seconds):
        log.warning("a cycle was still running after %ss; stopping anyway", within_seconds)
