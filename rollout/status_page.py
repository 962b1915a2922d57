"""What `/api/status`, `rollout status` and the status page show: one JSON-ready snapshot
built from the stored state and the last cycle, and a server-rendered HTML page of it.

The page is for a person glancing at a wall screen: the stage timeline, each gate against
its threshold in colour, and the last decisions with their reasons. It refreshes itself.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from rollout.core.plan import Plan, human_duration
from rollout.core.state import RolloutState
from rollout.cycle import flags_dict

REFRESH_SECONDS: Final = 10
_DOT: Final = " \u00b7 "
_DASH: Final = "\u2014"


def build_status(
    plan: Plan,
    state: RolloutState | None,
    last_cycle: Mapping[str, Any] | None,
    now: datetime,
    *,
    instance_id: str | None = None,
    is_leader: bool | None = None,
    holder: str | None = None,
    intent: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    initialised = state is not None
    if state is None:
        state = RolloutState.initial(plan.stages[0].name, now)
    index = plan.index_of(state.stage_name)
    bake = plan.bake_of(index).total_seconds() if index is not None else None
    in_stage = max(0.0, (now - state.entered_at).total_seconds())
    stages = []
    for i, stage in enumerate(plan.stages):
        position = "pending"
        if index is not None and i < index:
            position = "done"
        elif i == index:
            position = "complete" if state.completed_at is not None else "current"
        stages.append({
            "index": i, "name": stage.name, "flags": flags_dict(stage.flags),
            "bake_seconds": plan.bake_of(i).total_seconds(), "position": position,
        })
    cycle = dict(last_cycle or {})
    # Checks measured in another stage say nothing about this one.
    checks_current = cycle.get("from_stage") == state.stage_name == cycle.get("to_stage")
    pause = state.pause_info
    rollback = state.last_rollback
    return {
        "initialised": initialised,
        "stage": state.stage_name,
        "stage_index": index,
        "stages": stages,
        "entered_at": state.entered_at.isoformat(),
        "time_in_stage_seconds": in_stage,
        "bake_seconds": bake,
        "bake_remaining_seconds": None if bake is None else max(0.0, bake - in_stage),
        "pass_streak": state.pass_streak,
        "passes_to_advance": plan.settings.passes_to_advance,
        "failure_streaks": dict(state.failure_streaks),
        "baseline": dict(state.baseline),
        "paused": state.is_paused,
        "pause": None if pause is None else {
            "by": pause.by, "why": pause.why, "at": pause.at.isoformat()},
        "cooldown_until": _iso(state.cooldown_until),
        "in_cooldown": state.in_cooldown(now),
        "awaiting_resume": state.awaiting_resume,
        "completed_at": _iso(state.completed_at),
        "last_rollback": None if rollback is None else {
            "from_stage": rollback.from_stage, "to_stage": rollback.to_stage,
            "at": rollback.at.isoformat(), "reason": rollback.reason, "by": rollback.by},
        "flags": {
            "desired": flags_dict(plan.stages[index].flags) if index is not None else None,
            "reported": (cycle.get("reported_flags") or {}).get("settings"),
            "confirmed_at": _iso(state.flags_confirmed_at),
            "last_write": cycle.get("flags"),
        },
        "checks": list(cycle.get("checks") or []) if checks_current else [],
        "last_decision": None if not cycle else {
            "at": cycle.get("at"), "action": cycle.get("action"),
            "from_stage": cycle.get("from_stage"), "to_stage": cycle.get("to_stage"),
            "reason": cycle.get("reason"), "instance": cycle.get("instance"),
        },
        "last_evaluation_at": cycle.get("at"),
        "leader": {"instance_id": instance_id, "is_leader": is_leader, "holder": holder},
        "pending_intent": None if intent is None else {
            k: intent.get(k) for k in ("at", "action", "from_stage", "to_stage", "by")},
        "time_scale": plan.settings.time_scale,
        "now": now.isoformat(),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# --- HTML ------------------------------------------------------------------------------------

_VERDICT_CLASS: Final = {"pass": "pass", "fail": "fail", "no_data": "nodata", "error": "error"}

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
.bar{height:6px;background:#e3e7ed;border-radius:3px;margin-top:6px;overflow:hidden}
.bar span{display:block;height:100%;background:#2d6cdf}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{font-size:12px;color:#5a6473;text-transform:uppercase}
.verdict{font-weight:700;border-radius:4px;padding:1px 8px;font-size:13px;white-space:nowrap}
.pass{background:#dff3e5;color:#1f7a3f}.fail{background:#fde2e1;color:#b42318}
.nodata{background:#eceff3;color:#5a6473}.error{background:#fff1d6;color:#9a5b00}
.banner{padding:10px 14px;border-radius:6px;margin-bottom:12px;font-weight:600}
.banner.warn{background:#fff1d6;color:#7a4a00}.banner.bad{background:#fde2e1;color:#8a1c12}
.banner.ok{background:#dff3e5;color:#1f5f35}
.muted{color:#5a6473}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}
"""


