"""scripts/replay-demo without services: finding the run, what is missing from it, comparing
the replayed stage changes with the recorded ones. The whole path against a kept TSDB is in
tests/integration/test_replay.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.demo.replay import (
    Move,
    ReplayDemoError,
    check_run,
    compare,
    latest_run_dir,
    load_run,
    parse_args,
    replay_argv,
    replay_hint,
    run_from_args,
)

T0 = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
RECORD = {
    "run_id": "20261206-180000", "scenario": "default",
    "started": "2026-12-06T18:00:00Z", "ended": "2026-12-06T18:06:00Z",
    "prometheus_data_dir": "", "tsdb": "", "plan": "",
    "scrape_interval_seconds": 1.0, "evaluation_interval_seconds": 2.0,
}


def write_run(root: Path, name: str, **fields: object) -> Path:
    run = root / name
    (run / "prometheus" / "tsdb").mkdir(parents=True)
    (run / "plan.yaml").write_text("version: 1\n")
    record = RECORD | {"tsdb": str(run / "prometheus" / "tsdb"),
                       "plan": str(run / "plan.yaml")} | fields
    (run / "run.json").write_text(json.dumps(record))
    return run


def test_the_last_run_is_the_newest_folder_with_a_record(tmp_path: Path) -> None:
    write_run(tmp_path, "20261206-170000")
    newest = write_run(tmp_path, "20261206-180000")
    (tmp_path / "20261206-190000").mkdir()  # a run still going: no record yet
    assert latest_run_dir(tmp_path) == newest
    run = load_run(newest)
    assert (run.started, run.ended) == (T0, T0 + timedelta(minutes=6))
    assert run.interval_seconds == 2.0 and run.scrape_seconds == 1.0
    check_run(run)
    with pytest.raises(ReplayDemoError, match="no recorded demo run"):
        latest_run_dir(tmp_path / "nothing")


def test_what_is_missing_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path, "a")
    record = json.loads((run / "run.json").read_text())
    del record["tsdb"], record["ended"]
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(ReplayDemoError, match="lacks tsdb, ended"):
        load_run(run)
    with pytest.raises(ReplayDemoError, match="no Prometheus data at"):
        check_run(load_run(write_run(tmp_path, "b", tsdb=str(tmp_path / "gone"))))
    with pytest.raises(ReplayDemoError, match=r"ends .* before it starts"):
        check_run(load_run(write_run(tmp_path, "c", ended="2026-12-06T17:00:00Z")))
    with pytest.raises(ReplayDemoError, match="cannot read"):
        load_run(tmp_path / "nope")


def test_explicit_options_without_a_record(tmp_path: Path) -> None:
    args = parse_args(["--tsdb", str(tmp_path), "--from", "2026-12-06T18:00:00Z"])
    with pytest.raises(ReplayDemoError, match="--tsdb also needs --to, --plan"):
        run_from_args(args)
    args = parse_args(["--tsdb", str(tmp_path), "--from", "2026-12-06T18:00:00Z",
                       "--to", "2026-12-06T18:05:00Z", "--plan", "p.yaml", "--step", "1"])
    run = run_from_args(args)
    assert run.started == T0 and run.interval_seconds == 1.0
    argv = replay_argv("http://p", run, T0)
    assert argv[:3] == ["replay", "--prometheus", "http://p"]
    assert argv[argv.index("--step") + 1] == "1s"


def test_compare_wants_the_same_stages_in_order() -> None:
    live = [Move(T0, "dark-launch"), Move(T0 + timedelta(seconds=30), "l2")]
    close = [Move(T0 + timedelta(seconds=1), "dark-launch"),
             Move(T0 + timedelta(seconds=32), "l2")]
    assert compare(live, close) == (True, 2.0)
    assert compare(live, close[:1])[0] is False
    assert compare(live, list(reversed(close)))[0] is False
    assert compare([], []) == (True, None)


def test_the_demo_prints_the_replay_command_only_for_a_kept_run(tmp_path: Path) -> None:
    run = write_run(tmp_path, "20261206-180000")
    assert replay_hint(run) == f"replay this run: scripts/replay-demo --run {run}"
    assert replay_hint(tmp_path / "empty") is None
