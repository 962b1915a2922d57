"""Folding the decision log: transitions and manual actions kept, runs of holds folded."""

from __future__ import annotations

from datetime import timedelta

from rollout.history_view import HeldRun, fold_holds
from rollout.records import LogEntry
from rollout.status import build_status
from rollout.status_page import render_status_page
from tests.unit.rollout_runtime.evidence_fixtures import PLAN
from tests.unit.rollout_runtime.fakes import T0


def entry(i: int, action: str, stage: str, to: str | None = None, *, kind: str = "cycle",
          reason: str = "") -> LogEntry:
    return LogEntry(kind=kind, at=T0 + timedelta(minutes=i), action=action, from_stage=stage,
                    to_stage=to or stage, reason=reason or f"{action} {i}", by="ctl")


def newest_first(*entries: LogEntry) -> list[LogEntry]:
    return sorted(entries, key=lambda e: e.at or T0, reverse=True)


LOG = newest_first(
    entry(0, "advance", "off", "mid"),
    *(entry(i, "hold", "mid", reason=f"baking {i}m of 10m") for i in range(1, 12)),
    entry(12, "pause", "mid", kind="command", reason="incident <b>7</b>"),
    entry(13, "hold", "mid"),
    entry(14, "resume", "mid", kind="command"),
    entry(15, "hold", "mid"), entry(16, "hold", "mid"),
    entry(17, "rollback", "mid", "off"),
    entry(18, "hold", "off"),
)


def test_holds_are_folded_between_transitions_and_manual_actions() -> None:
    rows = fold_holds(LOG)
    shown = [r.text() if isinstance(r, HeldRun) else f"{r.action} {r.from_stage}"
             for r in rows]
    assert shown == [
        "held 1\u00d7 at off for: hold 18",
        "rollback mid",
        "held 2\u00d7 at mid for: hold 16",
        "resume mid",
        "held 1\u00d7 at mid for: hold 13",
        "pause mid",
        "held 11\u00d7 at mid for: baking 11m of 10m",
        "advance off",
    ]
    run = rows[6]
    assert isinstance(run, HeldRun)
    assert run.first_at == T0 + timedelta(minutes=1) and run.last_at == T0 + timedelta(minutes=11)


def test_a_stage_change_splits_a_run_and_an_empty_log_is_empty() -> None:
    holds = newest_first(entry(1, "hold", "off"), entry(2, "hold", "mid"))
    assert [r.stage for r in fold_holds(holds) if isinstance(r, HeldRun)] == ["mid", "off"]
    assert fold_holds([]) == []


def test_the_page_folds_the_holds_and_escapes_reasons() -> None:
    status = build_status(PLAN, None, None, T0 + timedelta(minutes=20))
    page = render_status_page(status, LOG)
    history = page[page.index('<section id="history">'):]
    assert history.count('<tr class="held">') == 4
    assert "held 11\u00d7" in history and "for: baking 11m of 10m" in history
    assert "incident &lt;b&gt;7&lt;/b&gt;" in history and "<b>7</b>" not in history
