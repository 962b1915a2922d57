"""The chart of a simulation: the distributions of the time to complete and of the time to
detect (to the rollback), one series per plan, as PNG bytes (the caller writes them).

matplotlib is an optional dependency of the product (`pip install ai-cache-rollout[chart]`):
it is imported only when a chart is asked for.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rollout.simulate.run import COMPLETED, ROLLED_BACK, Outcome

DAY: Final = 86400.0
HOUR: Final = 3600.0
_COLOURS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


MISSING: Final = "--chart needs matplotlib: pip install 'ai-cache-rollout[chart]'"


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed."""


def available() -> bool:
    """Whether a chart can be drawn, asked before a long simulation rather than after."""
    return importlib.util.find_spec("matplotlib") is not None


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    outcomes: Sequence[Outcome]
    bakes_seconds: float


def render_png(series: Sequence[Series], title: str) -> bytes:
    try:
        import matplotlib  # noqa: PLC0415  (optional: only a chart needs it)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ChartUnavailable(MISSING) from exc

    figure, (complete, detect) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, item in enumerate(series):
        colour = _COLOURS[index % len(_COLOURS)]
        done = [o.seconds / DAY for o in item.outcomes if o.outcome == COMPLETED]
        caught = [(o.seconds - (o.began or 0.0)) / HOUR
                  for o in item.outcomes if o.outcome == ROLLED_BACK]
        runs = len(item.outcomes)
        if done:
            complete.hist(done, bins=30, alpha=0.55, color=colour,
                          label=f"{item.label}: {len(done)}/{runs} completed")
        if caught:
            detect.hist(caught, bins=30, alpha=0.55, color=colour,
                        label=f"{item.label}: {len(caught)}/{runs} rolled back")
        complete.axvline(item.bakes_seconds / DAY, color=colour, linestyle="--", linewidth=1,
                         label=f"{item.label}: sum of bakes")
    complete.set_title("time to complete")
    complete.set_xlabel("days from the start of the first stage")
    detect.set_title("time to detect (to the rollback)")
    detect.set_xlabel("hours from the start of the harm (healthy: of the run)")
    for axes in (complete, detect):
        axes.set_ylabel("runs")
        handles, _ = axes.get_legend_handles_labels()
        if handles:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "no run", ha="center", va="center", transform=axes.transAxes)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
