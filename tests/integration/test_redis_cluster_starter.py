"""The private Redis Cluster starter: 3 masters + 3 replicas, every node ok, stopped by pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.paths import REPO_ROOT
from devstack.processes import is_ours
from devstack.services import redis_cluster as cluster_svc

pytestmark = pytest.mark.integration


def test_the_cluster_has_three_masters_with_one_replica_each_and_all_nodes_ok(
    redis_cluster_service: cluster_svc.RedisClusterService,
) -> None:
    service = redis_cluster_service
    assert len(service.node_ports) == 6
    assert all(cluster_svc.node_state_ok(port, 6) for port in service.node_ports)
    roles = cluster_svc.node_roles(service)
    assert sorted(roles.values()).count("master") == 3
    assert sorted(roles.values()).count("slave") == 3


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.svc", *args], cwd=REPO_ROOT,
                          env=env, text=True, capture_output=True, timeout=120, check=False)


def test_scripts_svc_starts_the_cluster_once_and_stops_every_node_by_pid(
    tmp_path: Path,
) -> None:
    """Started by one process, stopped by another: the stop reads every node's pid and
    start time from the record and signals only those processes."""
    env = os.environ | {"AI_CACHE_RUN_DIR": str(tmp_path / "run")}
    out = _cli(["start", "redis_cluster"], env)
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    cluster = cluster_svc.RedisClusterService.load(tmp_path / "run" / "redis_cluster.json")
    try:
        assert cluster is not None and len(cluster.node_pids) == 6
        assert all(is_ours(pid, t) for pid, t in
                   zip(cluster.node_pids, cluster.node_pid_starts, strict=True))
        assert all(cluster_svc.node_state_ok(port, 6) for port in cluster.node_ports)
        again = _cli(["start", "redis_cluster"], env)  # already running: the same one
        assert json.loads(again.stdout)["pid"] == started["pid"]
    finally:
        out = _cli(["stop", "redis_cluster"], env)
        assert out.returncode == 0, out.stderr
    assert cluster is not None and cluster.data_dir is not None
    assert not any(is_ours(pid, t) for pid, t in
                   zip(cluster.node_pids, cluster.node_pid_starts, strict=True))
    assert not Path(cluster.data_dir).exists()
    assert not (tmp_path / "run" / "redis_cluster.json").exists()
