"""Render the dashboards to grafana/dashboards/*.json.

python -m grafana.build          # write the JSON files
python -m grafana.build --check  # exit 1 if the committed JSON is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana import rollout_dashboard, sre_dashboard

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
BUILDERS: dict[str, Callable[[], Dashboard]] = {
    "ai-cache-rollout.json": rollout_dashboard.build,
    "ai-cache-sre.json": sre_dashboard.build,
}

# Grafana's Prometheus annotation fields that the SDK's generic AnnotationQuery (Grafana
# 10.1 schema) has no setter for; without them Grafana shows "{{kind}}" literally.
PROMETHEUS_ANNOTATION_FIELDS: dict[str, Any] = {
    "step": "60s",
    "titleFormat": "{{kind}}",
    "textFormat": "{{from_stage}} → {{to_stage}}",
    "tagKeys": "kind",
    "useValueForTime": False,
}


def _complete_annotations(model: dict[str, Any]) -> None:
    for item in model.get("annotations", {}).get("list", []):
        if item.get("expr"):
            fields = dict(PROMETHEUS_ANNOTATION_FIELDS)
            if "rollout_transitions_total" not in item["expr"]:
                fields.update(titleFormat=item["name"], textFormat="", tagKeys="")
            for key, value in fields.items():
                item.setdefault(key, value)


def _complete_repeats(model: dict[str, Any]) -> None:
    # Also missing from the SDK: without maxPerRow Grafana squeezes every repeated gate panel
    # into one row, however many checks the plan has.
    for panel in model.get("panels", []):
        if panel.get("repeat"):
            panel.setdefault("maxPerRow", 4)


def render(builder: Callable[[], Dashboard]) -> str:
    model: dict[str, Any] = json.loads(JSONEncoder().encode(builder().build()))
    _complete_annotations(model)
    _complete_repeats(model)
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    return {name: render(builder) for name, builder in BUILDERS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = DASHBOARDS_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(
                f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
            )
    if stale:
        print(f"out of date: {', '.join(stale)} (run python -m grafana.build)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
