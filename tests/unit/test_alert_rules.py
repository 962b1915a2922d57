"""Rule files pass promtool, every alert is unit-tested both ways, and every alert leads an
SRE to a runbook and a dashboard panel that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.queries import (
    REPO_ROOT,
    RUNBOOKS_DIR,
    Rule,
    dashboard_files,
    iter_alert_rules,
    iter_panels,
    iter_rules,
    rule_files,
    rule_test_files,
)

SEVERITIES = {"critical", "warning", "info"}
# Event alerts: the expression already spans its window (a `for:` as long as the window
# would never fire). Each entry says why.
EVENT_ALERTS = {"RolloutRolledBack": "a rollback is an event; the 15 m window is the hold"}
RUNBOOK_SECTIONS = (
    "## What it means for users",
    "## How to confirm",
    "## What the rollout controller has already done",
    "## What to do",
    "## Escalation",
    "## How to silence safely",
)
RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}/"
GRAFANA_BASE = "{{ $externalLabels.grafana_url }}"
DURATION = re.compile(r"(\d+)([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if not found:
        pytest.fail("promtool not found: run scripts/bootstrap (Debian package `prometheus`)")
    return found


def seconds(text: str) -> int:
    return sum(int(n) * UNIT_SECONDS[u] for n, u in DURATION.findall(text))


def longest_window(expr: str) -> int:
    """The longest range in an expression, counting recorded `...:rate5m` inputs as 5 m."""
    ranges = [seconds(m) for m in re.findall(r"\[(\w+)(?::\w*)?\]", expr)]
    ranges += [seconds(m) for m in re.findall(r":\w*rate(\d+[smhd])\b", expr)]
    return max(ranges, default=0)


def alerts() -> list[Rule]:
    return list(iter_alert_rules())


def alert_ids() -> list[str]:
    return [rule.name for rule in alerts()]


def load_tests() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text(encoding="utf-8")) for path in rule_test_files()]


def dashboard_panels() -> dict[str, set[int]]:
    panels: dict[str, set[int]] = {}
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        panels[dashboard["uid"]] = {int(p["id"]) for p in iter_panels(dashboard) if "id" in p}
    return panels


def test_there_are_rule_files_and_tests() -> None:
    assert rule_files(), "no rule files in alerts/rules"
    assert rule_test_files(), "no promtool tests in alerts/tests"


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"promtool check rules {path.name}:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("path", rule_test_files(), ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    # promtool resolves rule_files relative to the test file's directory.
    proc = subprocess.run(
        [promtool(), "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"promtool test rules {path.name}:\n{proc.stdout}\n{proc.stderr}"


def test_every_rule_file_is_loaded_by_some_test() -> None:
    loaded = {
        (path.parent / name).resolve()
        for path, doc in zip(rule_test_files(), load_tests(), strict=True)
        for name in doc.get("rule_files", [])
    }
    missing = [p.name for p in rule_files() if p.resolve() not in loaded]
    assert not missing, f"rule files no promtool test loads: {missing}"


def test_names_are_unique() -> None:
    names = alert_ids()
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    records = [
        (r.name, tuple(sorted(r.body.get("labels", {}).items())))
        for r in iter_rules()
        if not r.is_alert
    ]
    assert len(records) == len(set(records)), "two recording rules produce the same series"


def test_recording_rule_names_follow_level_metric_operation() -> None:
    for rule in iter_rules():
        if not rule.is_alert:
            assert re.fullmatch(r"[a-z0-9_]+:[a-z0-9_]+:[a-z0-9_]+", rule.name), rule.name


def test_seed_alert_keeps_its_name_and_meaning() -> None:
    seed = {rule.name: rule for rule in alerts()}["AIAgentLowCacheHitRate"]
    expr = " ".join(seed.expr.split())
    assert "ai_agent_cache_hits_total[1h]" in expr
    assert "ai_agent_cache_misses_total[1h]" in expr
    assert expr.endswith("< 0.3")
    assert seconds(seed.body["for"]) == 2 * 3600
    assert seed.body["annotations"]["summary"] == "AI cache hit rate below 30% for 2 hours"


@pytest.mark.parametrize("rule", alerts(), ids=alert_ids())
def test_alert_labels_and_annotations(rule: Rule) -> None:
    assert rule.body.get("labels", {}).get("severity") in SEVERITIES, rule.name
    annotations = rule.body.get("annotations", {})
    for key in ("summary", "description", "runbook_url", "dashboard_url"):
        assert annotations.get(key), f"{rule.name} lacks annotation {key}"
    assert "$value" in annotations["description"], f"{rule.name}: description must show the value"


@pytest.mark.parametrize("rule", alerts(), ids=alert_ids())
def test_alert_waits_at_least_its_window(rule: Rule) -> None:
    if rule.name in EVENT_ALERTS:
        return
    hold = seconds(str(rule.body.get("for", "0s")))
    window = longest_window(rule.expr)
    assert hold >= window, f"{rule.name}: for {hold}s is shorter than its {window}s window"


@pytest.mark.parametrize("rule", alerts(), ids=alert_ids())
def test_runbook_exists_and_is_complete(rule: Rule) -> None:
    url = rule.body["annotations"]["runbook_url"]
    assert url == f"{RUNBOOK_BASE}{rule.name}.md", f"{rule.name}: runbook_url {url!r}"
    path = RUNBOOKS_DIR / f"{rule.name}.md"
    assert path.is_file(), f"missing runbook {path}"
    text = path.read_text(encoding="utf-8")
    for section in RUNBOOK_SECTIONS:
        assert section in text, f"{url} lacks section {section!r}"
    # the rollout's state and recent flag changes are the first thing to look at
    confirm = text[text.index("## How to confirm"):]
    assert "`rollout status`" in confirm.split("\n\n")[1], f"{path.name}: no rollout status step"
    assert "`rollout flags show`" in confirm and "--transitions" in confirm
    silence = re.search(r"amtool silence add[^\n]*alertname=\"?" + re.escape(rule.name), text)
    assert silence, f"{url}: no amtool silence example matching alertname={rule.name}"
    assert re.search(r"--(duration|expires)", text), f"{url}: the silence example needs an expiry"
    assert "--comment" in text, f"{url}: the silence example needs a comment"


def test_every_runbook_belongs_to_an_alert() -> None:
    names = set(alert_ids())
    orphans = [
        p.name for p in RUNBOOKS_DIR.glob("*.md") if p.stem not in names and p.name != "README.md"
    ]
    assert not orphans, f"runbooks without an alert: {orphans}"


@pytest.mark.parametrize("rule", alerts(), ids=alert_ids())
def test_dashboard_url_points_at_an_existing_panel(rule: Rule) -> None:
    url = rule.body["annotations"]["dashboard_url"]
    assert url.startswith(GRAFANA_BASE), f"{rule.name}: dashboard_url {url!r} has no base"
    url = url.removeprefix(GRAFANA_BASE)
    match = re.fullmatch(r"/d/([\w-]+)/[\w-]+\?viewPanel=(\d+)", url)
    assert match, f"{rule.name}: dashboard_url {url!r} is not /d/<uid>/<slug>?viewPanel=<id>"
    uid, panel = match.group(1), int(match.group(2))
    panels = dashboard_panels()
    assert uid in panels, f"{rule.name}: no dashboard with uid {uid}"
    assert panel in panels[uid], f"{rule.name}: dashboard {uid} has no panel {panel}"


@pytest.mark.parametrize("rule", alerts(), ids=alert_ids())
def test_alert_is_unit_tested_firing_and_quiet(rule: Rule) -> None:
    fired = quiet = False
    for doc in load_tests():
        for group in doc.get("tests", []):
            for case in group.get("alert_rule_test", []):
                if case.get("alertname") == rule.name:
                    if case.get("exp_alerts"):
                        fired = True
                    else:
                        quiet = True
    assert fired, f"no promtool test expects {rule.name} to fire"
    assert quiet, f"no promtool test expects {rule.name} to stay quiet"


def test_zero_traffic_case_covers_every_service_alert() -> None:
    service_alerts = {r.name for r in alerts() if r.group == "ai-cache-service"}
    for doc in load_tests():
        for group in doc.get("tests", []):
            if group.get("name", "").startswith("Zero traffic"):
                quiet = {
                    c["alertname"]
                    for c in group.get("alert_rule_test", [])
                    if not c.get("exp_alerts")
                }
                if service_alerts <= quiet:
                    return
    pytest.fail("no zero-traffic promtool test expects every service alert to stay quiet")


def test_prometheus_sets_the_link_bases_from_the_environment() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["global"]["external_labels"] == {
        "runbook_base_url": "${RUNBOOK_BASE_URL}", "grafana_url": "${GRAFANA_URL}"}
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "--enable-feature=expand-external-labels" in prometheus["command"]
    assert set(prometheus["environment"]) == {"RUNBOOK_BASE_URL", "GRAFANA_URL"}