def render_status_page(status: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    e = html.escape
    stage = str(status.get("stage"))
    headline = _headline(status)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>rollout: {e(stage)} \u2014 {e(headline)}</title><style>{_CSS}</style></head>",
        "<body><header><h1>AI cache rollout</h1>",
        f'<span class="state">{e(stage)}</span><span>{e(headline)}</span>',
        f'<span class="muted">{e(_leader_line(status))}</span></header><main>',
    ]
    parts.append(_banners(status))
    parts.append(_timeline(status))
    parts.append(_checks(status))
    parts.append(_details(status))
    parts.append(_history(history))
    parts.append(f'<p class="muted">Refreshes every {REFRESH_SECONDS} s. JSON: '
                 '<a href="api/status">/api/status</a>, <a href="api/history">/api/history</a>, '
                 '<a href="metrics">/metrics</a>.</p></main></body></html>')
    return "".join(parts)


def _headline(status: Mapping[str, Any]) -> str:
    if status.get("paused"):
        return "paused"
    if status.get("completed_at"):
        return "complete"
    if status.get("in_cooldown"):
        return "cooling down after a rollback"
    if status.get("awaiting_resume"):
        return "holding after a rollback until resumed"
    decision = status.get("last_decision") or {}
    return str(decision.get("action") or "not evaluated yet")


def _leader_line(status: Mapping[str, Any]) -> str:
    leader = status.get("leader") or {}
    me = leader.get("instance_id")
    if leader.get("is_leader"):
        return f"this instance leads ({me})"
    holder = leader.get("holder")
    if holder:
        return f"standing by; leader: {holder}"
    return "no controller holds the lease"


def _banners(status: Mapping[str, Any]) -> str:
    e = html.escape
    out = []
    pause = status.get("pause")
    if pause:
        out.append(f'<div class="banner warn">Paused by {e(str(pause["by"]))} at '
                   f'{e(str(pause["at"]))}: {e(str(pause["why"]))}</div>')
    rollback = status.get("last_rollback")
    if rollback and (status.get("in_cooldown") or status.get("awaiting_resume")):
        out.append(f'<div class="banner bad">Rolled back {e(rollback["from_stage"])} \u2192 '
                   f'{e(rollback["to_stage"])} by {e(rollback["by"])} at {e(rollback["at"])}: '
                   f'{e(rollback["reason"])}</div>')
    if status.get("completed_at"):
        out.append(f'<div class="banner ok">Rollout complete since '
                   f'{e(str(status["completed_at"]))}; guardrails still watched.</div>')
    intent = status.get("pending_intent")
    if intent:
        out.append(f'<div class="banner warn">Transition in flight: '
                   f'{e(str(intent.get("from_stage")))} \u2192 {e(str(intent.get("to_stage")))}'
                   f" since {e(str(intent.get('at')))}</div>")
    return "".join(out)


def _timeline(status: Mapping[str, Any]) -> str:
    e = html.escape
    cells = []
    for stage in status.get("stages") or []:
        flags = stage["flags"]
        meta = (f"shadow {'on' if flags['shadow'] else 'off'} \u00b7 L2 "
                f"{'on' if flags['l2'] else 'off'} \u00b7 L1 {flags['l1_percent']} %")
        bar = ""
        if stage["position"] in ("current", "complete"):
            bake = status.get("bake_seconds") or 0.0
            spent = float(status.get("time_in_stage_seconds") or 0.0)
            share = 100.0 if not bake else min(100.0, 100.0 * spent / bake)
            bar = (f'<div class="bar"><span style="width:{share:.0f}%"></span></div>'
                   f'<div class="meta">{e(human_duration(_td(spent)))} of '
                   f'{e(human_duration(_td(bake)))} bake</div>')
        else:
            bar = (f'<div class="meta">bake '
                   f'{e(human_duration(_td(float(stage["bake_seconds"]))))}</div>')
        cells.append(f'<div class="stage {e(stage["position"])}"><div class="name">'
                     f'{stage["index"]}. {e(stage["name"])}</div><div class="meta">{e(meta)}'
                     f"</div>{bar}</div>")
    return f'<section><h2>Stages</h2><div class="timeline">{"".join(cells)}</div></section>'


