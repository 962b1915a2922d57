"""What happens next (rollout.next_step), table-tested from StatusView snapshots built the
way /api/status builds them: a stage, a bake, a streak, the last cycle's checks."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from rich.console import Console

from rollout.cli.render import render_status
from rollout.core.observations import Observation
from rollout.core.state import RolloutState
from rollout.next_step import duration_words, next_step, relative, shown_verdict
from rollout.records import CycleSummary
from rollout.status import build_status
from rollout.status_page import render_status_page
from tests.unit.rollout_runtime.evidence_fixtures import (
    GATE_INCONCLUSIVE,
    GATE_PASSES,
    GUARD_BREACH,
    GUARD_HEALTHY,
    OBJECTIVE_OPEN,
    PLAN,
    record,
)
from tests.unit.rollout_runtime.fakes import T0

NOW = T0 + timedelta(seconds=20)  # the bake is 1 min


def at_mid(**changes: object) -> RolloutState:
    state = replace(RolloutState.initial("off", T0), stage_index=1, stage_name="mid",
                    flags_confirmed_at=T0)
    return replace(state, **changes)  # type: ignore[arg-type]


def cycle(*observations: Observation) -> CycleSummary:
    return CycleSummary(kind="cycle", at=NOW, action="hold", from_stage="mid", to_stage="mid",
                        reason="hold", checks=tuple(record(o) for o in observations))


@pytest.mark.parametrize(("state", "observations", "now", "headline", "blockers"), [
    # baking, all passing, one more passing cycle needed
    (at_mid(), (GATE_PASSES, GUARD_HEALTHY), NOW,
     "advances to top when the bake ends in 40 s and after 1 more passing cycle", []),
    # baked and the streak is there: the next cycle advances
    (at_mid(pass_streak=1), (GATE_PASSES, GUARD_HEALTHY), T0 + timedelta(minutes=2),
     "advances to top at the next cycle", []),
    # an inconclusive gate: how many more samples and about how long, from its evidence
    (at_mid(), (GATE_INCONCLUSIVE, GUARD_HEALTHY), NOW,
     "advances to top when the bake ends in 40 s and after 1 more passing cycle; "
     "blocked by L1 stale rate",
     [("stale", "inconclusive", "~8 771 more (\u22489h 44m at the current rate)")]),
    # a failing guardrail is listed first, with its evidence and streak
    (at_mid(failure_streaks={"cohort": 1}), (GATE_INCONCLUSIVE, GUARD_BREACH), NOW,
     "advances to top when the bake ends in 40 s and after 1 more passing cycle; "
     "blocked by L1 cohort error rate, L1 stale rate",
     [("cohort", "failing", "(1 failing cycles in a row)"), ("stale", "inconclusive", "")]),
    # flags not reported yet: every check waits, whatever its last verdict said
    (at_mid(flags_confirmed_at=None), (GATE_PASSES, GUARD_HEALTHY), NOW,
     "advances to top when the bake ends in 40 s and after 1 more passing cycle; "
     "blocked by L1 stale rate",
     [("stale", "waiting", "service reports")]),
    # flags reported just now: judged from min_window (1 s) later
    (at_mid(flags_confirmed_at=NOW), (GATE_PASSES, GUARD_HEALTHY), NOW,
     "advances to top when the bake ends in 40 s and after 1 more passing cycle; "
     "blocked by L1 stale rate",
     [("stale", "waiting", "judged from in 1 s")]),
    # the last stage completes rather than advances
    (replace(at_mid(), stage_index=2, stage_name="top"), (), NOW,
     "completes when the bake ends in 40 s and after 1 more passing cycle; "
     "blocked by L1 stale rate", [("stale", "no data", "not measured yet")]),
    (at_mid().paused("ana", "incident 7", T0), (), NOW,
     "paused by ana 20 s ago: nothing changes until someone runs `rollout resume`", []),
    (at_mid(awaiting_resume=True), (), NOW,
     "holds at mid after the rollback until someone runs `rollout resume`", []),
    (at_mid().completed(T0), (), NOW,
     "complete: nothing more to do; the guardrails are still watched", []),
])
def test_next_step(state: RolloutState, observations: tuple[Observation, ...], now: datetime,
                   headline: str, blockers: list[tuple[str, str, str]]) -> None:
    last = cycle(*observations, OBJECTIVE_OPEN) if observations else None
    if last is not None and state.stage_name != "mid":
        last = None
    step = next_step(build_status(PLAN, state, last, now))
    assert step.headline == headline
    assert [(b.check, b.state) for b in step.blockers] == [(c, s) for c, s, _ in blockers]
    for blocker, (_, _, needs) in zip(step.blockers, blockers, strict=True):
        assert needs in blocker.needs, blocker.needs
    assert "cost" not in {b.check for b in step.blockers}  # objectives never block


def test_not_evaluated_yet() -> None:
    step = next_step(build_status(PLAN, None, None, NOW))
    assert step.headline.startswith("not evaluated yet")


def test_a_check_not_judged_yet_is_shown_waiting_not_pass() -> None:
    status = build_status(PLAN, at_mid(flags_confirmed_at=NOW), cycle(GATE_PASSES), NOW)
    [gate] = status.enforced_checks
    assert gate.verdict == "pass" and shown_verdict(status, gate) == "waiting"
    later = build_status(PLAN, at_mid(flags_confirmed_at=NOW), cycle(GATE_PASSES),
                         NOW + timedelta(seconds=5))
    assert shown_verdict(later, later.enforced_checks[0]) == "pass"


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 s"), (45, "45 s"), (720, "12 min"), (3 * 3600 + 600, "3 h 10 min"),
    (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"), (-90, "1 min 30 s"),
])
def test_duration_words(seconds: float, words: str) -> None:
    assert duration_words(seconds) == words


def test_relative() -> None:
    assert relative(NOW - timedelta(minutes=12), NOW) == "12 min ago"
    assert relative(NOW + timedelta(hours=3, minutes=10), NOW) == "in 3 h 10 min"
    assert relative(NOW, NOW) == "just now" and relative(None, NOW) == "never"


def test_the_page_and_the_terminal_say_what_happens_next() -> None:
    status = build_status(PLAN, at_mid(flags_confirmed_at=NOW), cycle(GATE_PASSES), NOW)
    page = render_status_page(status, [])
    nxt = page[page.index('<section id="next">'):]
    nxt = nxt[:nxt.index("</section>")]
    assert "advances to top when the bake ends in 40 s" in nxt
    assert 'data-blocker="stale"' in nxt and "judged from in 1 s" in nxt
    gate = page[page.index('<tr data-check="stale">'):]
    assert '<span class="verdict nodata">waiting</span>' in gate[:gate.index("</tr>")]
    # relative times, the absolute one on hover
    assert '<time datetime="2025-06-01T12:00:00+00:00" title="2025-06-01 12:00:00Z">20 s ago' \
        in page
    out = Console(file=io.StringIO(), width=200, markup=False, highlight=False)
    render_status(out, status)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "Next: advances to top when the bake ends in 40 s" in text
    assert "L1 stale rate: waiting \u2014 judged from in 1 s" in text
    [row] = [line for line in text.splitlines() if line.startswith("\u2502 L1 stale rate")]
    assert "waiting" in row and " pass " not in row  # the table shows it waiting, not pass
