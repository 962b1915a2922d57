"""`rollout replay --prometheus URL --from T1 --to T2 [--plan FILE] [--step 1m]`: the plan
re-evaluated over recorded Prometheus data, the decisions it would have taken with their
evidence (rollout.replay says how, and what it assumes).

Defaults are the controller's: the plan is ROLLOUT_PLAN (else the bundled one) with
ROLLOUT_TIME_SCALE, the step its evaluation interval (ROLLOUT_INTERVAL_SECONDS), Prometheus
PROMETHEUS_URL. Times are ISO 8601 (`2026-12-06T18:20:00Z`; without an offset: UTC), Unix
seconds, `now` or `now-2h`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from rollout.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CliError
from rollout.cli.render import action_text, print_json
from rollout.core.plan import Plan, human_duration
from rollout.core.plan_schema import did_you_mean, parse_duration
from rollout.formatting import BULLET, evidence_line, objective_line
from rollout.records import CheckRecord
from rollout.replay import (
    ReplayDecision,
    ReplayHolds,
    ReplayRangeError,
    ReplayReport,
    ReplayStep,
    ReplayWindow,
    replay,
    report_of,
    starting_state,
)
from rollout.settings import RolloutSettings

ARROW: Final = "\u2192"
_TIME_HINT: Final = "an ISO 8601 time (2026-12-06T18:20:00Z), Unix seconds, now or now-2h"


def add_parser(sub: Any, as_json: argparse.ArgumentParser) -> None:
    replay = sub.add_parser(
        "replay", parents=[as_json],
        help="re-evaluate the plan over recorded Prometheus data",
        description="Run the controller's cycle (the same queries, judgement and decide) at "
                    "every step from --from to --to, reading Prometheus as it was at that "
                    "moment; print the decisions it would have taken and their evidence. "
                    "Nothing is written. It starts in the plan's first stage at --from, "
                    "nothing recorded (or at --start-stage, without a baseline), and takes "
                    "the flags the service ran from what it reported (ai_agent_flag_state) "
                    "at each step.",
    )
    replay.add_argument("--prometheus", metavar="URL",
                        help="the Prometheus holding the recording (default PROMETHEUS_URL)")
    replay.add_argument("--from", dest="start", required=True, metavar="T1",
                        help=f"first step: {_TIME_HINT}")
    replay.add_argument("--to", dest="end", required=True, metavar="T2",
                        help="last step (after T1; same formats)")
    replay.add_argument("--plan", metavar="FILE",
                        help="the plan (default ROLLOUT_PLAN, else the bundled plan)")
    replay.add_argument("--time-scale", metavar="SCALE",
                        help="the plan's time scale (default ROLLOUT_TIME_SCALE, else the "
                             "plan's own); a demo runs 1 plan day in N seconds: N/86400")
    replay.add_argument("--step", metavar="DURATION",
                        help="time between steps, e.g. 1m, 30s, 500ms (default: the "
                             "controller's evaluation interval)")
    replay.add_argument("--start-stage", metavar="STAGE",
                        help="start in this stage instead of the plan's first (no baseline "
                             "is recorded then)")
    replay.add_argument("--every-step", action="store_true",
                        help="show every step in full, not only the decisions that are not "
                             "holds")


# --- reading the options ---------------------------------------------------------------------


def parse_moment(text: str, now: datetime) -> datetime:
    """ISO 8601 (naive: UTC), Unix seconds, `now`, `now-DURATION`. ValueError otherwise."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("now-"):
        return now - parse_duration(value[len("now-"):])
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"must be {_TIME_HINT}, got {text!r}")
        return datetime.fromtimestamp(seconds, UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be {_TIME_HINT}, got {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _moment(option: str, text: str, now: datetime) -> datetime:
    try:
        moment = parse_moment(text, now)
    except (ValueError, OverflowError, OSError) as exc:
        raise CliError(f"{option}: {exc}", EXIT_BAD_INPUT) from None
    if moment > now:
        raise CliError(f"{option}: {moment.isoformat()} is in the future (now "
                       f"{now.isoformat(timespec='seconds')}); replay reads what was recorded",
                       EXIT_BAD_INPUT)
    return moment


def _step(text: str | None, plan: Plan, settings: RolloutSettings) -> timedelta:
    if text is None:
        from rollout.composition import interval_seconds  # noqa: PLC0415

        return timedelta(seconds=interval_seconds(settings, plan))
    try:
        step = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--step: {exc}", EXIT_BAD_INPUT) from None
    if step <= timedelta(0):
        raise CliError(f"--step: must be a positive duration such as 30s or 1m, got {text!r}",
                       EXIT_BAD_INPUT)
    return step


def _time_scale(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise CliError(f"--time-scale: must be a positive number, got {text!r}",
                       EXIT_BAD_INPUT)
    return scale


def _plan(args: argparse.Namespace, settings: RolloutSettings) -> tuple[Plan, str, RolloutSettings]:
    from rollout.composition import plan_from_settings  # noqa: PLC0415
    from rollout.core.plan_loader import PlanError  # noqa: PLC0415
    from rollout.plans import default_plan_path  # noqa: PLC0415

    update: dict[str, Any] = {}
    if args.plan is not None:
        update["rollout_plan"] = Path(args.plan)
    scale = _time_scale(args.time_scale)
    if scale is not None:
        update["rollout_time_scale"] = scale
    settings = settings.model_copy(update=update)
    try:
        plan = plan_from_settings(settings)
    except PlanError as exc:
        # Every problem with its field path, one a line, as `rollout plan validate` says it.
        raise CliError(f"--plan: {exc}", EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise CliError(f"--plan: cannot read {args.plan}: {exc.strerror or exc}",
                       EXIT_BAD_INPUT) from None
    return plan, str(settings.rollout_plan or default_plan_path()), settings


def _url(args: argparse.Namespace, settings: RolloutSettings) -> str:
    url = str(args.prometheus or settings.prometheus_url).strip()
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--prometheus: must be an http:// or https:// URL, got {url!r}",
                       EXIT_BAD_INPUT)
    return url


# --- the command -----------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    now = datetime.now(UTC)
    start, end = _moment("--from", args.start, now), _moment("--to", args.end, now)
    url = _url(args, settings)
    plan, plan_source, settings = _plan(args, settings)
    step = _step(args.step, plan, settings)
    try:
        window = ReplayWindow(start, end, step)
    except ReplayRangeError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    if args.start_stage is not None and plan.index_of(args.start_stage) is None:
        raise CliError(f"--start-stage: the plan has no stage {args.start_stage!r}"
                       f"{did_you_mean(args.start_stage, plan.stage_names)} (stages: "
                       f"{', '.join(plan.stage_names)})", EXIT_BAD_INPUT)
    report = asyncio.run(_replay(plan, plan_source, url, window, args, settings))
    if args.json:
        print_json(out, report)
    else:
        render_replay(out, report)
    return EXIT_OK


async def _replay(plan: Plan, plan_source: str, url: str, window: ReplayWindow,
                  args: argparse.Namespace, settings: RolloutSettings) -> ReplayReport:
    from rollout.adapters.prometheus import PrometheusSource  # noqa: PLC0415

    async with PrometheusSource(url, timeout_seconds=settings.prometheus_timeout_seconds) as src:
        # One query first: an unreachable Prometheus is one line, not a replay of errors.
        probe = await src.as_of(window.start).measure("vector(1)", None)
        if probe.error is not None:
            raise CliError(f"--prometheus: {probe.error}", EXIT_FAILED)
        state = starting_state(plan, window.start, args.start_stage)
        with _progress(window.count, quiet=args.json) as advance:
            steps = await replay(plan, src, window, state, on_step=advance)
    return report_of(plan, steps, window, prometheus=src.url, plan_source=plan_source,
                     started_fresh=args.start_stage is None, every_step=args.every_step)


@contextmanager
def _progress(total: int, *, quiet: bool) -> Iterator[Any]:
    """A progress bar on stderr for a long replay at a terminal; nothing otherwise."""
    err = Console(stderr=True)
    if quiet or not err.is_terminal or total < 50:
        yield lambda step: None
        return
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("", total=total)

        def advance(step: ReplayStep) -> None:
            progress.update(task, advance=1, description=step.state_after.stage_name)

        yield advance


# --- rendering -----------------------------------------------------------------------------


def moment_text(moment: datetime, step_seconds: float) -> str:
    """UTC; to the millisecond when steps are shorter than a second."""
    moment = moment.astimezone(UTC)
    if step_seconds < 1 or moment.microsecond:
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def render_replay(out: Console, report: ReplayReport) -> None:
    step = report.step_seconds
    out.print(Text(f"Replay of {report.plan} (time scale {report.time_scale:g}) over "
                   f"{report.prometheus}", style="bold"), soft_wrap=True)
    out.print(Text(f"from {moment_text(report.start, step)} to {moment_text(report.end, step)}"
                   f" every {human_duration(timedelta(seconds=step))} ({report.steps} steps)"))
    start = (f"the plan's first stage {report.start_stage}, nothing recorded (the controller's "
             "fresh start)" if report.started_fresh else
             f"stage {report.start_stage}, no baseline recorded")
    out.print(Text(f"Assumed: starts in {start}; the service ran the flags it reported at each "
                   "step; every decision applied at once; nothing is written.", style="dim"),
              soft_wrap=True)
    for entry in report.entries:
        if isinstance(entry, ReplayHolds):
            _render_holds(out, entry, step)
        else:
            _render_decision(out, entry, step)
    out.print(Text("Transitions: ", style="bold")
              + Text("; ".join(report.transitions) if report.transitions else "none"),
              soft_wrap=True)
    end = "completed" if report.completed else "not completed"
    out.print(Text(f"Ends in {report.final_stage} ({end}).", style="bold"))
    for warning in report.warnings:
        out.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)


def _render_holds(out: Console, holds: ReplayHolds, step: float) -> None:
    times = moment_text(holds.first_at, step)
    if holds.steps > 1:
        times += f" \u2026 {moment_text(holds.last_at, step)}"
    out.print(Text(f"{times}  {holds.stage}  ", style="dim")
              + action_text("hold", f" x{holds.steps}: ") + Text(holds.last_reason),
              soft_wrap=True)


def _render_decision(out: Console, decision: ReplayDecision, step: float) -> None:
    stage = decision.from_stage
    if decision.moved:
        stage += f" {ARROW} {decision.to_stage}"
    out.print(Text(f"{moment_text(decision.at, step)}  {stage}  ", style="bold")
              + action_text(decision.action), soft_wrap=True)
    out.print(Text(f"  {decision.reason}"), soft_wrap=True)
    reported = decision.reported_flags
    flags = "matching" if decision.flags_match else "not matching"
    out.print(Text(f"  flags reported by {reported.instances} instance(s): {flags}"
                   + (f" ({reported.error})" if reported.error else ""), style="dim"),
              soft_wrap=True)
    for check in decision.checks:
        out.print(Text(f"  {BULLET} {_role(check)}: ", style="dim") + Text(_line(check)),
                  soft_wrap=True)


def _role(check: CheckRecord) -> str:
    role = check.kind or "check"
    return role + (" (dry run)" if check.dry_run else "")


def _line(check: CheckRecord) -> str:
    line = objective_line(check) if check.is_objective else evidence_line(check)
    if check.error:
        line += f" ({check.error})"
    return line
