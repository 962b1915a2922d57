"""A private Sentinel-managed Redis on loopback ports: 1 master, 1 replica, 3 sentinels
(issue 14).

Data nodes are `redis-server` processes (no persistence) in .run/redis-sentinel-PORT/; each
sentinel is `redis-server sentinel-PORT.conf --sentinel` with a config file of its own there
(Sentinel rewrites it). They monitor the master as `ai-cache` with quorum 2, declare it down
after DOWN_AFTER_MS and retry a failover after 2 x FAILOVER_TIMEOUT_MS. Ready when every
sentinel names the same master, knows the replica (not down) and the two other sentinels,
and the replication link is up. Processes are stopped by pid, each checked against its
start time, like every other starter.
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

MASTER_NAME = "ai-cache"
SENTINELS = 3
QUORUM = 2
# Seconds, not the 30 s default, so that a failover test waits seconds; 2 s is long enough
# that a busy 2-core machine does not see a healthy master as down (a failover test starts
# its own deployment with 1 s).
DOWN_AFTER_MS = 2_000
FAILOVER_TIMEOUT_MS = 3_000


@dataclass
class RedisSentinelService(DetailedService):
    """The deployment: `url` is the first master's (for redis-cli; the service asks the
    sentinels, REDIS_SENTINELS), `pid` its process; the sidecar keeps every process."""

    master_name: str = MASTER_NAME
    data_ports: list[int] = field(default_factory=list)  # master first, as started
    sentinel_ports: list[int] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # by port (JSON keys are text)
    pid_starts: dict[str, int | None] = field(default_factory=dict)
    down_after_ms: int = DOWN_AFTER_MS

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS value."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def settings(self) -> dict[str, str]:
        """The service's (and the controller's) settings for this deployment."""
        return {"REDIS_URL": "redis://127.0.0.1/0", "REDIS_SENTINELS": self.sentinels,
                "REDIS_SENTINEL_MASTER": self.master_name}

    def pid_of(self, port: int) -> int | None:
        """The pid on `port` while it is still the process we started."""
        pid, started = self.pids.get(str(port), 0), self.pid_starts.get(str(port))
        return pid if pid and is_ours(pid, started) else None


def _cli(port: int, *args: str, timeout: float = 2.0) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    return out.stdout


def _info(port: int, section: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in _cli(port, "info", section).splitlines()
             if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _records(text: str) -> list[dict[str, str]]:
    """redis-cli's flat output of SENTINEL MASTER / REPLICAS (name, value, name, … and a
    blank-free run per record; REPLICAS starts each record with `name`)."""
    lines = [line.strip() for line in text.splitlines()]
    records: list[dict[str, str]] = []
    for key, value in zip(lines[::2], lines[1::2], strict=False):
        if key == "name" or not records:
            records.append({})
        records[-1][key] = value
    return records


def sentinel_view(sentinel_port: int, name: str = MASTER_NAME) -> dict[str, str]:
    """What one sentinel says of the master (ip, port, flags, num-other-sentinels, …)."""
    found = _records(_cli(sentinel_port, "sentinel", "master", name))
    return found[0] if found else {}


def _replicas_seen(sentinel_port: int, name: str) -> dict[int, str]:
    """Replica port -> its flags, as one sentinel sees them."""
    return {int(r["port"]): r.get("flags", "")
            for r in _records(_cli(sentinel_port, "sentinel", "replicas", name)) if "port" in r}


def current_master(service: RedisSentinelService) -> int | None:
    """The master's port when every live sentinel names it and none sees it down."""
    ports = set()
    for sentinel in service.sentinel_ports:
        if service.pid_of(sentinel) is None:
            continue
        view = sentinel_view(sentinel, service.master_name)
        if view.get("flags") != "master" or "port" not in view:
            return None
        ports.add(int(view["port"]))
    return ports.pop() if len(ports) == 1 else None


