"""The command line: simulate, print the table, optionally write the results file."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bench.decision_bench
from bench.decision_bench.batch import (
    REGRESSION_ERROR,
    SCENARIO_NAMES,
    Config,
    default_processes,
    load_plans,
    run_all,
)
from bench.decision_bench.report import REPO, RESULTS, lines, summarise, table, write_results
from rollout.core.plan import human_duration
from rollout.core.plan_schema import parse_duration
from rollout.plans import default_plan_path
from rollout.simulate.traffic import Traffic

OLD_PLAN = Path(__file__).with_name("old_default_plan.yaml")


def _duration(text: str) -> timedelta:
    return parse_duration(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decision_bench",
                                     description=bench.decision_bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs per rate and scenario")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 30.0],
                        help="queries per second (default: 0.5 30)")
    parser.add_argument("--cycle", type=_duration, default=timedelta(minutes=10),
                        help="simulated time between evaluation cycles (default 10m)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIO_NAMES,
                        default=list(SCENARIO_NAMES))
    parser.add_argument("--seed", type=int, default=20261)
    parser.add_argument("--processes", type=int, default=default_processes())
    parser.add_argument("--plan", type=Path, default=default_plan_path(),
                        help="the plan judged (default: the bundled default plan)")
    parser.add_argument("--old-plan", type=Path, default=OLD_PLAN,
                        help="the threshold plan it is compared with")
    parser.add_argument("--healthy-cap", type=_duration, default=timedelta(days=60))
    parser.add_argument("--regression-cap", type=_duration, default=timedelta(days=20))
    parser.add_argument("--exact", action="store_true",
                        help="hand every cycle to decide (no skipping; slow, for checking)")
    parser.add_argument("--json", nargs="?", const=RESULTS, type=Path, default=None,
                        help=f"also write the results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)

    config = Config(
        plans=(("new", args.plan), ("old", args.old_plan)), runs=args.runs,
        rates=tuple(args.rates), cycle=args.cycle, seed=args.seed,
        healthy_cap=args.healthy_cap, regression_cap=args.regression_cap,
        regression_stage="l1-10", exact=args.exact, scenarios=tuple(args.scenarios),
    )  # fmt: skip
    plans = load_plans(config)
    horizon = sum((s.bake for s in plans["new"].stages), timedelta()) / timedelta(days=1)
    started = time.monotonic()
    print(f"decision benchmark: {args.runs} runs x {len(config.rates)} rates x "
          f"{len(config.scenarios)} scenarios x "
          f"2 plans, one cycle every {human_duration(args.cycle)}, {args.processes} processes",
          flush=True)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {done}/{total} batches, {time.monotonic() - started:.0f} s", flush=True)

    rows = run_all(config, args.processes, progress)
    summaries = summarise(rows, horizon)
    elapsed = time.monotonic() - started
    print()
    print(table(lines(summaries, horizon)))
    print(f"\n{len(rows)} simulated rollouts in {elapsed:.0f} s; shares with their 95 % "
          "(Wilson) interval; the same traffic draws for both plans")
    if args.json is not None:
        data = _results(args, config, summaries, elapsed)
        path = write_results(data, args.json)
        print(f"results written to {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


def _results(args: argparse.Namespace, config: Config, summaries: list[dict[str, Any]],
             elapsed: float) -> dict[str, Any]:
    return {
        "benchmark": "decision_bench",
        "command": " ".join([".venv/bin/python -m bench.decision_bench", *sys.argv[1:]]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_seconds": elapsed,
        "cpus": os.cpu_count(),
        "processes": args.processes,
        "commit": _commit(),
        "plans": {key: str(path) for key, path in config.plans},
        "runs": config.runs, "rates": list(config.rates), "seed": config.seed,
        "cycle_seconds": config.cycle.total_seconds(),
        "healthy_cap_days": config.healthy_cap / timedelta(days=1),
        "regression_cap_days": config.regression_cap / timedelta(days=1),
        "regression_stage": config.regression_stage,
        "scenarios": list(config.scenarios),
        "exact": config.exact,
        "traffic": {k: getattr(Traffic(0.0), k) for k in Traffic.__dataclass_fields__
                    if k != "rate"} | {"regression_error": REGRESSION_ERROR},
        "summaries": summaries,
    }


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()
