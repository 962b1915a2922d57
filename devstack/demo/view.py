"""What people watch while the demo runs: a live terminal view (rich), or plain lines.

The view only renders a `LiveModel` that the demo's loop keeps up to date from the
controller's `/api/status` and `/api/history`, the traffic generator and the two webhook
listeners; it never talks to anything itself. Process logs go to files (.run/logs), so the
terminal shows the rollout, not a wall of logs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from devstack.demo.stages import entry_ts
from devstack.traffic.generator import RequestRecord
from rollout.formatting import (
    bound_text,
    count,
    estimate_text,
    flags_text,
    more_text,
    n_text,
    target_text,
    verdict_word,
)
from rollout.records import LogEntry
from rollout.status import StatusView

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "no_data": "yellow",
                 "error": "bold magenta", "inconclusive": "cyan"}
ACTION_STYLE = {"advance": "green", "rollback": "bold red", "complete": "bold green",
                "pause": "yellow", "resume": "cyan", "hold": "dim"}


class TrafficWindow:
    """The generator's requests of the last few seconds (for the live numbers), plus every
    successful query's (sent_at, latency) for the per-stage client p95 at the end."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self.recent: deque[RequestRecord] = deque()
        self.latencies: list[tuple[float, float]] = []
        self.total = 0
        self.failed = 0

    def __call__(self, record: RequestRecord) -> None:
        self.total += 1
        self.failed += 0 if record.ok else 1
        self.recent.append(record)
        if record.kind == "query" and record.ok:
            self.latencies.append((record.at, record.latency))

    def snapshot(self) -> dict[str, float | None]:
        cutoff = time.time() - self.seconds
        while self.recent and self.recent[0].at < cutoff:
            self.recent.popleft()
        queries = [r for r in self.recent if r.kind == "query"]
        ok = [r for r in queries if r.ok]
        lat = sorted(r.latency for r in ok)
        l2_lookups = [r for r in ok if r.l2 in ("hit", "miss")]
        return {
            "rate": len(self.recent) / self.seconds,
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
            "errors": (len(queries) - len(ok)) / len(queries) if queries else None,
            "l1": sum(r.l1 == "hit" for r in ok) / len(ok) if ok else None,
            "l2": (sum(r.l2 == "hit" for r in l2_lookups) / len(l2_lookups)
                   if l2_lookups else None),
        }


@dataclass
class LiveModel:
    title: str
    subtitle: str
    stages: Sequence[str]
    started: float = field(default_factory=time.time)
    phase: str = "starting"
    status: StatusView | None = None
    decisions: list[LogEntry] = field(default_factory=list)  # transitions, oldest first
    traffic: dict[str, float | None] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)  # the demo's own steps
    alerts: list[tuple[float, str]] = field(default_factory=list)
    notifications: list[tuple[float, str]] = field(default_factory=list)

    def event(self, text: str) -> None:
        self.events.append((time.time(), text))


def _clock(model: LiveModel, ts: float) -> str:
    seconds = max(0, int(ts - model.started))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"


def _stage_line(model: LiveModel, status: StatusView | None) -> Text:
    line = Text()
    current = status.stage if status else None
    positions = {s.name: s.position for s in status.stages} if status else {}
    for i, name in enumerate(model.stages):
        if i:
            line.append("  ▸  ", style="dim")
        position = positions.get(name, "pending")
        if name == current:
            style = "bold black on green" if position == "complete" else "bold white on blue"
            line.append(f" {name} ", style=style)
        elif position == "done":
            line.append(f"✓ {name}", style="green")
        else:
            line.append(name, style="dim")
    return line


def _stage_panel(model: LiveModel, status: StatusView) -> RenderableType:
    bake = status.bake_seconds or 0.0
    in_stage = status.time_in_stage_seconds
    head = Text()
    head.append(status.stage, style="bold")
    head.append(f"   flags: {flags_text(status.flags.desired)}")
    if status.completed_at is not None:
        head.append("   ROLLOUT COMPLETE", style="bold green")
    if status.awaiting_resume:
        head.append("   HOLDING after a rollback (awaits `rollout resume`)", style="bold red")
    if status.paused:
        head.append("   PAUSED", style="bold yellow")
    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=34)
    bar.add_column(width=40)
    bar.add_column()
    bar.add_row(
        f"time in stage {in_stage:5.0f} s / bake {bake:.0f} s",
        ProgressBar(total=max(bake, 1.0), completed=min(in_stage, max(bake, 1.0)), width=40),
        f"passing cycles {status.pass_streak}/{status.passes_to_advance}",
    )
    last = status.last_decision
    reason = Text(f"now: {last.action if last else '—'} — {last.reason if last else ''}",
                  style="dim")
    reason.truncate(400, overflow="ellipsis")
    return Group(head, bar, reason)


