"""Replay a demo run: `scripts/replay-demo [--run DIR]` (the last run by default).

A demo run keeps its Prometheus TSDB, its plan and its time range in its folder
(.run/demo/runs/<id>/: prometheus/tsdb, plan.yaml, run.json). This starts a private
Prometheus on a copy of that TSDB (devstack/services/prometheus.py, a free loopback port),
runs `rollout replay` over the run with the run's plan and the controller's interval as the
step, shows its decisions and evidence, then compares them with what the live controller
did, as the same recording shows it (`rollout_stage_index`, which Prometheus scraped from the
controller), and stops that Prometheus by its pid.

Replay starts at the controller's first evaluation as recorded
(`rollout_last_evaluation_timestamp_seconds`), so its steps fall on the controller's cycles.

Without a run record, give what it would say: `--tsdb DIR --from T1 --to T2 --plan FILE
[--step SECONDS]`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from devstack import promql
from devstack.demo.profiles import RUNS_DIR
from devstack.environment import child_env
from devstack.errors import ServiceError
from devstack.paths import REPO_ROOT
from devstack.services import prometheus as prom_svc
from rollout.cli.replay import moment_text, parse_moment, render_replay
from rollout.core.plan import promql_duration
from rollout.core.plan_loader import PlanError, load_plan
from rollout.replay import ReplayDecision, ReplayReport

RUN_RECORD = "run.json"
REPLAY_COMMAND = "scripts/replay-demo"
# Keep every block of the copy: retention is counted back from the newest sample.
RETENTION = "3650d"


class ReplayDemoError(RuntimeError):
    """What is missing or wrong, in one line for people."""


@dataclass(frozen=True)
class RecordedRun:
    """What a replay needs from a run: where its data is, its plan, when it ran, how often
    the controller evaluated and Prometheus scraped."""

    tsdb: Path
    plan: Path
    started: datetime
    ended: datetime
    interval_seconds: float
    scrape_seconds: float = 1.0
    where: str = ""  # the run's folder, or "the command line"


# --- finding the run ---------------------------------------------------------------------------


def latest_run_dir(runs: Path = RUNS_DIR) -> Path:
    """The newest run folder that has a run record (folder names sort by time)."""
    found = sorted(p.parent for p in runs.glob(f"*/{RUN_RECORD}")) if runs.is_dir() else []
    if not found:
        raise ReplayDemoError(f"no recorded demo run in {runs} (run scripts/demo first; a run "
                              f"keeps its data and writes {RUN_RECORD} when it ends)")
    return found[-1]


def load_run(run_dir: Path) -> RecordedRun:
    """The run record of `run_dir`; ReplayDemoError naming what is missing."""
    path = run_dir / RUN_RECORD
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise ReplayDemoError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReplayDemoError(f"{path} is not JSON: {exc}") from None
    missing = [k for k in ("tsdb", "plan", "started", "ended", "evaluation_interval_seconds")
               if k not in data]
    if missing:
        raise ReplayDemoError(f"{path} lacks {', '.join(missing)}")
    try:
        return RecordedRun(
            tsdb=Path(data["tsdb"]), plan=Path(data["plan"]),
            started=_time(data["started"]), ended=_time(data["ended"]),
            interval_seconds=float(data["evaluation_interval_seconds"]),
            scrape_seconds=float(data.get("scrape_interval_seconds", 1.0)),
            where=str(run_dir),
        )
    except (TypeError, ValueError) as exc:
        raise ReplayDemoError(f"{path}: {exc}") from None


def _time(text: object) -> datetime:
    return parse_moment(str(text), datetime.now(UTC))


def check_run(run: RecordedRun) -> None:
    """Everything the replay needs is there: the TSDB, the plan, a time range."""
    if not run.tsdb.is_dir():
        raise ReplayDemoError(f"no Prometheus data at {run.tsdb} (the run's Prometheus did "
                              "not keep its TSDB)")
    if not run.plan.is_file():
        raise ReplayDemoError(f"no plan at {run.plan}")
    if run.ended <= run.started:
        raise ReplayDemoError(f"the run ends ({run.ended.isoformat()}) before it starts "
                              f"({run.started.isoformat()})")
    if not (math.isfinite(run.interval_seconds) and run.interval_seconds > 0):
        raise ReplayDemoError(f"the controller's interval must be positive, got "
                              f"{run.interval_seconds}")


# --- what the recording says ---------------------------------------------------------------------


def _at(url: str, expr: str, moment: datetime) -> float | None:
    data = promql.api(url, "query", {"query": expr, "time": f"{moment.timestamp():.3f}"})
    result = data.get("result") or []
    if not result:
        return None
    number = float(result[0]["value"][1])
    return number if math.isfinite(number) else None


def first_evaluation(url: str, run: RecordedRun) -> datetime | None:
    """The controller's first evaluation in the run, as Prometheus scraped it."""
    span = math.ceil((run.ended - run.started).total_seconds() + 2 * run.scrape_seconds)
    resolution = promql_duration(timedelta(seconds=max(run.scrape_seconds / 2, 0.1)))
    expr = (f"min(min_over_time((rollout_last_evaluation_timestamp_seconds > 0)"
            f"[{span}s:{resolution}]))")
    value = _at(url, expr, run.ended)
    if value is None:
        return None
    first = datetime.fromtimestamp(value, UTC)
    return first if run.started <= first <= run.ended else None