def _replication_up(master: int, replicas: list[int]) -> bool:
    """Each replica synced from `master` (link up), and the master counts them online (until
    then a WAIT for one replica times out)."""
    for port in replicas:
        info = _info(port, "replication")
        if info.get("role") != "slave" or info.get("master_port") != str(master) \
                or info.get("master_link_status") != "up":
            return False
    info = _info(master, "replication")
    online = [v for k, v in info.items() if k.startswith("slave") and "state=online" in v]
    return info.get("role") == "master" and len(online) == len(replicas)


def is_whole(service: RedisSentinelService) -> bool:
    """Every sentinel agrees on the master, knows the other sentinels and sees every other
    live data node as a replica that is not down; replication is up."""
    master = current_master(service)
    if master is None or service.pid_of(master) is None:
        return False
    replicas = [p for p in service.data_ports if p != master and service.pid_of(p) is not None]
    for sentinel in service.sentinel_ports:
        view = sentinel_view(sentinel, service.master_name)
        if view.get("num-other-sentinels") != str(SENTINELS - 1):
            return False
        seen = _replicas_seen(sentinel, service.master_name)
        if any(seen.get(port) != "slave" for port in replicas):
            return False
    return _replication_up(master, replicas)


def _answers_as(port: int, pid: int) -> bool:
    """The server on `port` is process `pid` (not another that held the port)."""
    return _info(port, "server").get("process_id") == str(pid)


def _start(service: RedisSentinelService, binary: str, port: int, args: list[str],
           what: str) -> None:
    log_file = LOG_DIR / f"{service.name}-{port}.log"
    proc = spawn([binary, *args], log_file=log_file)
    try:
        wait_for_start(proc, lambda: _answers_as(port, proc.pid), what=what,
                       where=f"port {port}", log_file=log_file, timeout=15)
    except ServiceError:
        stop_pid(proc.pid)
        raise
    service.pids[str(port)] = proc.pid
    service.pid_starts[str(port)] = spawned_start_ticks(proc.pid)


