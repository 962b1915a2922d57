"""Everything the demo runs on this machine, started and stopped in order: two Redis servers
(with --cluster: a Redis Cluster of 3 masters + 3 replicas for the caches and flags, and one
Redis for the controller's state), redis_exporter (on a cluster one exporter in multi-target
mode, each node a scrape target of its own), optionally
Unleash, Alertmanager (posting to the demo's webhook sink), two
service replicas, Prometheus with the project's rules, and the controller. The ExitStack
stops exactly what was started, by pid, also after a Ctrl-C."""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from app.settings import Settings
from devstack.auth import LocalIssuer
from devstack.demo.cluster import FAULT_ON_A_CLUSTER, topology_lines
from devstack.demo.plan import write_demo_plan
from devstack.demo.profiles import (
    DAY,
    DEMO_DIR,
    KEEP_RUNS,
    REDIS_TIMEOUT,
    RULE_FILES,
    RUNS_DIR,
    DemoFailed,
    Profile,
)
from devstack.environment import child_env
from devstack.errors import ServiceError
from devstack.network import free_port
from devstack.paths import LOG_DIR
from devstack.processes import our_children, spawn, stop_pid
from devstack.readiness import wait_for_http
from devstack.services import alertmanager as am_svc
from devstack.services import prometheus as prom_svc
from devstack.services import redis as redis_svc
from devstack.services import redis_cluster as cluster_svc
from devstack.services import redis_exporter as exporter_svc
from devstack.services.common import Service
from devstack.webhook_sink import WebhookSink
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan

S = TypeVar("S", bound=Service)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, *, what: str, log_file: Path,
                timeout: float) -> None:
    try:
        wait_for_http(proc, url, what=what, log_file=log_file, timeout=timeout)
    except ServiceError as exc:
        raise DemoFailed(str(exc)) from exc


@dataclass
class Started:
    """What the demo started (the e2e test checks these pids are gone afterwards)."""

    pids: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)


