"""`rollout simulate FILE --traffic RATE --runs N --scenario NAME`: Monte Carlo of a whole
plan through the same `decide()` and check evaluation as the controller (rollout.simulate),
printed as figures, optionally against another plan on the same draws, as JSON or a chart.

This module parses and checks the options (a bad value is one line naming the option, exit
status 2), shows a progress bar on a terminal, and renders; the simulation is pure.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from rollout.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CliError
from rollout.cli.render import print_json
from rollout.core.plan import Plan, human_duration
from rollout.core.plan_loader import PlanError, load_plan
from rollout.core.plan_schema import parse_duration
from rollout.settings import RolloutSettings
from rollout.simulate import chart
from rollout.simulate.batch import Batch, bound, default_processes, run_batch, unscaled
from rollout.simulate.run import Outcome, RunSpec
from rollout.simulate.scenarios import HARMFUL, NAMES, Scenario, ScenarioError, scenario_spec
from rollout.simulate.summary import Quantiles, Share, Summary, ratio, summarise
from rollout.simulate.traffic import Traffic

DEFAULT_CYCLE: Final = "10m"
NOTHING: Final = "\u2014"
DAY: Final = 86400.0
HOUR: Final = 3600.0


def add_parser(sub: Any, as_json: argparse.ArgumentParser) -> None:
    # Values are read as text and checked by the command, so that a bad one is a single
    # line naming its option (argparse would add the usage).
    parser = sub.add_parser(
        "simulate", parents=[as_json],
        help="Monte Carlo of a plan on synthetic traffic: rollbacks, time to detect and "
             "to complete",
        description="Simulate many whole rollouts of a plan through the controller's own "
                    "decide() and checks, on synthetic traffic (Poisson arrivals per cohort, "
                    "binomial errors, slow answers and stale audits, cost), under a "
                    f"scenario: {', '.join(NAMES)}. No service is needed.",
    )
    parser.add_argument("file", help="the plan (YAML)")
    parser.add_argument("--traffic", required=True, metavar="RATE",
                        help="queries per second over the whole service")
    parser.add_argument("--runs", default="1000", metavar="N", help="runs (default 1000)")
    parser.add_argument("--scenario", default="healthy", metavar="NAME",
                        help=f"one of {', '.join(NAMES)} (default healthy)")
    parser.add_argument("--from-stage", metavar="STAGE",
                        help="the stage the scenario starts in (default: l1-10 for "
                             "l1-error, latency and outage; l1-50 for stale; dark-launch "
                             "for low-traffic)")
    parser.add_argument("--size", metavar="X",
                        help="l1-error: the L1 cohort's error rate (default 0.03, healthy "
                             "0.01); stale: the share of stale L1 hits (0.01); latency: "
                             "the share of answers slower than 2.04 s (0.10, healthy 0.05); "
                             "low-traffic: the fraction of RATE left (0.1)")
    parser.add_argument("--after", metavar="DURATION",
                        help="outage: how long after the stage's flags are confirmed the "
                             "metrics go (default 12h)")
    parser.add_argument("--duration", metavar="DURATION",
                        help="outage: how long Prometheus stays unreadable (default 6h)")
    parser.add_argument("--flag-delay", default="0s", metavar="DURATION",
                        help="how long the service takes to apply new flags, on top of the "
                             "cycle the controller needs to see them (default 0s)")
    parser.add_argument("--start-at", metavar="STAGE",
                        help="after the first stage records the baseline, promote straight "
                             "to STAGE (as `rollout promote` would)")
    parser.add_argument("--seed", default="1", metavar="S", help="random seed (default 1)")
    parser.add_argument("--cycle", default=DEFAULT_CYCLE, metavar="DURATION",
                        help="simulated time between evaluation cycles (default 10m; the "
                             "controller's is the plan's evaluation_interval)")
    parser.add_argument("--cap", metavar="DURATION",
                        help="the simulated time a run may take (default: twice the sum of "
                             "the bakes)")
    parser.add_argument("--compare", metavar="OTHER_PLAN",
                        help="also run this plan on the same random draws, side by side")
    parser.add_argument("--chart", metavar="FILE",
                        help="write a PNG of the time-to-complete and time-to-detect "
                             "distributions (needs matplotlib: the [chart] extra)")
    parser.add_argument("--processes", default=str(default_processes()), metavar="N",
                        help="worker processes (default %(default)s)")


# --- options ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    traffic: float
    runs: int
    seed: int
    processes: int
    cycle: timedelta
    cap: timedelta | None
    flag_delay: timedelta
    chart: Path | None


def _bad(option: str, message: str) -> CliError:
    return CliError(f"{option}: {message}", EXIT_BAD_INPUT)


def _number(option: str, text: str | None, accept: Callable[[float], bool],
            expected: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _bad(option, f"must be {expected}, got {text!r}") from None
    if not (math.isfinite(value) and accept(value)):
        raise _bad(option, f"must be {expected}, got {text!r}")
    return value


def _whole(option: str, text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad(option, f"must be {expected}, got {text!r}") from None
    if value < low:
        raise _bad(option, f"must be {expected}, got {text!r}")
    return value


def _duration(option: str, text: str | None, minimum: timedelta,
              expected: str) -> timedelta | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError:
        raise _bad(option, f"must be {expected} (e.g. 10m, 6h, 2d), got {text!r}") from None
    if value < minimum:
        raise _bad(option, f"must be {expected}, got {text!r}")
    return value


def _options(args: argparse.Namespace) -> Options:
    traffic = _number("--traffic", args.traffic, lambda v: v > 0,
                      "a positive number of queries per second")
    assert traffic is not None
    cycle = _duration("--cycle", args.cycle, timedelta(seconds=1), "at least 1s")
    assert cycle is not None
    delay = _duration("--flag-delay", args.flag_delay, timedelta(), "a duration, 0s or more")
    assert delay is not None
    cap = _duration("--cap", args.cap, cycle, f"at least one cycle ({args.cycle})")
    seed = _whole("--seed", args.seed, 0, "a whole number, 0 or more")
    return Options(
        traffic=traffic,
        runs=_whole("--runs", args.runs, 1, "a whole number, at least 1"),
        seed=seed,
        processes=_whole("--processes", args.processes, 1, "a whole number, at least 1"),
        cycle=cycle, cap=cap, flag_delay=delay, chart=_chart_path(args.chart),
    )  # fmt: skip


def _chart_path(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if not path.parent.is_dir():
        raise _bad("--chart", f"directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise _bad("--chart", f"{text!r} is a directory, not a file name")
    return path


def _load(option: str, file: str) -> Plan:
    if not Path(file).is_file():
        raise _bad(option, f"no plan file {file!r}")
    try:
        return unscaled(load_plan(file))
    except PlanError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise _bad(option, f"cannot read {file!r}: {exc.strerror or exc}") from None


def _batch(args: argparse.Namespace, options: Options) -> tuple[Batch, list[Scenario]]:
    plans = [(args.file, _load("FILE", args.file))]
    if args.compare is not None:
        plans.append((args.compare, _load("--compare", args.compare)))
        names = [Path(file).name for file, _ in plans]
        if names[0] != names[1]:  # short column titles, unless that makes them the same
            plans = [(name, plan) for name, (_, plan) in zip(names, plans, strict=True)]
    try:
        spec = scenario_spec(
            args.scenario, from_stage=args.from_stage,
            size=_number("--size", args.size, lambda v: True, "a number"),
            after=_duration("--after", args.after, timedelta(), "a duration, 0s or more"),
            duration=_duration("--duration", args.duration, timedelta(seconds=1),
                               "a duration of at least 1s"),
        )  # fmt: skip
    except ScenarioError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    for label, plan in plans:
        if args.start_at is not None and plan.index_of(args.start_at) in {None, 0}:
            raise _bad("--start-at", f"{label} has no stage {args.start_at!r} after its first "
                                     f"(stages: {', '.join(plan.stage_names)})")
    bakes = max(sum((p.bake_of(i) for i in range(len(p.stages))), timedelta())
                for _, p in plans)
    run = RunSpec(cycle=options.cycle, cap=options.cap or 2 * bakes,
                  flag_delay=options.flag_delay, start_at=args.start_at)
    batch = Batch(plans=tuple(plans), scenario=spec, traffic=Traffic(options.traffic),
                  spec=run, runs=options.runs, key=(options.seed,))
    try:
        scenarios = bound(batch)
    except ScenarioError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    return batch, scenarios


# --- the command -----------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    options = _options(args)
    batch, scenarios = _batch(args, options)
    if options.chart is not None and not chart.available():
        raise CliError(chart.MISSING, EXIT_FAILED)
    started = time.monotonic()
    results = _simulate(batch, options.processes)
    elapsed = time.monotonic() - started
    summaries = [
        summarise(label, outcomes, plan, scenario, batch.spec)
        for (label, plan), outcomes, scenario in zip(batch.plans, results, scenarios,
                                                      strict=True)
    ]
    if options.chart is not None:
        _write_chart(options.chart, batch, results, summaries)
    if args.json:
        print_json(out, _as_json(batch, summaries, elapsed, options))
    else:
        render(out, batch, summaries, elapsed)
        if options.chart is not None:
            out.print(Text(f"chart written to {options.chart}"))
    return EXIT_OK


def _simulate(batch: Batch, processes: int) -> list[list[Outcome]]:
    """The batch, with a progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return run_batch(batch, processes)
    err = Console(stderr=True, highlight=False, markup=False, emoji=False)
    with Progress(Text("simulating").markup, BarColumn(), MofNCompleteColumn(),
                  Text("runs").markup, TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("runs", total=batch.runs)
        return run_batch(batch, processes,
                         lambda done, total: progress.update(task, completed=done))


def _write_chart(path: Path, batch: Batch, results: Sequence[Sequence[Outcome]],
                 summaries: Sequence[Summary]) -> None:
    series = [chart.Series(summary.label, outcomes, summary.bakes_seconds)
              for summary, outcomes in zip(summaries, results, strict=True)]
    title = (f"{batch.runs} simulated rollouts at {batch.traffic.rate:g} queries/s: "
             f"{batch.scenario.describe()}")
    try:
        path.write_bytes(chart.render_png(series, title, harmful=batch.scenario.name in HARMFUL))
    except OSError as exc:
        raise CliError(f"--chart: cannot write {str(path)!r}: {exc.strerror or exc}",
                       EXIT_FAILED) from None


# --- JSON ------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, Share):
        return {"count": value.count, "runs": value.runs, "share": value.share,
                "ci95": [value.low, value.high]}
    if isinstance(value, Quantiles):
        return {"count": value.count, "median_seconds": value.median,
                "p95_seconds": value.p95}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _summary_json(summary: Summary) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(summary, f.name)) for f in fields(summary)}


