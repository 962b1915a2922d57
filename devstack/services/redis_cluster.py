"""A private Redis Cluster on loopback ports: 3 masters and 3 replicas (issue 14).

Each node is a `redis-server --cluster-enabled yes` in its own directory under
.run/redis-cluster-PORT/, with its cluster bus on a port of its own (`--cluster-port`, Redis
7: the default port + 10000 may be taken or past 65535). `redis-cli --cluster create …
--cluster-replicas 1 --cluster-yes` joins them; the cluster is ready when every node says
`cluster_state:ok` and knows all six nodes. Nodes are stopped by pid, each checked against
its start time like every other starter (pids are reused within a run on this machine).
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import ServiceError
from devstack.network import free_port
from devstack.paths import LOG_DIR, RUN_DIR
from devstack.processes import is_ours, log_tail, spawn, spawned_start_ticks, stop_pid
from devstack.readiness import wait_for_start, wait_until
from devstack.services.common import DetailedService, Service, ensure_apt

MASTERS = 3
REPLICAS_PER_MASTER = 1
# Short enough that a failover test waits seconds, long enough that a busy 2-core machine
# does not see a healthy node as failing.
NODE_TIMEOUT_MS = 2_000


@dataclass
class RedisClusterService(DetailedService):
    """The cluster: `url` names one node (redis-py discovers the others); `pid` is that
    node's, the sidecar keeps every node's pid, start time and port."""

    node_ports: list[int] = field(default_factory=list)
    node_pids: list[int] = field(default_factory=list)
    node_pid_starts: list[int | None] = field(default_factory=list)
    node_bus_ports: list[int] = field(default_factory=list)

    def node_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}"

    def node_pid(self, port: int) -> int | None:
        """The pid of the node on `port` while it is still the process we started."""
        index = self.node_ports.index(port)
        pid, started = self.node_pids[index], self.node_pid_starts[index]
        return pid if pid and is_ours(pid, started) else None


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    return out.stdout


def _info_fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _answers_as(port: int, pid: int) -> bool:
    """The node on `port` is process `pid` (not another server that held the port)."""
    return _info_fields(_cli(port, "info", "server")).get("process_id") == str(pid)


def node_state_ok(port: int, nodes: int) -> bool:
    """The node on `port` sees the cluster whole: state ok and `nodes` nodes known."""
    info = _info_fields(_cli(port, "cluster", "info", timeout=2.0))
    return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(nodes)


def _roles_seen_by(port: int) -> dict[int, str]:
    """Port -> `master` or `slave` as the node on `port` sees the cluster (nodes it flags
    `fail` are left out)."""
    roles: dict[int, str] = {}
    for line in _cli(port, "cluster", "nodes", timeout=2.0).splitlines():
        parts = line.split()
        if len(parts) < 3 or "fail" in parts[2].split(","):
            continue
        address = parts[1].split("@", 1)[0]
        roles[int(address.rsplit(":", 1)[1])] = (
            "master" if "master" in parts[2].split(",") else "slave")
    return roles


def node_roles(service: RedisClusterService) -> dict[int, str]:
    """Port -> role, as the first live node we started sees the cluster now."""
    for port in service.node_ports:
        if service.node_pid(port) is not None:
            roles = _roles_seen_by(port)
            if roles:
                return roles
    return {}


def _whole(ports: list[int]) -> bool:
    """Every node says ok, sees 3 masters and 3 replicas (roles travel by gossip after
    `cluster_state:ok`), and its replication link is up."""
    count = len(ports)
    for port in ports:
        if not node_state_ok(port, count):
            return False
        roles = list(_roles_seen_by(port).values())
        if roles.count("master") != MASTERS or roles.count("slave") != count - MASTERS:
            return False
        if not _replication_up(port):
            return False
    return True


def _replication_up(port: int) -> bool:
    """A replica has finished its first sync; a master has its replicas online (until then
    a WAIT for one replica times out)."""
    info = _info_fields(_cli(port, "info", "replication", timeout=2.0))
    if info.get("role") == "slave":
        return info.get("master_link_status") == "up"
    online = [v for k, v in info.items() if k.startswith("slave") and "state=online" in v]
    return len(online) == REPLICAS_PER_MASTER


def _start_node(binary: str, root: Path, port: int, bus_port: int) -> tuple[int, int | None]:
    node_dir = root / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)  # a restarted node keeps its nodes.conf
    args = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
        "--cluster-port", str(bus_port), "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(node_dir),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
        "--maxmemory-policy", "allkeys-lru",
        # A replica's first sync starts at once (the default waits 5 s for more replicas),
        # and SIGTERM ends a node at once (a master would wait up to 10 s for its replicas:
        # nothing here is kept anyway).
        "--repl-diskless-sync-delay", "0", "--shutdown-on-sigterm", "now",
    ]
    log_file = LOG_DIR / f"redis-cluster-{port}.log"
    proc = spawn(args, log_file=log_file)
    try:
        wait_for_start(proc, lambda: _answers_as(port, proc.pid), what="redis cluster node",
                       where=f"port {port}", log_file=log_file, timeout=15)
    except ServiceError:
        stop_pid(proc.pid)
        raise
    return proc.pid, spawned_start_ticks(proc.pid)


def _create(ports: list[int], timeout: float) -> None:
    nodes = [f"127.0.0.1:{port}" for port in ports]
    try:
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas",
             str(REPLICAS_PER_MASTER), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"redis-cli --cluster create did not finish in {timeout:.0f}s") from exc
    if out.returncode != 0 or "[OK] All 16384 slots covered" not in out.stdout:
        raise ServiceError("redis-cli --cluster create failed:\n"
                           + "\n".join((out.stdout + out.stderr).splitlines()[-15:]))


def start_private_cluster(*, name: str = "redis-cluster", timeout: float = 60.0
                          ) -> RedisClusterService:
    """Start 3 masters + 3 replicas on free loopback ports and wait until all say ok."""
    binary = ensure_apt("redis-server", "redis-server")
    ensure_apt("redis-cli", "redis-tools")
    count = MASTERS * (1 + REPLICAS_PER_MASTER)
    ports = _distinct_free_ports(2 * count)
    node_ports, bus_ports = ports[:count], ports[count:]
    root = RUN_DIR / f"{name}-{node_ports[0]}"
    service = RedisClusterService(name=name, url=f"redis://127.0.0.1:{node_ports[0]}",
                                  owned=True, data_dir=str(root), port=node_ports[0])
    try:
        for port, bus_port in zip(node_ports, bus_ports, strict=True):
            pid, started = _start_node(binary, root, port, bus_port)
            service.node_ports.append(port)
            service.node_pids.append(pid)
            service.node_pid_starts.append(started)
            service.node_bus_ports.append(bus_port)
        service.pid, service.pid_started = service.node_pids[0], service.node_pid_starts[0]
        _create(node_ports, timeout)
        wait_until(lambda: _whole(node_ports), timeout=timeout,
                   what=f"cluster_state:ok and {MASTERS} masters on all {count} nodes of {name}")
    except (ServiceError, OSError, subprocess.TimeoutExpired) as exc:
        tails = "\n".join(log_tail(LOG_DIR / f"redis-cluster-{p}.log", 5)
                          for p in service.node_ports)
        stop(service)
        raise ServiceError(f"{name} did not start: {exc}\n{tails}") from exc
    return service


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def ensure_redis_cluster(name: str = "redis-cluster") -> RedisClusterService:
    return start_private_cluster(name=name)


def stop_node(service: RedisClusterService, port: int, *, sig: int | None = None) -> None:
    """Stop one node (e.g. SIGKILL a master in a failover test); its pid is forgotten."""
    index = service.node_ports.index(port)
    pid, started = service.node_pids[index], service.node_pid_starts[index]
    if pid:
        if sig is None:
            stop_pid(pid, started=started)
        else:
            stop_pid(pid, started=started, sig=sig, timeout=5.0)
    service.node_pids[index] = 0
    service.node_pid_starts[index] = None


def restart_node(service: RedisClusterService, port: int, *, timeout: float = 60.0) -> None:
    """Start a stopped node again on its ports and directory: its nodes.conf keeps its
    identity, so it rejoins (as a replica if its slots were failed over); without
    persistence it comes back empty (data loss) and syncs from its master. Returns when
    the whole cluster is ok again, 3 masters and 3 replicas, replication up."""
    index = service.node_ports.index(port)
    if service.node_pid(port) is not None:
        raise ServiceError(f"node {port} is still running")
    assert service.data_dir is not None
    binary = ensure_apt("redis-server", "redis-server")
    pid, started = _start_node(binary, Path(service.data_dir), port,
                               service.node_bus_ports[index])
    service.node_pids[index], service.node_pid_starts[index] = pid, started
    if index == 0:
        service.pid, service.pid_started = pid, started
    wait_until(lambda: _whole(service.node_ports), timeout=timeout,
               what=f"{service.name} whole again after node {port} restarted")


def config_set(service: RedisClusterService, name: str, value: str) -> None:
    """`CONFIG SET name value` on every node we started that still runs (nodes start
    without a memory limit, for example: `config_set(cluster, "maxmemory", "256mb")`)."""
    for port in service.node_ports:
        if service.node_pid(port) is None:
            continue
        answer = _cli(port, "config", "set", name, value).strip()
        if answer != "OK":
            raise ServiceError(f"CONFIG SET {name} on node {port}: {answer or 'no answer'}")


def master_of_slot(service: RedisClusterService, slot: int) -> int | None:
    """The port of the live master serving `slot`, as the first live node sees it."""
    for port in service.node_ports:
        if service.node_pid(port) is None:
            continue
        for line in _cli(port, "cluster", "nodes", timeout=2.0).splitlines():
            parts = line.split()
            if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            for ranges in parts[8:]:
                low, _, high = ranges.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
        return None
    return None


def stop(service: Service) -> None:
    """Stop every node we started (by pid, start time checked), then remove the data dir."""
    cluster = RedisClusterService.from_service(service)
    if not cluster.owned:
        return
    # All at once: a node ends within a blink of SIGTERM, but one another process started
    # stays a zombie until init reaps it (~2 s here), and stop_pid waits for that.
    with ThreadPoolExecutor(max_workers=len(cluster.node_ports) or 1) as pool:
        list(pool.map(lambda port: stop_node(cluster, port), list(cluster.node_ports)))
    cluster.pid = cluster.pid_started = None
    service.pid = service.pid_started = None
    if cluster.data_dir:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
