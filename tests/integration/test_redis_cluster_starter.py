"""The private Redis Cluster starter: 3 masters + 3 replicas, every node ok, stopped by pid."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_stop_ends_every_node_it_started_and_removes_the_data_dir() -> None:
    service = cluster_svc.start_private_cluster(name="redis-cluster-stop-test")
    pids = list(zip(service.node_pids, service.node_pid_starts, strict=True))
    assert service.data_dir is not None
    assert all(is_ours(pid, started) for pid, started in pids)
    cluster_svc.stop(service)
    assert not any(is_ours(pid, started) for pid, started in pids)
    assert not Path(service.data_dir).exists()
