"""The main job on one machine: the whole staged rollout, driven by the real controller.

`scripts/demo` (bootstrap, then `python -m scripts.demo`) starts, on loopback ports:

* two Redis servers — the caches and the local flag store (maxmemory 256 MB, allkeys-lru),
  and the controller's state (noeviction: the cache's eviction must never touch the
  rollout's own log);
* redis_exporter, Alertmanager (posting to a webhook sink inside this process) and
  Prometheus with the project's rule files (alerts/rules), scraping every second;
* two replicas of the service (`python -m app`, local provider at the seed's latencies,
  one SQLite notes database, the same Redis), optionally reading flags from a real Unleash;
* the traffic generator (devstack/traffic) inside this process, round-robin over both;
* `rollout run` with the bundled default plan, its days scaled to seconds
  (ROLLOUT_TIME_SCALE), notifying the same webhook sink on a path of its own.

`--cluster` runs the same rollout with the caches and the local flag store on a Redis Cluster
(3 masters + 3 replicas on loopback ports, started and stopped by the demo, every node
scraped through redis_exporter; REDIS_CLUSTER=true for the replicas and the controller's
flag writer) while the controller's state stays on its own noeviction Redis; the demo
prints the nodes and, at the end, which node held which keys (cluster.py).

It shows the rollout live (stage, time against bake, every gate, guardrail and objective
with its estimate, bound, margin or limit, n and verdict — counts since the stage's flags
were confirmed —, each decision), then prints the impact per stage measured on this run,
the objectives with their intervals, and writes a chart. `--fault` also changes notes behind
the service's back once the rollout has completed (or in --fault-stage): stale L1 answers,
proven by the integrity guardrail, roll back to l2; it shows the alert that fired and the
controller's notification. Everything it started is stopped at the end, also on Ctrl-C or
SIGTERM; process logs are in .run/logs. Each run keeps its plan and its Prometheus data in
.run/demo/runs/RUN_ID/ (run.json says which time range, for `rollout replay`).

The derived plan is the default plan with every deviation written into its header and
printed (plan.py): the time scale, and for `--quick` (the e2e test's profile: plan days of
5 s, min_window 10 s) a shorter min_window, the baseline's minimum samples x 0.5 and one
wider margin (profiles.QUICK_EDITS). The last run's plan is also at .run/demo/plan.yaml.

The code: profiles.py (how fast), plan.py (the demo's plan), stack.py (what runs),
runner.py (the rollout, watched), fault.py, outcome.py with impact*.py, stages.py and
chart.py (what it measured), view.py (what people watch); this module is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console

from devstack.demo.outcome import finish, verdict
from devstack.demo.profiles import (
    AUDIT_CAP,
    DEMO_DIR,
    FULL,
    QUICK,
    REDIS_TIMEOUT,
    DemoFailed,
    Profile,
    audit_note,
    redis_timeout_note,
)
from devstack.demo.replay import replay_hint
from devstack.demo.runner import Runner
from devstack.demo.stack import Demo
from devstack.demo.view import LiveModel, PlainPrinter, render
from devstack.paths import LOG_DIR
from devstack.traffic.transport import load_client


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the same orderly stop of everything we started."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ignore_signals() -> None:
    # While stopping, a second Ctrl-C must not leave processes behind.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Profile]:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", action="store_true",
                        help="change notes behind the service's back: stale L1 answers, the "
                             "automatic rollback to l2")
    parser.add_argument("--fault-stage", default="l1-100", choices=["l1-10", "l1-50", "l1-100"],
                        help="the stage the fault hits (default: l1-100 once the rollout has "
                             "completed, so one run shows the whole rollout and the rollback)")
    parser.add_argument("--unleash", action="store_true",
                        help="flags through a real Unleash server instead of the local store")
    parser.add_argument("--cluster", action="store_true",
                        help="the caches and the local flag store on a Redis Cluster of 3 "
                             "masters + 3 replicas (the controller's state on its own Redis)")
    parser.add_argument("--quick", action="store_true",
                        help="the shortened profile of the e2e test (days of 5 s, min_window "
                             "10 s, deviations listed in the plan)")
    parser.add_argument("--day-seconds", type=float, help="seconds per plan day")
    parser.add_argument("--time-scale", type=float,
                        help="ROLLOUT_TIME_SCALE directly (overrides --day-seconds)")
    parser.add_argument("--interval", type=float, help="controller evaluation interval (s)")
    parser.add_argument("--rate", type=float, help="requests per second over both replicas")
    parser.add_argument("--min-window", type=float, help="the plan's min_window (s)")
    parser.add_argument("--min-sample-factor", type=float,
                        help="multiply the minimum samples of the plan's threshold checks that "
                             "count queries (the baseline's)")
    parser.add_argument("--max-minutes", type=float, help="give up after this long")
    parser.add_argument("--latency-scale", type=float, default=1.0,
                        help="AI_LATENCY_SCALE (default 1: the seed's 0.5 s + 1.25 s; below "
                             "~0.5 the histogram's buckets cannot tell L2 hits from misses)")
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--seed", type=int, default=24, help="traffic generator seed")
    parser.add_argument("--audit-rate", type=float, default=1.0,
                        help="L1_AUDIT_SAMPLE_RATE of the replicas (default 1: every served "
                             "L1 hit is a candidate, as in the service)")
    parser.add_argument("--audit-max-per-second", type=float, default=AUDIT_CAP,
                        help="L1_AUDIT_MAX_PER_SECOND per replica (default %(default)g; the "
                             "service's own default is 5)")
    parser.add_argument("--chart", type=Path, help="PNG path (default .run/demo/rollout-demo.png"
                        "; .run/demo/rollout-demo-fault.png with --fault)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the chart to docs/rollout-demo.png (the README's figure)")
    parser.add_argument("--result-json", type=Path, help="write everything measured here")
    parser.add_argument("--plain", action="store_true",
                        help="plain lines instead of the live view (default when not a TTY)")
    args = parser.parse_args(argv)
    if args.cluster and args.write_docs:
        # The README's figure and the figures quoted next to it are of the single-Redis run.
        parser.error("--write-docs cannot be combined with --cluster: docs/rollout-demo.png is "
                     "the README's single-Redis run (a cluster run's chart goes to "
                     ".run/demo/rollout-demo-cluster.png, or --chart PATH)")
    base = QUICK if args.quick else FULL
    overrides = {name: getattr(args, name) for name in
                 ("day_seconds", "interval", "rate", "min_window", "min_sample_factor",
                  "max_minutes") if getattr(args, name) is not None}
    return args, dataclasses.replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    args, profile = parse_args(argv)
    console = Console()
    plain = args.plain or not console.is_terminal
    if not console.is_terminal:
        console = Console(width=150)  # logs and CI: do not squeeze the tables to 80 columns
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    demo: Demo | None = None
    result: dict[str, Any] | None = None
    code = 0
    with _signals_as_interrupt():
        try:
            demo = Demo(args, profile)
            code, result = _run(demo, console, plain, started)
        except KeyboardInterrupt:
            _ignore_signals()
            console.print("\ninterrupted: stopping everything the demo started")
            code = 130
        except DemoFailed as exc:
            console.print(f"demo failed: {exc}", style="bold red", markup=False)
            code = 1
        finally:
            _ignore_signals()
            if demo is not None:
                demo.close()
                if result is not None and args.result_json:
                    args.result_json.parent.mkdir(parents=True, exist_ok=True)
                    args.result_json.write_text(json.dumps(result, indent=2, default=str))
    with contextlib.suppress(OSError):
        shutil.rmtree(DEMO_DIR / "unleash-cache-1", ignore_errors=True)
        shutil.rmtree(DEMO_DIR / "unleash-cache-2", ignore_errors=True)
    return code


def _run(demo: Demo, console: Console, plain: bool,
         started: float) -> tuple[int, dict[str, Any]]:
    """Start everything, watch the rollout, measure it: (exit code, the result record)."""
    args, profile = demo.args, demo.profile
    console.print(f"[bold]ai-cache rollout demo[/] — default plan, 1 plan day = "
                  f"{demo.day_seconds:.3g} s, {profile.rate:g} req/s over two "
                  f"replicas{', on a Redis Cluster' if args.cluster else ''}"
                  f"{', flags in Unleash' if args.unleash else ''}"
                  f"{', with a fault at ' + args.fault_stage if args.fault else ''}")
    for line in demo.deviations:
        console.print(f"  plan deviation: {line}", style="yellow", markup=False)
    for note in (audit_note(args.audit_max_per_second), redis_timeout_note(REDIS_TIMEOUT)):
        console.print(f"  service setting: {note}", style="yellow", markup=False)
    console.print(f"  process logs: {LOG_DIR}", style="dim")
    demo.start_services(lambda text: console.print(f"  {text}", style="dim"))
    for line in demo.backend_lines():
        console.print(f"  {line}", style="yellow", markup=False)
    model = LiveModel(
        title="ai-cache rollout demo" + (" on a Redis Cluster" if args.cluster else "")
        + (" — fault scenario" if args.fault else ""),
        subtitle=(f"default plan, time scale {demo.time_scale:.3g} (1 plan day = "
                  f"{demo.day_seconds:.3g} s) · controller {demo.controller_url} · "
                  f"Prometheus {demo.prometheus_url}"),
        stages=demo.plan.stage_names)
    runner = Runner(demo, model)
    error = _watch(runner, model, console, plain)
    code = 0
    if error:
        console.print("demo failed: " + error, style="bold red", markup=False)
        code = 1
    result = finish(demo, runner, console, started, ok=error is None, error=error)
    console.print(verdict(runner), markup=False)
    hint = replay_hint(demo.run_dir)
    if hint:
        console.print(hint, markup=False, highlight=False)
    console.print(f"done in {time.time() - started:.0f} s; stopping everything the "
                  "demo started")
    return code, result


def _watch(runner: Runner, model: LiveModel, console: Console, plain: bool) -> str | None:
    """Drive the rollout to its end, shown live (or as plain lines); the failure, if any."""
    from rich.live import Live

    error: str | None = None
    if plain:
        printer = PlainPrinter(model)
        try:
            asyncio.run(_drive(runner, printer.update))
        except DemoFailed as exc:
            error = str(exc)
        return error
    with Live(render(model), console=console, refresh_per_second=4, transient=False) as live:
        try:
            asyncio.run(_drive(runner, lambda: live.update(render(model))))
        except DemoFailed as exc:
            error = str(exc)
    console.rule("decisions")
    for entry in model.decisions:
        when = entry.at.strftime("%H:%M:%S") if entry.at is not None else "--:--:--"
        console.print(f"{when}  {entry.transition}: {entry.from_stage} → {entry.to_stage}: "
                      f"{entry.reason}", markup=False, highlight=False)
    return error


async def _drive(runner: Runner, on_tick: Callable[[], None]) -> None:
    async with httpx.AsyncClient(timeout=30) as client, load_client() as load:
        await runner.run(client, load, on_tick)