def _as_json(batch: Batch, summaries: Sequence[Summary], elapsed: float,
             options: Options) -> dict[str, Any]:
    data: dict[str, Any] = {
        "plans": [label for label, _ in batch.plans],
        "scenario": {k: (v.total_seconds() if isinstance(v, timedelta) else v)
                     for k, v in asdict(batch.scenario).items()}
        | {"description": batch.scenario.describe()},
        "traffic": asdict(batch.traffic),
        "runs": batch.runs, "seed": options.seed,
        "cycle_seconds": batch.spec.cycle.total_seconds(),
        "cap_seconds": batch.spec.cap.total_seconds(),
        "flag_delay_seconds": batch.spec.flag_delay.total_seconds(),
        "start_at": batch.spec.start_at,
        "elapsed_seconds": elapsed,
        "summaries": [_summary_json(s) for s in summaries],
    }
    if len(summaries) == 2:
        data["ratios"] = {"of": summaries[1].label, "to": summaries[0].label,
                          **{line.measure: line.ratio for line in _lines(summaries)
                             if line.ratio is not None}}
    return data


# --- text ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    measure: str
    cells: tuple[str, ...]
    ratio: float | None = None


def _pct(value: Share | None) -> str:
    if value is None:
        return NOTHING
    return (f"{value.share * 100:.1f} % ({value.count}) "
            f"[{value.low * 100:.1f}-{value.high * 100:.1f}]")


