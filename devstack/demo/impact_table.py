"""The impact table as people read it: every stage against the baseline (stage `off`), and the
seed's headline figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devstack.demo.impact import StageImpact


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
