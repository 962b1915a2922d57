"""`rollout simulate`: options checked with one line naming the option (exit 2), the table,
--json, --compare, --chart, and an edited copy of the default plan. Few runs at a coarse
cycle: the figures are the benchmark's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rollout.cli.main import main
from rollout.plans import default_plan_path

OLD_PLAN = Path(__file__).parents[4] / "bench" / "decision_bench" / "old_default_plan.yaml"
PLAN = str(default_plan_path())
QUICK = ("--runs", "4", "--cycle", "2h", "--processes", "1")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    # A broken environment does not get in the way of simulating a file.
    monkeypatch.setenv("ROLLOUT_INTERVAL_SECONDS", "soon")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--traffic", "fast"], "--traffic: must be a positive number", id="traffic"),
        pytest.param(["--traffic", "-1"], "--traffic: must be a positive number", id="neg"),
        pytest.param(["--traffic", "1", "--runs", "0"],
                     "--runs: must be a whole number, at least 1", id="runs"),
        pytest.param(["--traffic", "1", "--seed", "x"], "--seed: must be a whole number",
                     id="seed"),
        pytest.param(["--traffic", "1", "--cycle", "soon"], "--cycle: must be at least 1s",
                     id="cycle"),
        pytest.param(["--traffic", "1", "--scenario", "flood"],
                     "--scenario: unknown scenario 'flood'", id="scenario"),
        pytest.param(["--traffic", "1", "--scenario", "l1-error", "--size", "2"],
                     "--size: must be an error rate above the healthy 0.01", id="size"),
        pytest.param(["--traffic", "1", "--size", "0.1"],
                     "--size: the healthy scenario takes no --size", id="healthy-size"),
        pytest.param(["--traffic", "1", "--scenario", "l1-error", "--from-stage", "l1-1O"],
                     "default.yaml has no stage 'l1-1O' (did you mean 'l1-10'?)",
                     id="from-stage"),
        pytest.param(["--traffic", "1", "--scenario", "outage", "--duration", "0s"],
                     "--duration: must be a duration of at least 1s", id="duration"),
        pytest.param(["--traffic", "1", "--start-at", "off"], "--start-at: ", id="start-at"),
        pytest.param(["--traffic", "1", "--chart", "/nonexistent/dir/x.png"],
                     "--chart: directory '/nonexistent/dir' does not exist", id="chart-dir"),
        pytest.param(["--traffic", "1", "--compare", "/nonexistent.yaml"],
                     "--compare: no plan file", id="compare-missing"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(capsys: pytest.CaptureFixture[str],
                                                    argv: list[str], expected: str) -> None:
    code, out, err = run_cli(capsys, PLAN, *argv)
    assert code == 2, err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 and not out


def test_the_table_says_what_was_simulated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, PLAN, "--traffic", "30", *QUICK)
    assert code == 0, err
    assert "4 simulated rollouts at 30 queries/s: healthy (A/A)" in out
    assert "rolled back" in out and "time to complete, median / p95" in out
    assert "the sum of the bakes" in out and "29.0 d" in out
    assert not err  # no progress bar when stderr is not a terminal


def test_json_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, PLAN, "--traffic", "30", "--scenario", "l1-error",
                           "--start-at", "l1-10", "--json", *QUICK)
    assert code == 0
    report = json.loads(out)
    assert report["runs"] == 4 and report["scenario"]["name"] == "l1-error"
    assert report["scenario"]["from_stage"] == "l1-10" and report["scenario"]["size"] == 0.03
    (summary,) = report["summaries"]
    assert summary["rolled_back"]["runs"] == 4
    assert summary["caught_in_stage"]["count"] == summary["true_rollback"]["count"]
    assert summary["time_to_detect"]["median_seconds"] > 0
    assert "ratios" not in report


def test_compare_runs_both_plans_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, PLAN, "--traffic", "30", "--compare", str(OLD_PLAN),
                           "--json", *QUICK)
    assert code == 0
    report = json.loads(out)
    new, old = report["summaries"]
    assert (new["label"], old["label"]) == ("default.yaml", "old_default_plan.yaml")
    assert new["completed"]["count"] == 4
    assert old["completed"]["count"] == 0  # its l2 gates cannot pass (bench/README.md)
    assert report["ratios"]["of"] == "old_default_plan.yaml"
    code, text, _ = run_cli(capsys, PLAN, "--traffic", "30", "--compare", str(OLD_PLAN), *QUICK)
    assert code == 0 and "ratio" in text and "old_default_plan.yaml" in text


def test_chart_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "sim.png"
    code, out, err = run_cli(capsys, PLAN, "--traffic", "30", "--scenario", "l1-error",
                             "--start-at", "l1-10", "--compare", str(OLD_PLAN),
                             "--chart", str(target), *QUICK)
    assert code == 0, err
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert f"chart written to {target}" in out


def test_an_edited_copy_of_the_default_plan(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    data = yaml.safe_load(default_plan_path().read_text(encoding="utf-8"))
    for stage in data["stages"]:
        if stage["name"] in {"dark-launch", "l2"}:
            stage["bake"] = "3d"
    data["checks"]["l1_cohort_error_guardrail"]["margin"] = 0.005
    edited = tmp_path / "faster.yaml"
    edited.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out, err = run_cli(capsys, str(edited), "--traffic", "30", "--json", *QUICK)
    assert code == 0, err
    (summary,) = json.loads(out)["summaries"]
    assert summary["bakes_seconds"] == 21 * 86400
    assert summary["completed"]["count"] == 4
    assert summary["time_to_complete"]["median_seconds"] < 22 * 86400


def test_an_invalid_plan_lists_its_problems_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(default_plan_path().read_text(encoding="utf-8"))
    data["checks"]["error_rate_guardrail"].pop("margin")
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rollout", "simulate", str(bad), "--traffic", "3"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "error_rate_guardrail" in result.stderr


def test_a_progress_bar_only_on_a_terminal(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run_cli(capsys, PLAN, "--traffic", "30", "--json", *QUICK)
    assert code == 0
    assert "simulating" in err and "4/4" in err
    json.loads(out)  # the bar never mixes into the output
