"""The seed's improvement targets as the run measured them: each stage's objectives with their
intervals, from the controller's own decision log (the CheckRecord evidence of the entry that
left the stage: its advance, or `complete`), in the wording of rollout.formatting, plus what
the numbers mean in seconds and dollars.

Objectives never block and never roll back (DESIGN.md §7); this is the report of how far the
caches got, met or missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rollout.core.plan import CheckSpec, Plan
from rollout.formatting import (
    estimate_text,
    interval_text,
    n_text,
    objective_line,
    target_text,
    verdict_word,
)
from rollout.records import CheckRecord, LogEntry

# Which entry of a stage visit carries its objectives best: the one that left the stage.
_PREFERRED = ("complete", "advance")
BASELINE_P95 = "baseline_p95_seconds"
BASELINE_COST = "baseline_cost_per_query_usd"


@dataclass(frozen=True)
class ObjectiveResult:
    stage: str
    check: str
    label: str
    verdict: str  # met | missed | inconclusive | no data | error
    estimate: float | None
    lower: float | None
    upper: float | None
    limit: float | None
    trials: float | None
    confidence: float | None  # e.g. 0.95
    line: str  # rollout.formatting.objective_line: estimate, interval, limit, n, verdict
    meaning: str  # the same numbers in seconds or dollars against the baseline
    decided_by: str  # the entry they come from: complete | advance | hold | rollback
    at: str | None  # ISO time of that entry
    record: CheckRecord  # as the log has it (the table formats it like the CLI)

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name != "record"}


def _entry_for(stage: str, history: Sequence[LogEntry]) -> LogEntry | None:
    """The last cycle of `stage` that reported objectives, preferring the one that left it."""
    candidates = [e for e in history if e.kind == "cycle" and e.from_stage == stage
                  and any(c.is_objective for c in e.checks)]
    for kind in _PREFERRED:
        chosen = [e for e in candidates if e.transition == kind]
        if chosen:
            return chosen[-1]
    return candidates[-1] if candidates else None


def _meaning(check: CheckRecord, spec: CheckSpec | None,
             baseline: Mapping[str, float]) -> str:
    """The objective in the seed's terms: a p95 against a boundary in seconds, a cost as a
    change against the baseline's."""
    evidence = check.evidence
    stat = spec.stat if spec is not None else None
    if evidence is None or stat is None:
        return ""
    if stat.slower_than is not None and stat.slower_than.baseline == BASELINE_P95:
        boundary = stat.slower_than.limit(baseline)
        base = baseline.get(BASELINE_P95)
        if boundary is None or base is None:
            return ""
        return (f"p95 ≤ {boundary:.2f} s ({stat.slower_than.factor:g} x baseline p95 "
                f"{base:.2f} s) ⇔ at most {evidence.limit * 100:g} % of answers slower; "
                f"measured {estimate_text(check)}, {interval_text(check)}")
    if stat.limit is not None and stat.limit.baseline == BASELINE_COST and evidence.limit > 0:
        # The limit is factor x the baseline's recorded share of the cost cap: the baseline
        # share is limit / factor, and each bound reads as a change against it.
        base_share = evidence.limit / stat.limit.factor

        def change(share: float) -> str:
            return f"{(share / base_share - 1) * 100:+.0f} %"

        return (f"cost per answer {change(evidence.estimate)} vs baseline "
                f"({change(evidence.lower)} to {change(evidence.upper)}); target "
                f"{(stat.limit.factor - 1) * 100:+.0f} % or lower")
    return ""


def stage_objectives(plan: Plan, history: Sequence[LogEntry],
                     baseline: Mapping[str, float]) -> list[ObjectiveResult]:
    """Every stage's objectives, in plan order, from the entry that left the stage."""
    specs = {c.name: c for c in plan.all_checks()}
    results = []
    for stage in plan.stage_names:
        entry = _entry_for(stage, history)
        if entry is None:
            continue
        for check in entry.checks:
            if not check.is_objective:
                continue
            evidence = check.evidence
            results.append(ObjectiveResult(
                stage=stage, check=check.check, label=check.label or check.check,
                verdict=verdict_word(check),
                estimate=evidence.estimate if evidence else None,
                lower=evidence.lower if evidence else None,
                upper=evidence.upper if evidence else None,
                limit=evidence.limit if evidence else None,
                trials=evidence.trials if evidence else check.sample,
                confidence=(1 - evidence.alpha) if evidence else None,
                line=objective_line(check),
                meaning=_meaning(check, specs.get(check.check), baseline),
                decided_by=str(entry.transition or entry.action),
                at=entry.at.isoformat() if entry.at else None,
                record=check,
            ))
    return results


def render_objectives(rows: Sequence[ObjectiveResult]) -> Any:
    """A rich Table: stage, objective, estimate, interval, target, n, verdict, meaning."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Objectives — the seed's targets, measured with their intervals "
                        "(reported at every transition, never blocking)",
                  title_justify="left", header_style="bold")
    for name in ("stage", "objective", "estimate", "interval", "target", "n", "verdict"):
        table.add_column(name, no_wrap=name != "objective")
    style = {"met": "green", "missed": "red"}
    for row in rows:
        check = row.record
        table.add_row(row.stage, row.label, estimate_text(check) or "—",
                      interval_text(check) or "—", target_text(check) or "—", n_text(check),
                      Text(row.verdict, style=style.get(row.verdict, "yellow")))
    table.caption = "\n".join(f"{row.stage} {row.label}: {row.meaning}"
                              for row in rows if row.meaning)
    table.caption_justify = "left"
    return table

