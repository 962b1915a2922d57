"""`rollout replay` reproduces what the live controller decided, from the Prometheus TSDB
that recorded the run.

A real controller (Redis state, local flag store, the default plan scaled to seconds:
tests/support/controller_plan.py) runs against a private Prometheus scraping a service
replica that follows the flags ~1 s late and, at l1-50, fails 30 % of its L1 cohort's
queries: off → dark-launch → l2 → l1-10 → l1-50, then a proven breach rolls back to l1-10,
which holds. Then replay, through the same adapter as of each step, re-evaluates the same
period from the same start: every decision that is not a hold, in order, within one step of
the live one; the rollback on the same guardrail's proven breach; the same stage at the end.
The command line replays the same period from the plan as a file and says the same.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import pytest
import yaml
from prometheus_client import start_http_server
from redis.asyncio import Redis

from devstack.environment import child_env
from devstack.services import prometheus as prom_svc
from devstack.services.common import Service
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.prometheus import PrometheusSource
from rollout.adapters.redis_state import RolloutKeys
from rollout.core.decision import Action
from rollout.core.flags import FlagSettings
from rollout.core.observations import Verdict
from rollout.replay import ReplayStep, ReplayWindow, replay, starting_state
from rollout.runtime_types import CycleReport
from tests.support.controller_harness import build_harness
from tests.support.controller_log import is_action
from tests.support.controller_plan import (
    DARK,
    DAY_SECONDS,
    L1_10,
    L1_50,
    L2,
    OFF,
    demo_plan,
    stage_flags,
    write_demo_plan_file,
)
from tests.support.controller_replica import ServiceReplica
from tests.support.controller_stack import ControllerStack, running_controller_stack
from tests.support.prometheus import SERVICE_JOB

pytestmark = pytest.mark.integration

GUARD = "l1_cohort_error_guardrail"
Move = tuple[str, str, str]  # (from stage, to stage, action)


@pytest.fixture(scope="module")
def stack() -> Iterator[ControllerStack]:
    with running_controller_stack() as running:
        yield running


@pytest.fixture
async def redis(redis_service: Service) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_service.url, decode_responses=True)
    yield client
    await client.aclose()


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=child_env(COLUMNS="200"), check=False)


def moves_of(decisions: list[tuple[object, str, str, Action]]) -> list[Move]:
    return [(src, dst, action.value) for _, src, dst, action in decisions]


def live_decisions(reports: list[CycleReport]) -> list[tuple[object, str, str, Action]]:
    return [(r.at, r.decision.from_stage, r.decision.target_stage, r.decision.action)
            for r in reports if r.decision is not None and r.decision.action is not Action.HOLD]


def replayed_decisions(steps: list[ReplayStep]) -> list[tuple[object, str, str, Action]]:
    return [(s.at, s.decision.from_stage, s.decision.target_stage, s.decision.action)
            for s in steps if s.decision.action is not Action.HOLD]


async def test_replay_reproduces_the_live_decisions_from_the_recorded_tsdb(  # noqa: PLR0915  (one scenario, read top to bottom)
    stack: ControllerStack, redis: Redis, redis_service: Service, tmp_path: Path,
) -> None:
    plan = demo_plan()
    step = plan.settings.evaluation_interval
    keys = RolloutKeys(f"replay-{uuid.uuid4().hex[:8]}")
    flag_key = f"{keys.namespace}:flags"
    flags = LocalFlagWriter.from_url(redis_service.url, key=flag_key)
    service = ServiceReplica(stack.exporter, LocalFlagWriter.from_url(redis_service.url,
                                                                      key=flag_key),
                             faults={stage_flags(plan, L1_50): {"error_rate_on": 0.3}})
    closing: list[WSGIServer] = []
    try:
        await flags.apply(FlagSettings())
        service.adopt(FlagSettings())
        service.start()
        async with PrometheusSource(stack.url, timeout_seconds=2.0) as source:
            ctl = build_harness("ctl-live", plan, redis, keys, flags, source)
            # Prometheus scrapes the controller too, as in the demo: the recording then
            # holds what the live controller did (its stage, its evaluations).
            exposed, _ = start_http_server(0, addr="127.0.0.1", registry=ctl.registry)
            closing.append(exposed)
            assert stack.prometheus is not None
            prom_svc.reconfigure(stack.prometheus, targets={
                SERVICE_JOB: [stack.exporter.target],
                "rollout-controller": [f"127.0.0.1:{exposed.server_port}"]})
            await asyncio.to_thread(stack.prometheus.wait_for_series,
                                    'rollout_stage_index{job="rollout-controller"}', 30)
            await ctl.run_until(is_action(Action.ROLLBACK), timeout=75,
                                what="the rollback at l1-50")
            await ctl.cycles(4)
            live = list(ctl.reports)

            window = ReplayWindow(live[0].at, live[-1].at, step)
            steps = await replay(plan, source, window, starting_state(plan, window.start))
    finally:
        for server in closing:
            server.shutdown()
            server.server_close()
        await service.stop()
        await service._flags.aclose()  # type: ignore[attr-defined]
        await flags.aclose()
        await redis.delete(*keys.all(), flag_key)
        stack.reset()

    # The live run did what the scenario says (else the comparison proves little).
    live_moves = live_decisions(live)
    assert moves_of(live_moves) == [
        (OFF, DARK, "advance"), (DARK, L2, "advance"), (L2, L1_10, "advance"),
        (L1_10, L1_50, "advance"), (L1_50, L1_10, "rollback"),
    ]

    # Replay: the same decisions, in order, each at the live one's cycle or one step from
    # it. (Replay steps are evenly spaced from the first cycle; the live cycles drift a few
    # ms each, so a scrape that landed just before a live cycle may land just after the
    # replayed one: then everything after it in the stage comes one step later.)
    replayed = replayed_decisions(steps)
    assert moves_of(replayed) == moves_of(live_moves), (replayed, live_moves)
    cycles = [(round((r[0] - window.start) / step), round((lv[0] - window.start) / step))  # type: ignore[operator]
              for r, lv in zip(replayed, live_moves, strict=True)]
    assert all(abs(at - live_at) <= 1 for at, live_at in cycles), cycles

    # The rollback rests on the same proven breach: the L1 cohort's guardrail fails, its
    # lower bound beyond the margin, on counts like the live ones.
    rollback = next(s for s in steps if s.decision.action is Action.ROLLBACK)
    live_rollback = next(r for r in live if r.decision is not None
                         and r.decision.action is Action.ROLLBACK)
    seen, live_seen = rollback.observations.get(GUARD), live_rollback.observations.get(GUARD)  # type: ignore[union-attr]
    assert seen is not None and live_seen is not None
    assert seen.verdict is Verdict.FAIL is live_seen.verdict
    assert seen.evidence is not None and live_seen.evidence is not None
    assert seen.evidence.lower > seen.evidence.limit
    assert seen.evidence.trials == pytest.approx(live_seen.evidence.trials, rel=0.5)
    assert seen.evidence.estimate == pytest.approx(live_seen.evidence.estimate, abs=0.1)
    # The flags the replay saw confirmed came from the recording, not from its own wishes:
    # after each advance it waited for the service, as the live controller did.
    for index, moved in enumerate(s for s in steps if s.decision.changes_stage):
        after = [s for s in steps if s.at > moved.at][:1]
        assert after and not after[0].observations.flags_match, (index, moved.decision)
    # Between the decisions both held in the same stages, and both end in l1-10, held.
    assert steps[-1].state_after.stage_name == live[-1].state_after.stage_name == L1_10
    assert steps[-1].state_after.awaiting_resume or steps[-1].state_after.cooldown_until

    # The command line: the same period, the plan from a file, the demo's time scale.
    plan_file = write_demo_plan_file(tmp_path / "plan.yaml")
    command = [sys.executable, "-m", "rollout", "replay", "--prometheus", stack.url,
               "--from", window.start.isoformat(), "--to", window.end.isoformat(),
               "--plan", str(plan_file), "--time-scale", repr(DAY_SECONDS / 86400),
               "--step", f"{step / timedelta(milliseconds=1):g}ms"]
    done = await asyncio.to_thread(run, [*command, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == len(steps) and report["final_stage"] == L1_10
    shown = [(e["from_stage"], e["to_stage"], e["action"]) for e in report["entries"]
             if e["kind"] == "decision" and e["action"] != "hold"]
    assert shown == moves_of(live_moves)
    assert len(report["transitions"]) == len(live_moves)
    [proven] = [c for e in report["entries"] if e["kind"] == "decision"
                and e["action"] == "rollback" for c in e["checks"] if c["check"] == GUARD]
    assert proven["verdict"] == "fail" and proven["evidence"]["lower"] > 0.01

    text = await asyncio.to_thread(run, command, tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"{L1_50} \u2192 {L1_10}  rollback" in text.stdout, text.stdout
    assert "guardrail: L1 cohort error rate" in text.stdout or GUARD in text.stdout
    assert "vs control cohort" in text.stdout and "): fail" in text.stdout
    assert f"Ends in {L1_10} (not completed)." in text.stdout

    # The demo's way: the run's Prometheus stopped, its TSDB kept with a run record;
    # scripts/replay-demo serves a copy on a Prometheus of its own, replays from the
    # controller's first recorded evaluation and compares with the recorded live stages.
    assert stack.prometheus is not None and stack.prometheus.data_dir is not None
    stack.prometheus.stop_process(timeout=15)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    scaled = yaml.safe_load(plan_file.read_text())
    scaled["settings"]["time_scale"] = DAY_SECONDS / 86400
    (run_dir / "plan.yaml").write_text(yaml.safe_dump(scaled, sort_keys=False))
    (run_dir / "run.json").write_text(json.dumps({
        "started": (window.start - timedelta(seconds=1)).isoformat(),  # the process start
        "ended": window.end.isoformat(),
        "tsdb": str(Path(stack.prometheus.data_dir) / "tsdb"),
        "plan": str(run_dir / "plan.yaml"),
        "evaluation_interval_seconds": step.total_seconds(),
        "scrape_interval_seconds": 1.0,
    }))
    demo = await asyncio.to_thread(run, [sys.executable, "-m", "devstack.demo.replay",
                                         "--run", str(run_dir), "--json"], tmp_path)
    assert demo.returncode == 0, demo.stderr + demo.stdout[-2000:]
    replayed_demo = json.loads(demo.stdout)
    assert replayed_demo["matches_live"] is True
    assert [m["stage"] for m in replayed_demo["live_moves"]] == [DARK, L2, L1_10, L1_50, L1_10]
    # It started on one of the controller's own cycles: the first that Prometheus scraped
    # (cycles every 0.5 s, scrapes every 1 s: the first or the second), not the start time.
    started = datetime.fromisoformat(replayed_demo["start"])
    assert min(abs(started - r.at) for r in live[:2]) < timedelta(milliseconds=1), started
    assert replayed_demo["steps"] in {len(steps), len(steps) - 1}
    # A live change shows at the next scrape (1 s); the replayed one within a step.
    assert replayed_demo["largest_gap_seconds"] <= 2 * step.total_seconds() + 1.0
    recording = Path(stack.prometheus.data_dir, "tsdb")
    assert await asyncio.to_thread(recording.is_dir)  # the recording is untouched
