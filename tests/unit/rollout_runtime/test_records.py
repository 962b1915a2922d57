"""The typed records the controller stores and shows: what older controllers wrote still
reads, what cannot be read is kept raw, every record survives its own JSON, and a
statistical check's record carries the evidence of its verdict."""

from __future__ import annotations

import json
import math
from dataclasses import replace

from rollout.core.flags import FlagSettings
from rollout.core.observations import Verdict
from rollout.records import CycleSummary, FlagsRecord, IntentRecord, LogEntry
from rollout.status import StatusView, build_status
from tests.unit.rollout_runtime.conftest import Harness
from tests.unit.rollout_runtime.evidence_fixtures import (
    GATE_INCONCLUSIVE,
    GATE_PASSES,
    GUARD_BREACH,
    OBJECTIVE_MET,
    OBJECTIVE_OPEN,
    record,
)
from tests.unit.rollout_runtime.fakes import T0, small_plan

# An entry exactly as the controller before the typed records stored it (dicts, ISO times
# with an offset, nulls written out, a `result` that is now derived).
LEGACY_ENTRY = {
    "kind": "cycle", "at": "2026-11-27T10:00:00.123456+00:00", "instance": "ctl-a",
    "fence": 3, "action": "advance", "by": "controller", "from_stage": "off",
    "to_stage": "dark-launch", "reason": "all gates passed: off \u2192 dark-launch",
    "transition": "advance", "overdue": False, "paused": False,
    "checks": [{"check": "p95", "label": "p95 latency", "kind": "baseline",
                "verdict": "pass", "value": 1.75, "limit": None, "sample": 2035.0,
                "comparator": None, "value_text": "1.75 s", "limit_text": None,
                "critical": False, "dry_run": False, "message": "p95 1.75 s", "error": None}],
    "flags_match": True,
    "reported_flags": {"settings": {"shadow": False, "l2": False, "l1_percent": 0},
                       "instances": 2, "consistent": True, "error": None},
    "flags": {"desired": {"shadow": True, "l2": False, "l1_percent": 0},
              "before": {"shadow": False, "l2": False, "l1_percent": 0},
              "writes": ["shadow: hset (0 -> 1)"], "applied": True, "result": "written",
              "error": None, "error_kind": None, "drift": False, "note": ""},
}


def test_an_entry_written_before_the_typed_records_still_reads() -> None:
    entry = LogEntry.from_json(json.dumps(LEGACY_ENTRY), entry_id="1700000000000-0")
    assert entry.kind == "cycle" and entry.id == "1700000000000-0"
    assert entry.at is not None and entry.at.microsecond == 123456
    assert entry.flags is not None and entry.flags.desired == FlagSettings(shadow=True)
    assert entry.flags.result == "written" and entry.moved
    assert entry.checks[0].value_text == "1.75 s"
    assert entry.reported_flags is not None and entry.reported_flags.instances == 2
    # and what this version writes reads back the same
    assert LogEntry.from_json(entry.to_json(), entry_id=entry.id) == entry


def test_what_cannot_be_read_is_kept_raw_not_dropped() -> None:
    for raw in ("{not json", json.dumps({"kind": "no-such-kind"}), json.dumps([1, 2]),
                json.dumps({**LEGACY_ENTRY, "flags": {"desired": {"l1_percent": 500}}})):
        entry = LogEntry.from_json(raw, entry_id="9-0")
        assert entry.kind == "unreadable" and entry.raw == raw and entry.id == "9-0"


def test_the_flag_result_is_derived_so_it_cannot_contradict_the_writes() -> None:
    assert FlagsRecord(applied=True).result == "unchanged"
    assert FlagsRecord(applied=True, writes=("l2: hset",)).result == "written"
    assert FlagsRecord(applied=True, error="down").result == "failed"
    assert FlagsRecord().result == "skipped"
    assert json.loads(FlagsRecord(applied=True).model_dump_json())["result"] == "unchanged"


def test_the_summary_of_an_entry_keeps_what_the_status_needs() -> None:
    entry = LogEntry.from_json(json.dumps(LEGACY_ENTRY))
    summary = entry.summary()
    assert isinstance(summary, CycleSummary) and not isinstance(summary, LogEntry)
    assert summary.checks == entry.checks and summary.reason == entry.reason
    assert CycleSummary.model_validate_json(summary.model_dump_json()) == summary


def test_an_intent_names_its_transition() -> None:
    intent = IntentRecord(at=T0, action="rollback", by="alice", from_stage="top",
                          to_stage="mid", flags=FlagSettings(shadow=True), state={})
    assert intent.summary() == "top \u2192 mid (rollback by alice at 2025-06-01T12:00:00+00:00)"


