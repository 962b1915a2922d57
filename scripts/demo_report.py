"""What a demo run measured: the seed's impact table per rollout stage, and a chart of the run.

The numbers come from the run's own Prometheus — the very series the controller's gates
read — evaluated over each stage's time span (`@ end`), plus the exact client-side p95 from
the traffic generator. Stage spans come from the controller's decision log, so a stage
visited twice (after a rollback) is two rows.
"""

from __future__ import annotations

import json
import math
import statistics
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rollout.core.plan import promql_duration

# The first seconds of a stage still carry the previous stage's flags (the service re-reads
# flags at most every second, Unleash polls every second or two): leave them out.
SETTLE_SECONDS = 3.0
STAGE_CHANGES = ("advance", "rollback", "manual-promote", "manual-rollback")

Q_QUERIES = "sum(increase(ai_agent_queries_total[{w}] @ {t}))"
Q_ERRORS = 'sum(increase(ai_agent_queries_total{{outcome="error"}}[{w}] @ {t})) or vector(0)'
Q_P95 = ("histogram_quantile(0.95, sum by (le) "
         "(rate(ai_agent_query_duration_seconds_bucket[{w}] @ {t})))")
Q_MEAN = ("sum(increase(ai_agent_query_duration_seconds_sum[{w}] @ {t})) / "
          "sum(increase(ai_agent_query_duration_seconds_count[{w}] @ {t}))")
Q_COST = "sum(increase(ai_agent_upstream_cost_usd_total[{w}] @ {t})) or vector(0)"
_HITS = ('sum(increase(ai_agent_cache_hits_total{{cache_layer="{layer}",mode="{mode}"}}'
         '[{w}] @ {t})) or vector(0)')
_MISSES = ('sum(increase(ai_agent_cache_misses_total{{cache_layer="{layer}",mode="{mode}"}}'
           '[{w}] @ {t})) or vector(0)')


def iso_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- Prometheus -------------------------------------------------------------------------------
def prom_value(prom_url: str, expr: str, timeout: float = 10.0) -> float | None:
    """One instant query's single value; None for no series or a non-finite value."""
    params = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prom_url}/api/v1/query?{params}", timeout=timeout) as resp:
        answer = json.loads(resp.read())
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        result = [{"value": result}]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def prom_range(prom_url: str, expr: str, start: float, end: float,
               step: float) -> list[tuple[float, float]]:
    """A range query's single series as (timestamp, value) pairs, non-finite values dropped."""
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}",
                                     "end": f"{end:.3f}", "step": f"{step:g}"})
    with urllib.request.urlopen(f"{prom_url}/api/v1/query_range?{params}", timeout=30) as resp:
        answer = json.loads(resp.read())
    result = answer["data"]["result"]
    if not result:
        return []
    points = []
    for ts, text in result[0]["values"]:
        value = float(text)
        if math.isfinite(value):
            points.append((float(ts), value))
    return points


# --- stage spans ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageVisit:
    stage: str
    start: float  # epoch seconds
    end: float
    entered_by: str = "start"  # advance | rollback | manual-… | start

    @property
    def label(self) -> str:
        return f"{self.stage} (after rollback)" if "rollback" in self.entered_by else self.stage


def stage_visits(history_oldest_first: Sequence[Mapping[str, Any]], end: float) -> list[StageVisit]:
    """Stage spans from the decision log: the first cycle opens `off`, each transition that
    changes the stage closes one span and opens the next."""
    visits: list[StageVisit] = []
    current: tuple[str, float, str] | None = None
    for entry in history_oldest_first:
        if entry.get("kind") not in ("cycle", "command") or "at" not in entry:
            continue
        at = iso_ts(entry["at"])
        if current is None:
            current = (str(entry["from_stage"]), at, "start")
        kind = entry.get("transition")
        if kind in STAGE_CHANGES and entry.get("from_stage") != entry.get("to_stage"):
            visits.append(StageVisit(current[0], current[1], at, current[2]))
            current = (str(entry["to_stage"]), at, str(kind))
    if current is not None:
        visits.append(StageVisit(current[0], current[1], end, current[2]))
    return visits