def _checks_table(status: StatusView) -> Table:
    table = Table(expand=True, show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("check")
    table.add_column("kind", width=19)
    table.add_column("estimate", justify="right")
    table.add_column("bound", justify="right")
    table.add_column("margin or limit", justify="right")
    table.add_column("n", justify="right")
    table.add_column("verdict", width=28)
    checks = status.checks
    if not checks:
        table.add_row(Text("waiting for the first evaluation of this stage "
                           "(the service must report the new flags first)", style="dim"),
                      "", "", "", "", "", "")
    for check in checks:
        kind = check.kind or ""
        if check.critical:
            kind += " (critical)"
        verdict = Text(verdict_word(check), style=VERDICT_STYLE.get(check.verdict, ""))
        if check.dry_run:
            verdict.append(" (dry-run)", style="dim")
        more = more_text(check)
        if more:
            verdict.append(f" {more}", style="dim")
        if check.evidence is not None:  # statistical: the counts since the flags were confirmed
            cells = (estimate_text(check) or "—", bound_text(check) or "",
                     target_text(check) or "", n_text(check))
        else:  # a threshold check (Redis, the baseline): one value over its window
            threshold = (f"{check.comparator or ''} {check.limit_text}"
                         if check.limit_text else "")
            cells = (check.value_text or "—", "", threshold,
                     "" if check.sample is None else count(check.sample))
        table.add_row(check.label or check.check, kind, *cells, verdict)
    return table


def _decisions(model: LiveModel) -> Table:
    table = Table(expand=True, show_edge=False, show_header=False, pad_edge=False)
    table.add_column(width=5, style="dim")
    table.add_column(width=9)
    table.add_column(width=24)
    table.add_column(ratio=1)
    for entry in model.decisions[-6:]:
        action = str(entry.transition or entry.action)
        moved = (f"{entry.from_stage} → {entry.to_stage}" if entry.moved
                 else str(entry.from_stage))
        reason = Text(entry.reason or "")
        reason.truncate(240, overflow="ellipsis")  # ~2 lines: the full reasons print at the end
        table.add_row(_clock(model, entry_ts(entry)),
                      Text(action, style=ACTION_STYLE.get(action, "")),
                      moved, reason)
    if not model.decisions:
        table.add_row("", "", Text("no transition yet", style="dim"), "")
    return table


def _feed(model: LiveModel, items: Sequence[tuple[float, str]], empty: str,
          style: str = "") -> RenderableType:
    if not items:
        return Text(empty, style="dim")
    lines = Text()
    for ts, text in items[-4:]:
        lines.append(f"{_clock(model, ts)}  ", style="dim")
        lines.append(text + "\n", style=style)
    lines.rstrip()
    return lines


def render(model: LiveModel) -> RenderableType:
    status = model.status
    header = Text()
    header.append(model.title, style="bold")
    header.append(f"   {_clock(model, time.time())}   ", style="cyan")
    header.append(model.phase, style="italic")
    parts: list[RenderableType] = [header, Text(model.subtitle, style="dim"),
                                   _stage_line(model, status)]
    if status is not None:
        parts.append(Panel(_stage_panel(model, status), title="current stage",
                           title_align="left"))
        parts.append(Panel(_checks_table(status), title_align="left",
                           title="gates, guardrails and objectives, live (statistical ones: "
                                 "counts since the stage's flags were confirmed)"))
    parts.append(Panel(_decisions(model), title="decisions", title_align="left"))
    t = model.traffic
    p95 = t.get("p95")
    p95_text = "—" if p95 is None else f"{p95 * 1000:.0f} ms"
    traffic = Text(
        f"traffic (last 10 s): {t.get('rate') or 0:.0f} req/s · p95 {p95_text} · L1 hit "
        f"{_pct(t.get('l1'))} · L2 hit {_pct(t.get('l2'))} · errors {_pct(t.get('errors'))}")
    if t.get("shed"):
        traffic.append(f" · {t['shed']:.0f} requests not sent: the machine is overloaded",
                       style="bold yellow")
    parts.append(traffic)
    feeds = Table.grid(expand=True, padding=(0, 2))
    feeds.add_column(ratio=1)
    feeds.add_column(ratio=1)
    feeds.add_column(ratio=1)
    feeds.add_row(
        Panel(_feed(model, model.events, "—"), title="demo steps", title_align="left"),
        Panel(_feed(model, model.alerts, "no alert", "bold red"),
              title="alerts (Alertmanager webhook)", title_align="left"),
        Panel(_feed(model, model.notifications, "none yet"),
              title="controller notifications (webhook)", title_align="left"),
    )
    parts.append(feeds)
    return Group(*parts)


class PlainPrinter:
    """For logs and CI: one line per new decision, event, alert or notification, and a
    heartbeat with the stage and its checks every `every` seconds."""

    def __init__(self, model: LiveModel, every: float = 15.0) -> None:
        self.model = model
        self.every = every
        self._seen = {"decisions": 0, "events": 0, "alerts": 0, "notifications": 0}
        self._last_beat = 0.0

    def update(self) -> None:
        m = self.model
        for name, items in (("events", m.events), ("alerts", m.alerts),
                            ("notifications", m.notifications)):
            for ts, text in items[self._seen[name]:]:
                print(f"[{_clock(m, ts)}] {name[:-1]}: {text}", flush=True)
            self._seen[name] = len(items)
        for entry in m.decisions[self._seen["decisions"]:]:
            print(f"[{_clock(m, entry_ts(entry))}] {entry.transition}: {entry.from_stage} → "
                  f"{entry.to_stage}: {entry.reason}", flush=True)
        self._seen["decisions"] = len(m.decisions)
        now = time.time()
        if m.status is not None and now - self._last_beat >= self.every:
            self._last_beat = now
            s = m.status
            checks = ", ".join(f"{c.check}={c.verdict}"
                               + (f" ({more})" if (more := more_text(c)) else "")
                               for c in s.checks)
            print(f"[{_clock(m, now)}] at {s.stage} {s.time_in_stage_seconds:.0f}"
                  f"/{s.bake_seconds or 0:.0f} s, passing "
                  f"{s.pass_streak}/{s.passes_to_advance}: {checks or '—'}",
                  flush=True)