class Demo:
    def __init__(self, args: argparse.Namespace, profile: Profile) -> None:
        self.args = args
        self.profile = profile
        self.stack = ExitStack()
        self.started = Started()
        self.issuer = LocalIssuer.generate()  # the replicas trust its HS256 JWTs
        self.api_token = secrets.token_urlsafe(16)
        self.run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.time_scale = args.time_scale or profile.day_seconds / DAY
        self.day_seconds = self.time_scale * DAY
        # What a run keeps for a later look or a replay: its plan and its Prometheus data.
        self.run_dir = RUNS_DIR / self.run_id
        self.plan_path = self.run_dir / "plan.yaml"
        self.prometheus_data = self.run_dir / "prometheus"
        self.deviations = write_demo_plan(
            self.plan_path, time_scale=self.time_scale, min_window=profile.min_window,
            min_sample_factor=profile.min_sample_factor, edits=profile.edits)
        self.plan: Plan = load_plan(self.plan_path)
        self.db_path = DEMO_DIR / f"notes-{self.run_id}.db"
        self.database_url = f"sqlite+aiosqlite:///{self.db_path}"
        self.sink = WebhookSink()
        self.stack.callback(self.sink.close)
        self.replicas: list[str] = []
        self.redis_url = self.state_url = ""
        self.controller_url = self.prometheus_url = ""
        self.controller_port = 0
        self.unleash_env: dict[str, str] = {}
        # --cluster: the caches and the local flag store on a Redis Cluster we start (and
        # stop); REDIS_URL then names one of its nodes, REDIS_CLUSTER=true.
        self.cluster: cluster_svc.RedisClusterService | None = None
        # Both replicas must derive the same cache keys (HMAC secret), never the dev default.
        self.key_secret = secrets.token_hex(32)

    # --- starting ------------------------------------------------------------------------
    def _own(self, name: str, service: S, stop: Callable[[Service], None]) -> S:
        self.stack.callback(stop, service)
        if service.pid:
            self.started.pids[name] = service.pid
        self.started.urls[name] = service.url
        return service

    def start_services(self, say: Callable[[str], None]) -> None:
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        self.stack.callback(self._remove_database)
        redis_targets = self._start_cluster(say) if self.args.cluster else self._start_redis(say)
        if self.args.unleash:
            say("starting Unleash (PostgreSQL + unleash-server; the first start installs it)")
            from devstack.services import unleash as unleash_svc

            unleash = self._own("unleash", unleash_svc.start_private_unleash(name="demo-unleash"),
                                unleash_svc.stop)
            unleash_svc.bootstrap_flags(unleash)
            self.unleash_env = unleash.env()
        say("starting Alertmanager")
        alertmanager = self._own("alertmanager", am_svc.start_private_alertmanager(
            self.sink.url("/alertmanager"), name="demo-alertmanager", group_wait=0.5,
            group_interval=1.0), am_svc.stop)
        say("starting two service replicas")
        for i in (1, 2):
            self.replicas.append(self._start_replica(i))
        controller_port = free_port()
        self.controller_url = f"http://127.0.0.1:{controller_port}"
        say("starting Prometheus with alerts/rules")
        prometheus = self._own("prometheus", prom_svc.start_private_prometheus(
            name="demo-prometheus", scrape_interval=self.profile.scrape,
            rule_files=RULE_FILES, alertmanager=am_svc.target_of(alertmanager),
            targets={
                "ai-cache-service": [r.removeprefix("http://") for r in self.replicas],
                "redis": redis_targets,
                "rollout-controller": [f"127.0.0.1:{controller_port}"],
            }), self._stop_prometheus_keeping_data)
        self.prometheus_url = prometheus.url
        prometheus.wait_for_series('up{job="ai-cache-service"} == 1', min_series=2, timeout=30)
        prometheus.wait_for_series("redis_memory_max_bytes", min_series=len(redis_targets),
                                   timeout=30)
        self.controller_port = controller_port

    def _start_redis(self, say: Callable[[str], None]) -> list[str]:
        """One Redis for the caches and flags, one for the controller's state, and an
        exporter for the first: the exporter's scrape target."""
        say("starting Redis (caches + flags, and the controller's state)")
        cache = self._own("redis-cache", redis_svc.start_private_redis(
            name="demo-redis-cache", maxmemory="256mb", maxmemory_policy="allkeys-lru"),
            redis_svc.stop)
        self.redis_url, self.state_url = cache.url, self._start_state_redis().url
        exporter = self._own("redis-exporter", exporter_svc.start_private_redis_exporter(
            cache.url, name="demo-redis-exporter"), exporter_svc.stop)
        return [exporter_svc.target_of(exporter)]

    def _start_state_redis(self) -> Service:
        # noeviction: the cache's eviction must never touch the rollout's own log.
        return self._own("redis-state", redis_svc.start_private_redis(
            name="demo-redis-state", maxmemory_policy="noeviction"), redis_svc.stop)

    def _start_cluster(self, say: Callable[[str], None]) -> list[str]:
        """A Redis Cluster for the caches and flags (each node limited like the single
        cache Redis), a Redis for the controller's state, and redis_exporter for every
        node: the scrape targets, one a node."""
        say("starting a Redis Cluster (3 masters + 3 replicas: caches + flags) and a Redis "
            "for the controller's state")
        cluster = cluster_svc.start_private_cluster(name="demo-redis-cluster")
        self.stack.callback(cluster_svc.stop, cluster)
        self.cluster = cluster
        for port, pid in zip(cluster.node_ports, cluster.node_pids, strict=True):
            self.started.pids[f"redis-cluster-{port}"] = pid
            self.started.urls[f"redis-cluster-{port}"] = cluster.node_url(port)
        cluster_svc.config_set(cluster, "maxmemory", "256mb")
        self.redis_url, self.state_url = cluster.url, self._start_state_redis().url
        say("starting redis_exporter for every cluster node (one exporter, multi-target)")
        exporter = exporter_svc.start_cluster_exporter(
            [cluster.node_url(port) for port in cluster.node_ports],
            name="demo-redis-cluster-exporter")
        self._own("redis-exporter", exporter.service, exporter_svc.stop)
        # One scrape target a node: every series and alert names the node as `instance`.
        return exporter.scrape_targets

    def backend_lines(self) -> list[str]:
        """What the demo says about where the caches run (nothing on the single Redis)."""
        if self.cluster is None:
            return []
        wait_ms = Settings.model_fields["redis_invalidation_wait_ms"].default  # the service's
        lines = topology_lines(self.cluster, self.state_url, int(wait_ms),
                               flags_in_unleash=self.args.unleash)
        if self.args.fault:
            lines.append(FAULT_ON_A_CLUSTER)
        return lines

    def redis_env(self) -> dict[str, str]:
        """REDIS_URL for the replicas and the controller's flag writer (one node of the
        cluster with REDIS_CLUSTER=true)."""
        return {"REDIS_URL": self.redis_url} | (
            {"REDIS_CLUSTER": "true"} if self.cluster is not None else {})

    def _stop_prometheus_keeping_data(self, service: Service) -> None:
        """Stop Prometheus, then keep its TSDB (and config) in the run's folder: a later
        Prometheus started on it serves this run's series (`rollout replay`)."""
        service.stop_process(timeout=15)
        if service.data_dir and (Path(service.data_dir) / "tsdb").is_dir():
            self.prometheus_data.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(service.data_dir) / "tsdb", self.prometheus_data / "tsdb")
            config = Path(service.data_dir) / prom_svc.CONFIG_NAME
            if config.exists():
                shutil.copy2(config, self.prometheus_data / prom_svc.CONFIG_NAME)
        prom_svc.stop(service)  # the process is gone: this removes the rest of its folder

    def _remove_database(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    def _start_replica(self, index: int) -> str:
        port = free_port()
        env = child_env({
            **self.redis_env(),
            "DATABASE_URL": self.database_url,
            "AI_PROVIDER": "local",
            "AI_LATENCY_SCALE": f"{self.args.latency_scale:g}",
            **self.issuer.env(),
            "CACHE_KEY_SECRET": self.key_secret,
            # Every served L1 hit is an audit candidate (the service's default), capped per
            # replica: the stale-rate gates count audits, and the demo compresses days into
            # seconds, so its cap is above the service's default 5/s (see AUDIT_NOTE).
            "L1_AUDIT_SAMPLE_RATE": f"{self.args.audit_rate:g}",
            "L1_AUDIT_MAX_PER_SECOND": f"{self.args.audit_max_per_second:g}",
            "REDIS_TIMEOUT_SECONDS": f"{REDIS_TIMEOUT:g}",  # see profiles.REDIS_TIMEOUT
            "INSTANCE_NAME": f"replica-{index}",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        } | self._replica_unleash_env(index))
        log_file = LOG_DIR / f"demo-replica-{index}-{port}.log"
        proc = spawn([sys.executable, "-m", "app", "--port", str(port)], log_file=log_file,
                     env=env, cwd=DEMO_DIR)
        self.stack.callback(stop_pid, proc.pid)
        self.started.pids[f"replica-{index}"] = proc.pid
        url = f"http://127.0.0.1:{port}"
        # One at a time: both create the SQLite schema at start.
        _wait_ready(proc, f"{url}/readyz", what=f"replica {index}", log_file=log_file,
                    timeout=60)
        self.started.urls[f"replica-{index}"] = url
        return url

    def _replica_unleash_env(self, index: int) -> dict[str, str]:
        if not self.unleash_env:
            return {}
        return {
            "UNLEASH_URL": self.unleash_env["UNLEASH_URL"],
            "UNLEASH_API_TOKEN": self.unleash_env["UNLEASH_API_TOKEN"],
            "UNLEASH_ENVIRONMENT": self.unleash_env["UNLEASH_ENVIRONMENT"],
            "UNLEASH_REFRESH_SECONDS": "1",
            "UNLEASH_CACHE_DIR": str(DEMO_DIR / f"unleash-cache-{index}"),
        }

    def start_controller(self) -> None:
        env = child_env({
            **self.redis_env(),
            "ROLLOUT_REDIS_URL": self.state_url,
            "PROMETHEUS_URL": self.prometheus_url,
            "ROLLOUT_PLAN": str(self.plan_path),
            "ROLLOUT_INTERVAL_SECONDS": f"{self.profile.interval:g}",
            "ROLLOUT_HOST": "127.0.0.1",
            "ROLLOUT_PORT": str(self.controller_port),
            "ROLLOUT_API_TOKEN": self.api_token,
            "ROLLOUT_WEBHOOK_URL": self.sink.url("/rollout"),
            "ROLLOUT_NAME": f"demo-{self.run_id}",
            "ROLLOUT_LOG_FORMAT": "json",
        })
        if self.unleash_env:
            env |= {"UNLEASH_URL": self.unleash_env["UNLEASH_URL"],
                    "UNLEASH_ADMIN_TOKEN": self.unleash_env["UNLEASH_ADMIN_TOKEN"],
                    "UNLEASH_ENVIRONMENT": self.unleash_env["UNLEASH_ENVIRONMENT"]}
        log_file = LOG_DIR / f"demo-controller-{self.controller_port}.log"
        proc = spawn([sys.executable, "-m", "rollout", "run"], log_file=log_file, env=env,
                     cwd=DEMO_DIR)
        self.stack.callback(stop_pid, proc.pid, timeout=15)
        self.started.pids["controller"] = proc.pid
        self.started.urls["controller"] = self.controller_url
        _wait_ready(proc, f"{self.controller_url}/healthz", what="the controller",
                    log_file=log_file, timeout=30)

    def attach_lines(self) -> list[str]:
        """What someone at another terminal pastes to watch and steer this run (also written
        to .run/demo/attach.env): the controller's URL, name, token and state Redis."""
        settings = {"ROLLOUT_URL": self.controller_url, "ROLLOUT_NAME": f"demo-{self.run_id}",
                    "ROLLOUT_API_TOKEN": self.api_token, **self.redis_env(),
                    "ROLLOUT_REDIS_URL": self.state_url, "PROMETHEUS_URL": self.prometheus_url}
        (DEMO_DIR / "attach.env").write_text(
            "".join(f"{name}={value}\n" for name, value in settings.items()))
        exports = " ".join(f"{name}={value}" for name, value in settings.items())
        return [
            "attach from another terminal (also in .run/demo/attach.env):",
            f"  export {exports}",
            "  .venv/bin/rollout status --watch   # pause --why …, resume, history --transitions",
            f"  page: {self.controller_url}/",
        ]

    def close(self) -> None:
        self.stack.close()
        # A Ctrl-C that lands inside subprocess.Popen (after the fork, before we learnt the
        # pid) would leave that child running: stop every child of ours still alive.
        for pid in our_children():
            stop_pid(pid)
        self._remove_database()
        if self.plan_path.exists():  # the last run's plan, where people look for it
            shutil.copy2(self.plan_path, DEMO_DIR / "plan.yaml")
        prune_runs(keep=KEEP_RUNS)


def prune_runs(keep: int) -> None:
    """Keep the newest `keep` runs' folders (plan, Prometheus data, record): each holds a
    TSDB of tens of MB."""
    if not RUNS_DIR.is_dir():
        return
    runs = sorted((p for p in RUNS_DIR.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in runs[:-keep] if keep > 0 else runs:
        shutil.rmtree(old, ignore_errors=True)

