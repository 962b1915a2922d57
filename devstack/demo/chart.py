"""The chart of a demo run: stage, latency, hit rates and cost per query (and, for the fault
scenario, cache integrity) over time, from the run's own Prometheus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.demo.stages import StageVisit, entry_ts
from devstack.promql import range_points
from rollout.records import LogEntry

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass
class ChartInputs:
    prom_url: str
    start: float
    end: float
    stages: Sequence[str]
    visits: Sequence[StageVisit]
    transitions: Sequence[LogEntry]
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
    points = range_points(inputs.prom_url, expr.replace("{w}", inputs.window), first,
                        inputs.end, inputs.step)
    return ([(ts - inputs.start) / 60 for ts, _ in points], [v for _, v in points])


_DASHES = ("--", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (1, 1)))


def write_chart(inputs: ChartInputs, path: Path) -> Path:
    """Four panels sharing the time axis: stage, latency, hit rates, cost per query (and
    cache integrity, for the fault scenario)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart goes to a file
    import matplotlib.pyplot as plt

    ratios = [1.25, 1.1, 1.1, 1.0] + ([0.8] if inputs.integrity_limit is not None else [])
    fig, axes = plt.subplots(len(ratios), 1, figsize=(12.5, 2.6 * sum(ratios)), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    _stage_panel(inputs, axes[0], list(axes))
    _latency_panel(inputs, axes[1])
    _hits_panel(inputs, axes[2])
    _cost_panel(inputs, axes[3])
    if inputs.integrity_limit is not None:
        _integrity_panel(inputs, axes[4], inputs.integrity_limit)
    axes[-1].set_xlabel("minutes since the controller started")

    fig.suptitle(inputs.title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _minutes(inputs: ChartInputs, ts: float) -> float:
    return (ts - inputs.start) / 60


def _finish(ax: Axes, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)


def _gate_lines(inputs: ChartInputs, ax: Axes, panel: str) -> None:
    for number, (on, value, label) in enumerate(inputs.gate_lines):
        if on == panel:
            ax.axhline(value, color="#757575", linestyle=_DASHES[number % len(_DASHES)],
                       linewidth=0.9, label=label)


def _stage_panel(inputs: ChartInputs, ax_stage: Axes, axes: list[Axes]) -> None:
    """Stage over time: a step line; advances green, rollbacks red, on every panel."""
    index = {name: i for i, name in enumerate(inputs.stages)}
    xs: list[float] = []
    ys: list[float] = []
    for visit in inputs.visits:
        xs += [_minutes(inputs, visit.start), _minutes(inputs, visit.end)]
        ys += [index.get(visit.stage, 0)] * 2
    ax_stage.plot(xs, ys, color="#2d6cdf", linewidth=2.5, drawstyle="default")
    ax_stage.set_yticks(range(len(inputs.stages)), list(inputs.stages))
    ax_stage.set_ylim(-0.5, len(inputs.stages) - 0.5)
    ax_stage.set_ylabel("stage")
    ax_stage.grid(axis="y", alpha=0.3)
    for t in inputs.transitions:
        kind = t.transition
        at = _minutes(inputs, entry_ts(t))
        color = "#c62828" if "rollback" in str(kind) else "#2e7d32"
        for ax in axes:
            ax.axvline(at, color=color, alpha=0.35 if ax is not ax_stage else 0.6,
                       linewidth=1, linestyle="--" if kind == "complete" else "-")
        if "rollback" in str(kind):
            ax_stage.annotate(f"rollback\n{t.from_stage} → {t.to_stage}",
                              (at, index.get(str(t.to_stage), 0)),
                              xytext=(8, -28), textcoords="offset points", color="#c62828",
                              fontsize=9, fontweight="bold")
    if inputs.end_note:
        # Bottom right is empty once the rollout has climbed: no clash with annotations.
        ax_stage.text(0.99, 0.05, inputs.end_note, transform=ax_stage.transAxes, ha="right",
                      va="bottom", fontsize=9, color="#37474f",
                      bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#cfd8dc"})
    for ts, label in inputs.events:
        for ax in axes:
            ax.axvline(_minutes(inputs, ts), color="#e65100", linewidth=1.5, linestyle=":")
        ax_stage.annotate(label, (_minutes(inputs, ts), len(inputs.stages) - 1),
                          xytext=(-6, 4), textcoords="offset points", color="#e65100",
                          fontsize=9, ha="right")


def _latency_panel(inputs: ChartInputs, ax: Axes) -> None:
    """The gates' p95 (histogram) and the mean, with the baseline and the gates' limits."""
    x, y = _series(inputs, "histogram_quantile(0.95, sum by (le) "
                           "(rate(ai_agent_query_duration_seconds_bucket[{w}])))")
    ax.plot(x, y, color="#6a1b9a", label="p95 (histogram:\nwhat the gates see)")
    x, y = _series(inputs, "sum(rate(ai_agent_query_duration_seconds_sum[{w}])) / "
                           "sum(rate(ai_agent_query_duration_seconds_count[{w}]))")
    ax.plot(x, y, color="#00897b", label="mean")
    base_p95 = inputs.baseline.get("baseline_p95_seconds")
    if base_p95:
        ax.axhline(base_p95, color="#6a1b9a", linestyle=":", alpha=0.7,
                   label=f"baseline p95 {base_p95:.2f} s")
    _gate_lines(inputs, ax, "latency")
    ax.set_ylim(bottom=0)
    _finish(ax, "latency (s)")


def _hits_panel(inputs: ChartInputs, ax: Axes) -> None:
    """Hit rates: served (solid) and would-be shadow (dotted)."""
    from matplotlib.ticker import FuncFormatter

    hits = ('sum(rate(ai_agent_cache_hits_total{{cache_layer="{l}",mode="{m}"}}[{{w}}]))')
    # A layer that never missed (L2 at 100 %) has no miss series at all: count it as 0.
    lookups = (f"({hits} + (sum(rate(ai_agent_cache_misses_total"
               '{{cache_layer="{l}",mode="{m}"}}[{{w}}])) or vector(0)))')
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
            ax.plot(x, y, color=color, linestyle=style, label=label)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.0f} %"))
    ax.set_ylim(-0.02, 1.05)
    _finish(ax, "cache hits")


def _cost_panel(inputs: ChartInputs, ax: Axes) -> None:
    from matplotlib.ticker import FuncFormatter

    x, y = _series(inputs, "sum(rate(ai_agent_upstream_cost_usd_total[{w}])) / "
                           "(sum(rate(ai_agent_queries_total[{w}])) > 0)")
    ax.plot(x, y, color="#2e7d32", label="cost per query")
    base_cost = inputs.baseline.get("baseline_cost_per_query_usd")
    if base_cost:
        ax.axhline(base_cost, color="#2e7d32", linestyle=":", alpha=0.7,
                   label=f"baseline ${base_cost:.4f}")
    _gate_lines(inputs, ax, "cost")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:.3f}"))
    ax.set_ylim(bottom=0)
    _finish(ax, "$ / query")


def _integrity_panel(inputs: ChartInputs, ax: Axes, limit: float) -> None:
    """The fault scenario: stale or mismatched verifications against the guardrail."""
    from matplotlib.ticker import FuncFormatter

    # What cache_integrity_guardrail counts (L1 verifications), over the chart's window;
    # the guardrail itself counts since the stage's flags were confirmed.
    x, y = _series(inputs, 'sum(rate(ai_agent_cache_verifications_total{cache_layer='
                           '"query_result",result=~"stale|mismatch"}[{w}])) / '
                           '(sum(rate(ai_agent_cache_verifications_total{cache_layer='
                           '"query_result"}[{w}])) > 0)')
    ax.plot(x, y, color="#c62828", label="stale or mismatched\n(share of L1 verifications)")
    ax.axhline(limit, color="#c62828", linestyle=":", alpha=0.7,
               label=f"guardrail limit {limit * 100:g} %")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.1f} %"))
    ax.set_ylim(bottom=0)
    _finish(ax, "cache integrity")
