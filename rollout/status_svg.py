"""The status page's timeline, drawn on the server as inline SVG (no script, no CDN): the
stage over time from the decision log, and each statistical check's estimate and the bound
its verdict rests on against its margin or limit, cycle by cycle over the current stage.

Every text in the SVG is escaped; the numbers come from the stored evidence (no statistics
are computed here).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from rollout.formatting import bound_text, estimate_text, short_time, target_text
from rollout.records import CheckRecord, LogEntry
from rollout.status import StatusView

WIDTH: Final = 760
LEFT: Final = 110  # room for the stage names
RIGHT: Final = 16
ROW: Final = 22
e = html.escape


@dataclass(frozen=True)
class _Point:
    at: datetime
    estimate: float
    bound: float
    limit: float


def stage_chart(status: StatusView, history: Sequence[LogEntry]) -> str:
    """A step line of the stage index over the time the log covers, up to now."""
    names = [stage.name for stage in status.stages]
    if not names:
        return ""
    steps = _stage_steps(status, history, names)
    start, end = steps[0][0], status.now
    span = max((end - start).total_seconds(), 1.0)
    height = ROW * len(names) + 30

    def x(moment: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (moment - start).total_seconds() / span

    def y(index: int) -> float:
        return 10 + ROW * (len(names) - 1 - index) + ROW / 2

    path = [f"M{x(steps[0][0]):.1f} {y(steps[0][1]):.1f}"]
    path += [f"H{x(moment):.1f} V{y(index):.1f}" for moment, index in steps[1:]]
    path.append(f"H{x(end):.1f}")
    labels = "".join(
        f'<text x="{LEFT - 8}" y="{y(i) + 4:.1f}" text-anchor="end">{e(name)}</text>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(i):.1f}" y2="{y(i):.1f}" '
        'class="grid"/>' for i, name in enumerate(names))
    marks = "".join(
        f'<circle cx="{x(moment):.1f}" cy="{y(index):.1f}" r="3.5"><title>'
        f"{e(short_time(moment))}: {e(names[index])}</title></circle>"
        for moment, index in steps[1:])
    axis = _time_axis(start, end, height - 6)
    return (f'<svg class="chart" id="stage-chart" viewBox="0 0 {WIDTH} {height}" '
            f'role="img" aria-label="stage over time">{labels}'
            f'<path d="{" ".join(path)}" class="stage-line"/>{marks}{axis}</svg>')


def _stage_steps(status: StatusView, history: Sequence[LogEntry],
                 names: list[str]) -> list[tuple[datetime, int]]:
    """(moment, stage index) at each change the log shows, oldest first, ending at the
    current stage."""
    index_of = {name: i for i, name in enumerate(names)}
    dated = sorted(((entry.at, entry) for entry in history if entry.at is not None),
                   key=lambda pair: pair[0])
    steps: list[tuple[datetime, int]] = []
    for at, entry in dated:
        if not steps and entry.from_stage in index_of:
            steps.append((at, index_of[entry.from_stage or ""]))
        if entry.moved and entry.to_stage in index_of:
            steps.append((at, index_of[entry.to_stage or ""]))
    current = status.stage_index if status.stage_index is not None else 0
    if not steps:
        steps.append((min(status.entered_at, status.now), current))
    return steps


def check_charts(status: StatusView, history: Sequence[LogEntry]) -> str:
    """One small chart per statistical check of the current stage."""
    charts = []
    for check in status.enforced_checks:
        if check.evidence is None:
            continue
        points = _points(status, history, check.check)
        if points:
            charts.append(_check_chart(check, points))
    return "".join(charts)


def _points(status: StatusView, history: Sequence[LogEntry], name: str) -> list[_Point]:
    points = []
    for entry in history:
        if (entry.at is None or entry.at < status.entered_at
                or entry.from_stage != status.stage):
            continue
        for check in entry.checks:
            evidence = check.evidence
            if check.check != name or evidence is None:
                continue
            proving_harm = check.verdict == "fail"
            # The bound the verdict rests on (rollout.formatting.bound_text's rule).
            upper = evidence.higher_is_worse != proving_harm
            limit = (evidence.limit if evidence.higher_is_worse or not evidence.is_difference
                     else -evidence.limit)
            points.append(_Point(entry.at, evidence.estimate,
                                 evidence.upper if upper else evidence.lower, limit))
    return sorted(points, key=lambda point: point.at)


def _check_chart(check: CheckRecord, points: list[_Point]) -> str:
    height, top, bottom = 120, 22, 24
    start, end = points[0].at, points[-1].at
    span = max((end - start).total_seconds(), 1.0)
    values = [v for p in points for v in (p.estimate, p.bound, p.limit)] + [0.0]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1e-6
    low, high = low - pad, high + pad

    def x(moment: datetime) -> float:
        if len(points) == 1:
            return (LEFT + WIDTH - RIGHT) / 2
        return LEFT + (WIDTH - LEFT - RIGHT) * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return top + (height - top - bottom) * (high - value) / (high - low)

    def line(attr: str) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{x(p.at):.1f} {y(getattr(p, attr)):.1f}"
                        for i, p in enumerate(points))

    last = points[-1]
    caption = (f"{check.label or check.check}: estimate {estimate_text(check)}, bound "
               f"{bound_text(check)}; {target_text(check)}")
    dots = "".join(
        f'<circle cx="{x(p.at):.1f}" cy="{y(p.estimate):.1f}" r="2.5" class="estimate">'
        f"<title>{e(short_time(p.at))}: estimate {p.estimate:.4g}, bound {p.bound:.4g}"
        "</title></circle>" for p in points)
    return (f'<svg class="chart check-chart" data-check="{e(check.check)}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{e(caption)}">'
            f'<text x="{LEFT}" y="14" class="caption">{e(caption)}</text>'
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(last.limit):.1f}" '
            f'y2="{y(last.limit):.1f}" class="limit"/>'
            f'<text x="{LEFT - 8}" y="{y(last.limit) + 4:.1f}" text-anchor="end" '
            'class="limit-label">limit</text>'
            f'<path d="{line("bound")}" class="bound"/>'
            f'<path d="{line("estimate")}" class="estimate-line"/>{dots}'
            f"{_time_axis(start, end, height - 6)}</svg>")


def _time_axis(start: datetime, end: datetime, baseline: float) -> str:
    return (f'<text x="{LEFT}" y="{baseline:.1f}" class="axis">{e(short_time(start))}</text>'
            f'<text x="{WIDTH - RIGHT}" y="{baseline:.1f}" text-anchor="end" class="axis">'
            f"{e(short_time(end))}</text>")
