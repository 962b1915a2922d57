"""The status page: a server-rendered HTML view of a `StatusView` and the last decisions.

The page is for a person glancing at a wall screen: the stage timeline, each gate against
its threshold in colour (a statistical one with its estimate, bound, margin or limit and n,
and when inconclusive how much more it needs), the objectives with their intervals, and the
last decisions with their reasons and evidence. It refreshes itself.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from rollout.core.plan import human_duration
from rollout.formatting import (
    BULLET,
    NOTHING,
    bound_text,
    counts_text,
    estimate_text,
    flags_text,
    interval_text,
    more_text,
    n_text,
    short_time,
    target_text,
    transition_evidence,
    verdict_word,
)
from rollout.history_view import TIMES, HeldRun, fold_holds
from rollout.next_step import WAITING, next_step, relative, shown_verdict
from rollout.records import CheckRecord, LogEntry
from rollout.status import StageView, StatusView
from rollout.status_svg import check_charts, stage_chart

REFRESH_SECONDS: Final = 5
HISTORY_ROWS: Final = 12
_DOT: Final = " \u00b7 "

_VERDICT_CLASS: Final = {"pass": "pass", "fail": "fail", "no data": "nodata", "error": "error",
                         "inconclusive": "inconclusive", "met": "pass", "missed": "missed",
                         "waiting": "nodata", "failing": "fail"}

_CSS: Final = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2430}
header{background:#1d2430;color:#fff;padding:14px 24px;display:flex;gap:24px;align-items:baseline;
flex-wrap:wrap}
header h1{font-size:20px;margin:0}
header .state{font-size:18px;font-weight:600}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 18px;
margin:0 0 16px}
h2{font-size:15px;margin:0 0 10px;text-transform:uppercase;letter-spacing:.04em;color:#5a6473}
.timeline{display:flex;gap:6px;flex-wrap:wrap}
.stage{flex:1;min-width:120px;border-radius:6px;padding:8px 10px;border:2px solid #c9ced6;
background:#fff}
.stage .name{font-weight:700}.stage .meta{font-size:12px;color:#5a6473}
.stage.done{background:#e7f6ec;border-color:#3b9c5a}
.stage.current{background:#e8f0fe;border-color:#2d6cdf;box-shadow:0 0 0 2px #2d6cdf33}
.stage.complete{background:#d7f0df;border-color:#1f7a3f}
.bar{display:block;width:100%;height:6px;background:#e3e7ed;border-radius:3px;margin-top:6px}
.bar rect{fill:#2d6cdf}
.chart{display:block;width:100%;max-width:900px;margin:6px 0 10px;font-size:11px}
.chart text{fill:#3a4352}.chart .grid{stroke:#eceff3}
.stage-line{fill:none;stroke:#2d6cdf;stroke-width:2.5}.chart circle{fill:#2d6cdf}
.chart .limit{stroke:#b42318;stroke-dasharray:5 4}.chart .limit-label{fill:#b42318}
.chart .bound{fill:none;stroke:#1c4fa8;stroke-width:1.5}
.chart .estimate-line{fill:none;stroke:#1d2430;stroke-width:1;opacity:.5}
.chart circle.estimate{fill:#1d2430}.chart .caption{font-size:12px;font-weight:600}
#controls{padding:0 24px;max-width:1200px}#steer{display:flex;gap:8px;flex-wrap:wrap}
#steer label{display:flex;gap:4px;align-items:center}
#steer button{padding:4px 12px;border-radius:5px;border:1px solid #2d6cdf;background:#e8f0fe;
cursor:pointer}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{font-size:12px;color:#5a6473;text-transform:uppercase}
.verdict{font-weight:700;border-radius:4px;padding:1px 8px;font-size:13px;white-space:nowrap}
.pass{background:#dff3e5;color:#1f7a3f}.fail{background:#fde2e1;color:#b42318}
.nodata{background:#eceff3;color:#5a6473}.error{background:#fff1d6;color:#9a5b00}
.inconclusive{background:#e8f0fe;color:#1c4fa8}.missed{background:#fde9d7;color:#9a4a00}
.more{font-size:12px;color:#5a6473;margin-top:3px}
.evidence{margin:4px 0 0;padding-left:18px;font-size:13px;color:#3a4352}
.banner{padding:10px 14px;border-radius:6px;margin-bottom:12px;font-weight:600}
.banner.warn{background:#fff1d6;color:#7a4a00}.banner.bad{background:#fde2e1;color:#8a1c12}
.banner.ok{background:#dff3e5;color:#1f5f35}
.muted{color:#5a6473}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}
"""