def _start_data_node(service: RedisSentinelService, binary: str, port: int,
                     replica_of: int | None) -> None:
    assert service.data_dir is not None
    node_dir = Path(service.data_dir) / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(node_dir), "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
        "--maxmemory-policy", "allkeys-lru",
        # A replica's first sync starts at once (the default waits 5 s for more replicas),
        # and SIGTERM ends a node at once (nothing here is kept anyway).
        "--repl-diskless-sync-delay", "0", "--shutdown-on-sigterm", "now",
        *(["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []),
    ]
    _start(service, binary, port, args, "redis data node")


def _start_sentinel(service: RedisSentinelService, binary: str, port: int,
                    master: int) -> None:
    assert service.data_dir is not None
    name = service.master_name
    conf = Path(service.data_dir) / f"sentinel-{port}.conf"
    conf.write_text("\n".join([
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
        f"dir {service.data_dir}",
        f"sentinel monitor {name} 127.0.0.1 {master} {QUORUM}",
        f"sentinel down-after-milliseconds {name} {service.down_after_ms}",
        f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {name} 1", ""]))
    _start(service, binary, port, [str(conf), "--sentinel"], "redis sentinel")


def start_private_sentinel(*, name: str = "redis-sentinel", down_after_ms: int = DOWN_AFTER_MS,
                           timeout: float = 60.0) -> RedisSentinelService:
    """Start a master, its replica and three sentinels on free loopback ports; return when
    the sentinels agree and replication is up."""
    binary = ensure_apt("redis-server", "redis-server")
    ensure_apt("redis-cli", "redis-tools")
    ports = _distinct_free_ports(2 + SENTINELS)
    master, replica, sentinels = ports[0], ports[1], ports[2:]
    root = RUN_DIR / f"{name}-{master}"
    service = RedisSentinelService(name=name, url=f"redis://127.0.0.1:{master}/0", owned=True,
                                   data_dir=str(root), port=master, data_ports=[master, replica],
                                   sentinel_ports=sentinels, down_after_ms=down_after_ms)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _start_data_node(service, binary, master, None)
        service.pid, service.pid_started = service.pids[str(master)], service.pid_starts[
            str(master)]
        _start_data_node(service, binary, replica, master)
        for port in sentinels:
            _start_sentinel(service, binary, port, master)
        wait_until(lambda: is_whole(service), timeout=timeout,
                   what=f"{SENTINELS} sentinels agreeing on master {master} of {name}, "
                        "replica linked")
    except (ServiceError, OSError, subprocess.TimeoutExpired) as exc:
        tails = "\n".join(log_tail(LOG_DIR / f"{name}-{p}.log", 5) for p in ports)
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


def ensure_redis_sentinel(name: str = "redis-sentinel") -> RedisSentinelService:
    return start_private_sentinel(name=name)


def stop_node(service: RedisSentinelService, port: int, *, sig: int | None = None) -> None:
    """Stop one process (e.g. SIGKILL the master in a failover test); its pid is forgotten."""
    pid, started = service.pids.get(str(port), 0), service.pid_starts.get(str(port))
    if pid:
        if sig is None:
            stop_pid(pid, started=started)
        else:
            stop_pid(pid, started=started, sig=sig, timeout=5.0)
    service.pids[str(port)] = 0
    service.pid_starts[str(port)] = None


def restart_as_replica(service: RedisSentinelService, port: int, *,
                       timeout: float = 60.0) -> None:
    """Start a stopped data node again on its port, empty (no persistence), as a replica of
    the current master — as its rewritten configuration or an operator would: left to
    itself it would come back a master until Sentinel converts it (8 to 20 s later).
    Returns when the deployment is whole again."""
    if service.pid_of(port) is not None:
        raise ServiceError(f"node {port} is still running")
    wait_until(lambda: current_master(service) not in (None, port), timeout=timeout,
               what=f"the sentinels of {service.name} agreeing on a master other than {port}")
    master = current_master(service)
    assert master is not None
    _start_data_node(service, ensure_apt("redis-server", "redis-server"), port, master)
    _remember_record_pid(service, port)
    wait_until(lambda: is_whole(service), timeout=timeout,
               what=f"{service.name} whole again after node {port} restarted")


def restart_at_once(service: RedisSentinelService, port: int, *,
                    timeout: float = 60.0) -> None:
    """Start a stopped master again on its port at once, empty (no persistence) and as a
    master: a node restart with data loss, usually before the sentinels declare it down
    (its replica then resyncs to the empty data set). Returns when the deployment is whole
    again, whichever node the sentinels name master by then."""
    if service.pid_of(port) is not None:
        raise ServiceError(f"node {port} is still running")
    _start_data_node(service, ensure_apt("redis-server", "redis-server"), port, None)
    _remember_record_pid(service, port)
    wait_until(lambda: is_whole(service), timeout=timeout,
               what=f"{service.name} whole again after node {port} restarted")


def _remember_record_pid(service: RedisSentinelService, port: int) -> None:
    if port == service.port:  # the record's pid: what `scripts.svc start` checks is alive
        service.pid, service.pid_started = service.pids[str(port)], service.pid_starts[str(port)]


def stop(service: Service) -> None:
    """Stop every process we started (by pid, start time checked), then remove the data."""
    deployment = RedisSentinelService.from_service(service)
    if not deployment.owned:
        return
    ports = [*deployment.sentinel_ports, *deployment.data_ports]
    # All at once: each ends within a blink of SIGTERM, but stop_pid waits for init to reap
    # one another process started (~2 s here).
    with ThreadPoolExecutor(max_workers=len(ports) or 1) as pool:
        list(pool.map(lambda port: stop_node(deployment, port), ports))
    deployment.pid = deployment.pid_started = None
    service.pid = service.pid_started = None
    if deployment.data_dir:
        shutil.rmtree(deployment.data_dir, ignore_errors=True)
