"""The terminal rendering of what the controller shows: the status, the decision log and a
dry run, from the same typed models the HTTP API serves.

Everything that comes from people or from the world (reasons, notes, who and why, check
labels and messages, stage names) is printed as plain text, never as rich markup: every
cell is a `Text` and every printed string goes out with `markup=False`, so a reason such as
`[/oops]` or `[bold]x[/bold]` appears literally instead of crashing or styling the output."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from rollout.core.plan import human_duration
from rollout.formatting import (
    BULLET,
    bound_text,
    estimate_text,
    flags_text,
    interval_text,
    more_text,
    n_text,
    objectives,
    short_time,
    target_text,
    transition_evidence,
    verdict_word,
)
from rollout.history_view import TIMES, HeldRun, HistoryRow
from rollout.next_step import WAITING, next_step, relative, shown_verdict
from rollout.records import CheckRecord, CycleResult
from rollout.status import StatusView

VERDICT_STYLE: Final = {"pass": "bold green", "fail": "bold red", "no data": "dim",
                        "error": "bold yellow", "inconclusive": "bold blue", "met": "bold green",
                        "missed": "bold magenta", "waiting": "dim", "failing": "bold red"}
ACTION_STYLE: Final = {"advance": "green", "complete": "bold green", "rollback": "bold red",
                       "hold": "", "pause": "yellow", "resume": "cyan"}


def print_json(out: Console, data: BaseModel | Sequence[BaseModel] | Mapping[str, Any]) -> None:
    if isinstance(data, BaseModel):
        shown: Any = data.model_dump(mode="json")
    elif isinstance(data, Mapping):
        shown = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                 for k, v in data.items()}
    else:
        shown = [item.model_dump(mode="json") for item in data]
    # Plain write: rich would wrap long lines and colour keys, which scripts do not want.
    out.file.write(json.dumps(shown, indent=2, ensure_ascii=False, default=str) + "\n")


def action_text(action: str, rest: str = "") -> Text:
    return Text(action, style=ACTION_STYLE.get(action, "bold")) + Text(rest)


def render_status(out: Console, status: StatusView) -> None:
    for part in status_renderables(status):
        out.print(part)


def status_renderables(status: StatusView) -> list[RenderableType]:
    """The status as lines and tables: printed once by `rollout status`, redrawn by
    `rollout status --watch`."""
    parts: list[RenderableType] = []
    parts.append(Text("Rollout stage ", style="bold") + Text(status.stage, style="bold cyan"))
    parts.append(_timeline(status))
    if not status.initialised:
        parts.append(Text("The controller has not run yet (no state stored).", style="yellow"))
    if status.bake_seconds is not None:
        left = status.bake_remaining_seconds or 0.0
        baked = "baked" if left <= 0 else f"{_duration(left)} left"
        parts.append(Text(f"In stage since {relative(status.entered_at, status.now)}, "
                           f"{_duration(status.time_in_stage_seconds)} of a "
                           f"{_duration(status.bake_seconds)} bake ({baked}); "
                           f"{status.pass_streak}/{status.passes_to_advance} passing cycles"))
    for line in _state_lines(status):
        parts.append(line)
    step = next_step(status)
    parts.append(Text("Next: ", style="bold") + Text(step.headline, style="bold cyan"))
    for blocker in step.blockers:
        parts.append(Text(f"  \u2022 {blocker.label}: ")
                      + Text(blocker.state, style=VERDICT_STYLE.get(blocker.state, "bold"))
                      + Text(f" \u2014 {blocker.needs}"))
    parts.append(Text(f"Flags wanted: {flags_text(status.flags.desired)}; the service reports: "
                       f"{flags_text(status.flags.reported)}"))
    decision = status.last_decision
    if decision:
        parts.append(Text("Last decision ", style="bold") + action_text(
            str(decision.action), f" {relative(decision.at, status.now)} "
                                  f"({short_time(decision.at)}): {decision.reason}"))
    if status.enforced_checks:
        shown = {c.check: shown_verdict(status, c) for c in status.enforced_checks}
        parts.append(checks_table(status.enforced_checks, status.failure_streaks,
                                   waiting={name for name, v in shown.items() if v == WAITING}))
    if status.objectives:
        parts.append(objectives_table(status.objectives, completed=status.completed_at is not None))
    holder = status.leader.holder
    parts.append(Text(f"Leader: {holder}" if holder else "Leader: nobody holds the lease",
                       style="dim" if holder else "yellow"))
    intent = status.pending_intent
    if intent:
        parts.append(Text(f"Transition in flight: {intent.from_stage} \u2192 {intent.to_stage} "
                           f"since {short_time(intent.at)}", style="yellow"))
    return parts


def _timeline(status: StatusView) -> Text:
    timeline = Text()
    for stage in status.stages:
        if stage.index:
            timeline.append(" \u2192 ", style="dim")
        if stage.position == "done":
            timeline.append(f"{stage.name} \u2713", style="green")
        elif stage.position in ("current", "complete"):
            timeline.append(f"[{stage.name}]", style="bold reverse cyan")
        else:
            timeline.append(stage.name, style="dim")
    return timeline


def _state_lines(status: StatusView) -> list[Text]:
    lines = []
    if status.pause:
        lines.append(Text(f"PAUSED by {status.pause.by} at {short_time(status.pause.at)}: "
                          f"{status.pause.why}", style="bold yellow"))
    if status.in_cooldown:
        lines.append(Text(f"Cooling down until {short_time(status.cooldown_until)}",
                          style="yellow"))
    rollback = status.last_rollback
    if status.awaiting_resume and rollback:
        lines.append(Text(f"Holding after the rollback {rollback.from_stage} \u2192 "
                          f"{rollback.to_stage} until someone runs `rollout resume`: "
                          f"{rollback.reason}", style="bold red"))
    if status.completed_at:
        lines.append(Text(f"Rollout complete since {short_time(status.completed_at)}",
                          style="bold green"))
    return lines


def checks_table(checks: Sequence[CheckRecord], streaks: Mapping[str, int],
                 waiting: frozenset[str] | set[str] = frozenset()) -> Table:
    """Gates, guardrails and baseline checks; a statistical one with its estimate, bound,
    margin or limit and n, and when inconclusive how many more samples (≈ how long)."""
    with_evidence = any(check.evidence is not None for check in checks)
    table = Table(show_lines=False)
    columns = ["check", "kind", "verdict", "value", "bound", "must be", "n"]
    for column in columns if with_evidence else [c for c in columns if c != "bound"]:
        table.add_column(column, overflow="fold")
    for check in checks:
        kind = check.kind or ""
        if check.critical:
            kind += " critical"
        if check.dry_run:
            kind += " dry-run"
        failing = streaks.get(check.check)
        if failing:
            kind += f" ({failing} failing)"
        if check.evidence is not None:
            target = target_text(check) or "-"
        else:
            limit = check.limit_text
            target = f"{check.comparator or ''} {limit}".strip() if limit else "-"
        bound = [Text(bound_text(check) or "-")] if with_evidence else []
        table.add_row(
            Text(check.label or check.check), Text(kind),
            Text(WAITING, style="dim") if check.check in waiting else _verdict_cell(check),
            Text(check.value_text or "-"), *bound, Text(target), Text(n_text(check)),
        )
    return table


def objectives_table(checks: Sequence[CheckRecord], *, completed: bool = False) -> Table:
    """The objectives with their intervals: met / missed / inconclusive, never blocking."""
    table = Table(title="Objectives at completion" if completed else
                  "Objectives (reported, never blocking)", show_lines=False)
    for column in ("objective", "verdict", "estimate", "interval", "must be", "n"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(
            Text(check.label or check.check), _verdict_cell(check),
            Text(estimate_text(check) or "-"), Text(interval_text(check) or "-"),
            Text(target_text(check) or "-"), Text(n_text(check)),
        )
    return table


def _verdict_cell(check: CheckRecord) -> Text:
    word = verdict_word(check)
    cell = Text(word, style=VERDICT_STYLE.get(word, ""))
    more = more_text(check)
    if more:
        cell.append(f"\n{more}", style="dim")
    return cell


def render_history(out: Console, entries: Sequence[HistoryRow], *,
                   folded: bool = False) -> None:
    if not entries:
        out.print("The decision log is empty: the controller has not run yet.")
        return
    what = "transitions and manual actions, holds folded" if folded else "newest first"
    table = Table(title=f"Decision log ({what}, {len(entries)})", show_lines=False)
    for column in ("at", "what", "stage", "by", "reason"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        if isinstance(entry, HeldRun):
            table.add_row(Text(short_time(entry.last_at), style="dim"),
                          Text(f"held {entry.count}{TIMES}", style="dim"), Text(entry.stage),
                          Text(""), Text(f"for: {entry.reason}", style="dim"))
            continue
        action = entry.action or ""
        what = action if entry.kind in ("cycle", "command") else f"{entry.kind} {action}".strip()
        stage = entry.from_stage or ""
        if entry.moved:
            stage = f"{stage} \u2192 {entry.to_stage}"
        style = "bold red" if entry.kind == "flag-write-failed" else ACTION_STYLE.get(action, "")
        reason = Text(entry.reason or entry.note or "")
        if entry.moved or action == "complete":
            # A transition shows what it rests on: the deciding checks and the objectives.
            for line in transition_evidence(entry.checks, action):
                reason.append(f"\n{line}", style="dim" if not line.startswith(BULLET) else "")
        table.add_row(Text(short_time(entry.at)), Text(what, style=style), Text(stage),
                      Text(entry.by or ""), reason)
    out.print(table)


def render_dry_run(out: Console, result: CycleResult) -> None:
    moved = str(result.from_stage)
    if result.moved:
        moved += f" \u2192 {result.to_stage}"
    out.print(Text("Dry run (nothing applied or recorded): ", style="bold")
              + action_text(str(result.action), f" {moved}"))
    out.print(Text(str(result.reason)))
    enforced = [check for check in result.checks if not check.is_objective]
    if enforced:
        streaks = (result.state or {}).get("failure_streaks", {})
        out.print(checks_table(enforced, streaks))
    stage_objectives = objectives(result.checks)
    if stage_objectives:
        out.print(objectives_table(stage_objectives))
    flags = result.flags
    if flags is not None:
        out.print(Text(f"Flags: store holds {flags_text(flags.before)}; the decision wants "
                       f"{flags_text(flags.desired)}"
                       + (" (would be written)" if flags.drift else "")))
    if result.pending_intent:
        out.print(Text("A transition is in flight; the controller resolves it first.",
                       style="yellow"))


def _duration(seconds: float) -> str:
    return human_duration(timedelta(seconds=seconds))