COMPLETE = "complete"


@dataclass(frozen=True)
class Move:
    at: datetime
    stage: str  # the stage entered, or "complete"


def live_moves(url: str, run: RecordedRun, start: datetime, stages: Sequence[str]) -> list[Move]:
    """The stages the live controller entered after `start`, and its completion, when
    Prometheus first saw each (`rollout_stage_index`, `rollout_transitions_total{kind=
    "complete"}`, at scrape resolution)."""
    span = (start.timestamp(), run.ended.timestamp(), run.scrape_seconds)
    moves: list[Move] = []
    previous: int | None = None
    for ts, value in promql.range_points(url, "max(rollout_stage_index)", *span):
        index = round(value)
        if previous is not None and index != previous and 0 <= index < len(stages):
            moves.append(Move(datetime.fromtimestamp(ts, UTC), stages[index]))
        previous = index
    completed = promql.range_points(
        url, f'sum(rollout_transitions_total{{kind="{COMPLETE}"}}) > 0', *span)
    if completed:
        moves.append(Move(datetime.fromtimestamp(completed[0][0], UTC), COMPLETE))
    return sorted(moves, key=lambda move: move.at)


def replayed_moves(report: ReplayReport) -> list[Move]:
    return [Move(e.at, COMPLETE if e.action == COMPLETE else e.to_stage)
            for e in report.entries
            if isinstance(e, ReplayDecision) and (e.moved or e.action == COMPLETE)]


def compare(live: Sequence[Move], replayed: Sequence[Move]) -> tuple[bool, float | None]:
    """(same stages in the same order, the largest time difference in seconds)."""
    same = [m.stage for m in live] == [m.stage for m in replayed]
    if not same or not live:
        return same, None
    return True, max(abs((a.at - b.at).total_seconds()) for a, b in zip(live, replayed,
                                                                        strict=True))


# --- the replay ----------------------------------------------------------------------------------


def replay_argv(url: str, run: RecordedRun, start: datetime,
                extra: Sequence[str] = ()) -> list[str]:
    return ["replay", "--prometheus", url, "--from", start.isoformat(),
            "--to", run.ended.isoformat(), "--plan", str(run.plan),
            "--step", f"{run.interval_seconds:g}s", *extra]


def run_replay(url: str, run: RecordedRun, start: datetime, every_step: bool) -> ReplayReport:
    """`rollout replay --json` in a child process (its own settings: a scrubbed environment,
    so no ROLLOUT_* variable of this shell changes the plan)."""
    argv = replay_argv(url, run, start, ["--json", *(["--every-step"] if every_step else [])])
    done = subprocess.run([sys.executable, "-m", "rollout", *argv], capture_output=True,
                          text=True, cwd=run.plan.parent, env=child_env(), check=False)
    if done.returncode != 0:
        raise ReplayDemoError(f"rollout replay failed ({done.returncode}): "
                              f"{done.stderr.strip() or done.stdout.strip()}")
    return ReplayReport.model_validate_json(done.stdout)


