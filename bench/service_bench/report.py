"""How figures reach people: one table row per measure with its verdict, console lines, and
the results file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.service_bench.plan import REPO, RESULTS


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    value: str
    target: str
    ratio: str
    verdict: str  # PASS | MISS | info


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def say(text: str) -> None:
    print(text, flush=True)


def print_table(rows: Sequence[Row]) -> None:
    headers = Row("measure", "value", "target", "ratio", "verdict")
    widths = [max(len(getattr(r, f)) for r in (headers, *rows))
              for f in ("measure", "value", "target", "ratio", "verdict")]

    def line(r: Row) -> str:
        cells = (r.measure, r.value, r.target, r.ratio, r.verdict)
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    say("")
    say(line(headers))
    say("  ".join("-" * w for w in widths))
    for row in rows:
        say(line(row))


def write_results(data: dict[str, Any], path: Path = RESULTS) -> None:
    """Write through a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    say(f"results written to {path.relative_to(REPO)}")
