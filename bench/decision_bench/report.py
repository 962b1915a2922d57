"""From runs to figures: per rate, scenario and plan, the shares of outcomes with a 95 %
interval, the times, and the table printed side by side."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.decision_bench.batch import HEALTHY, REGRESSION
from rollout.simulate.summary import wilson

REPO: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = REPO / "bench" / "results" / "decision_bench.json"
DAY: Final = 86400.0
FALSE_ROLLBACK_TARGET: Final = 0.01
CATCH_TARGET: Final = 0.95


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"median": at(0.5), "p95": at(0.95)}


def _share(count: int, n: int) -> dict[str, Any]:
    low, high = wilson(count, n)
    return {"count": count, "share": count / n if n else math.nan, "ci95": [low, high]}


def summarise(rows: Iterable[Mapping[str, Any]], horizon_days: float) -> list[dict[str, Any]]:
    groups: dict[tuple[float, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["rate"], row["scenario"], row["plan"]), []).append(row)
    out = []
    for (rate, scenario, plan), members in sorted(groups.items()):
        n = len(members)
        outcomes = Counter(r["outcome"] for r in members)
        rolled = [r for r in members if r["outcome"] == "rolled_back"]
        summary: dict[str, Any] = {
            "rate": rate, "scenario": scenario, "plan": plan, "runs": n,
            "outcomes": dict(outcomes),
            "rolled_back": _share(len(rolled), n),
            "rollbacks": dict(Counter(f"{r['stage']} -> {r['rollback_to']}" for r in rolled)),
            "rollback_examples": [r["reason"] for r in rolled[:3]],
            "held_at": dict(Counter(r["stage"] for r in members if r["outcome"] == "held")),
            "decide_calls_mean": sum(r["decide_calls"] for r in members) / n,
        }
        if scenario == HEALTHY:
            done = [r["seconds"] / DAY for r in members if r["outcome"] == "completed"]
            within = sum(1 for r in rolled if r["seconds"] <= horizon_days * DAY)
            summary.update(
                completed=_share(len(done), n),
                days_to_complete=_quantiles(done),
                rolled_back_within_horizon=_share(within, n),
                days_to_first_rollback=_quantiles([r["seconds"] / DAY for r in rolled]),
                objectives_at_completion=_objectives(members),
            )
        else:
            caught = rolled
            summary.update(
                caught=_share(len(caught), n),
                advanced=_share(outcomes.get("advanced", 0), n),
                held=_share(outcomes.get("held", 0), n),
                hours_to_catch=_quantiles([r["seconds"] / 3600 for r in caught]),
            )
        out.append(summary)
    return out


def _objectives(members: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    tally: dict[str, Counter[str]] = {}
    for row in members:
        for name, verdict in row.get("objectives", {}).items():
            tally.setdefault(name, Counter())[verdict] += 1
    return {name: dict(counts) for name, counts in tally.items()}


# --- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    measure: str
    rate: str
    new: str
    old: str
    target: str


def _pct(share: Mapping[str, Any]) -> str:
    low, high = share["ci95"]
    return f"{share['share'] * 100:.1f} % ({share['count']}) [{low * 100:.1f}-{high * 100:.1f}]"


def _days(quantiles: Mapping[str, float | None]) -> str:
    if quantiles["median"] is None:
        return "-"
    return f"{quantiles['median']:.1f} / {quantiles['p95']:.1f} d"


def _hours(quantiles: Mapping[str, float | None]) -> str:
    if quantiles["median"] is None:
        return "-"
    return f"{quantiles['median']:.1f} / {quantiles['p95']:.1f} h"


def lines(summaries: Sequence[Mapping[str, Any]], horizon_days: float) -> list[Line]:
    by_key = {(s["rate"], s["scenario"], s["plan"]): s for s in summaries}
    rates = sorted({s["rate"] for s in summaries})
    out: list[Line] = []
    for scenario in (HEALTHY, REGRESSION):
        for rate in rates:
            new, old = by_key.get((rate, scenario, "new")), by_key.get((rate, scenario, "old"))
            if new is None or old is None:
                continue
            label = f"{rate:g} q/s"
            if scenario == HEALTHY:
                verdict = "PASS" if new["rolled_back"]["share"] <= FALSE_ROLLBACK_TARGET \
                    else "MISS"
                out += [
                    Line("A/A: runs with any rollback", label, _pct(new["rolled_back"]),
                         _pct(old["rolled_back"]), f"<= 1 %: {verdict}"),
                    Line(f"A/A: rolled back within {horizon_days:g} d", label,
                         _pct(new["rolled_back_within_horizon"]),
                         _pct(old["rolled_back_within_horizon"]), ""),
                    Line("A/A: completed", label, _pct(new["completed"]),
                         _pct(old["completed"]), ""),
                    Line("A/A: time to complete, median / p95", label,
                         _days(new["days_to_complete"]), _days(old["days_to_complete"]), ""),
                ]
            else:
                verdict = "PASS" if new["caught"]["share"] >= CATCH_TARGET else "MISS"
                out += [
                    Line("1 %->3 % cohort errors: rolled back before advancing", label,
                         _pct(new["caught"]), _pct(old["caught"]), f">= 95 %: {verdict}"),
                    Line("  advanced with the regression", label, _pct(new["advanced"]),
                         _pct(old["advanced"]), ""),
                    Line("  still holding at the cap", label, _pct(new["held"]),
                         _pct(old["held"]), ""),
                    Line("  time to the rollback, median / p95", label,
                         _hours(new["hours_to_catch"]), _hours(old["hours_to_catch"]), ""),
                ]
    return out


def table(rows: Sequence[Line]) -> str:
    header = Line("measure", "traffic", "new plan (statistical)", "old plan (thresholds)",
                  "target (new plan)")
    fields = ("measure", "rate", "new", "old", "target")
    widths = [max(len(getattr(r, f)) for r in (header, *rows)) for f in fields]

    def render(r: Line) -> str:
        return "  ".join(getattr(r, f).ljust(w) for f, w in zip(fields, widths, strict=True))

    return "\n".join([render(header), "  ".join("-" * w for w in widths),
                      *(render(r).rstrip() for r in rows)])


def write_results(data: Mapping[str, Any], path: Path = RESULTS) -> Path:
    """Through a temp file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path