async def test_the_status_view_survives_its_json(h: Harness) -> None:
    await h.walk_to_mid()
    status = build_status(h.plan, h.store.stored_state(), h.store.last, h.now,
                          instance_id="i", is_leader=True, holder="i",
                          intent=None)
    assert StatusView.model_validate_json(status.model_dump_json()) == status
    assert status.headline() in ("advance", "hold")
    plan = small_plan()
    fresh = build_status(plan, None, None, T0)
    assert not fresh.initialised and fresh.headline() == "not evaluated yet"


# --- the evidence of a statistical check ------------------------------------------------------


def test_a_check_record_carries_the_evidence_of_its_verdict() -> None:
    observation = GATE_INCONCLUSIVE
    assert observation.verdict is Verdict.INCONCLUSIVE and observation.evidence is not None
    shown = record(observation)
    assert shown.kind == "gate" and shown.unit == "ratio" and shown.verdict == "inconclusive"
    evidence = shown.evidence
    assert evidence is not None
    source = observation.evidence
    assert (evidence.test, evidence.comparison) == ("limit", "limit")
    assert (evidence.estimate, evidence.lower, evidence.upper, evidence.limit) == (
        source.estimate, source.lower, source.upper, 0.01)
    assert (evidence.alpha, evidence.alpha_fail, evidence.higher_is_worse) == (0.05, 0.05, True)
    assert (evidence.events, evidence.trials) == (1, 150)
    assert evidence.needed_more == source.needed_more and evidence.needed_more is not None
    assert evidence.seconds_more == source.seconds_more
    # the value and limit texts are the evidence's: an estimate, and what the bound must show
    assert shown.value_text == "0.667 %" and shown.limit_text == "limit \u2264 1 %"
    assert shown.value == source.estimate and shown.sample == 150 and shown.limit == 0.01


def test_a_difference_reads_in_percentage_points_against_its_comparison() -> None:
    shown = record(GUARD_BREACH)
    assert shown.kind == "guardrail" and shown.verdict == "fail"
    assert shown.evidence is not None and shown.evidence.is_difference
    assert (shown.evidence.control_events, shown.evidence.control_trials) == (500, 50_000)
    assert shown.value_text == "+2 pp"
    assert shown.limit_text == "margin \u2264 +1 pp vs control cohort"
    objective = record(OBJECTIVE_MET)
    assert objective.kind == "objective" and objective.is_objective


def test_evidence_survives_the_log_and_the_summary() -> None:
    checks = tuple(record(o) for o in (GATE_INCONCLUSIVE, GUARD_BREACH, OBJECTIVE_OPEN))
    entry = LogEntry(kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
                     checks=checks)
    again = LogEntry.from_json(entry.to_json(), entry_id="5-0")
    assert again.kind == "cycle" and again.checks == checks
    assert again.summary().checks == checks
    assert CycleSummary.model_validate_json(again.summary().model_dump_json()).checks == checks


def test_an_entry_without_evidence_still_reads() -> None:
    # written before decisions had evidence: no `evidence`, no `unit`
    entry = LogEntry.from_json(json.dumps(LEGACY_ENTRY))
    assert entry.kind == "cycle"
    [old] = entry.checks
    assert old.evidence is None and old.unit is None and not old.is_objective
    # and a newer controller's evidence with fields this version does not know still reads
    newer = record(GATE_PASSES).model_dump(mode="json")
    assert newer["evidence"] is not None
    newer["evidence"]["method"] = "beta-binomial-mixture"
    raw = json.dumps({**LEGACY_ENTRY, "checks": [newer]})
    assert LogEntry.from_json(raw).checks[0].evidence == record(GATE_PASSES).evidence


def test_evidence_with_a_number_json_cannot_hold_is_left_out() -> None:
    assert GATE_PASSES.evidence is not None
    broken = replace(GATE_PASSES, evidence=replace(GATE_PASSES.evidence, upper=math.nan))
    shown = record(broken)
    assert shown.evidence is None and shown.verdict == "pass"
    entry = LogEntry(kind="cycle", at=T0, checks=(shown,))
    assert LogEntry.from_json(entry.to_json()).checks == (shown,)
    source = GATE_INCONCLUSIVE.evidence
    assert source is not None
    odd = replace(source, seconds_more=math.inf)
    kept = record(replace(GATE_INCONCLUSIVE, evidence=odd)).evidence
    assert kept is not None and kept.seconds_more is None and kept.needed_more is not None