def transitions(history_oldest_first: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(e) for e in history_oldest_first
            if e.get("transition") in (*STAGE_CHANGES, "complete")]


# --- the impact table -------------------------------------------------------------------------
@dataclass
class StageImpact:
    stage: str
    seconds: float
    queries: float | None
    error_rate: float | None
    p95: float | None  # server histogram, as the gates see it
    p95_client: float | None  # exact, from the generator's own clock
    mean: float | None
    l1_served: float | None  # share of queries answered from L1
    l1_shadow: float | None  # would-be L1 hit rate of shadow lookups
    l2_served: float | None  # hit rate of served L2 lookups (the L1 misses)
    l2_shadow: float | None
    cost_per_query: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _hit_rate(prom_url: str, layer: str, mode: str, w: str, t: str) -> float | None:
    hits = prom_value(prom_url, _HITS.format(layer=layer, mode=mode, w=w, t=t)) or 0.0
    misses = prom_value(prom_url, _MISSES.format(layer=layer, mode=mode, w=w, t=t)) or 0.0
    return _ratio(hits, hits + misses) if hits + misses >= 1 else None


def measure_visit(prom_url: str, visit: StageVisit,
                  client_latencies: Sequence[tuple[float, float]]) -> StageImpact | None:
    """`client_latencies` are (sent_at, seconds) of successful queries of the whole run."""
    start = visit.start + SETTLE_SECONDS
    seconds = visit.end - start
    if seconds < 2:
        return None
    w, t = promql_duration_of(seconds), f"{visit.end:.3f}"
    queries = prom_value(prom_url, Q_QUERIES.format(w=w, t=t))
    served = [lat for at, lat in client_latencies if start <= at < visit.end - 2.0]
    return StageImpact(
        stage=visit.label,
        seconds=visit.end - visit.start,
        queries=queries,
        error_rate=_ratio(prom_value(prom_url, Q_ERRORS.format(w=w, t=t)), queries),
        p95=prom_value(prom_url, Q_P95.format(w=w, t=t)),
        p95_client=_quantile(served, 0.95),
        mean=prom_value(prom_url, Q_MEAN.format(w=w, t=t)),
        l1_served=_ratio(prom_value(prom_url, _HITS.format(
            layer="query_result", mode="serve", w=w, t=t)), queries),
        l1_shadow=_hit_rate(prom_url, "query_result", "shadow", w, t),
        l2_served=_hit_rate(prom_url, "embedding", "serve", w, t),
        l2_shadow=_hit_rate(prom_url, "embedding", "shadow", w, t),
        cost_per_query=_ratio(prom_value(prom_url, Q_COST.format(w=w, t=t)), queries),
    )


def promql_duration_of(seconds: float) -> str:
    return promql_duration(timedelta(seconds=round(seconds)))


def _quantile(values: Sequence[float], q: float) -> float | None:
    if len(values) < 20:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def impact_table(prom_url: str, visits: Sequence[StageVisit],
                 client_latencies: Sequence[tuple[float, float]]) -> list[StageImpact]:
    rows = []
    for visit in visits:
        row = measure_visit(prom_url, visit, client_latencies)
        if row is not None:
            rows.append(row)
    return rows


