"""End to end: the README's first command, shortened, proves the rollout, its evidence and the
rollback.

One run of `python -m scripts.demo --quick --fault` — the same code path as `scripts/demo`:
the same starters, the same two service replicas, the same traffic generator, the real
`rollout run` with the default plan (days scaled to 5 s, min_window 10 s, the deviations the
quick profile lists in the derived plan) — climbs the whole plan to `completed` on the
statistical checks' own verdicts, then changes notes behind the service's back: the
guardrails still watch after completion and roll back to l2. The assertions read what it
recorded: the controller's decision log (from its /api/history) with each check's evidence,
the fault, the alert Alertmanager delivered, the controller's notification, and what the
run kept for a replay. A second run is interrupted with SIGINT to prove that every process
the demo started is gone afterwards.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STAGES = ["off", "dark-launch", "l2", "l1-10", "l1-50", "l1-100"]
DEMO = [sys.executable, "-m", "scripts.demo", "--quick", "--plain"]
# The quick profile takes ~4 min on a quiet 2-core machine; the demo gives up by itself
# after 4.5 min of rollout (--max-minutes), this is only the last resort.
RUN_TIMEOUT = 420
BASELINES = {"baseline_error_rate", "baseline_p95_seconds", "baseline_slow_share",
             "baseline_cost_per_query_usd"}

pytestmark = pytest.mark.integration


def ts(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


def enforced_failures(entry: dict[str, Any]) -> list[str]:
    """Enforced checks that stand in the way: a statistical guardrail may be inconclusive
    (only a proven breach counts), a gate must pass."""
    return [f"{c['check']}={c['verdict']}" for c in entry.get("checks", [])
            if not c.get("dry_run") and c["kind"] in ("gate", "guardrail")
            and c["verdict"] not in allowed(c)]


def allowed(check: dict[str, Any]) -> set[str]:
    # A statistical check has no comparator (a threshold check has `<=` and the like); with
    # no such cohort or cache layer in a stage it has no data, which is no harm either.
    if check["kind"] == "guardrail" and check.get("comparator") is None:
        return {"pass", "inconclusive", "no_data"}
    return {"pass"}


def cycles(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in run["history"] if e["kind"] == "cycle"]


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
def test_the_rollout_completes_then_only_the_fault_moves_it_back(run: dict[str, Any]) -> None:
    assert run["ok"], run["error"]
    advances = [(t["from_stage"], t["to_stage"]) for t in run["transitions"]
                if t["transition"] == "advance"]
    assert advances == list(itertools.pairwise(STAGES)), advances
    assert cycles(run)[0]["from_stage"] == "off"
    completes = [t for t in run["transitions"] if t["transition"] == "complete"]
    assert [t["from_stage"] for t in completes] == ["l1-100"]
    # Nothing but the fault's rollback ever moved the rollout backwards, and only after the
    # rollout had completed.
    rollbacks = [t for t in run["transitions"] if t["transition"] == "rollback"]
    assert [(t["from_stage"], t["to_stage"]) for t in rollbacks] == [("l1-100", "l2")]
    assert ts(rollbacks[0]) > ts(completes[0]) and run["fault"]["injected_at"] > ts(completes[0])


def test_each_advance_came_after_its_bake_and_its_gates_shown_to_pass(
    run: dict[str, Any],
) -> None:
    plan = run["plan"]
    history = cycles(run)
    entered_at = ts(history[0])
    for i, entry in enumerate(history):
        if entry.get("transition") not in ("advance", "complete"):
            continue
        stage = entry["from_stage"]
        assert entry["checks"], f"{stage} left without any measured check"
        # Every enforced check allowed it in this cycle and the M-1 before it ...
        streak = history[i - plan["passes_to_advance"] + 1: i + 1]
        assert len(streak) == plan["passes_to_advance"]
        for cycle in streak:
            assert cycle["from_stage"] == stage, (stage, cycle["at"])
            assert not enforced_failures(cycle), (stage, cycle["at"], enforced_failures(cycle))
        # ... after the whole (scaled) bake ...
        assert ts(entry) - entered_at >= plan["bakes"][stage] - 0.01, (stage, entry["at"])
        entered_at = ts(entry)
        if stage == "off":
            continue
        # ... and each statistical gate passed on its evidence: the upper bound of the harm
        # (stage minus comparison, or the rate) within its margin or limit, with real counts.
        gates = [c for c in entry["checks"] if c["kind"] == "gate" and not c["dry_run"]
                 and c.get("evidence") is not None]
        assert gates, f"no statistical gate decided {stage}"
        for gate in gates:
            evidence = gate["evidence"]
            assert gate["verdict"] == "pass", gate
            assert evidence["trials"] > 0, gate
            assert evidence["lower"] <= evidence["estimate"] <= evidence["upper"], gate
            if evidence["higher_is_worse"]:
                assert evidence["upper"] <= evidence["limit"], gate
            else:
                assert evidence["lower"] >= evidence["limit"], gate
        if stage in ("l1-10", "l1-50"):  # a concurrent control: the L1 cohort vs the rest
            cohort = {c["check"]: c for c in gates}["l1_cohort_error_rate_vs_control"]
            assert cohort["evidence"]["control_trials"] > 0 and cohort["evidence"]["trials"] > 0
    assert set(run["final_status"]["baseline"]) == BASELINES


def test_every_deviation_of_the_quick_plan_is_written_into_it(run: dict[str, Any]) -> None:
    deviations = run["deviations"]
    printed = " ".join(run["_stdout"].split())  # the console wraps long lines
    plan_file = Path(run["replay"]["plan"])
    header = [line for line in plan_file.read_text().splitlines() if line.startswith("#")]
    for line in deviations:
        assert f"#   - {line}" in header, line
        assert f"plan deviation: {line}" in printed, line
    plan = yaml.safe_load(plan_file.read_text())
    assert plan["settings"]["time_scale"] == pytest.approx(run["time_scale"])
    # The one statistical deviation of the quick profile, with its reason.
    assert plan["checks"]["l1_cohort_error_rate_vs_control"]["margin"] == 0.03
    assert any(d.startswith("checks.l1_cohort_error_rate_vs_control.margin 0.01 → 0.03: ")
               for d in deviations), deviations
    # No check runs as a dry run that the default plan enforces.
    default = yaml.safe_load((REPO / "rollout" / "plans" / "default.yaml").read_text())
    assert {n for n, c in plan["checks"].items() if c.get("dry_run")} == {
        n for n, c in default["checks"].items() if c.get("dry_run")}


def test_the_objectives_are_reported_with_their_intervals(run: dict[str, Any]) -> None:
    complete = next(t for t in run["transitions"] if t["transition"] == "complete")
    objectives = {c["check"]: c for c in complete["checks"] if c["kind"] == "objective"}
    assert set(objectives) == {"p95_40pct_below_baseline", "cost_50pct_below_baseline"}
    for check in objectives.values():
        evidence = check["evidence"]
        assert check["verdict"] in ("pass", "fail", "inconclusive"), check
        assert evidence["trials"] > 0
        assert evidence["lower"] <= evidence["estimate"] <= evidence["upper"]
    assert "objectives:" in complete["reason"]
    # The demo's objectives table: the l2 and l1-100 objectives, from the entries that left
    # those stages, in the CLI's wording.
    reported = {(o["stage"], o["check"]): o for o in run["objectives"]}
    assert set(reported) == {("l2", "p95_20pct_below_baseline"),
                             ("l2", "cost_20pct_below_baseline"),
                             ("l1-100", "p95_40pct_below_baseline"),
                             ("l1-100", "cost_50pct_below_baseline")}
    assert reported[("l1-100", "cost_50pct_below_baseline")]["decided_by"] == "complete"
    for row in reported.values():
        assert row["verdict"] in ("met", "missed", "inconclusive"), row
        assert row["lower"] <= row["estimate"] <= row["upper"], row
        assert "(n=" in row["line"]
    assert "Objectives" in run["_stdout"]
    # With the seed's own economics the cached-answer stage halves the cost: at l1-100 the
    # cost objective's upper bound is far below its limit.
    cost = reported[("l1-100", "cost_50pct_below_baseline")]
    assert cost["verdict"] == "met" and cost["upper"] < cost["limit"]


def test_stale_l1_answers_roll_back_to_l2_on_proof_then_hold(run: dict[str, Any]) -> None:
    fault = run["fault"]
    assert fault["stage"] == "l1-100" and fault["notes_changed"] > 0
    rollback = fault["rollback"]
    # DESIGN.md §7: a proven stale L1 answer goes to the last stage that serves none (l2),
    # not one stage back to l1-50, which would still serve cached answers.
    assert (rollback["from_stage"], rollback["to_stage"]) == ("l1-100", "l2")
    assert "stale or mismatched L1 answers" in rollback["reason"]
    breached = {c["check"]: c for c in rollback["checks"]}["cache_integrity_guardrail"]
    evidence = breached["evidence"]
    assert breached["verdict"] == "fail" and evidence["events"] > 0
    # Proven: the lower bound (at the guardrail's alpha_fail) above the limit.
    assert evidence["lower"] > evidence["limit"] == 0.005
    settings = yaml.safe_load(Path(run["replay"]["plan"]).read_text())["settings"]
    assert evidence["alpha_fail"] == pytest.approx(settings["guardrail_alpha_fail"])

    # Before the fault the guardrail never failed (and passed on the stage's own audits);
    # the statistical guardrail acted on its first failing cycle.
    at_stage = [e for e in cycles(run) if e["from_stage"] == "l1-100" and ts(e) <= ts(rollback)]
    verdicts = [(ts(e), {c["check"]: c["verdict"] for c in e.get("checks", [])}
                 .get("cache_integrity_guardrail")) for e in at_stage]
    before = [v for at, v in verdicts if at < fault["injected_at"]]
    assert "pass" in before and "fail" not in before, before
    assert [v for _, v in verdicts].count("fail") == 1
    assert fault["cycles_to_rollback"] >= 1

    # Then it holds at l2: no further transition, every later cycle a hold that waits for a
    # person, including cycles after the guardrails were judged again.
    later = [e for e in cycles(run) if ts(e) > ts(rollback)]
    assert len(later) >= 3
    assert all(e["action"] == "hold" and e["from_stage"] == "l2" for e in later), later[-1]
    assert "until a person resumes" in later[-1]["reason"]
    judged = [e for e in later if e.get("checks") and "not judging" not in e["reason"]
              and not e["reason"].startswith("waiting for the service")]
    assert judged, "the guardrails were never judged again after the rollback"
    assert not [f for e in judged for f in enforced_failures(e)
                if f.startswith(("cache_integrity", "error_rate_guardrail",
                                 "slow_answers_guardrail"))]
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
    assert "stale or mismatched L1 answers" in note["text"]
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


def test_the_run_is_kept_for_a_replay(run: dict[str, Any]) -> None:
    replay = run["replay"]
    started = datetime.fromisoformat(replay["started"])
    ended = datetime.fromisoformat(replay["ended"])
    assert started.utcoffset() == timedelta(0) and replay["started"].endswith("Z")
    assert started < ended
    # The whole decision log lies inside the recorded range.
    assert started.timestamp() <= ts(cycles(run)[0]) and ts(cycles(run)[-1]) <= ended.timestamp()
    tsdb = Path(replay["tsdb"])
    assert tsdb.is_dir() and any(tsdb.iterdir()), "Prometheus' TSDB was not kept"
    assert json.loads((Path(replay["prometheus_data_dir"]).parent / "run.json").read_text()) \
        == replay
    assert f"Prometheus data (kept after the run): {tsdb}" in run["_stdout"]


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
