"""The committed dashboards are what the code generates, every panel queries Prometheus
with PromQL that parses and names real metrics, and Grafana's provisioning finds them."""

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
    DASHBOARDS_DIR,
    REPO_ROOT,
    iter_panels,
    iter_promql,
    iter_rules,
)
from app import contract
from grafana import build, panels
from rollout.metrics import METRIC_ROLLOUT_CHECK_THRESHOLD, METRIC_ROLLOUT_STAGE_ENTERED

PROVISIONING = REPO_ROOT / "grafana" / "provisioning"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
EXPECTED_UIDS = {"ai-cache-rollout", "ai-cache-sre"}
# Metric names from outside this repository's contract, and what exports them.
EXTERNAL_METRICS = {
    "up",  # Prometheus itself
    "redis_up",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_evicted_keys_total",
    "redis_errors_total",
    "redis_commands_rejected_calls_total",  # redis_exporter 1.45
    # redis_exporter 1.45 on a Redis Cluster node (CLUSTER INFO, INFO replication / server),
    # read off the real exporter against the local cluster (alerts/README.md)
    "redis_cluster_enabled",
    "redis_cluster_state",
    "redis_cluster_slots_ok",
    "redis_cluster_slots_pfail",
    "redis_cluster_slots_fail",
    "redis_connected_slaves",
    "redis_instance_info",
    METRIC_ROLLOUT_CHECK_THRESHOLD,  # the controller's own, beyond the shared contract
    METRIC_ROLLOUT_STAGE_ENTERED,
}
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "rate",
    "increase",
    "irate",
    "changes",
    "histogram_quantile",
    "time",
    "timestamp",
    "vector",
    "absent",
    "label_replace",
    "max_over_time",
    "avg_over_time",
    "sort_desc",
    "topk",
    "bottomk",
    "le",
    "bool",
}


def rendered() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in build.render_all().items()}


def committed() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS_DIR.glob("*.json")
    }


def contract_metrics() -> set[str]:
    names = {value for key, value in vars(contract).items() if key.startswith("METRIC_")}
    histogram = contract.METRIC_QUERY_DURATION
    return names | {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}


def metric_names(expr: str) -> set[str]:
    """Identifiers that name series: everything but functions, keywords, labels and strings."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_grouping = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_matchers
    )
    without_ranges = re.sub(r"\[[^\]]*\]|\boffset\s+\w+", "", without_grouping)
    tokens = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges)
    return {t for t in tokens if t not in PROMQL_WORDS and not t.startswith("__")}


def test_committed_json_is_up_to_date() -> None:
    expected = build.render_all()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS_DIR.glob("*.json")}
    assert set(on_disk) == set(expected), (
        f"dashboards on disk {sorted(on_disk)} != {sorted(expected)}"
    )
    stale = [name for name, text in expected.items() if on_disk[name] != text]
    assert not stale, f"out of date: {stale}; run `python -m grafana.build` and commit the JSON"


def test_build_check_mode_agrees() -> None:
    assert build.main(["--check"]) == 0


def test_dashboards_have_stable_uids() -> None:
    assert {d["uid"] for d in committed().values()} == EXPECTED_UIDS


@pytest.mark.parametrize("name", sorted(build.BUILDERS))
def test_every_panel_has_a_datasource_and_a_query(name: str) -> None:
    dashboard = rendered()[name]
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
    for panel in iter_panels(dashboard):
        if panel["type"] == "row":
            continue
        where = f"{name} panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("datasource", {}).get("uid"), f"{where}: no datasource"
        assert panel.get("title") and panel.get("description"), f"{where}: no title/description"
        assert panel.get("targets"), f"{where}: no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where}: empty query {target.get('refId')}"
            assert target.get("datasource", {}).get("uid"), f"{where}: target without datasource"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{where}: wider than the grid"


def test_datasource_variable_defaults_to_the_provisioned_prometheus() -> None:
    for name, dashboard in rendered().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables[panels.DATASOURCE_VARIABLE]["query"] == "prometheus", name
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "ai-cache.yaml").read_text())
    default = [d for d in provisioned["datasources"] if d.get("isDefault")]
    assert len(default) == 1 and default[0]["type"] == "prometheus"
    assert default[0]["uid"] == panels.DATASOURCE_UID


def test_transitions_are_annotations() -> None:
    for name, dashboard in rendered().items():
        exprs = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
        assert any("rollout_transitions_total" in e for e in exprs), name


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each dashboard query (as a recording rule), offline."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool not found: run scripts/bootstrap (Debian package `prometheus`)")
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": expr}
        for i, (source, expr) in enumerate(iter_promql(executable=True))
        if source.startswith("grafana/")
    ]
    assert rules, "no dashboard queries found"
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_queries_name_only_known_metrics() -> None:
    """Every series a rule or panel reads is exported (contract, redis_exporter, Prometheus)
    or recorded by a rule: a typo here would be an empty panel or a silent alert."""
    recorded = {rule.name for rule in iter_rules() if not rule.is_alert}
    known = contract_metrics() | EXTERNAL_METRICS | recorded
    unknown = {
        (source, name)
        for source, expr in iter_promql(executable=True)
        for name in metric_names(expr)
        if name not in known
    }
    assert not unknown, f"unknown metric names: {sorted(unknown)}"


def test_iter_promql_covers_rules_panels_and_annotations() -> None:
    sources = [source for source, _ in iter_promql()]
    assert len(sources) == len(set(sources)), "iter_promql sources must be unique"
    assert any("/alert:AIAgentLowCacheHitRate" in s for s in sources)
    assert any("/record:" in s for s in sources)
    assert any("#panel " in s for s in sources)
    assert any("#annotation " in s for s in sources)
    for _, expr in iter_promql(executable=True):
        assert "$" not in expr, expr


def test_provisioning_points_at_the_dashboards() -> None:
    provider_file = PROVISIONING / "dashboards" / "ai-cache.yaml"
    providers = yaml.safe_load(provider_file.read_text())["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    # container path -> repository path, for bind mounts (compose paths are relative to deploy/)
    binds = {}
    for mount in mounts:
        source, target = mount.split(":")[:2]
        if source.startswith("."):
            binds[target] = (COMPOSE.parent / source).resolve()
    assert binds.get("/etc/grafana/provisioning") == PROVISIONING.resolve()
    for provider in providers:
        path = provider["options"]["path"]
        assert path in binds, f"provider path {path} is not mounted into Grafana by compose"
        assert binds[path] == DASHBOARDS_DIR.resolve()
        assert sorted(binds[path].glob("*.json")), f"no dashboards in {binds[path]}"
    for sub in ("datasources", "dashboards"):
        files = list((PROVISIONING / sub).glob("*.yaml"))
        assert files, f"no provisioning files in {sub}"
        for file in files:
            assert yaml.safe_load(file.read_text())["apiVersion"] == 1, file
