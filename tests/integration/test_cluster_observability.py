"""Alerts per node on a real Redis Cluster (issue 14): the real cluster (3 masters + 3
replicas, a private one: its nodes are killed here), one real redis_exporter in multi-target
mode (devstack/services/redis_exporter.py) and a real Prometheus that loads the project's
own rule file, unchanged.

Prometheus scrapes all six nodes, each as `instance="127.0.0.1:PORT"`. Then:

1. a master is SIGKILLed: the exporter reports it down (AIAgentRedisDown, `redis_up == 0`,
   on that node), its replica is promoted and becomes a master without a replica
   (AIAgentRedisClusterMasterWithoutReplica on that node), and once the failover is done
   every live node reports cluster_state ok — AIAgentRedisClusterDegraded is not active;
2. the killed node is started again: it rejoins as the replica, both alerts clear;
3. the whole shard (the promoted master and its new replica) is SIGKILLed: no replica can
   take over, and every live node reports cluster_state fail — AIAgentRedisClusterDegraded
   on each of them.

The rules' `for:` (1 m, 2 m, 5 m) is longer than a test, so "the alert" here is its rule
evaluating true in Prometheus: `ALERTS{alertstate="pending"}`, which Prometheus sets from
the first evaluation where the expression holds (firing then only needs the `for:` to
pass). Evaluation and scrape every second; every wait polls with a deadline.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from alerts.queries import RULES_DIR, iter_promql
from devstack import promql
from devstack.readiness import wait_until
from devstack.services import prometheus as prom_svc
from devstack.services import redis_cluster as cluster_svc
from devstack.services import redis_exporter as exporter_svc

pytestmark = pytest.mark.integration

# What the rules and the SRE dashboard read that only a Redis Cluster node exports (names
# read off redis_exporter 1.45). test_observability_proof runs on a single Redis, where these
# are empty, and allow-lists them from here; this test proves them on the cluster.
CLUSTER_ONLY_SELECTORS = {
    "redis_cluster_state": "CLUSTER INFO, cluster-enabled nodes only",
    "redis_cluster_slots_ok": "CLUSTER INFO, cluster-enabled nodes only",
    "redis_cluster_slots_pfail": "CLUSTER INFO, cluster-enabled nodes only",
    "redis_cluster_slots_fail": "CLUSTER INFO, cluster-enabled nodes only",
    'redis_instance_info{role="slave"}': "a replica; a single Redis has none",
}
CLUSTER_ONLY_PANELS = {
    "ai-cache-sre.json panel 45 ref A": "cluster_state per node",
    "ai-cache-sre.json panel 46 ref A": "slots ok per node",
    "ai-cache-sre.json panel 46 ref B": "slots in PFAIL per node",
    "ai-cache-sre.json panel 46 ref C": "slots in FAIL per node",
    "ai-cache-sre.json panel 47 ref A": "replicas of each cluster master",
    "ai-cache-sre.json panel 48 ref A": "role of each cluster node",
}
CLUSTER_ONLY_ALERTS = {
    "alert:AIAgentRedisClusterDegraded": "no redis_cluster_state on a single Redis",
    "alert:AIAgentRedisClusterMasterWithoutReplica": "redis_cluster_enabled is 0 on a "
                                                     "single Redis",
}
RULE_FILE = RULES_DIR / "ai-cache-redis.alerts.yml"
JOB = "redis"  # the job deploy/prometheus.yml and the rules name
NODES = 6
FAILOVER_TIMEOUT = 30.0  # node timeout 2 s, election ~1 s, scrape and evaluation 1 s each


@dataclass
class Stack:
    cluster: cluster_svc.RedisClusterService
    exporter: exporter_svc.ClusterExporter
    prometheus: prom_svc.PrometheusService

    def query(self, expr: str) -> list[promql.Series]:
        return promql.query(self.prometheus.url, expr)

    def instances(self, expr: str) -> set[str]:
        return {series["metric"]["instance"] for series in self.query(expr)}

    def wait_instances(self, expr: str, expected: set[str], what: str) -> None:
        """Until `expr` returns exactly the series of `expected` instances."""
        seen: set[str] = set()

        def matches() -> bool:
            nonlocal seen
            seen = self.instances(expr)
            return seen == expected

        try:
            wait_until(matches, timeout=FAILOVER_TIMEOUT, what=what, interval=0.2)
        except Exception as exc:
            raise AssertionError(f"{what}: {expr!r} returned {sorted(seen)}, "
                                 f"wanted {sorted(expected)}") from exc

    def kill(self, address: str) -> None:
        port = int(address.rsplit(":", 1)[1])
        cluster_svc.stop_node(self.cluster, port, sig=signal.SIGKILL)

    def restart(self, address: str) -> None:
        cluster_svc.restart_node(self.cluster, int(address.rsplit(":", 1)[1]))


def cluster_queries() -> dict[str, str]:
    """The panels and alerts of CLUSTER_ONLY_*, keyed as test_observability_proof keys them."""
    found: dict[str, str] = {}
    for source, expr in iter_promql(executable=True):
        path, _, where = source.partition("#")
        panel = re.fullmatch(r"panel (\d+) .* ref (\w+)", where)
        key = (f"{path.rsplit('/', 1)[-1]} panel {panel[1]} ref {panel[2]}" if panel
               else where.split("/", 1)[-1])
        if key in CLUSTER_ONLY_PANELS or key in CLUSTER_ONLY_ALERTS:
            found[key] = expr
    assert set(found) == set(CLUSTER_ONLY_PANELS) | set(CLUSTER_ONLY_ALERTS)
    return found


def assert_cluster_queries_have_data(stack: Stack) -> None:
    """On a healthy cluster: every cluster-only selector has series, every cluster panel
    shows all six nodes (or the three masters), the cluster alerts evaluate to nothing."""
    for selector in CLUSTER_ONLY_SELECTORS:
        assert stack.query(f"count({selector})"), f"{selector}: no series on the cluster"
    for key, expr in cluster_queries().items():
        result = stack.query(expr)
        if key in CLUSTER_ONLY_ALERTS:
            assert not result, f"{key} on a healthy cluster: {result}"
        else:
            want = 3 if "panel 47" in key else NODES
            assert len(result) == want, f"{key}: {len(result)} series, wanted {want}"


def pending(alert: str, **labels: str) -> str:
    matchers = "".join(f', {name}="{value}"' for name, value in labels.items())
    return f'ALERTS{{alertname="{alert}", alertstate="pending"{matchers}}}'


def active(alert: str) -> str:
    return f'ALERTS{{alertname="{alert}"}}'


@pytest.fixture
def stack() -> Iterator[Stack]:
    cluster = cluster_svc.start_private_cluster(name="redis-cluster-observability")
    exporter: exporter_svc.ClusterExporter | None = None
    prometheus: prom_svc.PrometheusService | None = None
    try:
        exporter = exporter_svc.start_cluster_exporter(
            [cluster.node_url(port) for port in cluster.node_ports])
        prometheus = prom_svc.start_private_prometheus(
            name="prometheus-cluster-obs", targets={JOB: exporter.scrape_targets},
            scrape_interval=1.0, rule_files=[RULE_FILE])
        yield Stack(cluster, exporter, prometheus)
    finally:
        if prometheus is not None:
            prom_svc.stop(prometheus)
        if exporter is not None:
            exporter.stop()
        cluster_svc.stop(cluster)


def test_alerts_follow_each_node_through_a_failover_and_a_lost_shard(stack: Stack) -> None:
    nodes = {f"127.0.0.1:{port}" for port in stack.cluster.node_ports}

    # Every node is a target of its own, named by its address (no exporter in the label).
    promql.wait_for_series(stack.prometheus.url, f'redis_up{{job="{JOB}"}} == 1',
                           min_series=NODES, timeout=30)
    assert stack.instances(f'up{{job="{JOB}"}} == 1') == nodes
    assert stack.instances("redis_cluster_state == 1") == nodes
    masters = stack.instances('redis_instance_info{role="master"}')
    assert len(masters) == 3 and masters < nodes
    assert stack.instances("redis_connected_slaves == 1") == masters
    # An evaluation before every node's first scrape may have left one pending: wait for it
    # to clear rather than catch it once (a loaded clean-clone run did).
    wait_until(lambda: not stack.query('ALERTS{alertname=~"AIAgentRedis(Down|Cluster.*)"}'),
               timeout=FAILOVER_TIMEOUT, what="no Redis alert at the start", interval=0.2)
    assert_cluster_queries_have_data(stack)

    # 1. A master dies; its replica (the node replicating from its port) takes over.
    killed = min(masters)
    replica = stack.instances(
        f'redis_master_link_up{{master_port="{killed.rsplit(":", 1)[1]}"}} == 1')
    assert len(replica) == 1
    promoted = replica.pop()
    stack.kill(killed)
    live = nodes - {killed}
    stack.wait_instances(pending("AIAgentRedisDown", reason="exporter cannot reach Redis"),
                         {killed}, "the killed node reported down by its own instance")
    stack.wait_instances(pending("AIAgentRedisClusterMasterWithoutReplica"), {promoted},
                         "the promoted replica is a master without a replica")
    # The failover is over: every live node sees the cluster ok, nothing degraded.
    stack.wait_instances("redis_cluster_state == 1", live, "cluster_state ok after failover")
    stack.wait_instances(active("AIAgentRedisClusterDegraded"), set(),
                         "no degraded cluster once the replica took over")
    assert stack.instances('redis_instance_info{role="master"}') == masters - {killed} | {
        promoted}

    # 2. The killed node comes back (empty) as the promoted master's replica: both clear.
    stack.restart(killed)
    stack.wait_instances(active("AIAgentRedisClusterMasterWithoutReplica"), set(),
                         "the promoted master has its replica back")
    stack.wait_instances(active("AIAgentRedisDown"), set(), "every node up again")

    # 3. The whole shard dies (master and its only replica): no failover is possible, and
    #    every node left sees the cluster fail — one alert per node, named by its address.
    stack.kill(promoted)
    stack.kill(killed)
    survivors = nodes - {promoted, killed}
    stack.wait_instances(
        pending("AIAgentRedisClusterDegraded", reason="cluster_state is fail"), survivors,
        "every surviving node reports the cluster degraded")
    stack.wait_instances(pending("AIAgentRedisDown", reason="exporter cannot reach Redis"),
                         {promoted, killed}, "both nodes of the shard reported down")
    assert stack.instances("redis_cluster_slots_fail > 0") == survivors
