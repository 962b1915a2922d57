"""The demo on a Redis Cluster (`scripts/demo --cluster`, issue 14): what it says about the
cluster it runs on, and where the keys were at the end of the run.

The service replicas' caches and the local flag store live on a private cluster of 3 masters
and 3 replicas (devstack.services.redis_cluster; REDIS_CLUSTER=true for the replicas and for
the controller's flag writer); the controller's own state stays on its own noeviction Redis
(ROLLOUT_REDIS_URL). The census below is read from the nodes themselves before anything is
stopped: which node holds the flag hash, how many cache entries each master and replica
holds, and that every `rollout:*` key is in the controller's Redis, none on the cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from app.contract import LOCAL_FLAGS_KEY
from devstack import promql
from devstack.services import redis_cluster as cluster_svc

# Kinds of keys, by prefix (app/cache/keys.py, DESIGN.md §3 and §8); the rest is "other".
KINDS = (("ai-cache:l1:", "l1"), ("ai-cache:l2:", "l2"), ("ai-cache:gen:", "generation"),
         (LOCAL_FLAGS_KEY, "flags"), ("rollout:", "rollout"))
FAULT_ON_A_CLUSTER = (
    "on a cluster the fault is the same: the notes change in the database only, so the L1 "
    "entries on the workspaces' masters (and their replicas) keep serving the old answers "
    "until the integrity guardrail proves them stale; the on-call's invalidation is then a "
    "workspace-wide generation bump on each workspace's master, acknowledged by its replica "
    "(WAIT 1) before it counts")


def kind_of(key: str) -> str:
    return next((kind for prefix, kind in KINDS if key.startswith(prefix)), "other")


@dataclass(frozen=True)
class NodeKeys:
    """One node's keys by kind, as that node holds them (a replica's are its copies)."""

    port: int
    role: str  # master | replica
    keys: dict[str, int]


@dataclass(frozen=True)
class Placement:
    """Where the run's keys were at its end: on the cluster's nodes, and in the controller's
    own Redis."""

    nodes: list[NodeKeys]
    flags_key: str
    flags_slot: int
    flags_master: int | None  # port of the master serving the flag hash's slot
    flags: dict[str, str]
    state_url: str
    state_keys: list[str] = field(default_factory=list)  # rollout:* in the controller's Redis
    # host:port of each node Prometheus scraped with redis_up 1 (job "redis"), and of those
    # whose exporter reported cluster_state ok (redis_cluster_state 1).
    scraped: list[str] = field(default_factory=list)
    cluster_state_ok: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        lines = ["where the keys were at the end of the run (read from each node):"]
        for node in self.nodes:
            counts = ", ".join(f"{kind} {n:,}" for kind, n in sorted(node.keys.items()))
            flags = (f"; the flag hash {self.flags_key} (slot {self.flags_slot})"
                     if node.port == self.flags_master and node.keys.get("flags") else "")
            lines.append(f"  127.0.0.1:{node.port} {node.role:<7} {counts or 'no keys'}{flags}")
        on_cluster = sum(n.keys.get("rollout", 0) for n in self.nodes)
        lines.append(f"  flags: {' '.join(f'{k}={v}' for k, v in sorted(self.flags.items()))}"
                     if self.flags else "  flags: no flag hash on the cluster")
        lines.append(f"  controller state: {len(self.state_keys)} rollout:* keys in its own "
                     f"Redis {self.state_url} (noeviction), {on_cluster} on the cluster")
        lines.append(f"  Prometheus (job redis): redis_up 1 for {len(self.scraped)} of "
                     f"{len(self.nodes)} nodes, redis_cluster_state 1 for "
                     f"{len(self.cluster_state_ok)}")
        return lines


def topology_lines(cluster: cluster_svc.RedisClusterService, state_url: str,
                   invalidation_wait_ms: int, *, flags_in_unleash: bool = False) -> list[str]:
    """What the demo prints before it starts: the nodes, their ports and roles."""
    roles = cluster_svc.node_roles(cluster)
    masters = sorted(p for p, role in roles.items() if role == "master")
    replicas = sorted(p for p, role in roles.items() if role != "master")
    return [
        f"Redis Cluster {cluster.url}: {len(masters)} masters (ports "
        f"{', '.join(map(str, masters))}) + {len(replicas)} replicas (ports "
        f"{', '.join(map(str, replicas))}) on 127.0.0.1, for the caches"
        + (" (flags in Unleash); REDIS_CLUSTER=true for the service replicas" if flags_in_unleash
           else " and the local flag store; REDIS_CLUSTER=true for the service replicas and "
                "the controller's flag writer"),
        f"invalidations wait for 1 replica of the workspace's master (WAIT 1 "
        f"{invalidation_wait_ms} ms) before they count; the controller's state stays on its "
        f"own noeviction Redis {state_url} (ROLLOUT_REDIS_URL)",
    ]


def _count_keys(port: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with Redis(host="127.0.0.1", port=port, socket_timeout=10) as node:
        # SCAN is keyless: a replica answers it from its own copy, no redirection.
        for key in node.scan_iter(count=1000):
            kind = kind_of(key.decode(errors="replace"))
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _state_keys(state_url: str) -> list[str]:
    with Redis.from_url(state_url, socket_timeout=10) as state:
        return sorted(k.decode() for k in state.scan_iter(match="rollout:*", count=1000))


def _instances_at_one(prometheus_url: str, metric: str) -> list[str]:
    series = promql.query(prometheus_url, f'{metric}{{job="redis"}} == 1')
    return sorted(str(s["metric"].get("instance", "")) for s in series)


def census(cluster: cluster_svc.RedisClusterService, state_url: str,
           prometheus_url: str) -> Placement:
    """Read, node by node, where the keys are, and what Prometheus scraped of each node
    (before anything is stopped)."""
    roles = cluster_svc.node_roles(cluster)
    nodes = [NodeKeys(port=port, role="master" if roles.get(port) == "master" else "replica",
                      keys=_count_keys(port))
             for port in sorted(cluster.node_ports, key=lambda p: (roles.get(p) != "master", p))
             if cluster.node_pid(port) is not None]
    slot = key_slot(LOCAL_FLAGS_KEY.encode())
    client = RedisCluster.from_url(cluster.url, socket_timeout=10, decode_responses=True)
    try:
        flags = {str(k): str(v) for k, v in client.hgetall(LOCAL_FLAGS_KEY).items()}
    finally:
        client.close()
    return Placement(nodes=nodes, flags_key=LOCAL_FLAGS_KEY, flags_slot=slot,
                     flags_master=cluster_svc.master_of_slot(cluster, slot), flags=flags,
                     state_url=state_url, state_keys=_state_keys(state_url),
                     scraped=_instances_at_one(prometheus_url, "redis_up"),
                     cluster_state_ok=_instances_at_one(prometheus_url, "redis_cluster_state"))
