"""Every PromQL expression this repository ships, for tests that run them on a real Prometheus.

`iter_promql()` yields `(source, expr)` pairs from the rule files (alerts/rules/*.yml) and the
committed Grafana dashboards (grafana/dashboards/*.json: panel targets and annotation
queries). With `executable=True`, Grafana's own variables are replaced by values Prometheus
accepts, so the expression can be sent to /api/v1/query as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = REPO_ROOT / "alerts" / "rules"
TESTS_DIR = REPO_ROOT / "alerts" / "tests"
RUNBOOKS_DIR = REPO_ROOT / "alerts" / "runbooks"
DASHBOARDS_DIR = REPO_ROOT / "grafana" / "dashboards"

# What Grafana would substitute at query time. Dashboard variables (`$check`) only appear
# inside regex matchers, so "match everything" keeps the query's meaning.
GRAFANA_SUBSTITUTIONS: Mapping[str, str] = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "${__range}": "1h",
    "$__range": "1h",
    "$check": ".*",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a rule file, with where it came from."""

    file: Path
    group: str
    body: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("alert") or self.body.get("record"))

    @property
    def is_alert(self) -> bool:
        return "alert" in self.body

    @property
    def expr(self) -> str:
        return str(self.body["expr"]).strip()

    @property
    def source(self) -> str:
        kind = "alert" if self.is_alert else "record"
        # Recording rules may share a name and differ by their static labels (quantiles).
        labels = (
            ""
            if self.is_alert
            else ",".join(
                f'{key}="{value}"' for key, value in sorted(self.body.get("labels", {}).items())
            )
        )
        suffix = f"{{{labels}}}" if labels else ""
        return f"{self.file.relative_to(REPO_ROOT)}#{self.group}/{kind}:{self.name}{suffix}"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yml"))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def iter_rules() -> Iterator[Rule]:
    for path in rule_files():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document.get("groups", []):
            for body in group.get("rules", []):
                yield Rule(file=path, group=str(group["name"]), body=body)


def iter_alert_rules() -> Iterator[Rule]:
    return (rule for rule in iter_rules() if rule.is_alert)


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those inside collapsed rows (Grafana nests them there)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _dashboard_queries(path: Path) -> Iterator[tuple[str, str]]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    name = path.relative_to(REPO_ROOT)
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                panel_ref = f"panel {panel.get('id')} {panel.get('title')!r}"
                yield f"{name}#{panel_ref} ref {target.get('refId')}", str(target["expr"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            yield f"{name}#annotation {annotation.get('name')!r}", str(annotation["expr"])


def to_executable(expr: str) -> str:
    """Replace Grafana's variables by what Grafana would send for a one-hour view."""
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    leftover = re.search(r"\$\{?\w+", expr)
    if leftover:
        raise ValueError(f"unknown Grafana variable {leftover.group()} in {expr!r}")
    return expr


def iter_promql(*, executable: bool = False) -> Iterator[tuple[str, str]]:
    """(source, expr) for every rule expression and every dashboard query, in a stable order."""
    for rule in iter_rules():
        yield rule.source, rule.expr
    for path in dashboard_files():
        for source, expr in _dashboard_queries(path):
            yield source, (to_executable(expr) if executable else expr)


if __name__ == "__main__":
    for source, expr in iter_promql(executable=True):
        print(f"# {source}\n{expr}\n")