# Polls /api/status and, when it changed, fetches the page and swaps its header and main
# (never the form: what someone is typing stays). Steering POSTs JSON with the Bearer
# token. Only textContent is written: nothing from the server is parsed as HTML but the
# page itself, which the server escaped.
_SCRIPT: Final = """
(() => {
  let seen = null;
  const every = REFRESH_SECONDS * 1000;
  const state = s => JSON.stringify([s.stage, s.last_evaluation_at, s.paused, s.pause,
    s.completed_at, s.in_cooldown, s.awaiting_resume, s.pending_intent]);
  async function redraw() {
    const part = await fetch('?fragment=1', {cache: 'no-store'});
    if (!part.ok) { return; }
    const doc = new DOMParser().parseFromString(await part.text(), 'text/html');
    for (const name of ['header', 'main']) {
      document.querySelector(name).replaceWith(doc.querySelector(name));
    }
    document.title = document.querySelector('header').dataset.title;
  }
  async function tick() {
    try {
      const response = await fetch('api/status', {cache: 'no-store'});
      const now = state(await response.json());
      if (seen !== null && now !== seen) { await redraw(); }
      seen = now;
    } catch (err) { /* the controller restarting: try again next time */ }
  }
  const form = document.getElementById('steer');
  const result = document.getElementById('steer-result');
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const command = event.submitter ? event.submitter.value : 'pause';
    const body = {who: form.who.value.trim(), why: form.why.value.trim()};
    if (!form.token.value || !body.why || !body.who) {
      result.textContent = 'a token, who and a reason are needed';
      return;
    }
    try {
      const response = await fetch('api/' + command, {method: 'POST', body: JSON.stringify(body),
        headers: {'Content-Type': 'application/json',
                  'Authorization': 'Bearer ' + form.token.value}});
      const data = await response.json().catch(() => ({}));
      result.textContent = response.ok ? command + ': ' + (data.reason || 'done')
        : command + ' refused (' + response.status + '): ' + (data.detail || '');
    } catch (err) { result.textContent = command + ' failed: ' + err; }
    seen = null;
    await redraw();
  });
  tick();
  setInterval(tick, every);
})();
""".replace("REFRESH_SECONDS", str(REFRESH_SECONDS))

e = html.escape


def render_status_page(status: StatusView, history: Sequence[LogEntry], *,
                       nonce: str = "") -> str:
    """The page; `nonce` is the one the Content-Security-Policy header allows for its one
    <style> and its one <script> (rollout.server sets both)."""
    attr = f' nonce="{e(nonce)}"' if nonce else ""
    return "".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no /favicon.ico request (a 404 in the log)
        f"<title>{page_title(status)}</title><style{attr}>{_CSS}</style></head><body>",
        render_status_fragment(status, history),
        _controls(),
        f"<script{attr}>{_SCRIPT}</script></body></html>",
    ])


def page_title(status: StatusView) -> str:
    return f"rollout: {e(status.stage)} \u2014 {e(status.headline())}"


def render_status_fragment(status: StatusView, history: Sequence[LogEntry]) -> str:
    """The page's header and main, which its script swaps in when /api/status changed
    (no style nor script in it: the new content needs no nonce)."""
    headline = status.headline()
    parts = [
        f'<header data-title="{page_title(status)}"><h1>AI cache rollout</h1>',
        f'<span class="state">{e(status.stage)}</span><span>{e(headline)}</span>',
        f'<span class="muted">{e(_leader_line(status))}</span></header><main>',
        _banners(status),
        _next(status),
        _timeline(status),
        _charts(status, history),
        _checks(status),
        _objectives(status),
        _details(status),
        _history(history, status.now),
        f'<p class="muted">Checks <a href="api/status">/api/status</a> every '
        f"{REFRESH_SECONDS} s and redraws when it changes. JSON: "
        '<a href="api/status">/api/status</a>, <a href="api/history">/api/history</a>, '
        '<a href="metrics">/metrics</a>.</p></main>',
    ]
    return "".join(parts)


