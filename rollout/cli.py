"""`rollout …`: run the controller, watch it, steer it, check a plan, read or set the flags.

Read-only commands (status, history) ask the controller at ROLLOUT_URL, or read the state
in Redis directly when ROLLOUT_URL is unset. Mutating commands (pause, resume, promote,
rollback) always go through the running controller (ROLLOUT_URL, default
http://ROLLOUT_HOST:ROLLOUT_PORT) with ROLLOUT_API_TOKEN, so they take the same
apply-then-record path, under the lease, as the controller's own decisions.

Exit codes: 0 done · 1 failed or refused (controller unreachable, command rejected, a store
down) · 2 bad input (usage, invalid plan, bad KEY=VALUE, invalid settings).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.contract import LOCAL_FIELD_BY_FLAG
from rollout.core.flags import FlagSettings
from rollout.core.plan import Plan, human_duration
from rollout.core.plan_loader import PlanError, load_plan
from rollout.cycle import CyclePorts, NullNotifier, StoreError, flags_dict, run_cycle
from rollout.ports import FlagError, FlagWriter
from rollout.settings import RolloutSettings
from rollout.status_page import build_status

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
HTTP_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)

FLAG_KEYS: Final = ("shadow", "l2", "l1_percent")
_TRUE: Final = frozenset({"1", "on", "true", "yes", "enabled"})
_FALSE: Final = frozenset({"0", "off", "false", "no", "disabled"})
_VERDICT_STYLE: Final = {"pass": "bold green", "fail": "bold red", "no_data": "dim",
                         "error": "bold yellow"}
_ACTION_STYLE: Final = {"advance": "green", "complete": "bold green", "rollback": "bold red",
                        "hold": "", "pause": "yellow", "resume": "cyan"}

_T = TypeVar("_T")


class CliError(Exception):
    """A failure to report in one line, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main(argv)` returns its exit code."""

    def error(self, message: str) -> Any:  # argparse's signature is NoReturn
        raise CliError(f"{self.prog}: {message}\n{self.format_usage().strip()}", EXIT_BAD_INPUT)


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rollout",
        description="The AI cache rollout controller and its command line.",
        epilog="Exit codes: 0 done, 1 failed or refused, 2 bad input.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("run", help="run the controller (evaluation loop + HTTP API)")
    sub.add_parser("status", parents=[as_json], help="where the rollout is and why")
    history = sub.add_parser("history", parents=[as_json], help="the decision log, newest first")
    history.add_argument("--limit", type=_positive_int, default=20)

    steering = _Parser(add_help=False)
    steering.add_argument("--who", default=_default_who(),
                          help="who is acting (default: $USER)")
    steering.add_argument("--why", required=True, help="why (logged and notified)")
    for name, text in (("pause", "stop the controller from acting (flags are left alone)"),
                       ("resume", "let the controller act again (also ends a post-rollback "
                                  "hold)")):
        sub.add_parser(name, parents=[steering, as_json], help=text)
    promote = sub.add_parser("promote", parents=[steering, as_json],
                             help="skip the bake and gates: go one stage forward")
    promote.add_argument("--full", action="store_true", help="go straight to the last stage")
    rollback = sub.add_parser("rollback", parents=[steering, as_json],
                              help="go one stage back (or to --to STAGE)")
    rollback.add_argument("--to", metavar="STAGE")

    evaluate = sub.add_parser("evaluate", parents=[as_json],
                              help="compute one cycle and print it")
    evaluate.add_argument("--dry-run", action="store_true",
                          help="required: nothing is applied or recorded")

    plan = sub.add_parser("plan", help="rollout plans")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True, parser_class=_Parser)
    validate = plan_sub.add_parser("validate", parents=[as_json], help="check a plan file")
    validate.add_argument("file")

    flags = sub.add_parser("flags", help="the three rollout flags in the configured store")
    flags_sub = flags.add_subparsers(dest="flags_command", required=True, parser_class=_Parser)
    flags_sub.add_parser("show", parents=[as_json], help="what the flag store holds")
    set_flags = flags_sub.add_parser("set", parents=[as_json],
                                     help="write flags by hand (shadow, l2, l1_percent)")
    set_flags.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    set_flags.add_argument("--who", default=_default_who())
    set_flags.add_argument("--why", default="")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _default_who() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return ""


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        args = build_parser().parse_args(argv)
        key = _command_key(args)
        # Checking a plan file needs no environment: a broken .env must not get in the way.
        settings = RolloutSettings.model_construct() if key == "plan validate" else _settings()
        return _HANDLERS[key](args, settings, out)
    except CliError as exc:
        # soft_wrap: an error line stays one line for whoever greps it.
        err.print(Text(f"error: {exc.message}", style="bold red")
                  if exc.code != EXIT_BAD_INPUT else Text(exc.message, style="red"),
                  soft_wrap=True)
        return exc.code
    except SystemExit as exc:  # --help, or argparse's own exits
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _settings() -> RolloutSettings:
    try:
        return RolloutSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}", EXIT_BAD_INPUT) from None


def _command_key(args: argparse.Namespace) -> str:
    if args.command == "plan":
        return f"plan {args.plan_command}"
    if args.command == "flags":
        return f"flags {args.flags_command}"
    return str(args.command)


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coroutine)


# --- run --------------------------------------------------------------------------------------


# The composition root pulls in Prometheus, Unleash, uvicorn and APScheduler (over a second
# of imports): commands import it when they need it, so `plan validate` and HTTP-backed
# `status` start at once.


def _cmd_run(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    from rollout.composition import build_runtime, configure_logging  # noqa: PLC0415
    from rollout.scheduler import run_controller  # noqa: PLC0415

    configure_logging(settings.rollout_log_format, settings.rollout_log_level)
    try:
        runtime = build_runtime(settings)
    except PlanError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    _run(run_controller(runtime))
    return EXIT_OK


# --- status and history -----------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    if settings.rollout_url:
        status = _get(settings, "/api/status")
    else:
        status = _run(_status_from_redis(settings))
    if args.json:
        _print_json(out, status)
    else:
        _render_status(out, status)
    return EXIT_OK


async def _status_from_redis(settings: RolloutSettings) -> dict[str, Any]:
    from rollout.composition import build_state_store  # noqa: PLC0415

    plan = _plan(settings)
    store = build_state_store(settings)
    try:
        snapshot = await store.load()
        last = await store.last_cycle()
        holder, _ = await store.leader()
    except StoreError as exc:
        raise CliError(f"{exc} (state Redis {_redacted(settings.state_redis_url)})") from None
    finally:
        await store.aclose()
    return build_status(plan, snapshot.state, last, datetime.now(UTC), holder=holder,
                        intent=snapshot.intent)


def _cmd_history(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    if settings.rollout_url:
        entries = _get(settings, f"/api/history?limit={args.limit}")["entries"]
    else:
        entries = _run(_history_from_redis(settings, args.limit))
    if args.json:
        _print_json(out, entries)
        return EXIT_OK
    if not entries:
        out.print("The decision log is empty: the controller has not run yet.")
        return EXIT_OK
    table = Table(title=f"Decision log (newest first, {len(entries)})", show_lines=False)
    for column in ("at", "what", "stage", "by", "reason"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        action = str(entry.get("action") or "")
        kind = str(entry.get("kind") or "")
        what = action if kind in ("cycle", "command") else f"{kind} {action}".strip()
        stage = str(entry.get("from_stage") or "")
        if entry.get("to_stage") and entry.get("to_stage") != stage:
            stage = f"{stage} \u2192 {entry['to_stage']}"
        style = "bold red" if kind == "flag-write-failed" else _ACTION_STYLE.get(action, "")
        table.add_row(_short_time(entry.get("at")), Text(what, style=style), stage,
                      str(entry.get("by") or ""),
                      str(entry.get("reason") or entry.get("note") or ""))
    out.print(table)
    return EXIT_OK


async def _history_from_redis(settings: RolloutSettings, limit: int) -> list[dict[str, Any]]:
    from rollout.composition import build_state_store  # noqa: PLC0415

    store = build_state_store(settings)
    try:
        return await store.history(limit)
    except StoreError as exc:
        raise CliError(f"{exc} (state Redis {_redacted(settings.state_redis_url)})") from None
    finally:
        await store.aclose()


def _render_status(out: Console, status: Mapping[str, Any]) -> None:
    stage = str(status.get("stage"))
    timeline = Text()
    for i, item in enumerate(status.get("stages") or []):
        if i:
            timeline.append(" \u2192 ", style="dim")
        position = item.get("position")
        if position == "done":
            timeline.append(f"{item['name']} \u2713", style="green")
        elif position in ("current", "complete"):
            timeline.append(f"[{item['name']}]", style="bold reverse cyan")
        else:
            timeline.append(str(item["name"]), style="dim")
    out.print(Text("Rollout stage ", style="bold") + Text(stage, style="bold cyan"))
    out.print(timeline)
    if not status.get("initialised"):
        out.print(Text("The controller has not run yet (no state stored).", style="yellow"))
    bake = status.get("bake_seconds")
    spent = float(status.get("time_in_stage_seconds") or 0.0)
    if bake is not None:
        left = float(status.get("bake_remaining_seconds") or 0.0)
        baked = "baked" if left <= 0 else f"{human_duration(timedelta(seconds=left))} left"
        out.print(f"In stage {human_duration(timedelta(seconds=spent))} of a "
                  f"{human_duration(timedelta(seconds=float(bake)))} bake ({baked}); "
                  f"{status.get('pass_streak')}/{status.get('passes_to_advance')} passing cycles")
    pause = status.get("pause")
    if pause:
        out.print(Text(f"PAUSED by {pause['by']} at {_short_time(pause['at'])}: {pause['why']}",
                       style="bold yellow"))
    rollback = status.get("last_rollback")
    if status.get("in_cooldown"):
        out.print(Text(f"Cooling down until {_short_time(status.get('cooldown_until'))}",
                       style="yellow"))
    if status.get("awaiting_resume") and rollback:
        out.print(Text(f"Holding after the rollback {rollback['from_stage']} \u2192 "
                       f"{rollback['to_stage']} until someone runs `rollout resume`: "
                       f"{rollback['reason']}", style="bold red"))
    if status.get("completed_at"):
        out.print(Text(f"Rollout complete since {_short_time(status['completed_at'])}",
                       style="bold green"))
    flags = status.get("flags") or {}
    out.print(f"Flags wanted: {_flags_text(flags.get('desired'))}; the service reports: "
              f"{_flags_text(flags.get('reported'))}")
    decision = status.get("last_decision")
    if decision:
        action = str(decision.get("action"))
        out.print(Text("Last decision ", style="bold")
                  + Text(action, style=_ACTION_STYLE.get(action, ""))
                  + Text(f" at {_short_time(decision.get('at'))}: {decision.get('reason')}"))
    checks = status.get("checks") or []
    if checks:
        out.print(_checks_table(checks, status.get("failure_streaks") or {}))
    leader = status.get("leader") or {}
    holder = leader.get("holder")
    out.print(Text(f"Leader: {holder}" if holder else "Leader: nobody holds the lease",
                   style="dim" if holder else "yellow"))
    intent = status.get("pending_intent")
    if intent:
        out.print(Text(f"Transition in flight: {intent.get('from_stage')} \u2192 "
                       f"{intent.get('to_stage')} since {intent.get('at')}", style="yellow"))


def _checks_table(checks: Sequence[Mapping[str, Any]], streaks: Mapping[str, Any]) -> Table:
    table = Table(show_lines=False)
    for column in ("check", "kind", "verdict", "value", "must be", "n"):
        table.add_column(column, overflow="fold")
    for check in checks:
        verdict = str(check.get("verdict"))
        kind = str(check.get("kind") or "")
        if check.get("critical"):
            kind += " critical"
        if check.get("dry_run"):
            kind += " dry-run"
        failing = streaks.get(str(check.get("check")))
        if failing:
            kind += f" ({failing} failing)"
        limit = check.get("limit_text")
        table.add_row(
            str(check.get("label") or check.get("check")), kind,
            Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
            str(check.get("value_text") or "-"),
            f"{check.get('comparator') or ''} {limit}".strip() if limit else "-",
            _count(check.get("sample")),
        )
    return table


# --- steering ---------------------------------------------------------------------------------


def _cmd_steer(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    who = (args.who or "").strip()
    why = (args.why or "").strip()
    if not who:
        raise CliError("--who is empty and $USER is not set: say who you are", EXIT_BAD_INPUT)
    if not why:
        raise CliError("--why must not be empty: manual actions are logged with a reason",
                       EXIT_BAD_INPUT)
    token = settings.api_token
    if token is None:
        raise CliError("ROLLOUT_API_TOKEN is not set: commands need the controller's token",
                       EXIT_BAD_INPUT)
    body: dict[str, Any] = {"who": who, "why": why}
    if args.command == "promote" and args.full:
        body["full"] = True
    if args.command == "rollback" and args.to:
        body["to"] = args.to
    url = f"{settings.controller_url}/api/{args.command}"
    try:
        response = httpx.post(url, json=body, timeout=HTTP_TIMEOUT,
                              headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the controller at {settings.controller_url}: {exc} "
                       "(is `rollout run` up? set ROLLOUT_URL)") from None
    data = _json_or_text(response)
    if response.status_code == 200:
        if args.json:
            _print_json(out, data)
        else:
            action = str(data.get("action"))
            out.print(Text(f"{action}: ", style=_ACTION_STYLE.get(action, "bold"))
                      + Text(str(data.get("reason"))))
        return EXIT_OK
    detail = data.get("detail") if isinstance(data, dict) else str(data)
    if response.status_code == 422:
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in data.get("errors", []))
        raise CliError(f"{detail}{': ' + problems if problems else ''}", EXIT_BAD_INPUT)
    if response.status_code == 401:
        raise CliError(f"unauthorized: {detail} (check ROLLOUT_API_TOKEN)")
    if response.status_code == 409:
        raise CliError(f"refused: {detail}")
    raise CliError(f"the controller answered {response.status_code}: {detail}")


# --- evaluate --dry-run -----------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    if not args.dry_run:
        raise CliError("only `rollout evaluate --dry-run` exists: the running controller is "
                       "the one that acts", EXIT_BAD_INPUT)
    report = _run(_dry_run(settings))
    if args.json:
        _print_json(out, report)
        return EXIT_OK
    action = str(report.get("action"))
    moved = str(report.get("from_stage"))
    if report.get("to_stage") != moved:
        moved += f" \u2192 {report.get('to_stage')}"
    out.print(Text("Dry run (nothing applied or recorded): ", style="bold")
              + Text(action, style=_ACTION_STYLE.get(action, "bold")) + Text(f" {moved}"))
    out.print(str(report.get("reason")))
    checks = report.get("checks") or []
    if checks:
        out.print(_checks_table(checks, (report.get("state") or {}).get("failure_streaks", {})))
    flags = report.get("flags") or {}
    out.print(f"Flags: store holds {_flags_text(flags.get('before'))}; the decision wants "
              f"{_flags_text(flags.get('desired'))}"
              + (" (would be written)" if flags.get("drift") else ""))
    if report.get("pending_intent"):
        out.print(Text("A transition is in flight; the controller resolves it first.",
                       style="yellow"))
    return EXIT_OK


async def _dry_run(settings: RolloutSettings) -> dict[str, Any]:
    from rollout.composition import (  # noqa: PLC0415
        build_flag_writer,
        build_metrics_source,
        build_state_store,
    )

    plan = _plan(settings)
    store = build_state_store(settings)
    try:
        flags = build_flag_writer(settings)
    except ValueError as exc:
        await store.aclose()
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    source = build_metrics_source(settings)
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=NullNotifier(), instance_id=f"{settings.rollout_instance_id} "
                       "(dry run)")
    try:
        report = await run_cycle(ports, now=datetime.now(UTC), token=0, dry_run=True)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        for close in (source.aclose, flags.aclose, store.aclose):
            await close()
    return report.to_dict()


# --- plan validate ----------------------------------------------------------------------------


def _cmd_plan_validate(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    try:
        plan = load_plan(args.file)
    except PlanError as exc:
        if args.json:
            _print_json(out, {"file": args.file, "valid": False, "problems": list(exc.problems)})
            return EXIT_BAD_INPUT
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    summary = {
        "file": args.file, "valid": True,
        "stages": list(plan.stage_names),
        "checks": len({c.name for c in plan.all_checks()}),
        "guardrails": [c.name for c in plan.guardrails],
        "time_scale": plan.settings.time_scale,
        "total_bake_seconds": sum(plan.bake_of(i).total_seconds()
                                  for i in range(len(plan.stages))),
    }
    if args.json:
        _print_json(out, summary)
    else:
        total = timedelta(seconds=float(summary["total_bake_seconds"]))
        out.print(Text(f"{args.file}: valid plan", style="bold green"))
        arrow = " \u2192 "
        out.print(f"{len(plan.stages)} stages: {arrow.join(plan.stage_names)}")
        out.print(f"{summary['checks']} checks, {len(plan.guardrails)} guardrails; "
                  f"minimum duration {human_duration(total)} (time scale "
                  f"{plan.settings.time_scale:g})")
    return EXIT_OK


# --- flags ------------------------------------------------------------------------------------


def _cmd_flags_show(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    current, target = _run(_flags_read(settings))
    data = {"store": target, "flags": flags_dict(current)}
    if args.json:
        _print_json(out, data)
        return EXIT_OK
    table = Table(title=f"Flags in {target}")
    table.add_column("key")
    table.add_column("flag")
    table.add_column("value")
    names = {field: flag for flag, field in LOCAL_FIELD_BY_FLAG.items()}
    for key, value in flags_dict(current).items():
        shown = f"{value} %" if key == "l1_percent" else ("on" if value else "off")
        table.add_row(key, names.get(key, ""), Text(shown, style="green" if value else "dim"))
    out.print(table)
    return EXIT_OK


async def _flags_read(settings: RolloutSettings) -> tuple[FlagSettings, str]:
    writer = _flag_writer(settings)
    try:
        return await writer.read(), writer.target
    except FlagError as exc:
        raise CliError(f"cannot read the flags from {writer.target}: {exc.message}") from None
    finally:
        await writer.aclose()


def parse_assignments(assignments: Sequence[str]) -> dict[str, bool | int]:
    """`shadow=on l1_percent=10` → {"shadow": True, "l1_percent": 10}; CliError(2) naming
    the field on anything else."""
    parsed: dict[str, bool | int] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise CliError(f"{item!r}: expected KEY=VALUE with KEY one of "
                           f"{', '.join(FLAG_KEYS)}", EXIT_BAD_INPUT)
        if key not in FLAG_KEYS:
            close = difflib.get_close_matches(key, FLAG_KEYS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CliError(f"{key}: unknown flag key{hint}; use {', '.join(FLAG_KEYS)}",
                           EXIT_BAD_INPUT)
        if key in parsed:
            raise CliError(f"{key}: given twice", EXIT_BAD_INPUT)
        if key == "l1_percent":
            text = raw.removesuffix("%").strip()
            try:
                percent = int(text)
            except ValueError:
                percent = -1
            if not 0 <= percent <= 100:
                raise CliError(f"l1_percent: must be a whole number from 0 to 100, got {raw!r}",
                               EXIT_BAD_INPUT)
            parsed[key] = percent
        elif raw.lower() in _TRUE:
            parsed[key] = True
        elif raw.lower() in _FALSE:
            parsed[key] = False
        else:
            raise CliError(f"{key}: must be on or off (1/0, true/false), got {raw!r}",
                           EXIT_BAD_INPUT)
    return parsed


def _cmd_flags_set(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    changes = parse_assignments(args.assignments)
    result = _run(_flags_set(settings, changes, args.who, args.why))
    if args.json:
        _print_json(out, result)
        return EXIT_OK
    writes = result["writes"]
    if writes:
        out.print(Text(f"Wrote {len(writes)} change(s) to {result['store']}:", style="bold"))
        for write in writes:
            out.print(f"  {write}")
    else:
        out.print(f"Nothing to change: {result['store']} already holds these flags.")
    out.print(f"Flags now: {_flags_text(result['after'])}")
    if result.get("warning"):
        out.print(Text(str(result["warning"]), style="yellow"))
    return EXIT_OK


async def _flags_set(settings: RolloutSettings, changes: Mapping[str, bool | int], who: str,
                     why: str) -> dict[str, Any]:
    writer = _flag_writer(settings)
    try:
        current = await writer.read()
        merged = flags_dict(current) | dict(changes)
        try:
            desired = FlagSettings(shadow=bool(merged["shadow"]), l2=bool(merged["l2"]),
                                   l1_percent=int(merged["l1_percent"]))
        except ValueError as exc:
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
        result = await writer.apply(desired)
    except FlagError as exc:
        raise CliError(f"cannot write the flags to {writer.target}: {exc.message}") from None
    finally:
        await writer.aclose()
    data: dict[str, Any] = {
        "store": writer.target, "before": flags_dict(result.before),
        "after": flags_dict(result.after), "writes": [str(w) for w in result.writes],
    }
    data["warning"] = await _note_manual_flags(settings, data, who, why)
    return data


async def _note_manual_flags(settings: RolloutSettings, data: Mapping[str, Any], who: str,
                             why: str) -> str | None:
    """Log the hand edit in the decision log and say what the controller will do about it.
    Best effort: the flags are already written, a state Redis outage must not hide that."""
    from rollout.composition import build_state_store  # noqa: PLC0415

    store = build_state_store(settings)
    try:
        snapshot = await store.load()
        if data["writes"]:
            await store.append_unfenced({
                "kind": "flags-set", "at": datetime.now(UTC).isoformat(), "by": who or "?",
                "reason": why or "set by hand with `rollout flags set`",
                "flags": {"before": data["before"], "desired": data["after"],
                          "writes": data["writes"], "applied": True, "result": "written"},
            })
    except StoreError:
        return None
    finally:
        await store.aclose()
    state = snapshot.state
    if state is None or state.is_paused or not data["writes"]:
        return None
    return (f"The controller is not paused: its next cycle restores {state.stage_name}'s flags "
            "and reports the drift. Run `rollout pause` first to keep a manual setting.")


def _flag_writer(settings: RolloutSettings) -> FlagWriter:
    from rollout.composition import build_flag_writer  # noqa: PLC0415

    try:
        return build_flag_writer(settings)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


# --- helpers ----------------------------------------------------------------------------------


def _plan(settings: RolloutSettings) -> Plan:
    from rollout.composition import plan_from_settings  # noqa: PLC0415

    try:
        return plan_from_settings(settings)
    except PlanError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def _get(settings: RolloutSettings, path: str) -> Any:
    url = f"{settings.controller_url}{path}"
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the controller at {settings.controller_url}: {exc} "
                       "(unset ROLLOUT_URL to read the state from Redis)") from None
    data = _json_or_text(response)
    if response.status_code != 200:
        detail = data.get("detail") if isinstance(data, dict) else data
        raise CliError(f"the controller answered {response.status_code}: {detail}")
    return data


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}


def _print_json(out: Console, data: Any) -> None:
    # Plain print: rich would wrap long lines and colour keys, which scripts do not want.
    out.file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _flags_text(flags: Mapping[str, Any] | None) -> str:
    if not flags:
        return "nothing"
    return (f"shadow {'on' if flags.get('shadow') else 'off'}, L2 "
            f"{'on' if flags.get('l2') else 'off'}, L1 {flags.get('l1_percent')} %")


def _short_time(value: object) -> str:
    if not isinstance(value, str):
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _count(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{round(value):,}".replace(",", " ")


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace, RolloutSettings, Console], int]]] = {
    "run": _cmd_run,
    "status": _cmd_status,
    "history": _cmd_history,
    "pause": _cmd_steer,
    "resume": _cmd_steer,
    "promote": _cmd_steer,
    "rollback": _cmd_steer,
    "evaluate": _cmd_evaluate,
    "plan validate": _cmd_plan_validate,
    "flags show": _cmd_flags_show,
    "flags set": _cmd_flags_set,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
