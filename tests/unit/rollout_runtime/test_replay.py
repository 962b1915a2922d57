"""`rollout replay` without Prometheus: the loop over a scripted recording (the state moves by
each decision, the flags come from what the service reported at each step), the condensed
report, and the command line's refusals (one line naming the option; exit 2, or 1 when
Prometheus cannot be reached). The real thing against a recorded TSDB is
tests/integration/test_replay.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.network import free_port
from rollout.cli.main import main
from rollout.cli.replay import parse_moment
from rollout.core.decision import Action
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement
from rollout.ports import MetricsSource, RecordedMetricsSource, ReportedFlags
from rollout.replay import (
    ReplayDecision,
    ReplayHolds,
    ReplayRangeError,
    ReplayWindow,
    condensed,
    replay,
    report_of,
    starting_state,
)
from tests.unit.rollout_runtime.fakes import MID, OFF, T0, small_plan

STEP = timedelta(seconds=10)


class Recording:
    """A RecordedMetricsSource: every check reads a healthy value at any time; the service
    reports the flags of `timeline` (from each moment on) and nothing before the first."""

    def __init__(self, timeline: Sequence[tuple[timedelta, FlagSettings]]) -> None:
        self.timeline = [(T0 + offset, flags) for offset, flags in timeline]
        self.asked: list[datetime] = []

    def as_of(self, moment: datetime) -> MetricsSource:
        self.asked.append(moment)
        return _AsOf(self, moment)

    def flags_at(self, moment: datetime) -> FlagSettings | None:
        current = None
        for since, flags in self.timeline:
            if since <= moment:
                current = flags
        return current

    async def aclose(self) -> None:
        return None


class _AsOf:
    def __init__(self, recording: Recording, moment: datetime) -> None:
        self.recording, self.moment = recording, moment

    async def measure(self, query: str, sample_query: str | None) -> Measurement:
        return Measurement(value=0.5, sample=100.0)

    async def reported_flags(self) -> ReportedFlags:
        flags = self.recording.flags_at(self.moment)
        return ReportedFlags(settings=flags, instances=0 if flags is None else 1)

    async def aclose(self) -> None:
        return None


async def test_the_state_moves_by_each_decision_and_the_flags_come_from_the_recording() -> None:
    plan = small_plan()
    # The service ran `mid` from 1m30s on and never ran `top`.
    recording = Recording([(timedelta(0), OFF), (timedelta(seconds=90), MID)])
    assert isinstance(recording, RecordedMetricsSource)
    window = ReplayWindow(T0, T0 + timedelta(minutes=4), STEP)
    steps = await replay(plan, recording, window, starting_state(plan, T0))

    assert [s.at for s in steps] == list(window.moments()) == recording.asked
    assert len(steps) == 25
    moves = [(s.at - T0, s.decision.from_stage, s.decision.target_stage)
             for s in steps if s.decision.action is not Action.HOLD]
    # off advances after its 1m bake; mid waits until the recording shows the service on
    # mid's flags (1m30s), bakes from its entry, then advances; top never sees its flags.
    assert [(src, dst) for _, src, dst in moves] == [("off", "mid"), ("mid", "top")]
    entered_mid, entered_top = moves[0][0], moves[1][0]
    assert entered_mid == timedelta(minutes=1)
    assert entered_top >= entered_mid + timedelta(minutes=1)
    for step in steps:
        before = step.state_before
        if before.stage_name == "mid" and step.at < T0 + timedelta(seconds=90):
            assert "waiting for the service to report mid's flags" in step.decision.reason
        if before.stage_name == "top":
            assert step.decision.action is Action.HOLD
            assert "waiting for the service to report top's flags" in step.decision.reason
    mid_confirmed = next(s.state_after.flags_confirmed_at for s in steps
                         if s.state_after.stage_name == "mid"
                         and s.state_after.flags_confirmed_at is not None)
    assert mid_confirmed == T0 + timedelta(seconds=90)
    # Each step starts from the state the previous decision returned.
    for earlier, later in itertools.pairwise(steps):
        assert later.state_before == earlier.state_after


async def test_a_start_stage_starts_there_without_a_baseline() -> None:
    plan = small_plan()
    recording = Recording([(timedelta(0), MID)])
    window = ReplayWindow(T0, T0 + timedelta(seconds=30), STEP)
    steps = await replay(plan, recording, window, starting_state(plan, T0, "mid"))
    assert steps[0].state_before.stage_name == "mid" and not steps[0].state_before.baseline
    assert steps[0].observations.flags_match
    with pytest.raises(ValueError, match="no stage 'nope'"):
        starting_state(plan, T0, "nope")


async def test_the_report_condenses_holds_and_shows_the_last_step() -> None:
    plan = small_plan()
    recording = Recording([(timedelta(0), OFF), (timedelta(seconds=90), MID)])
    window = ReplayWindow(T0, T0 + timedelta(minutes=4), STEP)
    steps = await replay(plan, recording, window, starting_state(plan, T0))
    entries = condensed(plan, steps)
    kinds = [(type(e).__name__, getattr(e, "action", None)) for e in entries]
    assert kinds == [("ReplayHolds", None), ("ReplayDecision", "advance"), ("ReplayHolds", None),
                     ("ReplayDecision", "advance"), ("ReplayHolds", None),
                     ("ReplayDecision", "hold")]
    holds = [e for e in entries if isinstance(e, ReplayHolds)]
    decisions = [e for e in entries if isinstance(e, ReplayDecision)]
    assert sum(h.steps for h in holds) + len(decisions) == len(steps)
    assert holds[0].stage == "off" and holds[0].first_at == T0
    assert decisions[0].moved and decisions[0].checks  # with each check's verdict
    assert {c.verdict for c in decisions[0].checks} == {"pass"}
    assert len(condensed(plan, steps, every_step=True)) == len(steps)

    report = report_of(plan, steps, window, prometheus="http://p", plan_source="x.yaml",
                       started_fresh=True)
    assert report.final_stage == "top" and not report.completed
    assert [t.split(" at ")[0] for t in report.transitions] == [
        "off \u2192 mid (advance)", "mid \u2192 top (advance)"]
    assert report.warnings == ()


async def test_a_window_with_no_service_recorded_warns() -> None:
    plan = small_plan()
    window = ReplayWindow(T0, T0 + timedelta(seconds=30), STEP)
    steps = await replay(plan, Recording([]), window, starting_state(plan, T0))
    report = report_of(plan, steps, window, prometheus="http://p", plan_source="x.yaml",
                       started_fresh=True)
    assert [w.split(":")[0] for w in report.warnings] == [
        "Prometheus holds no ai_agent_flag_state in this window"]


def test_windows_refuse_what_cannot_be_replayed() -> None:
    with pytest.raises(ReplayRangeError, match=r"^--to: .* is not after --from"):
        ReplayWindow(T0, T0, STEP)
    with pytest.raises(ReplayRangeError, match=r"^--step: must be a positive"):
        ReplayWindow(T0, T0 + STEP, timedelta(0))
    with pytest.raises(ReplayRangeError, match=r"^--step: .* steps; at most 100000"):
        ReplayWindow(T0, T0 + timedelta(days=30), timedelta(seconds=1))
    window = ReplayWindow(T0, T0 + timedelta(seconds=25), STEP)
    assert list(window.moments()) == [T0, T0 + STEP, T0 + 2 * STEP]


def test_times_are_iso_unix_seconds_or_relative_to_now() -> None:
    now = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    assert parse_moment("2026-12-06T17:00:00Z", now) == now - timedelta(hours=1)
    assert parse_moment("2026-12-06 17:00:00", now) == now - timedelta(hours=1)  # naive: UTC
    assert parse_moment("2026-12-06T18:00:00+01:00", now) == now - timedelta(hours=1)
    assert parse_moment(str(now.timestamp() - 30), now) == now - timedelta(seconds=30)
    assert parse_moment("now", now) == now
    assert parse_moment("now-2h", now) == now - timedelta(hours=2)
    for bad in ("yesterday", "", "nan", "now-soon", "2026-13-01"):
        with pytest.raises(ValueError, match="must be"):
            parse_moment(bad, now)


# --- the command line's refusals --------------------------------------------------------------

def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PROMETHEUS_URL", "ROLLOUT_PLAN", "ROLLOUT_TIME_SCALE",
                 "ROLLOUT_INTERVAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.chdir(tmp_path)  # no stray .env file


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(("argv", "option"), [
    (["--from", "yesterday", "--to", "now"], "--from"),
    (["--from", "now-1h", "--to", "tomorrow"], "--to"),
    (["--from", "now-1h", "--to", "now-2h"], "--to"),
    (["--from", "now-1h", "--to", "now-1h"], "--to"),
    (["--from", "now-1h", "--to", "2999-01-01T00:00:00Z"], "--to"),
    (["--from", "now-1h", "--to", "now", "--step", "0s"], "--step"),
    (["--from", "now-1h", "--to", "now", "--step=-1m"], "--step"),
    (["--from", "now-1h", "--to", "now", "--step", "soon"], "--step"),
    (["--from", "now-30d", "--to", "now", "--step", "1s"], "--step"),
    (["--from", "now-1h", "--to", "now", "--time-scale", "0"], "--time-scale"),
    (["--from", "now-1h", "--to", "now", "--start-stage", "l1-11"], "--start-stage"),
    (["--from", "now-1h", "--to", "now", "--prometheus", "localhost:9090"], "--prometheus"),
])
def test_bad_arguments_are_one_line_naming_the_option_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str,
) -> None:
    code, out, err = _run(capsys, "--prometheus", f"http://127.0.0.1:{free_port()}", *argv)
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert option in err and "Traceback" not in err


@pytest.mark.usefixtures("clean_env")
def test_a_bad_plan_says_every_problem_under_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    code, out, err = _run(capsys, "--prometheus", f"http://127.0.0.1:{free_port()}",
                          "--from", "now-1h", "--to", "now", "--plan", str(tmp_path / "no.yaml"))
    assert code == 2 and out == ""
    first, *problems = err.strip().splitlines()
    assert first.startswith("--plan: ") and "no.yaml" in first
    assert problems == ["  - cannot read the file: No such file or directory"]


@pytest.mark.usefixtures("clean_env")
def test_a_start_stage_typo_suggests_the_stage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--prometheus", f"http://127.0.0.1:{free_port()}",
                        "--from", "now-1h", "--to", "now", "--start-stage", "l1-11")
    assert code == 2 and "did you mean 'l1-10'" in err


@pytest.mark.usefixtures("clean_env")
def test_an_unreachable_prometheus_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = _run(capsys, "--prometheus", url, "--from", "now-10m", "--to", "now")
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"error: --prometheus: cannot reach Prometheus at {url}: Connection refused"]