# --- rendering --------------------------------------------------------------------------------
def _pct(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def _delta(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return ""
    change = (value / base - 1) * 100
    return f"{change:+.0f} %"


def _rate_cell(served: float | None, shadow: float | None, serving: bool) -> str:
    if serving and served is not None:
        return _pct(served)
    if shadow is not None:
        return f"({_pct(shadow)})"
    return "—"


L1_SERVING = {"l1-10", "l1-50", "l1-100"}
L2_SERVING = {"l2", "l1-10", "l1-50", "l1-100"}


def render_table(rows: Sequence[StageImpact]) -> Any:
    """A rich Table: every stage against the baseline (stage `off`)."""
    from rich.table import Table

    base = next((r for r in rows if r.stage == "off"), None)
    table = Table(title="Impact per stage, measured on this run (vs the baseline: stage off)",
                  title_justify="left", header_style="bold", show_lines=False)
    for name in ("stage", "time", "queries", "p95", "Δ p95", "p95 client", "mean", "Δ mean",
                 "errors", "L1 hit", "L2 hit", "$/query", "Δ cost"):
        table.add_column(name, justify="left" if name == "stage" else "right",
                         no_wrap=True)
    for r in rows:
        stage = r.stage.split(" ")[0]
        table.add_row(
            r.stage, f"{r.seconds:.0f} s",
            "—" if r.queries is None else f"{r.queries:,.0f}".replace(",", " "),
            _ms(r.p95), _delta(r.p95, base.p95 if base else None), _ms(r.p95_client),
            _ms(r.mean), _delta(r.mean, base.mean if base else None), _pct(r.error_rate, 2),
            _rate_cell(r.l1_served, r.l1_shadow, stage in L1_SERVING),
            _rate_cell(r.l2_served, r.l2_shadow, stage in L2_SERVING),
            "—" if r.cost_per_query is None else f"${r.cost_per_query:.4f}",
            _delta(r.cost_per_query, base.cost_per_query if base else None),
        )
    table.caption = (
        "p95: Prometheus' estimate from the histogram buckets (what the gates judge); p95 "
        "client: exact, from the traffic generator. L1 hit: share of queries answered from "
        "L1; L2 hit: hit rate of the embedding lookups (the L1 misses); (xx %): would-be rate "
        "of shadow lookups while the layer does not serve."
    )
    table.caption_justify = "left"
    return table


def table_text(rows: Sequence[StageImpact], width: int = 160) -> str:
    """The table as plain text (for logs, reports and the result file)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_table(rows))
    return console.export_text()


def summary_lines(rows: Sequence[StageImpact]) -> list[str]:
    """The seed's headline figures: last fully-on stage against the baseline."""
    base = next((r for r in rows if r.stage == "off"), None)
    last = next((r for r in reversed(rows) if r.stage == "l1-100"), None)
    if base is None or last is None:
        return []
    lines = [f"l1-100 vs off: mean latency {_delta(last.mean, base.mean)} (seed target -49 %), "
             f"p95 {_delta(last.p95, base.p95)}, cost per query "
             f"{_delta(last.cost_per_query, base.cost_per_query)} (seed target -53 %), "
             f"L1 hit {_pct(last.l1_served)}, L2 hit {_pct(last.l2_served)} "
             f"(seed expected 40-50 %)."]
    return lines


# --- the chart --------------------------------------------------------------------------------
@dataclass
class ChartInputs:
    prom_url: str
    start: float
    end: float
    stages: Sequence[str]
    visits: Sequence[StageVisit]
    transitions: Sequence[Mapping[str, Any]]
    baseline: Mapping[str, float]
    events: Sequence[tuple[float, str]]  # (epoch seconds, label): fault injected, ...
    title: str
    window: str = "15s"
    step: float = 2.0
    # Gate limits drawn as faint lines: (panel "latency" | "cost", value, label).
    gate_lines: Sequence[tuple[str, float, str]] = ()
    # A fifth panel, for the fault scenario: stale or mismatched verifications, against the
    # integrity guardrail's limit.
    integrity_limit: float | None = None
    end_note: str = ""  # where the rollout ended, written at the end of the stage line


def _series(inputs: ChartInputs, expr: str) -> tuple[list[float], list[float]]:
    # Start one window in: earlier windows reach back into the seeding of the notes.
    first = inputs.start + float(inputs.window.rstrip("s"))
    points = prom_range(inputs.prom_url, expr.replace("{w}", inputs.window), first,
                        inputs.end, inputs.step)
    return ([(ts - inputs.start) / 60 for ts, _ in points], [v for _, v in points])


_DASHES = ("--", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (1, 1)))


def write_chart(inputs: ChartInputs, path: Path) -> Path:
    """Four panels sharing the time axis: stage, latency, hit rates, cost per query."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ratios = [1.25, 1.1, 1.1, 1.0] + ([0.8] if inputs.integrity_limit is not None else [])
    fig, axes = plt.subplots(len(ratios), 1, figsize=(12.5, 2.6 * sum(ratios)), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    ax_stage, ax_lat, ax_hit, ax_cost = axes[:4]

    def minutes(ts: float) -> float:
        return (ts - inputs.start) / 60

    # Stage over time: a step line, advances green, rollbacks red.
    index = {name: i for i, name in enumerate(inputs.stages)}
    xs: list[float] = []
    ys: list[float] = []
    for visit in inputs.visits:
        xs += [minutes(visit.start), minutes(visit.end)]
        ys += [index.get(visit.stage, 0)] * 2
    ax_stage.plot(xs, ys, color="#2d6cdf", linewidth=2.5, drawstyle="default")
    ax_stage.set_yticks(range(len(inputs.stages)), list(inputs.stages))
    ax_stage.set_ylim(-0.5, len(inputs.stages) - 0.5)
    ax_stage.set_ylabel("stage")
    ax_stage.grid(axis="y", alpha=0.3)
    for t in inputs.transitions:
        kind = t.get("transition")
        at = minutes(iso_ts(t["at"]))
        color = "#c62828" if "rollback" in str(kind) else "#2e7d32"
        for ax in axes:
            ax.axvline(at, color=color, alpha=0.35 if ax is not ax_stage else 0.6,
                       linewidth=1, linestyle="--" if kind == "complete" else "-")
        if "rollback" in str(kind):
            ax_stage.annotate(f"rollback\n{t['from_stage']} → {t['to_stage']}",
                              (at, index.get(str(t["to_stage"]), 0)),
                              xytext=(8, -28), textcoords="offset points", color="#c62828",
                              fontsize=9, fontweight="bold")
    if inputs.end_note:
        # Bottom right is empty once the rollout has climbed: no clash with annotations.
        ax_stage.text(0.99, 0.05, inputs.end_note, transform=ax_stage.transAxes, ha="right",
                      va="bottom", fontsize=9, color="#37474f",
                      bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#cfd8dc"})
    for ts, label in inputs.events:
        for ax in axes:
            ax.axvline(minutes(ts), color="#e65100", linewidth=1.5, linestyle=":")
        ax_stage.annotate(label, (minutes(ts), len(inputs.stages) - 1), xytext=(-6, 4),
                          textcoords="offset points", color="#e65100", fontsize=9,
                          ha="right")

    # Latency: the gates' p95 (histogram) and the mean, with the baseline.
    x, y = _series(inputs, "histogram_quantile(0.95, sum by (le) "
                           "(rate(ai_agent_query_duration_seconds_bucket[{w}])))")
    ax_lat.plot(x, y, color="#6a1b9a", label="p95 (histogram:\nwhat the gates see)")
    x, y = _series(inputs, "sum(rate(ai_agent_query_duration_seconds_sum[{w}])) / "
                           "sum(rate(ai_agent_query_duration_seconds_count[{w}]))")
    ax_lat.plot(x, y, color="#00897b", label="mean")
    base_p95 = inputs.baseline.get("baseline_p95_seconds")
    if base_p95:
        ax_lat.axhline(base_p95, color="#6a1b9a", linestyle=":", alpha=0.7,
                       label=f"baseline p95 {base_p95:.2f} s")
    for number, (panel, value, label) in enumerate(inputs.gate_lines):
        if panel == "latency":
            ax_lat.axhline(value, color="#757575", linestyle=_DASHES[number % len(_DASHES)],
                         linewidth=0.9, label=label)
    ax_lat.set_ylabel("latency (s)")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax_lat.grid(alpha=0.3)

    # Hit rates: served (solid) and would-be shadow (dotted).
    ratio = FuncFormatter(lambda v, _: f"{v * 100:.0f} %")
    hits = ('sum(rate(ai_agent_cache_hits_total{{cache_layer="{l}",mode="{m}"}}[{{w}}]))')
    lookups = (f"({hits} + sum(rate(ai_agent_cache_misses_total"
               '{{cache_layer="{l}",mode="{m}"}}[{{w}}])))')
    for layer, mode, label, color, style in (
        ("query_result", "serve", "L1 served\n(share of queries)", "#ef6c00", "-"),
        ("embedding", "serve", "L2 served\n(hit rate of lookups)", "#1565c0", "-"),
        ("query_result", "shadow", "L1 would-be\n(shadow lookups)", "#ef6c00", ":"),
        ("embedding", "shadow", "L2 would-be\n(shadow lookups)", "#1565c0", ":"),
    ):
        num = hits.format(l=layer, m=mode)
        den = ("sum(rate(ai_agent_queries_total[{w}]))"
               if (layer, mode) == ("query_result", "serve") else lookups.format(l=layer, m=mode))
        # At least one lookup a second: a layer that stopped looking up (shadow off at
        # l1-100) fades out of its window and would draw a false plunge to 0 %.
        x, y = _series(inputs, f"{num} / ({den} >= 1)")
        if x:
            ax_hit.plot(x, y, color=color, linestyle=style, label=label)
    ax_hit.yaxis.set_major_formatter(ratio)
    ax_hit.set_ylim(-0.02, 1.05)
    ax_hit.set_ylabel("cache hits")
    ax_hit.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax_hit.grid(alpha=0.3)

    # Cost per query.
    x, y = _series(inputs, "sum(rate(ai_agent_upstream_cost_usd_total[{w}])) / "
                           "(sum(rate(ai_agent_queries_total[{w}])) > 0)")
    ax_cost.plot(x, y, color="#2e7d32", label="cost per query")
    base_cost = inputs.baseline.get("baseline_cost_per_query_usd")
    if base_cost:
        ax_cost.axhline(base_cost, color="#2e7d32", linestyle=":", alpha=0.7,
                        label=f"baseline ${base_cost:.4f}")
    for number, (panel, value, label) in enumerate(inputs.gate_lines):
        if panel == "cost":
            ax_cost.axhline(value, color="#757575", linestyle=_DASHES[number % len(_DASHES)],
                         linewidth=0.9, label=label)
    ax_cost.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:.3f}"))
    ax_cost.set_ylim(bottom=0)
    ax_cost.set_ylabel("$ / query")
    ax_cost.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax_cost.grid(alpha=0.3)

    if inputs.integrity_limit is not None:
        ax_int = axes[4]
        x, y = _series(inputs, 'sum(rate(ai_agent_cache_verifications_total'
                               '{result=~"stale|mismatch"}[{w}])) / '
                               "(sum(rate(ai_agent_cache_verifications_total[{w}])) > 0)")
        ax_int.plot(x, y, color="#c62828", label="stale or mismatched\n(share of verifications)")
        ax_int.axhline(inputs.integrity_limit, color="#c62828", linestyle=":", alpha=0.7,
                       label=f"guardrail limit {inputs.integrity_limit * 100:g} %")
        ax_int.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.1f} %"))
        ax_int.set_ylim(bottom=0)
        ax_int.set_ylabel("cache integrity")
        ax_int.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        ax_int.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes since the controller started")

    fig.suptitle(inputs.title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