def _leader_line(status: StatusView) -> str:
    leader = status.leader
    if leader.is_leader:
        return f"this instance leads ({leader.instance_id})"
    if leader.holder:
        return f"standing by; leader: {leader.holder}"
    return "no controller holds the lease"


def _banners(status: StatusView) -> str:
    out = []
    pause = status.pause
    if pause:
        out.append(f'<div class="banner warn" id="paused">Paused by {e(pause.by)} '
                   f"{when(pause.at, status.now)}: {e(pause.why)}</div>")
    rollback = status.last_rollback
    if rollback and (status.in_cooldown or status.awaiting_resume):
        out.append(f'<div class="banner bad">Rolled back {e(rollback.from_stage)} \u2192 '
                   f"{e(rollback.to_stage)} by {e(rollback.by)} "
                   f"{when(rollback.at, status.now)}: {e(rollback.reason)}</div>")
    if status.completed_at:
        results = "; ".join(f"{check.label} {verdict_word(check)}"
                            for check in status.objectives)
        out.append(f'<div class="banner ok">Rollout complete since '
                   f"{e(short_time(status.completed_at))}; guardrails still watched."
                   + (f" Objectives: {e(results)}." if results else "") + "</div>")
    intent = status.pending_intent
    if intent:
        out.append(f'<div class="banner warn">Transition in flight: '
                   f"{e(intent.from_stage)} \u2192 {e(intent.to_stage)}"
                   f" since {e(short_time(intent.at))}</div>")
    return "".join(out)


def when(moment: datetime | None, now: datetime) -> str:
    """`12 min ago`, the absolute UTC time on hover (and machine-readable)."""
    if moment is None:
        return NOTHING
    return (f'<time datetime="{e(moment.isoformat())}" title="{e(short_time(moment))}">'
            f"{e(relative(moment, now))}</time>")


def _next(status: StatusView) -> str:
    """What happens next: the transition, when, and each blocker with what it needs."""
    step = next_step(status)
    items = "".join(
        f'<li data-blocker="{e(b.check)}"><b>{e(b.label)}</b> '
        f'<span class="verdict {_VERDICT_CLASS.get(b.state, "nodata")}">{e(b.state)}</span> '
        f"{e(b.needs)}</li>" for b in step.blockers)
    blockers = f'<ul class="evidence">{items}</ul>' if items else ""
    return (f'<section id="next"><h2>Next</h2><p class="next"><b>{e(step.headline)}</b></p>'
            f"{blockers}</section>")


def _charts(status: StatusView, history: Sequence[LogEntry]) -> str:
    checks = check_charts(status, history)
    note = ("" if checks else '<p class="muted">No statistical check measured in this stage '
            "yet.</p>")
    return ('<section id="timeline"><h2>Timeline</h2>'
            f"{stage_chart(status, history)}"
            '<p class="muted">Each statistical check of this stage, cycle by cycle: the '
            "estimate (dots), the bound its verdict rests on (blue) and the limit or margin "
            f"(red).</p>{checks}{note}</section>")


def _controls() -> str:
    """Steering: every command needs an operator token (or JWT) and a reason; the page
    keeps neither (the token stays in this form, sent only as a Bearer header)."""
    buttons = "".join(f'<button type="submit" name="command" value="{c}" id="do-{c}">{c}'
                      "</button>" for c in ("pause", "resume", "promote", "rollback"))
    return ('<aside id="controls"><section><h2>Steer</h2><form id="steer">'
            '<label>token <input type="password" name="token" id="token" '
            'autocomplete="off"></label>'
            '<label>who <input name="who" id="who"></label>'
            '<label>why <input name="why" id="why" size="40"></label>'
            f'{buttons}</form><p id="steer-result" class="muted" role="status"></p>'
            "</section></aside>")


def _timeline(status: StatusView) -> str:
    cells = [_stage_cell(status, stage) for stage in status.stages]
    return f'<section><h2>Stages</h2><div class="timeline">{"".join(cells)}</div></section>'