def replay_run(run: RecordedRun, console: Console, *, as_json: bool = False,
               every_step: bool = False) -> bool:
    """Start a Prometheus on a copy of the run's TSDB, replay, compare, stop it. True when
    the replay took the live controller's decisions."""
    check_run(run)
    try:
        stages = load_plan(run.plan).stage_names
    except PlanError as exc:
        raise ReplayDemoError(str(exc)) from None
    prometheus = prom_svc.start_private_prometheus(
        name="prometheus-replay", tsdb_from=run.tsdb, retention=RETENTION,
        scrape_interval=max(run.scrape_seconds, 1.0))
    try:
        first = first_evaluation(prometheus.url, run)
        start = first or run.started
        report = run_replay(prometheus.url, run, start, every_step)
        live = live_moves(prometheus.url, run, start, stages)
    finally:
        prom_svc.stop(prometheus)  # by its pid; deletes the copy, never the recording
    replayed = replayed_moves(report)
    same, gap = compare(live, replayed)
    if as_json:
        shown = report.model_dump(mode="json") | {
            "live_moves": [{"at": m.at.isoformat(), "stage": m.stage} for m in live],
            "matches_live": same, "largest_gap_seconds": gap}
        console.file.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
        return same
    console.print(Text(f"Recorded run {run.where}: the controller's first evaluation at "
                       f"{moment_text(start, run.interval_seconds)}"
                       + ("" if first else " (not recorded: the run's start)"), style="dim"),
                  soft_wrap=True)
    console.print(Text("The same command on a Prometheus serving that TSDB: rollout "
                       + " ".join(replay_argv("URL", run, start)), style="dim"), soft_wrap=True)
    render_replay(console, report)
    _render_comparison(console, live, replayed, same, gap, run.interval_seconds)
    return same


def _render_comparison(console: Console, live: Sequence[Move], replayed: Sequence[Move],
                       same: bool, gap: float | None, interval: float) -> None:
    def path(moves: Sequence[Move]) -> str:
        return " \u2192 ".join(f"{m.stage} ({moment_text(m.at, interval)})" for m in moves) \
            or "no stage change"

    console.print(Text("Live controller (as recorded: its stage index and completion): ",
                       style="bold") + Text(path(live)), soft_wrap=True)
    if same:
        within = f", each within {gap:.1f} s of the recorded one" if gap is not None else ""
        console.print(Text(f"The replay took the live controller's decisions: the same "
                           f"{len(live)} decisions (stage changes, completion) in the same "
                           f"order{within} (the recording sees a change at the next scrape).",
                           style="bold green"), soft_wrap=True)
    else:
        console.print(Text("The replay differs from the live controller: " + path(replayed),
                           style="bold red"), soft_wrap=True)


def replay_hint(run_dir: Path) -> str | None:
    """The line the demo prints at its end, when the run kept what a replay needs."""
    if not (run_dir / RUN_RECORD).is_file():
        return None
    try:
        shown = run_dir.relative_to(REPO_ROOT)
    except ValueError:
        shown = run_dir
    return f"replay this run: {REPLAY_COMMAND} --run {shown}"


# --- the command ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=REPLAY_COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run's folder (default: the last run in "
                        f"{RUNS_DIR.relative_to(REPO_ROOT)})")
    parser.add_argument("--tsdb", type=Path, help="a Prometheus TSDB directory (no run record)")
    parser.add_argument("--from", dest="start", help="with --tsdb: the first step (ISO 8601)")
    parser.add_argument("--to", dest="end", help="with --tsdb: the last step")
    parser.add_argument("--plan", type=Path, help="with --tsdb: the plan the controller ran")
    parser.add_argument("--step", type=float, default=2.0,
                        help="with --tsdb: the controller's interval in seconds (default 2)")
    parser.add_argument("--json", action="store_true", help="the replay report as JSON")
    parser.add_argument("--every-step", action="store_true", help="every step in full")
    return parser.parse_args(argv)


def run_from_args(args: argparse.Namespace) -> RecordedRun:
    if args.tsdb is None:
        return load_run(args.run or latest_run_dir())
    missing = [name for name in ("start", "end", "plan") if getattr(args, name) is None]
    if missing:
        options = ", ".join("--" + {"start": "from", "end": "to"}.get(n, n) for n in missing)
        raise ReplayDemoError(f"--tsdb also needs {options}")
    try:
        start, end = _time(args.start), _time(args.end)
    except ValueError as exc:
        raise ReplayDemoError(f"--from/--to: {exc}") from None
    return RecordedRun(tsdb=args.tsdb, plan=args.plan, started=start, ended=end,
                       interval_seconds=args.step, where="the command line")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        run = run_from_args(args)
        same = replay_run(run, console, as_json=args.json, every_step=args.every_step)
    except (ReplayDemoError, ServiceError) as exc:
        err.print(Text(f"replay-demo: {exc}", style="red"), soft_wrap=True)
        return 2 if isinstance(exc, ReplayDemoError) else 1
    except KeyboardInterrupt:
        return 130
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