def _time(value: Quantiles, unit: float, suffix: str) -> str:
    if value.median is None or value.p95 is None:
        return NOTHING
    return f"{value.median / unit:.1f} / {value.p95 / unit:.1f} {suffix}"


def _share_ratio(summaries: Sequence[Summary], get: Callable[[Summary], Share | None]
                 ) -> float | None:
    if len(summaries) != 2:
        return None
    this, other = get(summaries[0]), get(summaries[1])
    return ratio(None if other is None else other.share, None if this is None else this.share)


def _median_ratio(summaries: Sequence[Summary], get: Callable[[Summary], Quantiles]
                  ) -> float | None:
    if len(summaries) != 2:
        return None
    return ratio(get(summaries[1]).median, get(summaries[0]).median)


def _lines(summaries: Sequence[Summary]) -> list[Line]:
    def shares(measure: str, get: Callable[[Summary], Share | None]) -> Line:
        return Line(measure, tuple(_pct(get(s)) for s in summaries),
                    _share_ratio(summaries, get))

    first = summaries[0]
    lines = [shares("rolled back", lambda s: s.rolled_back)]
    if first.caught_in_stage is not None:
        lines += [
            shares("  false: before the harm began", lambda s: s.false_rollback),
            shares("  true: the harm caught", lambda s: s.true_rollback),
            shares("caught before the next stage", lambda s: s.caught_in_stage),
            shares("missed: completed with the harm", lambda s: s.missed),
        ]
    if first.never_reached is not None:
        lines.append(shares("never reached the scenario's stage", lambda s: s.never_reached))
    detect = "time to detect (harm -> rollback)" if first.caught_in_stage is not None \
        else "time to the rollback"
    lines += [
        Line(f"{detect}, median / p95", tuple(_time(s.time_to_detect, HOUR, "h")
                                             for s in summaries),
             _median_ratio(summaries, lambda s: s.time_to_detect)),
        shares("completed", lambda s: s.completed),
        Line("time to complete, median / p95",
             tuple(_time(s.time_to_complete, DAY, "d") for s in summaries),
             _median_ratio(summaries, lambda s: s.time_to_complete)),
        Line("  the sum of the bakes", tuple(f"{s.bakes_seconds / DAY:.1f} d"
                                             for s in summaries)),
        shares("held past a stage's bake", lambda s: s.past_bake),
        Line("  longest time past a bake, median / p95",
             tuple(_time(s.time_past_bake, DAY, "d") for s in summaries)),
        shares("still going at the cap", lambda s: s.held),
    ]
    return lines


