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


def render_png(series: Sequence[Series], title: str, *, harmful: bool) -> bytes:
    """Harmful scenario: the time from the harm's start to its rollback (rollbacks before it
    are false ones, not detections); otherwise the time from the start to any rollback."""
    try:
        import matplotlib  # noqa: PLC0415  (optional: only a chart needs it)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ChartUnavailable(MISSING) from exc

    figure, (complete, detect) = plt.subplots(1, 2, figsize=(11, 4.2))
    done = [[o.seconds / DAY for o in item.outcomes if o.outcome == COMPLETED]
            for item in series]
    caught = [[_detection(o, harmful=harmful) / HOUR for o in item.outcomes
               if _detected(o, harmful=harmful)] for item in series]
    for index, item in enumerate(series):
        colour = _COLOURS[index % len(_COLOURS)]
        runs = len(item.outcomes)
        if done[index]:
            complete.hist(done[index], bins=_bins(done), alpha=0.55, color=colour,
                          label=f"{item.label}: {len(done[index])}/{runs} completed")
        if caught[index]:
            word = "caught" if harmful else "rolled back"
            detect.hist(caught[index], bins=_bins(caught), alpha=0.55, color=colour,
                        label=f"{item.label}: {len(caught[index])}/{runs} {word}")
        complete.axvline(item.bakes_seconds / DAY, color=colour, linestyle="--", linewidth=1,
                         label=f"{item.label}: sum of bakes")
    complete.set_title("time to complete" + ("" if any(done) else " (no run completed)"))
    complete.set_xlabel("days from the start of the first stage")
    if harmful:
        detect.set_title("time to detect: the harm's start to its rollback")
        detect.set_xlabel("hours")
    else:
        detect.set_title("time to a (false) rollback")
        detect.set_xlabel("hours from the start of the first stage")
    for axes in (complete, detect):
        axes.set_ylabel("runs")
        handles, _ = axes.get_legend_handles_labels()
        if handles:
            axes.legend(fontsize=8)
        if not any(caught) and axes is detect:
            axes.text(0.5, 0.5, "no rollback", ha="center", va="center",
                      transform=axes.transAxes)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _detected(outcome: Outcome, *, harmful: bool) -> bool:
    if outcome.outcome != ROLLED_BACK:
        return False
    return not harmful or (outcome.began is not None and outcome.seconds >= outcome.began)


def _detection(outcome: Outcome, *, harmful: bool) -> float:
    return outcome.seconds - (outcome.began or 0.0) if harmful else outcome.seconds


def _bins(groups: Sequence[Sequence[float]], count: int = 40) -> list[float]:
    """The same bins for every series, so that a narrow distribution stays visible."""
    values = [v for group in groups for v in group]
    low, high = min(values), max(values)
    if high <= low:
        return [low - 0.5, low + 0.5]
    step = (high - low) / count
    return [low + i * step for i in range(count + 1)]