def _stage_cell(status: StatusView, stage: StageView) -> str:
    if stage.position in ("current", "complete"):
        bake = status.bake_seconds or 0.0
        spent = status.time_in_stage_seconds
        share = 100.0 if not bake else min(100.0, 100.0 * spent / bake)
        # An SVG width, not a style attribute: the CSP allows no inline style attributes.
        progress = (f'<svg class="bar" viewBox="0 0 100 6" preserveAspectRatio="none">'
                    f'<rect width="{share:.0f}" height="6"/></svg>'
                    f'<div class="meta">{e(_duration(spent))} of {e(_duration(bake))} bake</div>')
    else:
        progress = f'<div class="meta">bake {e(_duration(stage.bake_seconds))}</div>'
    return (f'<div class="stage {e(stage.position)}"><div class="name">{stage.index}. '
            f'{e(stage.name)}</div><div class="meta">{e(stage.flags.describe())}</div>'
            f"{progress}</div>")


def _checks(status: StatusView) -> str:
    checks = status.enforced_checks
    if not checks:
        body = '<p class="muted">No evaluation of this stage yet.</p>'
    else:
        with_evidence = any(check.evidence is not None for check in checks)
        rows = []
        for check in checks:
            tags = [t for t in (check.kind, "critical" if check.critical else None,
                                "dry run" if check.dry_run else None) if t]
            failing = status.failure_streaks.get(check.check)
            if failing:
                tags.append(f"{failing} failing cycles")
            if check.evidence is not None:
                target = target_text(check) or NOTHING
            else:
                target = (f"{check.comparator or ''} {check.limit_text}" if check.limit_text
                          else NOTHING)
            bound = f"<td>{e(bound_text(check) or NOTHING)}</td>" if with_evidence else ""
            rows.append(
                f'<tr data-check="{e(check.check)}"><td><b>{e(check.label)}</b><br>'
                f'<span class="muted">{e(_DOT.join(tags))}</span></td>'
                f"<td>{_verdict(check, shown_verdict(status, check))}</td>"
                f"<td>{e(check.value_text or NOTHING)}</td>{bound}<td>{e(target)}</td>"
                f"<td>{e(n_text(check))}</td>"
                f'<td class="muted">{e(_detail(check))}</td></tr>'
            )
        bound_head = "<th>bound</th>" if with_evidence else ""
        body = (f"<table><tr><th>check</th><th>verdict</th><th>value</th>{bound_head}"
                "<th>must be</th><th>n</th><th>detail</th></tr>" + "".join(rows) + "</table>")
    decision = status.last_decision
    summary = ""
    if decision is not None and decision.reason:
        summary = (f"<p><b>{e(str(decision.action))}</b> {when(decision.at, status.now)}: "
                   f"{e(decision.reason)}</p>")
    streak = (f'<p class="muted">{status.pass_streak}/{status.passes_to_advance} '
              "passing cycles</p>")
    return f"<section><h2>Gates and guardrails</h2>{summary}{body}{streak}</section>"


def _detail(check: CheckRecord) -> str:
    """The reason line of a threshold check; a statistical one's numbers are in the columns,
    so its counts instead."""
    return counts_text(check) or check.message


def _verdict(check: CheckRecord, shown: str | None = None) -> str:
    """The verdict badge; an inconclusive check says how many more samples it needs; a check
    not judged yet is `waiting`, whatever its last verdict said."""
    if shown == WAITING:
        return f'<span class="verdict nodata">{WAITING}</span>'
    css = _VERDICT_CLASS.get(verdict_word(check), "nodata")
    badge = f'<span class="verdict {css}">{e(verdict_word(check))}</span>'
    more = more_text(check)
    return f'{badge}<div class="more">{e(more)}</div>' if more else badge