def _counts(values: dict[str, int], runs: int) -> str:
    if not values:
        return NOTHING
    return ", ".join(f"{key} {count / runs * 100:.1f} %" for key, count in values.items())


def render(out: Console, batch: Batch, summaries: Sequence[Summary], elapsed: float) -> None:
    spec = batch.spec
    out.print(Text(f"{batch.runs} simulated rollouts at {batch.traffic.rate:g} queries/s: "
                   f"{batch.scenario.describe()}", style="bold"))
    delay = "" if not spec.flag_delay else f" + {human_duration(spec.flag_delay)}"
    start = "" if spec.start_at is None else \
        f"; promoted to {spec.start_at} once the baseline is recorded"
    out.print(Text(
        f"one cycle every {human_duration(spec.cycle)}, a run stops at "
        f"{human_duration(spec.cap)}; flags confirmed one cycle{delay} after each "
        f"transition{start}; seed {batch.key[0]}; {elapsed:.1f} s", style="dim"))
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("measure")
    for summary in summaries:
        table.add_column(summary.label, overflow="fold")
    compare = len(summaries) == 2
    if compare:
        table.add_column("ratio", justify="right")
    for line in _lines(summaries):
        cells = [Text(line.measure), *(Text(c) for c in line.cells)]
        if compare:
            cells.append(Text(NOTHING if line.ratio is None else f"{line.ratio:.2f}x"))
        table.add_row(*cells)
    # Piped into a file, the table keeps one line per measure.
    wide = out if out.is_terminal else Console(file=out.file, width=160, highlight=False,
                                               markup=False, emoji=False)
    wide.print(table)
    for summary in summaries:
        name = f"{summary.label}: " if compare else ""
        details = [
            ("rolled back from -> to", _counts(summary.rollbacks, summary.runs)),
            ("why (guardrails breached)", _counts(summary.breached, summary.runs)),
            ("held past the bake in", _counts(summary.past_bake_at, summary.runs)),
            ("still going at the cap in", _counts(summary.held_at, summary.runs)),
        ]
        for label, text in details:
            if text != NOTHING:
                out.print(Text(f"{name}{label}: {text}"), soft_wrap=True)
        for example in summary.examples[:1]:
            out.print(Text(f"{name}e.g. {example}", style="dim"), soft_wrap=True)
    note = "; ratios are the second plan's over the first's" if compare else ""
    out.print(Text("Shares with their 95 % (Wilson) interval; every plan on the same random "
                   f"draws{note}.", style="dim"))
