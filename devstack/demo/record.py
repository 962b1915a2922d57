"""What a run leaves behind for a replay: the time range the controller ran, the Prometheus
data it decided on (kept in the run's folder when Prometheus stops), and the plan it used.

`rollout replay --prometheus URL --from T1 --to T2 --plan FILE` re-evaluates the plan over
recorded data; URL is a Prometheus started on the kept TSDB (`--storage.tsdb.path`, with a
retention longer than the run's age: the demo's own Prometheus kept one day).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.demo.runner import Runner
    from devstack.demo.stack import Demo


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class ReplayRecord:
    run_id: str
    scenario: str  # default | fault
    started: str  # ISO 8601 UTC: the controller's start (its first cycle is in `off`)
    ended: str  # ISO 8601 UTC: the end of the run, before anything was stopped
    prometheus_data_dir: str  # holds tsdb/ and the prometheus.yml it ran with
    tsdb: str  # the directory to pass as --storage.tsdb.path
    plan: str  # the plan the controller ran (time_scale included)
    scrape_interval_seconds: float
    evaluation_interval_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def lines(self) -> list[str]:
        return [
            f"this run, for a replay: {self.started} to {self.ended} (UTC)",
            f"  Prometheus data (kept after the run): {self.tsdb}",
            f"  plan: {self.plan}",
            f"  recorded in {Path(self.prometheus_data_dir).parent / 'run.json'}",
        ]


def replay_record(demo: Demo, runner: Runner, end: float) -> ReplayRecord | None:
    """None when the controller never started (nothing to replay)."""
    if runner.controller_started_at is None:
        return None
    return ReplayRecord(
        run_id=demo.run_id,
        scenario="fault" if runner.fault else "default",
        started=iso_utc(runner.controller_started_at),
        ended=iso_utc(end),
        prometheus_data_dir=str(demo.prometheus_data),
        tsdb=str(demo.prometheus_data / "tsdb"),
        plan=str(demo.plan_path),
        scrape_interval_seconds=demo.profile.scrape,
        evaluation_interval_seconds=demo.profile.interval,
    )
