"""The end of a run: the impact table and the chart (while Prometheus still runs), the fault
scenario's summary, and the result record (--result-json) the e2e test reads."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console

from devstack.demo.chart import ChartInputs, write_chart
from devstack.demo.cluster import Placement, census
from devstack.demo.impact import StageImpact, impact_table
from devstack.demo.impact_table import render_table, summary_lines
from devstack.demo.objectives import (
    BASELINE_COST,
    BASELINE_P95,
    ObjectiveResult,
    render_objectives,
    stage_objectives,
)
from devstack.demo.profiles import DEFAULT_CHART, DEMO_DIR
from devstack.demo.record import ReplayRecord, replay_record
from devstack.demo.runner import Runner
from devstack.demo.stack import Demo
from devstack.demo.stages import stage_visits, transitions
from devstack.errors import ServiceError
from rollout.core.plan import CheckKind, Plan
from rollout.formatting import transition_evidence
from rollout.status import StatusView


def build_result(demo: Demo, runner: Runner, started: float, rows: list[StageImpact],
                 objectives: list[ObjectiveResult], replay: ReplayRecord | None,
                 chart: Path | None, ok: bool, error: str | None,
                 placement: Placement | None = None) -> dict[str, Any]:
    fault, status = runner.fault, runner.model.status
    windows = {c.name: demo.plan.window_of(c).total_seconds() for c in demo.plan.all_checks()}
    return {
        "ok": ok,
        "error": error,
        "scenario": "fault" if fault else "default",
        "redis": {
            "cluster": demo.cluster is not None,
            "url": demo.redis_url,
            "state_url": demo.state_url,
            "nodes": [] if demo.cluster is None else list(demo.cluster.node_ports),
            "placement": None if placement is None else placement.to_dict(),
        },
        "profile": dataclasses.asdict(demo.profile),
        "time_scale": demo.time_scale,
        "plan_path": str(demo.plan_path),
        "deviations": demo.deviations,
        "plan": {
            "stages": list(demo.plan.stage_names),
            "interval_seconds": demo.profile.interval,
            "scrape_seconds": demo.profile.scrape,
            "passes_to_advance": demo.plan.settings.passes_to_advance,
            "windows": windows,
            "bakes": {s.name: demo.plan.bake_of(i).total_seconds()
                      for i, s in enumerate(demo.plan.stages)},
            "failures_to_rollback": {c.name: demo.plan.failures_to_rollback(c)
                                     for c in demo.plan.guardrails},
        },
        "started_at": started,
        "ended_at": time.time(),
        "duration_seconds": time.time() - started,
        "objectives": [o.to_dict() for o in objectives],
        "replay": replay.to_dict() if replay is not None else None,
        # The same JSON the controller's API served (the e2e test reads it as such).
        "history": [e.model_dump(mode="json") for e in runner.history],
        "transitions": [e.model_dump(mode="json") for e in transitions(runner.history)],
        "final_status": None if status is None else status.model_dump(mode="json"),
        "fault": None if fault is None else {
            **dataclasses.asdict(fault), "workspaces": [str(w) for w in fault.workspaces],
            "rollback": None if fault.rollback is None
            else fault.rollback.model_dump(mode="json")},
        "alerts": demo.sink.bodies("/alertmanager"),
        "notifications": demo.sink.bodies("/rollout"),
        "impact": [r.to_dict() for r in rows],
        "summary": summary_lines(rows),
        "chart": None if chart is None else str(chart),
        "pids": demo.started.pids,
        "traffic": {"requests": runner.traffic.total, "failed": runner.traffic.failed,
                    "shed": runner.generator.stats.shed},
    }


def finish(demo: Demo, runner: Runner, console: Console, started: float, ok: bool,
           error: str | None) -> dict[str, Any]:
    """Measure, print and chart the run (Prometheus still runs), then return the result."""
    end = time.time()
    visits = stage_visits(runner.history, end)
    rows: list[StageImpact] = []
    chart: Path | None = None
    status = runner.model.status
    baseline = status.baseline if status is not None else {}
    objectives = stage_objectives(demo.plan, runner.history, baseline)
    if visits:
        rows = impact_table(demo.prometheus_url, visits, runner.traffic.latencies)
        console.print()
        console.print(render_table(rows))
        for line in summary_lines(rows):
            console.print(line, markup=False)
    if objectives:
        console.print()
        console.print(render_objectives(objectives))
    if visits:
        chart_path = chart_path_for(demo.args)
        title = ("Staged rollout of the AI caches — default plan, 1 plan day = "
                 f"{demo.day_seconds:.3g} s"
                 + (" — on a Redis Cluster" if demo.cluster is not None else "")
                 + (" — with a fault" if runner.fault else ""))
        events = []
        if runner.fault and runner.fault.injected_at:
            events.append((runner.fault.injected_at, "fault: notes changed\nbehind the cache"))
        chart = write_chart(ChartInputs(
            prom_url=demo.prometheus_url, start=visits[0].start, end=end,
            stages=demo.plan.stage_names, visits=visits,
            transitions=transitions(runner.history),
            baseline=baseline, events=events, title=title,
            window="15s" if demo.profile.min_window is None else "10s",
            integrity_limit=_integrity_limit(demo.plan) if runner.fault else None,
            gate_lines=_objective_lines(demo.plan, baseline),
            end_note=_end_note(status)),
            Path(chart_path))
        console.print(f"chart: {chart}")
    fault = runner.fault
    if fault is not None and fault.rollback is not None:
        console.print()
        console.rule("the fault scenario")
        assert fault.injected_at is not None and fault.rolled_back_at is not None
        console.print(f"rollback {fault.rollback.from_stage} → {fault.rollback.to_stage} "
                      f"{fault.rolled_back_at - fault.injected_at:.1f} s after the fault "
                      f"({fault.cycles_to_rollback} evaluations). Reason:")
        console.print(f"  {fault.rollback.reason}", markup=False, highlight=False)
        for line in transition_evidence(fault.rollback.checks, "rollback"):
            console.print(f"  {line}", markup=False, highlight=False)
        alerts = demo.sink.bodies("/alertmanager")
        if alerts:
            console.print("alert from Alertmanager's webhook:")
            console.print_json(json.dumps(_trim_alert(alerts[0])))
        notes = [b for b in demo.sink.bodies("/rollout") if b.get("event") == "transition"
                 and b.get("severity") == "critical"]
        if notes:
            console.print("the controller's notification (ROLLOUT_WEBHOOK_URL):")
            console.print_json(json.dumps(notes[0]))
    placement = _cluster_summary(demo, console)
    replay = replay_record(demo, runner, end)
    if replay is not None:
        replay.write(demo.run_dir / "run.json")
        console.print()
        for line in replay.lines():
            console.print(line, markup=False, highlight=False)
    return build_result(demo, runner, started, rows, objectives, replay, chart, ok, error,
                        placement)


def _cluster_summary(demo: Demo, console: Console) -> Placement | None:
    """On a cluster: the nodes again, and which node held which keys (read before anything
    is stopped)."""
    if demo.cluster is None:
        return None
    console.print()
    console.rule("Redis Cluster")
    for line in demo.backend_lines():
        console.print(line, markup=False, highlight=False)
    try:
        placement = census(demo.cluster, demo.state_url, demo.prometheus_url)
    except (OSError, RedisError, ServiceError) as exc:  # the run's result stands without the census
        console.print(f"could not read the keys' placement: {exc}", markup=False)
        return None
    for line in placement.lines():
        console.print(line, markup=False, highlight=False)
    return placement


def _objective_lines(plan: Plan, baseline: dict[str, float]) -> list[tuple[str, float, str]]:
    """The objectives' targets relative to the baseline p95 and cost, as chart lines: a p95
    objective's boundary (factor x baseline p95), a cost objective's factor x baseline cost."""
    lines = []
    for stage in plan.stages:
        for check in stage.checks:
            stat = check.stat
            if check.kind is not CheckKind.OBJECTIVE or stat is None:
                continue
            relative = stat.slower_than if stat.slower_than is not None else stat.limit
            if relative is None or relative.baseline not in (BASELINE_P95, BASELINE_COST):
                continue
            # Cost limits are in shares of a cap; the factor applies to $/query alike.
            base = baseline.get(relative.baseline)
            if base is None:
                continue
            panel = "latency" if relative.baseline == BASELINE_P95 else "cost"
            what = "p95" if panel == "latency" else "cost"
            lines.append((panel, base * relative.factor,
                          f"{stage.name} objective: {what} ≤ {relative.factor:g} x baseline"))
    return lines


def _integrity_limit(plan: Plan) -> float | None:
    for check in plan.guardrails:
        limit = check.stat.limit if check.stat is not None else None
        if check.name == "cache_integrity_guardrail" and limit is not None:
            return limit.absolute
    return None


def _last_reason(status: StatusView) -> str:
    return (status.last_decision.reason or "") if status.last_decision else ""


def _end_note(status: StatusView | None) -> str:
    if status is None:
        return ""
    if status.completed_at is not None:
        return f"rollout complete at {status.stage}"
    # The first clause, without its "(baseline …, n=…)" details.
    first = re.sub(r" \([^()]*\)", "", _last_reason(status).partition(";")[0])
    if status.awaiting_resume:
        return f"holds at {status.stage} after the rollback, awaiting `rollout resume`"
    return f"holds at {status.stage}: {first}"


def verdict(runner: Runner) -> str:
    """Where the rollout ended, in one sentence, from the controller's own last decision."""
    status = runner.model.status
    if status is None:
        return "The controller never reported a status."
    last = _last_reason(status)
    if status.completed_at is not None:
        return f"The controller completed the rollout at {status.stage}: {last}"
    if status.awaiting_resume:
        return (f"The controller rolled back and holds at {status.stage} until a person "
                f"runs `rollout resume`: {last}")
    return f"The controller holds at {status.stage}: {last}"


def _trim_alert(payload: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "labels", "annotations", "startsAt")
    return {"receiver": payload.get("receiver"), "status": payload.get("status"),
            "alerts": [{k: a.get(k) for k in keep} for a in payload.get("alerts", [])]}


def chart_path_for(args: Any) -> Path:
    """--chart, else .run/demo/: the tracked docs/ chart changes only when asked
    (--write-docs), so a run never leaves the checkout modified."""
    if args.chart is not None:
        return Path(args.chart)
    if args.write_docs and not args.fault:
        return DEFAULT_CHART
    name = "rollout-demo" + ("-cluster" if args.cluster else "") + ("-fault" if args.fault
                                                                     else "")
    return DEMO_DIR / f"{name}.png"
