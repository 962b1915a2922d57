"""`rollout plan check FILE --traffic RATE`: how long each statistical check of a plan needs
at that traffic, per stage, and where a stage cannot decide within its bake (DESIGN.md §7).

The numbers come from `rollout.core.plan_check` (pure); this module parses the options and
renders the rows. The assumptions are printed with the table, so that a reader knows what
"needs 3 h" was computed for.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollout.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from rollout.cli.render import print_json
from rollout.core.checks import format_count
from rollout.core.plan_check import (
    Assumptions,
    Awaited,
    CheckNeed,
    PlanCheck,
    check_plan,
    human_duration_seconds,
)
from rollout.core.plan_loader import PlanError, load_plan
from rollout.settings import RolloutSettings

_DEFAULTS: Final = Assumptions(traffic=1.0)
NOTHING: Final = "\u2014"


def add_parser(plan_sub: Any, as_json: argparse.ArgumentParser) -> None:
    check = plan_sub.add_parser(
        "check", parents=[as_json],
        help="how long each statistical check needs at a given traffic",
        description="For every statistical gate, guardrail and objective of every stage: "
                    "the trials a verdict needs for the plan's margins and limits, and the "
                    "time at the given traffic. Gates and objectives are timed for a "
                    "healthy stage to pass, guardrails for a regression to be proven.",
    )
    check.add_argument("file")
    check.add_argument("--traffic", type=_positive, required=True, metavar="RATE",
                       help="queries per second over the whole service")
    check.add_argument("--error-rate", type=_rate, metavar="RATE", default=_DEFAULTS.error_rate,
                       help="the error rate the error checks see (default %(default)g)")
    check.add_argument("--slow-share", type=_rate, metavar="RATE", default=_DEFAULTS.slow_share,
                       help="the share of answers slower than a slow-answer check's "
                            "boundary (default %(default)g)")
    check.add_argument("--headroom", type=_rate, metavar="RATE", default=_DEFAULTS.headroom,
                       help="how far from its limit a limit test's true rate is assumed, "
                            "as a share of the limit (default %(default)g); a guardrail's "
                            "regression is the margin times 1 + headroom")
    check.add_argument("--l1-hit-rate", type=_rate, metavar="RATE", default=_DEFAULTS.l1_hit_rate,
                       help="the share of L1-cohort queries served (and audited) from L1 "
                            "(default %(default)g)")


def _number(text: str, accept: Callable[[float], bool], expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def _positive(text: str) -> float:
    return _number(text, lambda v: v > 0, "a positive number of queries per second")


def _rate(text: str) -> float:
    return _number(text, lambda v: 0 < v < 1, "a rate between 0 and 1 (exclusive)")


def cmd_plan_check(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    try:
        plan = load_plan(args.file)
    except PlanError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    assumptions = Assumptions(traffic=args.traffic, error_rate=args.error_rate,
                              slow_share=args.slow_share, headroom=args.headroom,
                              l1_hit_rate=args.l1_hit_rate)
    result = check_plan(plan, assumptions)
    if args.json:
        print_json(out, _as_json(args.file, result))
    else:
        render_plan_check(out, args.file, result)
    return EXIT_OK


def _as_json(file: str, result: PlanCheck) -> dict[str, Any]:
    rows = [asdict(row) | {"within_bake": row.within_bake} for row in result.rows]
    return {"file": file, "assumptions": asdict(result.assumptions), "rows": rows,
            "warnings": list(result.warnings)}


# --- rendering -----------------------------------------------------------------------------------
def render_plan_check(out: Console, file: str, result: PlanCheck) -> None:
    a = result.assumptions
    out.print(Text(f"{file}: statistical checks at {a.traffic:g} queries/s", style="bold"))
    for stage in dict.fromkeys(row.stage for row in result.rows):
        rows = [row for row in result.rows if row.stage == stage]
        bake = human_duration_seconds(rows[0].bake_seconds)
        table = Table(title=Text(f"{stage} (bake {bake})", style="bold cyan"),
                      title_justify="left", show_edge=False, pad_edge=False)
        for column in ("check", "role", "awaits", "assumed rates", "trials/s", "trials",
                       "time", "in bake"):
            table.add_column(column, justify="right" if column in {"trials/s", "trials"}
                             else "left", overflow="fold")
        for row in rows:
            table.add_row(*_cells(row))
        out.print(table)
    out.print(Text(
        f"Gates and objectives are timed for a healthy stage to pass, guardrails for a "
        f"regression to be proven. Assumed: error rate {_percent(a.error_rate)}, slow answers "
        f"{_percent(a.slow_share)}, L1 hit rate {_percent(a.l1_hit_rate)} (every L1 hit "
        f"audited); a limit test's true rate {_percent(a.headroom)} of its limit inside it "
        f"(healthy) or beyond it (regression); a regression against a margin is the margin "
        f"x {1 + a.headroom:g}. Trials of a control comparison count both cohorts.",
        style="dim"))
    if not result.warnings:
        out.print(Text("Every enforced check decides within its stage's bake.", style="green"))
    for warning in result.warnings:
        # soft_wrap: one warning, one line, for whoever greps it.
        out.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)


def _cells(row: CheckNeed) -> tuple[Text, ...]:
    role = str(row.kind) + (" (dry run)" if row.dry_run else "")
    waits = "pass" if row.awaited is Awaited.PASS else "breach"
    trials = NOTHING if row.samples is None else format_count(row.samples)
    if not row.timed:
        time, fits = Text(row.note, style="dim"), Text(NOTHING, style="dim")
    elif row.seconds is None:
        time = Text(f"never: {row.note or 'more than 10^10 trials'}", style="red")
        fits = Text("no", style="red")
    else:
        since = " (with earlier stages)" if row.carried else ""
        time = Text(human_duration_seconds(row.seconds) + since)
        fits = Text("yes", style="green") if row.within_bake else Text("no", style="yellow")
    return (Text(row.check), Text(role), Text(waits), Text(_assumed(row)),
            Text(f"{row.trials_per_second:.3g}"), Text(trials), time, fits)


def _assumed(row: CheckNeed) -> str:
    if row.rate is None or row.against is None:
        return NOTHING
    if row.comparison == "limit":
        return f"{_percent(row.rate)} vs limit {_percent(row.against)}"
    other = "control" if row.comparison == "control" else "baseline"
    margin = f" (margin {_percent(row.margin or 0.0, 'pp')})"
    if row.rate == row.against:
        return f"{_percent(row.rate)} = {other}{margin}"
    return f"{_percent(row.rate)} vs {other} {_percent(row.against)}{margin}"


def _percent(value: float, unit: str = "%") -> str:
    return f"{value * 100:.3g} {unit}"
