"""The CLI's commands but `flags`: each takes the parsed arguments, the settings and the
console, and returns its exit code (or raises CliError).

Read-only commands (status, history) ask the controller at ROLLOUT_URL, or read the state
in Redis directly when ROLLOUT_URL is unset. Mutating commands (pause, resume, promote,
rollback) always go through the running controller with ROLLOUT_API_TOKEN, so they take the
same apply-then-record path, under the lease, as the controller's own decisions.

The composition root pulls in Prometheus, Unleash, uvicorn and APScheduler (over a second of
imports): commands import it when they need it, so `plan validate` and HTTP-backed `status`
start at once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from rollout.cli.client import ControllerClient
from rollout.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from rollout.cli.render import (
    action_text,
    print_json,
    render_dry_run,
    render_history,
    render_status,
    status_renderables,
)
from rollout.core.plan import Plan, human_duration
from rollout.core.plan_loader import PlanError, load_plan
from rollout.history_view import HistoryRow, fold_holds
from rollout.ports import StateStore, StoreError
from rollout.records import CycleResult, LogEntry
from rollout.redaction import masked, masked_model
from rollout.runtime_types import StartupError
from rollout.settings import RolloutSettings
from rollout.status import StatusView, build_status

_T = TypeVar("_T")
MAX_HISTORY: Final = 1000  # what /api/history serves at most (rollout.server)


def cmd_run(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    from rollout.composition import build_runtime, configure_logging  # noqa: PLC0415
    from rollout.scheduler import run_controller  # noqa: PLC0415

    missing = settings.missing_for_run()
    if missing and not args.insecure_local:
        raise CliError(f"rollout run needs {', '.join(missing)}: it will not guess where the "
                       "rollout's state, flags and metrics live nor run with nobody allowed "
                       "to steer it (or pass --insecure-local on a laptop); see "
                       "`rollout run --help`", EXIT_BAD_INPUT)
    print_settings(out, settings, insecure=bool(missing))
    configure_logging(settings.rollout_log_format, settings.rollout_log_level)
    try:
        runtime = build_runtime(settings)
    except (PlanError, ValueError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    try:
        asyncio.run(run_controller(runtime))
    except StartupError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    return EXIT_OK


def print_settings(out: Console, settings: RolloutSettings, *, insecure: bool) -> None:
    """What this process uses, secrets masked, so nobody has to guess which Redis it wrote."""
    out.print(Text("rollout run with these settings (* set explicitly):", style="bold"))
    for name, shown, explicit in settings.resolved():
        out.print(Text(f"  {'*' if explicit else ' '} {name}={shown}"), soft_wrap=True)
    if insecure:
        out.print(Text("--insecure-local: some of these are defaults, and without "
                       "ROLLOUT_API_TOKEN or JWT keys nobody can pause, resume, promote or "
                       "roll back through the API", style="bold yellow"), soft_wrap=True)


def cmd_status(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    if args.watch is not None:
        if args.json:
            raise CliError("--watch redraws for a person; for scripts poll `rollout status "
                           "--json`", EXIT_BAD_INPUT)
        return watch_status(settings, out, args.watch)
    status = read_status(settings)
    if args.json:
        print_json(out, status)
    else:
        render_status(out, status)
    return EXIT_OK


def read_status(settings: RolloutSettings) -> StatusView:
    if settings.rollout_url:
        return ControllerClient(settings).status()
    return asyncio.run(_status_from_store(settings))


def watch_status(settings: RolloutSettings, out: Console, seconds: float) -> int:
    """Redraw the status every `seconds` (like `kubectl argo rollouts get rollout --watch`)
    until Ctrl-C, which ends it with exit 0. A failed read is shown in place and retried:
    a controller restarting must not end the watch."""
    try:
        with Live(console=out, auto_refresh=False, transient=False) as live:
            while True:
                try:
                    shown: RenderableType = Group(*status_renderables(read_status(settings)))
                except CliError as exc:
                    shown = Text(f"error: {exc.message} (retrying every {seconds:g} s)",
                                 style="bold red")
                live.update(Group(shown, Text(f"\nEvery {seconds:g} s; Ctrl-C to stop.",
                                              style="dim")), refresh=True)
                time.sleep(seconds)
    except KeyboardInterrupt:
        return EXIT_OK


async def _status_from_store(settings: RolloutSettings) -> StatusView:
    plan = plan_of(settings)

    async def read(store: StateStore) -> StatusView:
        snapshot = await store.load()
        if snapshot.state is None:
            await require_rollout(store, settings)
        last = await store.last_cycle()
        leader = await store.leader()
        return build_status(plan, snapshot.state, last, datetime.now(UTC),
                            holder=leader.holder, intent=snapshot.intent)

    return await with_store(settings, read)


def cmd_history(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    # Folding needs the holds behind the rows shown: read up to 50 entries a row.
    wanted = min(MAX_HISTORY, args.limit * 50) if args.transitions else args.limit
    if settings.rollout_url:
        entries = ControllerClient(settings).history(wanted)
    else:

        async def read(store: StateStore) -> list[LogEntry]:
            entries = await store.history(wanted)
            if not entries:
                await require_rollout(store, settings)
            return entries

        entries = asyncio.run(with_store(settings, read))
    entries = [masked_model(entry) for entry in entries]
    rows: list[HistoryRow] = list(entries)
    if args.transitions:
        rows = fold_holds(entries)[:args.limit]
    if args.json:
        print_json(out, rows)
    else:
        render_history(out, rows, folded=args.transitions)
    return EXIT_OK


async def with_store(settings: RolloutSettings,
                     use: Callable[[StateStore], Awaitable[_T]]) -> _T:
    """Run `use` on the configured state store; a store failure becomes one CLI line."""
    from rollout.composition import build_state_store  # noqa: PLC0415

    store = build_state_store(settings)
    try:
        return await use(store)
    except StoreError as exc:
        raise CliError(f"{exc} (state Redis {masked(settings.state_redis_url)})") from None
    finally:
        await store.aclose()


async def require_rollout(store: StateStore, settings: RolloutSettings) -> None:
    """Raise "no rollout named X here; found: …" when the state Redis holds no key of this
    rollout: a wrong ROLLOUT_NAME or Redis must not read as "has not run yet"."""
    names = await store.rollout_names()
    if settings.rollout_name in names:
        return
    found = ", ".join(names) if names else "no rollout at all"
    raise CliError(f"no rollout named {settings.rollout_name} here "
                   f"(state Redis {masked(settings.state_redis_url)}); found: {found} "
                   "(set ROLLOUT_NAME, or ROLLOUT_REDIS_URL / REDIS_URL)")


def cmd_steer(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    who = (args.who or "").strip()
    why = (args.why or "").strip()
    if not who:
        raise CliError("--who is empty and $USER is not set: say who you are", EXIT_BAD_INPUT)
    if not why:
        raise CliError("--why must not be empty: manual actions are logged with a reason",
                       EXIT_BAD_INPUT)
    body: dict[str, Any] = {"who": who, "why": why}
    if args.command == "promote" and args.full:
        body["full"] = True
    if args.command == "rollback" and args.to:
        body["to"] = args.to
    data = ControllerClient(settings).command(args.command, body)
    if args.json:
        print_json(out, data)
    else:
        out.print(action_text(f"{data.get('action')}: ", str(data.get("reason"))))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    if not args.dry_run:
        raise CliError("only `rollout evaluate --dry-run` exists: the running controller is "
                       "the one that acts", EXIT_BAD_INPUT)
    result = masked_model(asyncio.run(_dry_run(settings)))
    if args.json:
        print_json(out, result)
    else:
        render_dry_run(out, result)
    return EXIT_OK


async def _dry_run(settings: RolloutSettings) -> CycleResult:
    from rollout.composition import dry_run_ports  # noqa: PLC0415
    from rollout.cycle import run_cycle  # noqa: PLC0415

    try:
        async with dry_run_ports(settings) as ports:
            report = await run_cycle(ports, now=datetime.now(UTC), token=0, dry_run=True)
    except (PlanError, ValueError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    return report.result()


def cmd_plan_validate(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    try:
        plan = load_plan(args.file)
    except PlanError as exc:
        if args.json:
            print_json(out, {"file": args.file, "valid": False, "problems": list(exc.problems)})
            return EXIT_BAD_INPUT
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    total = sum((plan.bake_of(i) for i in range(len(plan.stages))), timedelta())
    checks = len({c.name for c in plan.all_checks()})
    if args.json:
        print_json(out, {
            "file": args.file, "valid": True, "stages": list(plan.stage_names),
            "checks": checks, "guardrails": [c.name for c in plan.guardrails],
            "time_scale": plan.settings.time_scale,
            "total_bake_seconds": total.total_seconds(),
        })
        return EXIT_OK
    out.print(Text(f"{args.file}: valid plan", style="bold green"))
    arrow = " \u2192 "
    out.print(Text(f"{len(plan.stages)} stages: {arrow.join(plan.stage_names)}"))
    out.print(Text(f"{checks} checks, {len(plan.guardrails)} guardrails; minimum duration "
                   f"{human_duration(total)} (time scale {plan.settings.time_scale:g})"))
    return EXIT_OK


def plan_of(settings: RolloutSettings) -> Plan:
    from rollout.composition import plan_from_settings  # noqa: PLC0415

    try:
        return plan_from_settings(settings)
    except PlanError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
