"""End to end: the README's first command, shortened, proves the rollout and the rollback.

One run of `python -m scripts.demo --quick --fault` — the same code path as `scripts/demo`:
the same starters, the same two service replicas, the same traffic generator, the real
`rollout run` with the default plan (days scaled to 2 s, 10 s windows, minimum samples
x 0.3; see scripts/demo.py) — then the assertions read what it recorded: the controller's
decision log (from its /api/history), the fault, the alert Alertmanager delivered and the
controller's notification. A second run is interrupted with SIGINT to prove that every
process the demo started is gone afterwards.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ["off", "dark-launch", "l2", "l1-10", "l1-50", "l1-100"]
DEMO = [sys.executable, "-m", "scripts.demo", "--quick", "--plain"]
# The quick profile takes ~2.5 min on a quiet 2-core machine; the demo gives up by itself
# after 4 min (--max-minutes), this is only the last resort.
RUN_TIMEOUT = 330

pytestmark = pytest.mark.integration


def ts(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


def enforced_failures(entry: dict[str, Any]) -> list[str]:
    return [f"{c['check']}={c['verdict']}" for c in entry.get("checks", [])
            if not c.get("dry_run") and c["verdict"] != "pass"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    result_file = out / "result.json"
    proc = subprocess.run(
        [*DEMO, "--fault", "--result-json", str(result_file), "--chart", str(out / "c.png")],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["_stdout"] = proc.stdout
    result["_chart"] = out / "c.png"
    return result


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_the_stages_advance_in_order_up_to_l1_100(run: dict[str, Any]) -> None:
    assert run["ok"], run["error"]
    advances = [(t["from_stage"], t["to_stage"]) for t in run["transitions"]
                if t["transition"] == "advance"]
    assert advances == list(itertools.pairwise(STAGES)), advances
    cycles = [e for e in run["history"] if e["kind"] == "cycle"]
    assert cycles[0]["from_stage"] == "off"
    # Nothing but the fault's rollback ever moved the rollout backwards.
    rollbacks = [t for t in run["transitions"] if t["transition"] == "rollback"]
    assert [(t["from_stage"], t["to_stage"]) for t in rollbacks] == [("l1-100", "l2")]


def test_each_advance_came_only_after_its_gates_passed(run: dict[str, Any]) -> None:
    plan = run["plan"]
    history = [e for e in run["history"] if e["kind"] == "cycle"]
    entered_at = ts(history[0])
    for i, entry in enumerate(history):
        if entry.get("transition") != "advance":
            continue
        stage = entry["from_stage"]
        names = {c["check"] for c in entry["checks"]}
        assert names, f"advance from {stage} without any measured check"
        # Every enforced check of the stage passed in this cycle and in the M-1 before it.
        streak = history[i - plan["passes_to_advance"] + 1: i + 1]
        assert len(streak) == plan["passes_to_advance"]
        for cycle in streak:
            assert cycle["from_stage"] == stage and cycle["to_stage"] in (stage, entry["to_stage"])
            assert not enforced_failures(cycle), (stage, cycle["at"], enforced_failures(cycle))
        # ... with real traffic behind each verdict, after the whole (scaled) bake.
        for check in entry["checks"]:
            if check["kind"] != "guardrail" and not check["dry_run"]:
                assert check["sample"] is not None and check["sample"] > 0, check
        assert ts(entry) - entered_at >= plan["bakes"][stage] - 0.01, (stage, entry["at"])
        entered_at = ts(entry)
    baseline = run["final_status"]["baseline"]
    assert set(baseline) == {"baseline_error_rate", "baseline_p95_seconds",
                             "baseline_cost_per_query_usd"}
    # The one check the demo runs in dry-run was evaluated, never enforced.
    assert any("cost_20pct_below_baseline runs in dry-run" in d for d in run["deviations"])


def test_the_fault_is_rolled_back_within_the_plans_bound_then_held(
    run: dict[str, Any],
) -> None:
    fault = run["fault"]
    assert fault["stage"] == "l1-100" and fault["notes_changed"] > 0
    rollback = fault["rollback"]
    assert (rollback["from_stage"], rollback["to_stage"]) == ("l1-100", "l2")
    assert "stale or mismatched cache values" in rollback["reason"]
    breached = {c["check"]: c for c in rollback["checks"]}["cache_integrity_guardrail"]
    assert breached["verdict"] == "fail"

    # The guardrail passed right up to the fault, and it took no more failing cycles than
    # the plan allows (1: the integrity guardrail is critical) ...
    at_stage = [e for e in run["history"] if e["kind"] == "cycle"
                and e["from_stage"] == "l1-100" and ts(e) <= ts(rollback)]
    verdicts = [{c["check"]: c["verdict"] for c in e.get("checks", [])}
                .get("cache_integrity_guardrail") for e in at_stage]
    before = [v for e, v in zip(at_stage, verdicts, strict=True)
              if ts(e) < fault["injected_at"] - 1]
    assert "pass" in before and "fail" not in before, before
    failing = len(verdicts) - len([v for v in verdicts if v != "fail"])
    assert 1 <= failing <= run["plan"]["failures_to_rollback"]["cache_integrity_guardrail"]
    # ... and within the bound in wall-clock time.
    assert fault["rolled_back_at"] - fault["injected_at"] <= fault["bound_seconds"], fault

    # A stale L1 answer goes to the last stage that serves none (DESIGN.md §7), not one
    # stage back to l1-50, which would still serve cached answers.
    # Then it holds at l2: no further transition, every later cycle a hold that waits
    # for a person, including cycles after the guardrails were judged again.
    later = [e for e in run["history"] if e["kind"] == "cycle" and ts(e) > ts(rollback)]
    assert len(later) >= 3
    assert all(e["action"] == "hold" and e["from_stage"] == "l2" for e in later), later[-1]
    assert "until a person resumes" in later[-1]["reason"]
    # Measured is not judged: right after a stage change the checks still see the old
    # stage's window ("waiting for the service", "not judging ... more"); only cycles
    # without either acted on their verdicts.
    judged = [e for e in later if e.get("checks") and "not judging" not in e["reason"]
              and not e["reason"].startswith("waiting for the service")]
    assert judged, "the guardrails were never judged again after the rollback"
    assert not [f for e in judged for f in enforced_failures(e)
                if f.startswith(("cache_integrity", "error_rate_guardrail", "p95_guardrail"))]
    status = run["final_status"]
    assert status["stage"] == "l2" and status["awaiting_resume"] is True


def test_the_alert_and_the_notification_reached_their_webhooks(run: dict[str, Any]) -> None:
    firing = [a for payload in run["alerts"] for a in payload["alerts"]
              if a["status"] == "firing"]
    rolled_back = [a for a in firing if a["labels"]["alertname"] == "RolloutRolledBack"]
    assert rolled_back, [a["labels"]["alertname"] for a in firing]
    assert rolled_back[0]["labels"]["from_stage"] == "l1-100"
    assert rolled_back[0]["labels"]["to_stage"] == "l2"

    critical = [n for n in run["notifications"]
                if n["event"] == "transition" and n["severity"] == "critical"]
    assert len(critical) == 1
    note = critical[0]
    assert (note["from_stage"], note["to_stage"]) == ("l1-100", "l2")
    assert "stale or mismatched cache values" in note["text"]
    assert note["blocks"], "Slack blocks missing"
    advanced = [n for n in run["notifications"] if n["event"] == "transition"
                and n["severity"] == "info" and n["from_stage"] != n["to_stage"]]
    assert len(advanced) == len(STAGES) - 1


def test_the_impact_table_and_the_chart(run: dict[str, Any]) -> None:
    rows = {r["stage"]: r for r in run["impact"]}
    assert list(rows) == [*STAGES, "l2 (after rollback)"]
    off, full = rows["off"], rows["l1-100"]
    assert off["error_rate"] == 0
    assert full["cost_per_query"] < off["cost_per_query"] * 0.6
    assert full["mean"] < off["mean"] * 0.7
    assert full["l1_served"] > 0.3 and rows["l2"]["l2_served"] > 0.9
    assert "Impact per stage" in run["_stdout"]
    chart: Path = run["_chart"]
    assert chart.stat().st_size > 20_000


def test_everything_the_demo_started_is_gone(run: dict[str, Any]) -> None:
    pids = run["pids"]
    assert {"redis-cache", "redis-state", "redis-exporter", "alertmanager", "prometheus",
            "replica-1", "replica-2", "controller"} <= set(pids)
    assert not [name for name, pid in pids.items() if alive(pid)]


# --- Ctrl-C ---------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture
def interrupted_demo(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*DEMO, "--chart", str(tmp_path / "c.png")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:  # the test failed before its SIGINT: do not leak the demo
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


@pytest.mark.timeout(150)
def test_ctrl_c_stops_every_process_the_demo_started(
    interrupted_demo: subprocess.Popen[str],
) -> None:
    proc = interrupted_demo
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    lines = []
    for line in proc.stdout:  # the demo prints one line per step: read until the rollout runs
        lines.append(line)
        if "controller started" in line or time.monotonic() > deadline:
            break
    assert any("controller started" in line for line in lines), "".join(lines)
    started = descendants(proc.pid)
    # 2 Redis, redis_exporter, Alertmanager, Prometheus, 2 replicas, the controller
    assert len(started) >= 8, started

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after Ctrl-C: {left}"
