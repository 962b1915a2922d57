"""The page's timeline: the stage over time from the log, each statistical check's estimate
and bound against its limit over the current stage, as escaped inline SVG."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from rollout.core.state import RolloutState
from rollout.records import LogEntry
from rollout.status import build_status
from rollout.status_svg import check_charts, stage_chart
from tests.unit.rollout_runtime.evidence_fixtures import (
    GATE_INCONCLUSIVE,
    GATE_PASSES,
    PLAN,
    record,
)
from tests.unit.rollout_runtime.fakes import T0

ENTERED = T0 + timedelta(minutes=5)
NOW = T0 + timedelta(minutes=20)


def log() -> list[LogEntry]:
    advance = LogEntry(kind="cycle", at=ENTERED, action="advance", from_stage="off",
                       to_stage="mid", reason="passed")
    hostile = record(GATE_INCONCLUSIVE).model_copy(update={"label": "<i>stale</i>"})
    holds = [LogEntry(kind="cycle", at=ENTERED + timedelta(minutes=i), action="hold",
                      from_stage="mid", to_stage="mid", reason="hold",
                      checks=(hostile if i < 3 else record(GATE_PASSES),))
             for i in range(1, 6)]
    return [*reversed(holds), advance]


def status_at_mid() -> object:
    state = replace(RolloutState.initial("off", T0), stage_index=1, stage_name="mid",
                    entered_at=ENTERED, flags_confirmed_at=ENTERED)
    last = log()[0]
    return build_status(PLAN, state, last, NOW)


def test_the_stage_chart_steps_up_at_the_advance() -> None:
    status = status_at_mid()
    svg = stage_chart(status, log())  # type: ignore[arg-type]
    assert svg.startswith('<svg class="chart" id="stage-chart"')
    # three stage rows, one step (off -> mid) marked with its time
    assert svg.count("<text") == 3 + 2 and svg.count("<circle") == 1
    assert "2025-06-01 12:05:00Z: mid" in svg
    path = svg[svg.index('<path d="') + 9:]
    assert path.startswith("M110.0 ") and " V" in path.split('"')[0]


def test_each_statistical_check_is_charted_against_its_limit_and_escaped() -> None:
    status = status_at_mid()
    svg = check_charts(status, log())  # type: ignore[arg-type]
    assert svg.count('class="chart check-chart" data-check="stale"') == 1
    assert svg.count('class="estimate"') == 5  # one dot per cycle of this stage
    assert 'class="limit"' in svg and 'class="bound"' in svg
    assert "<i>" not in svg and "limit \u2264 1 %" in svg
