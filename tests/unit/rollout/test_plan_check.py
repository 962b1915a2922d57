"""`rollout plan check`: the samples and time each statistical check of a plan needs at a
traffic (rollout.core.plan_check), and the command that prints them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rollout.cli.main import main
from rollout.core.flags import FlagSettings
from rollout.core.plan import CheckKind, Plan
from rollout.core.plan_check import (
    Assumptions,
    Awaited,
    CheckNeed,
    check_plan,
    trials_per_second,
)
from rollout.core.plan_loader import load_default_plan, plan_from_mapping
from rollout.core.stats import non_inferiority, samples_for_difference, samples_for_limit
from rollout.core.stats_design import StatVerdict
from rollout.plans import default_plan_path

DAY = 86400.0


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_default_plan()


def rows_of(plan: Plan, traffic: float, **assumed: float) -> dict[tuple[str, str], CheckNeed]:
    result = check_plan(plan, Assumptions(traffic=traffic, **assumed))
    return {(row.stage, row.check): row for row in result.rows}


# --- the rows ------------------------------------------------------------------------------------
def test_every_statistical_check_of_every_stage_has_a_row(plan: Plan) -> None:
    rows = rows_of(plan, 30.0)
    expected = {(stage.name, check.name) for index, stage in enumerate(plan.stages) if index
                for check in plan.checks_for(index) if check.stat is not None}
    assert set(rows) == expected
    # Gates and objectives wait for a healthy stage to pass, guardrails for a proven breach.
    for row in rows.values():
        wanted = Awaited.FAIL if row.kind is CheckKind.GUARDRAIL else Awaited.PASS
        assert row.awaited is wanted, row


def test_the_default_plan_decides_within_its_bakes_at_30_queries_per_second(plan: Plan) -> None:
    result = check_plan(plan, Assumptions(traffic=30.0))
    assert result.warnings == ()
    timed = [row for row in result.rows if row.timed]
    assert timed and all(row.within_bake for row in timed)


@pytest.mark.parametrize(("traffic", "warned"), [(0.0038, True), (0.012, False)])
def test_a_baseline_short_of_its_minimum_sample_is_a_warning(plan: Plan, traffic: float,
                                                             warned: bool) -> None:
    """At the seed's ~330 answers a day `off` never records its baseline (1,000 a day);
    at ~1,040 a day it does."""
    result = check_plan(plan, Assumptions(traffic=traffic))
    baseline = [w for w in result.warnings if w.startswith("off: baseline ")]
    assert bool(baseline) is warned
    if warned:
        assert len(baseline) == len(plan.baseline_checks())
        assert "needs 1000 samples in its 1d window, gets ≈328" in baseline[0]


def test_idle_and_relative_rows_say_why_they_have_no_time(plan: Plan) -> None:
    rows = rows_of(plan, 30.0)
    for stage in ("dark-launch", "l2", "l1-100"):  # no L1 cohort, or no control cohort
        cohort = rows[(stage, "l1_cohort_error_guardrail")]
        assert cohort.idle and cohort.within_bake is None
        assert cohort.note.startswith("idle: no control traffic at L1")
    for stage in ("dark-launch", "l2"):  # no L1 answer is served, none audited
        assert rows[(stage, "cache_integrity_guardrail")].note == "idle: no traffic at L1 0 %"
    cost = rows[("l2", "cost_20pct_below_baseline")]
    assert not cost.timed and not cost.idle and cost.samples is None
    assert "baseline_cost_per_query_usd" in cost.note


def test_a_limit_gate_needs_what_the_limit_test_needs(plan: Plan) -> None:
    row = rows_of(plan, 10.0)[("l2", "verification_mismatch_rate")]
    # Healthy: half the 1 % limit; a gate's alphas both 5 %.
    assert (row.rate, row.against) == (0.005, 0.01)
    assert row.samples == samples_for_limit(0.005, 0.01, 0.05, 0.05)
    assert row.trials_per_second == 10.0
    assert row.seconds == pytest.approx(row.samples / 10.0)


def test_a_hit_rate_gate_is_assumed_half_again_above_its_limit(plan: Plan) -> None:
    row = rows_of(plan, 10.0)[("dark-launch", "l2_shadow_hit_rate")]
    assert row.rate == pytest.approx(0.45)  # the seed's expected 40-50 %
    assert row.samples == samples_for_limit(0.45, 0.30, 0.05, 0.05, higher_is_worse=False)


def test_a_guardrail_is_timed_for_proving_a_regression(plan: Plan) -> None:
    row = rows_of(plan, 10.0)[("l1-50", "cache_integrity_guardrail")]
    # 1.5 x the 0.5 % limit, proven at the guardrail's alpha_fail.
    assert row.rate == pytest.approx(0.0075)
    assert row.samples == samples_for_limit(0.0075, 0.005, 0.05, 0.00045)
    # Audits: the L1 cohort (50 %) x its hit rate (30 %).
    assert row.trials_per_second == pytest.approx(10.0 * 0.5 * 0.3)


def test_a_control_comparison_counts_both_cohorts(plan: Plan) -> None:
    row = rows_of(plan, 20.0)[("l1-10", "l1_cohort_error_rate_vs_control")]
    assert (row.rate, row.against, row.margin) == (0.01, 0.01, 0.01)
    assert row.samples == samples_for_difference(0.01, 0.01, 0.01, 0.05, 0.05,
                                                 treatment_share=0.1)
    assert row.trials_per_second == pytest.approx(20.0)
    guardrail = rows_of(plan, 20.0)[("l1-10", "l1_cohort_error_guardrail")]
    assert guardrail.rate == pytest.approx(0.025)  # control + 1.5 x the 1 pp margin


def test_a_baseline_comparison_uses_the_counts_of_the_first_stage(plan: Plan) -> None:
    row = rows_of(plan, 2.0)[("dark-launch", "error_rate_vs_baseline")]
    recorded = 2.0 * DAY  # every query of `off`'s one-day bake

    def verdict(n: float) -> StatVerdict:
        return non_inferiority(0.01 * n, n, 0.01 * recorded, recorded, 0.005, 0.05,
                               0.05).verdict

    assert row.samples is not None
    assert verdict(row.samples) is StatVerdict.PASS
    assert verdict(row.samples - 1) is not StatVerdict.PASS


def test_since_carries_the_trials_of_earlier_stages(plan: Plan) -> None:
    rows = rows_of(plan, 1.0)
    first = rows[("l1-10", "l1_stale_rate_1pct")]
    assert first.carried == 0.0
    last = rows[("l1-100", "l1_stale_rate_0_1pct")]
    audits = 0.3  # per query of the L1 cohort
    carried = 4 * DAY * 0.1 * audits + 5 * DAY * 0.5 * audits  # l1-10, then l1-50
    assert last.carried == pytest.approx(carried)
    assert last.samples is not None
    assert last.seconds == pytest.approx(max(0.0, last.samples - carried) / (1.0 * audits))


def test_low_traffic_warns_where_a_stage_cannot_decide(plan: Plan) -> None:
    result = check_plan(plan, Assumptions(traffic=0.2))
    warnings = "\n".join(result.warnings)
    assert "l1-10: gate l1_stale_rate_1pct needs ≈" in warnings
    assert "longer than its 4d bake: the stage holds until then" in warnings
    assert "l1-10: guardrail cache_integrity_guardrail needs ≈" in warnings
    assert "the rollout may advance before it is caught here" in warnings
    # A dry run never acts: no warning, however slow.
    assert "l2_served_hit_rate" not in warnings


def test_too_small_a_baseline_can_never_pass() -> None:
    data = yaml.safe_load(default_plan_path().read_text(encoding="utf-8"))
    data["stages"][0]["bake"] = "10m"  # a baseline of a few hundred queries
    short = plan_from_mapping(data)
    result = check_plan(short, Assumptions(traffic=1.0))
    row = next(r for r in result.rows
               if (r.stage, r.check) == ("dark-launch", "error_rate_vs_baseline"))
    assert row.samples is None and row.within_bake is False
    assert "recorded trials are too few for the margin" in row.note
    assert any(w.startswith("dark-launch: gate error_rate_vs_baseline can never pass")
               for w in result.warnings)


def test_a_gate_without_traffic_holds_for_good() -> None:
    data = yaml.safe_load(default_plan_path().read_text(encoding="utf-8"))
    data["stages"][1]["checks"].append("l1_stale_rate_1pct")  # audits of L1 at 0 %
    data["checks"]["l1_stale_rate_1pct"].pop("since")
    result = check_plan(plan_from_mapping(data), Assumptions(traffic=30.0))
    assert ("dark-launch: gate l1_stale_rate_1pct can never pass at 30 queries/s (idle: no "
            "traffic at L1 0 %): the stage holds for good") in result.warnings


@pytest.mark.parametrize(
    ("template", "percent", "expected"),
    [
        pytest.param('sum(increase(v{cache_layer="query_result"}[{window}]))', 50, 1.5,
                     id="l1-audits"),
        pytest.param('sum(increase(q{l1="on"}[{window}]))', 10, 1.0, id="l1-cohort"),
        pytest.param('sum(increase(q{l1="off"}[{window}]))', 10, 9.0, id="control-cohort"),
        pytest.param("sum(increase(q[{window}]))", 10, 10.0, id="every-query"),
        pytest.param('sum(increase(v{cache_layer="query_result"}[{window}]))', 0, 0.0,
                     id="no-l1-no-audits"),
    ],
)
def test_trials_per_second_from_the_selectors(template: str, percent: int,
                                              expected: float) -> None:
    flags = FlagSettings(shadow=True, l2=True, l1_percent=percent)
    assumed = Assumptions(traffic=10.0, l1_hit_rate=0.3)
    assert trials_per_second(template, flags, assumed) == pytest.approx(expected)


@pytest.mark.parametrize(
    "bad", [{"traffic": 0.0}, {"traffic": float("nan")}, {"traffic": 1.0, "headroom": 1.0},
            {"traffic": 1.0, "error_rate": 0.0}],
)
def test_assumptions_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Assumptions(**bad)


# --- the command ---------------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "220")
    # A broken environment does not get in the way of checking a file (as plan validate).
    monkeypatch.setenv("ROLLOUT_INTERVAL_SECONDS", "soon")


@pytest.mark.usefixtures("wide")
def test_plan_check_prints_every_stage_and_no_warning_at_enough_traffic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "plan", "check", str(default_plan_path()), "--traffic", "30")
    assert code == 0, err
    assert "statistical checks at 30 queries/s" in out
    for title in ("dark-launch (bake 7d)", "l2 (bake 7d)", "l1-10 (bake 4d)", "l1-50 (bake 5d)",
                  "l1-100 (bake 5d)"):
        assert title in out
    assert "l1_stale_rate_0_1pct" in out and "(with earlier stages)" in out
    assert "Every enforced check decides within its stage's bake." in out
    assert "warning:" not in out


@pytest.mark.usefixtures("wide")
def test_plan_check_warns_at_low_traffic(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plan", "check", str(default_plan_path()),
                           "--traffic", "0.2", "--l1-hit-rate", "0.4")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any(line.startswith("warning: l1-10: gate l1_stale_rate_1pct needs") for line in lines)
    assert "L1 hit rate 40 %" in out


@pytest.mark.usefixtures("wide")
def test_plan_check_json(capsys: pytest.CaptureFixture[str], plan: Plan) -> None:
    code, out, _ = run_cli(capsys, "plan", "check", "--json", str(default_plan_path()),
                           "--traffic", "0.2", "--error-rate", "0.02")
    assert code == 0
    report = json.loads(out)
    assert report["assumptions"]["error_rate"] == 0.02
    assert len(report["rows"]) == len(check_plan(plan, Assumptions(traffic=0.2)).rows)
    row = next(r for r in report["rows"] if r["check"] == "error_rate_vs_baseline")
    assert row["kind"] == "gate" and row["awaited"] == "pass" and row["rate"] == 0.02
    assert {"samples", "seconds", "bake_seconds", "within_bake", "note"} <= set(row)
    assert report["warnings"]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        pytest.param(["--traffic", "fast"], "argument --traffic: must be a positive number",
                     id="traffic-text"),
        pytest.param(["--traffic", "-3"], "argument --traffic: must be a positive number",
                     id="traffic-negative"),
        pytest.param([], "the following arguments are required: --traffic", id="no-traffic"),
        pytest.param(["--traffic", "1", "--headroom", "1.5"],
                     "argument --headroom: must be a rate between 0 and 1", id="headroom"),
        pytest.param(["--traffic", "1", "--slow-share", "nan"],
                     "argument --slow-share: must be a rate between 0 and 1", id="slow-nan"),
    ],
)
def test_plan_check_bad_options_name_the_option(capsys: pytest.CaptureFixture[str],
                                                argv: list[str], field: str) -> None:
    code, _, err = run_cli(capsys, "plan", "check", str(default_plan_path()), *argv)
    assert code == 2 and field in err, err


def test_plan_check_of_an_invalid_plan_lists_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(default_plan_path().read_text(encoding="utf-8"))
    data["checks"]["l1_stale_rate_1pct"]["since"] = "l1-5O"
    data["checks"]["error_rate_guardrail"].pop("margin")
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rollout", "plan", "check", str(bad), "--traffic", "3"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "checks.l1_stale_rate_1pct.since: unknown stage 'l1-5O' (did you mean" in result.stderr
    assert "checks.error_rate_guardrail.margin: missing" in result.stderr
