"""The decision benchmark (bench/decision_bench), a user of the product's simulator
(rollout.simulate, tested in tests/unit/rollout/simulate): its two scenarios in the
simulator's terms, and its batch summarised into the side-by-side table. Figures are the
benchmark's business, not asserted here."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bench.decision_bench.batch import Config, Task, run_task, tasks
from bench.decision_bench.cli import OLD_PLAN
from bench.decision_bench.report import lines, summarise, table
from rollout.plans import default_plan_path

HOUR = timedelta(hours=1)


def _config(runs: int, **changes: object) -> Config:
    values: dict[str, object] = {
        "plans": (("new", default_plan_path()), ("old", OLD_PLAN)), "runs": runs,
        "rates": (30.0,), "cycle": HOUR, "seed": 7, "healthy_cap": timedelta(days=35),
        "regression_cap": timedelta(days=3), "regression_stage": "l1-10",
    }
    values.update(changes)
    return Config(**values)  # type: ignore[arg-type]


def test_the_regression_is_promoted_to_its_stage_and_timed_from_there() -> None:
    config = _config(1)
    spec = config.run_spec("regression")
    assert (spec.start_at, spec.stop_when_left) == ("l1-10", True)
    assert config.scenario("regression").size == 0.03
    rows = run_task(config, Task(0, "regression", (0,)))
    new = next(r for r in rows if r["plan"] == "new")
    assert new["outcome"] == "rolled_back" and new["stage"] == "l1-10"
    assert ("promote" in {t[1] for t in new["transitions"]})
    # Timed from the promotion, not from the start of `off` (a day earlier).
    assert 0 < new["seconds"] < timedelta(days=1).total_seconds()


def test_a_batch_summarises_into_the_side_by_side_table(tmp_path: Path) -> None:
    config = _config(2)
    rows = [row for task in tasks(config) for row in run_task(config, task)]
    assert len(rows) == 2 * 2 * 2  # runs x scenarios x plans
    assert {(r["scenario"], r["plan"]) for r in rows} == {
        (s, p) for s in ("healthy", "regression") for p in ("new", "old")}
    summaries = summarise(rows, horizon_days=29)
    assert {s["scenario"] for s in summaries} == {"healthy", "regression"}
    for summary in summaries:
        assert summary["runs"] == 2
        assert 0 <= summary["rolled_back"]["share"] <= 1
    text = table(lines(summaries, 29))
    assert "A/A: runs with any rollback" in text and "rolled back before advancing" in text