def _objectives(status: StatusView) -> str:
    """The stage's objectives with their intervals; never blocking, reported at every
    transition and, once the rollout is complete, its final word."""
    checks = status.objectives
    if not checks:
        return ""
    rows = "".join(
        f'<tr data-check="{e(check.check)}"><td><b>{e(check.label)}</b></td>'
        f"<td>{_verdict(check)}</td><td>{e(estimate_text(check) or NOTHING)}</td>"
        f"<td>{e(interval_text(check) or NOTHING)}</td>"
        f"<td>{e(target_text(check) or NOTHING)}</td><td>{e(n_text(check))}</td>"
        f'<td class="muted">{e(_detail(check))}</td></tr>'
        for check in checks
    )
    title = "Objectives at completion" if status.completed_at else "Objectives"
    return (f'<section id="objectives"><h2>{title}</h2><p class="muted">Measured with an '
            "interval and reported; they never block an advance nor roll back.</p>"
            "<table><tr><th>objective</th><th>verdict</th><th>estimate</th><th>interval</th>"
            "<th>must be</th><th>n</th><th>detail</th></tr>" + rows + "</table></section>")


def _details(status: StatusView) -> str:
    now = status.now
    rows = [
        ("entered", when(status.entered_at, now)),
        ("flags wanted", e(flags_text(status.flags.desired))),
        ("flags the service reports", e(flags_text(status.flags.reported))),
        ("flags confirmed", when(status.flags.confirmed_at, now)),
        ("cooldown until", when(status.cooldown_until, now)),
        ("baseline", e(", ".join(f"{k} = {v:.4g}" for k, v in status.baseline.items())
                       or NOTHING)),
        ("last evaluation", when(status.last_evaluation_at, now)),
        ("time scale", e(f"{status.time_scale:g}")),
    ]
    # Each value is already HTML: escaped text, or a <time> built from escaped parts.
    cells = "".join(f'<div class="muted">{e(k)}</div><div>{v}</div>' for k, v in rows)
    return f'<section><h2>Details</h2><div class="kv">{cells}</div></section>'


def _history(history: Sequence[LogEntry], now: datetime) -> str:
    """Transitions and manual actions, each run of holds folded into one row."""
    if not history:
        return '<section><h2>Last decisions</h2><p class="muted">Nothing yet.</p></section>'
    rows = []
    for entry in fold_holds(history)[:HISTORY_ROWS]:
        if isinstance(entry, HeldRun):
            rows.append(f'<tr class="held"><td class="mono">{when(entry.last_at, now)}</td>'
                        f'<td><span class="verdict nodata">held {entry.count}{TIMES}</span>'
                        f"</td><td>{e(entry.stage)}</td><td></td>"
                        f'<td class="muted">for: {e(entry.reason)}</td></tr>')
            continue
        action = entry.action or entry.kind
        moved = entry.from_stage or ""
        if entry.moved:
            moved = f"{moved} \u2192 {entry.to_stage}"
        css = "fail" if action == "rollback" or entry.kind == "flag-write-failed" else (
            "pass" if action in ("advance", "complete") else "nodata")
        reason = e(entry.reason or entry.note or "")
        if entry.moved or action == "complete":
            reason += _evidence_html(transition_evidence(entry.checks, action))
        rows.append(f'<tr><td class="mono">{when(entry.at, now)}</td>'
                    f'<td><span class="verdict {css}">{e(action)}</span></td>'
                    f"<td>{e(moved)}</td><td>{e(entry.by or '')}</td>"
                    f"<td>{reason}</td></tr>")
    return ('<section id="history"><h2>Last decisions</h2><p class="muted">Transitions and '
            "manual actions; holds folded. Every entry: <code>rollout history</code> or "
            '<a href="api/history">/api/history</a>.</p><table><tr><th>at</th><th>action</th>'
            "<th>stage</th><th>by</th><th>reason</th></tr>" + "".join(rows) + "</table></section>")


def _evidence_html(lines: Sequence[str]) -> str:
    """A transition's evidence lines: each heading, then its checks as a list."""
    out: list[str] = []
    items: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(BULLET):
            items.append(f"<li>{e(line.removeprefix(BULLET).strip())}</li>")
            continue
        if items:
            out.append(f'<ul class="evidence">{"".join(items)}</ul>')
            items = []
        if line:
            out.append(f'<div class="muted">{e(line)}</div>')
    return "".join(out)


def _duration(seconds: float) -> str:
    return human_duration(timedelta(seconds=seconds))