def _checks(status: Mapping[str, Any]) -> str:
    e = html.escape
    checks = status.get("checks") or []
    if not checks:
        body = '<p class="muted">No evaluation of this stage yet.</p>'
    else:
        rows = []
        streaks = status.get("failure_streaks") or {}
        for check in checks:
            verdict = str(check.get("verdict"))
            tags = []
            if check.get("kind"):
                tags.append(str(check["kind"]))
            if check.get("critical"):
                tags.append("critical")
            if check.get("dry_run"):
                tags.append("dry run")
            if streaks.get(check.get("check")):
                tags.append(f"{streaks[check['check']]} failing cycles")
            limit = check.get("limit_text")
            comparator = check.get("comparator") or ""
            target = f"{comparator} {limit}" if limit else "\u2014"
            shown_tags = _DOT.join(tags)
            shown_value = str(check.get("value_text") or _DASH)
            rows.append(
                f"<tr><td><b>{e(str(check.get('label')))}</b><br>"
                f'<span class="muted">{e(shown_tags)}</span></td>'
                f'<td><span class="verdict {_VERDICT_CLASS.get(verdict, "nodata")}">'
                f"{e(verdict.replace('_', ' '))}</span></td>"
                f"<td>{e(shown_value)}</td><td>{e(target)}</td>"
                f"<td>{e(_count(check.get('sample')))}</td>"
                f'<td class="muted">{e(str(check.get("message") or ""))}</td></tr>'
            )
        body = ("<table><tr><th>check</th><th>verdict</th><th>value</th><th>must be</th>"
                "<th>n</th><th>detail</th></tr>" + "".join(rows) + "</table>")
    decision = status.get("last_decision") or {}
    reason = decision.get("reason")
    summary = (f'<p><b>{e(str(decision.get("action")))}</b> at {e(str(decision.get("at")))}: '
               f"{e(str(reason))}</p>") if reason else ""
    streak = (f'<p class="muted">{status.get("pass_streak")}/{status.get("passes_to_advance")} '
              "passing cycles</p>")
    return f"<section><h2>Gates and guardrails</h2>{summary}{body}{streak}</section>"


def _details(status: Mapping[str, Any]) -> str:
    e = html.escape
    flags = status.get("flags") or {}
    rows = [
        ("entered", status.get("entered_at")),
        ("flags wanted", _flags_text(flags.get("desired"))),
        ("flags the service reports", _flags_text(flags.get("reported"))),
        ("flags confirmed at", flags.get("confirmed_at")),
        ("cooldown until", status.get("cooldown_until")),
        ("baseline", ", ".join(f"{k} = {v:.4g}" for k, v in
                               (status.get("baseline") or {}).items()) or None),
        ("last evaluation", status.get("last_evaluation_at")),
        ("time scale", status.get("time_scale")),
    ]
    cells = "".join(f'<div class="muted">{e(k)}</div><div>{e(str(v) if v is not None else _DASH)}'
                    "</div>" for k, v in rows)
    return f'<section><h2>Details</h2><div class="kv">{cells}</div></section>'


def _history(history: Sequence[Mapping[str, Any]]) -> str:
    e = html.escape
    if not history:
        return '<section><h2>Last decisions</h2><p class="muted">Nothing yet.</p></section>'
    rows = []
    for entry in history:
        action = str(entry.get("action") or entry.get("kind"))
        moved = entry.get("from_stage")
        if entry.get("to_stage") and entry.get("to_stage") != moved:
            moved = f"{moved} \u2192 {entry.get('to_stage')}"
        who = entry.get("by") or ""
        css = "fail" if action == "rollback" or entry.get("kind") == "flag-write-failed" else (
            "pass" if action in ("advance", "complete") else "nodata")
        reason = entry.get("reason") or entry.get("note") or ""
        rows.append(f'<tr><td class="mono">{e(str(entry.get("at", ""))[:19])}</td>'
                    f'<td><span class="verdict {css}">{e(action)}</span></td>'
                    f"<td>{e(str(moved or ''))}</td><td>{e(str(who))}</td>"
                    f"<td>{e(str(reason))}</td></tr>")
    return ("<section><h2>Last decisions</h2><table><tr><th>at</th><th>action</th>"
            "<th>stage</th><th>by</th><th>reason</th></tr>" + "".join(rows) + "</table></section>")


def _flags_text(flags: Mapping[str, Any] | None) -> str | None:
    if not flags:
        return None
    return (f"shadow {'on' if flags.get('shadow') else 'off'}, L2 "
            f"{'on' if flags.get('l2') else 'off'}, L1 {flags.get('l1_percent')} %")


def _count(value: object) -> str:
    if not isinstance(value, int | float):
        return "\u2014"
    return f"{round(value):,}".replace(",", "\u202f")


def _td(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
