"""The main job on one machine: the whole staged rollout, driven by the real controller.

`scripts/demo` (bootstrap, then `python -m scripts.demo`) starts, on loopback ports:

* two Redis servers — the caches and the local flag store (maxmemory 256 MB, allkeys-lru),
  and the controller's state (noeviction: the cache's eviction must never touch the
  rollout's own log);
* redis_exporter, Alertmanager (posting to a webhook listener inside this process) and
  Prometheus with the project's rule files (alerts/rules), scraping every second;
* two replicas of the service (`python -m app`, local provider at the seed's latencies,
  one SQLite notes database, the same Redis), optionally reading flags from a real Unleash;
* the traffic generator (scripts/traffic.py) inside this process, round-robin over both;
* `rollout run` with the bundled default plan, its days scaled to seconds
  (ROLLOUT_TIME_SCALE), notifying a second webhook listener inside this process.

It shows the rollout live (stage, time against bake, every gate against its threshold,
each decision), then prints the impact per stage measured on this run and writes a chart.
`--fault` also breaks something during the L1 stages and shows the automatic rollback, the
alert that fired and the controller's notification. Everything it started is stopped at
the end, also on Ctrl-C or SIGTERM; process logs are in .run/logs.

One check of the default plan runs in dry-run here (see DEMO_DRY_RUN: it cannot pass with
the seed's prices); the derived plan is kept in .run/demo/plan.yaml and every deviation
is printed. `--quick` is the shortened profile the e2e test uses (plan days of 2 s, 10 s
windows, minimum samples x 0.3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from app import contract
from app.flags.bucketing import in_rollout
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.plans import default_plan_path
from scripts import demo_report as report
from scripts.demo_view import LiveModel, PlainPrinter, TrafficWindow, render
from scripts.svc import alertmanager as am_svc
from scripts.svc import prometheus as prom_svc
from scripts.svc import redis as redis_svc
from scripts.svc import redis_exporter as exporter_svc
from scripts.svc.common import REPO_ROOT, RUN_DIR, free_port, pid_alive, spawn, stop_pid
from scripts.traffic import TrafficGenerator, TrafficShape, load_client

DEMO_DIR = RUN_DIR / "demo"
LOG_DIR = RUN_DIR / "logs"
DEFAULT_CHART = REPO_ROOT / "docs" / "rollout-demo.png"
RULE_FILES = sorted((REPO_ROOT / "alerts" / "rules").glob("*.yml"))
DAY = 86400.0
# The service's default embedding size (app.settings); the fault writes embeddings like it.
EMBED_DIMENSIONS = 1024

# Default-plan checks that cannot pass in this demo whatever the traffic, run in dry-run
# (evaluated, shown and logged, never blocking). Everything else is the default plan.
DEMO_DRY_RUN = {
    "cost_20pct_below_baseline": (
        "at stage l2 only the embedding is cached: $0.002 of the seed's $0.017 per answer, "
        "so cost per query can fall at most 11.8 % (at a 100 % L2 hit rate) — the gate's "
        "'≥ 20 % below baseline' can never pass with the seed's prices"
    ),
}


@dataclass(frozen=True)
class Profile:
    """How far the plan is compressed, and the traffic that makes its gates judgeable."""

    day_seconds: float  # one plan day lasts this many seconds (ROLLOUT_TIME_SCALE)
    interval: float  # ROLLOUT_INTERVAL_SECONDS
    scrape: float  # Prometheus scrape and rule evaluation interval
    rate: float  # requests per second over both replicas
    min_window: float | None  # None: the plan's own (30 s)
    min_sample_factor: float  # 1: the plan's minimum samples
    max_minutes: float  # give up (and say where it got stuck) after this long


# 60 req/s: the 10 % cohort (3 of 20 workspaces, ~17 % of the traffic with seed 24) sees
# ~300 queries per 30 s window, above the cohort gates' minimum of 200.
# ~6 min on a quiet 2-core machine; giving up at 9 keeps even a stuck run under 10 minutes.
FULL = Profile(day_seconds=10.0, interval=2.0, scrape=1.0, rate=60.0, min_window=None,
               min_sample_factor=1.0, max_minutes=9.0)
QUICK = Profile(day_seconds=2.0, interval=1.0, scrape=1.0, rate=55.0, min_window=10.0,
                min_sample_factor=0.3, max_minutes=4.0)


class DemoFailed(RuntimeError):
    """The rollout did not do what the demo expects (stuck, no rollback, ...)."""


# --- the demo's plan ---------------------------------------------------------------------------
class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_demo_plan(path: Path, *, min_window: float | None,
                    min_sample_factor: float) -> list[str]:
    """The default plan with the documented deviations; returns them, one line each."""
    data = yaml.safe_load(default_plan_path().read_text())
    deviations = []
    for name, why in DEMO_DRY_RUN.items():
        data["checks"][name]["dry_run"] = True
        deviations.append(f"{name} runs in dry-run: {why}")
    if min_window is not None:
        deviations.append(f"settings.min_window {data['settings']['min_window']} → "
                          f"{min_window:g}s (shortened run)")
        data["settings"]["min_window"] = f"{min_window:g}s"
    if min_sample_factor != 1.0:
        for check in data["checks"].values():
            # Only traffic counts shrink; the Redis checks count exporter scrapes (2).
            if float(check.get("min_sample", 0)) >= 10:
                check["min_sample"] = round(float(check["min_sample"]) * min_sample_factor)
        deviations.append(f"traffic minimum samples x {min_sample_factor:g} (shortened run)")
    header = "".join(f"#   - {line}\n" for line in deviations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Generated by scripts/demo.py from rollout/plans/default.yaml; deviations:\n"
        f"{header}\n" + yaml.dump(data, Dumper=_NoAliases, sort_keys=False, allow_unicode=True,
                                  width=100))
    load_plan(path)  # validate exactly as the controller will
    return deviations


# --- webhook listeners inside this process ----------------------------------------------------
class WebhookSink:
    """A tiny HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {"unparsed": True}
                with sink._lock:
                    sink.received.append((time.time(), self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # no access log on the terminal

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook-sink")
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def items(self, path: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(ts, body) for ts, p, body in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alert_line(payload: dict[str, Any]) -> list[str]:
    lines = []
    for alert in payload.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        lines.append(f"{str(alert.get('status', '')).upper()} {labels.get('alertname')}: "
                     f"{notes.get('summary', '')}")
    return lines


# --- processes ---------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    """The parent's environment without anything that would point a child elsewhere."""
    prefixes = ("ROLLOUT_", "UNLEASH_", "REDIS_", "PROMETHEUS_", "ALERTMANAGER_", "DATABASE_",
                "AI_", "LOCAL_", "L1_", "L2_", "CACHE_", "SERVICE_", "COHERE_", "PRICE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _wait_http(url: str, proc_pid: int, log_file: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(proc_pid):
            raise DemoFailed(f"{what} exited during start; see {log_file}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DemoFailed(f"{what} was not ready within {timeout:.0f}s; see {log_file}")


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
        self.token = secrets.token_urlsafe(16)
        self.api_token = secrets.token_urlsafe(16)
        self.run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.time_scale = args.time_scale or profile.day_seconds / DAY
        self.day_seconds = self.time_scale * DAY
        self.plan_path = DEMO_DIR / f"plan-{self.run_id}.yaml"
        self.deviations = write_demo_plan(self.plan_path, min_window=profile.min_window,
                                          min_sample_factor=profile.min_sample_factor)
        plan = load_plan(self.plan_path)
        self.plan: Plan = dataclasses.replace(
            plan, settings=dataclasses.replace(plan.settings, time_scale=self.time_scale))
        self.db_path = DEMO_DIR / f"notes-{self.run_id}.db"
        self.database_url = f"sqlite+aiosqlite:///{self.db_path}"
        self.sink = WebhookSink()
        self.stack.callback(self.sink.close)
        self.replicas: list[str] = []
        self.redis_url = self.state_url = ""
        self.controller_url = self.prometheus_url = ""
        self.controller_port = 0
        self.unleash_env: dict[str, str] = {}
        # Both replicas must derive the same cache keys (HMAC secret), never the dev default.
        self.key_secret = secrets.token_hex(32)

    # --- starting ------------------------------------------------------------------------
    def _own(self, name: str, service: Any, stop: Any) -> Any:
        self.stack.callback(stop, service)
        if getattr(service, "pid", None):
            self.started.pids[name] = int(service.pid)
        self.started.urls[name] = service.url
        return service

    def start_services(self, say: Any) -> None:
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        self.stack.callback(self._remove_database)
        say("starting Redis (caches + flags, and the controller's state)")
        cache = self._own("redis-cache", redis_svc.start_private_redis(
            name="demo-redis-cache", maxmemory="256mb", maxmemory_policy="allkeys-lru"),
            redis_svc.stop)
        state = self._own("redis-state", redis_svc.start_private_redis(
            name="demo-redis-state", maxmemory_policy="noeviction"), redis_svc.stop)
        self.redis_url, self.state_url = cache.url, state.url
        exporter = self._own("redis-exporter", exporter_svc.start_private_redis_exporter(
            cache.url, name="demo-redis-exporter"), exporter_svc.stop)
        if self.args.unleash:
            say("starting Unleash (PostgreSQL + unleash-server; the first start installs it)")
            from scripts.svc import unleash as unleash_svc

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
                "redis": [exporter_svc.target_of(exporter)],
                "rollout-controller": [f"127.0.0.1:{controller_port}"],
            }), prom_svc.stop)
        self.prometheus_url = prometheus.url
        prom_svc.wait_for_series(prometheus.url, 'up{job="ai-cache-service"} == 1',
                                 min_series=2, timeout=30)
        prom_svc.wait_for_series(prometheus.url, "redis_memory_max_bytes", timeout=30)
        self.controller_port = controller_port

    def _remove_database(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    def _start_replica(self, index: int) -> str:
        port = free_port()
        env = _clean_env() | {
            "PYTHONPATH": str(REPO_ROOT),
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "AI_PROVIDER": "local",
            "AI_LATENCY_SCALE": f"{self.args.latency_scale:g}",
            "SERVICE_API_TOKEN": self.token,
            "CACHE_KEY_SECRET": self.key_secret,
            # Audit a fifth of the served L1 hits (default 1 %, at most 5 a second), with no
            # cap: at l1-100 nothing else verifies answers, and the stale-rate gate needs 50
            # audits per window, which the demo compresses to seconds.
            "L1_AUDIT_SAMPLE_RATE": f"{self.args.audit_rate:g}",
            "L1_AUDIT_MAX_PER_SECOND": "0",
            "INSTANCE_NAME": f"replica-{index}",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        } | self._replica_unleash_env(index)
        log_file = LOG_DIR / f"demo-replica-{index}-{port}.log"
        proc = spawn([sys.executable, "-m", "app", "--port", str(port)], log_file=log_file,
                     env=env, cwd=DEMO_DIR)
        self.stack.callback(stop_pid, proc.pid)
        self.started.pids[f"replica-{index}"] = proc.pid
        url = f"http://127.0.0.1:{port}"
        # One at a time: both create the SQLite schema at start.
        _wait_http(f"{url}/readyz", proc.pid, log_file, 60, f"replica {index}")
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
        env = _clean_env() | {
            "PYTHONPATH": str(REPO_ROOT),
            "REDIS_URL": self.redis_url,
            "ROLLOUT_REDIS_URL": self.state_url,
            "PROMETHEUS_URL": self.prometheus_url,
            "ROLLOUT_PLAN": str(self.plan_path),
            "ROLLOUT_TIME_SCALE": repr(self.time_scale),
            "ROLLOUT_INTERVAL_SECONDS": f"{self.profile.interval:g}",
            "ROLLOUT_HOST": "127.0.0.1",
            "ROLLOUT_PORT": str(self.controller_port),
            "ROLLOUT_API_TOKEN": self.api_token,
            "ROLLOUT_WEBHOOK_URL": self.sink.url("/rollout"),
            "ROLLOUT_NAME": f"demo-{self.run_id}",
            "ROLLOUT_LOG_FORMAT": "json",
        }
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
        _wait_http(f"{self.controller_url}/healthz", proc.pid, log_file, 30, "the controller")

    def close(self) -> None:
        self.stack.close()
        # A Ctrl-C that lands inside subprocess.Popen (after the fork, before we learnt the
        # pid) would leave that child running: stop every child of ours still alive.
        for pid in _our_children():
            stop_pid(pid)
        self._remove_database()
        if self.plan_path.exists():  # keep the last run's plan for people to read
            self.plan_path.replace(DEMO_DIR / "plan.yaml")


def _our_children() -> list[int]:
    """Live direct children of this process (everything we spawn is one), from /proc."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == me and state != "Z":
            found.append(int(stat.parent.name))
    return found


# --- the fault -----------------------------------------------------------------------------
async def write_notes_bypassing_the_service(database_url: str,
                                            notes: dict[uuid.UUID, list[str]]) -> int:
    """What a back-office import does wrong: update notes through the database layer, not
    the service, so no generation is bumped and L1 keeps serving answers built from the old
    notes. Embeddings are recomputed like the service would (only the invalidation is
    missing). Returns how many notes changed."""
    import numpy as np

    from app.db.models import note_text
    from app.db.repository import ConcurrentUpdate, NotesRepository, make_engine
    from app.providers.local import LocalProvider

    repo = NotesRepository(make_engine(database_url))
    provider = LocalProvider(dimensions=EMBED_DIMENSIONS, latency_scale=0.0)
    changed = 0
    try:
        for workspace, note_ids in notes.items():
            for note_id in note_ids:
                for _ in range(3):  # the generator may PATCH the same note meanwhile
                    current = await repo.get(workspace, uuid.UUID(note_id))
                    if current is None:
                        break
                    fields = dataclasses.replace(
                        current.fields,
                        plan="EHR import: medication changed to lithium 300 mg; review risks.")
                    vector = provider.embed_now(note_text(
                        fields.subjective, fields.objective, fields.assessment, fields.plan))
                    embedding = np.asarray(vector, dtype=np.float32).tobytes()
                    try:
                        await repo.update(workspace, uuid.UUID(note_id), fields, embedding,
                                          expected_version=current.version)
                    except ConcurrentUpdate:
                        continue
                    changed += 1
                    break
    finally:
        await repo.aclose()
    return changed


@dataclass
class FaultState:
    stage: str
    workspaces: list[uuid.UUID] = field(default_factory=list)
    injected_at: float | None = None
    notes_changed: int = 0
    rollback: dict[str, Any] | None = None
    rolled_back_at: float | None = None
    invalidated_at: float | None = None
    bound_seconds: float | None = None


# --- the run --------------------------------------------------------------------------------
def _stream_order(entry: dict[str, Any]) -> tuple[int, int]:
    ms, _, seq = str(entry.get("id", "0-0")).partition("-")
    return int(ms or 0), int(seq or 0)


def _seconds_since(iso: str | None, now_iso: str) -> float | None:
    if not iso:
        return None
    return (datetime.fromisoformat(now_iso) - datetime.fromisoformat(iso)).total_seconds()


class Runner:
    """The async part: traffic, the controller, watching, the fault, the end."""

    def __init__(self, demo: Demo, model: LiveModel) -> None:
        self.demo = demo
        self.model = model
        self.plan = demo.plan
        self.traffic = TrafficWindow()
        self.fault = FaultState(stage=demo.args.fault_stage) if demo.args.fault else None
        self.history: list[dict[str, Any]] = []  # oldest first
        self._entries: dict[str, dict[str, Any]] = {}
        self.stop_traffic = asyncio.Event()
        self.generator = TrafficGenerator(
            demo.replicas, demo.token,
            TrafficShape(workspaces=demo.args.workspaces), seed=demo.args.seed,
            observers=[self.traffic])
        self.alerts_seen = 0
        self.notes_seen = 0

    def max_window(self, stage_name: str) -> float:
        index = self.plan.index_of(stage_name)
        assert index is not None
        return max(self.plan.window_of(c).total_seconds() for c in self.plan.checks_for(index))

    def cohort_line(self) -> str:
        shares = self.generator.workspace_shares()
        parts = []
        for percent in (10, 50):
            members = [ws for ws in shares
                       if in_rollout(str(ws), contract.L1_ROLLOUT_GROUP_ID, percent)]
            parts.append(f"{percent} %: {len(members)} of {len(shares)} workspaces, "
                         f"{sum(shares[ws] for ws in members) * 100:.0f} % of the traffic")
        return "sticky L1 cohorts (per workspace) — " + "; ".join(parts)

    async def run(self, client: httpx.AsyncClient, load: httpx.AsyncClient,
                  on_tick: Any) -> None:
        """`client` talks to the controller and the operator endpoints; `load` carries the
        generated traffic (see scripts.traffic.load_client)."""
        demo, model = self.demo, self.model
        model.phase = "seeding notes"
        await self.generator.seed_notes(load)
        model.event(self.cohort_line())
        # The cap only matters on an overloaded machine: ~6 s worth of requests in flight.
        traffic = asyncio.create_task(self.generator.run(
            load, rate=demo.profile.rate, stop=self.stop_traffic, drain_timeout=10,
            max_in_flight=int(demo.profile.rate * 6)))
        try:
            model.phase = "starting the controller"
            await asyncio.to_thread(demo.start_controller)
            model.event(f"controller started: plan days of {demo.day_seconds:.3g} s "
                        f"(time scale {self.demo.time_scale:.3g}), evaluating every "
                        f"{demo.profile.interval:g} s")
            model.phase = "rolling out"
            deadline = time.monotonic() + demo.profile.max_minutes * 60
            while True:
                status = await self._poll(client)
                on_tick()
                if status is not None and await self._step(client, status):
                    break
                if traffic.done():
                    raise DemoFailed(f"the traffic generator stopped: {traffic.exception()}")
                if time.monotonic() > deadline:
                    raise DemoFailed(self._stuck(status))
                await asyncio.sleep(0.5)
            model.phase = "finishing"
            await self._poll(client, history_limit=1000)
            on_tick()
        finally:
            self.stop_traffic.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(traffic, timeout=15)

    def _stuck(self, status: dict[str, Any] | None) -> str:
        if status is None:
            return "the controller never answered /api/status"
        reason = (status.get("last_decision") or {}).get("reason")
        return (f"not done after {self.demo.profile.max_minutes:g} min: at stage "
                f"{status['stage']} — {reason}")

    async def _poll(self, client: httpx.AsyncClient,
                    history_limit: int = 60) -> dict[str, Any] | None:
        model = self.model
        model.traffic = self.traffic.snapshot() | {"shed": float(self.generator.stats.shed)}
        for ts, payload in self.demo.sink.items("/alertmanager")[self.alerts_seen:]:
            model.alerts.extend((ts, line) for line in alert_line(payload))
            self.alerts_seen += 1
        for ts, payload in self.demo.sink.items("/rollout")[self.notes_seen:]:
            # The headline; the reason is already on screen as the decision.
            headline = str(payload.get("text", "")).split("\n", 1)[0]
            model.notifications.append((ts, re.sub(r"^:[a-z_]+:\s*", "", headline)))
            self.notes_seen += 1
        try:
            status = (await client.get(f"{self.demo.controller_url}/api/status",
                                       timeout=5)).json()
            entries = (await client.get(f"{self.demo.controller_url}/api/history",
                                        params={"limit": history_limit}, timeout=5)).json()
        except (httpx.HTTPError, ValueError):
            return model.status
        fetched = entries.get("entries", [])
        if self._entries and fetched and not any(e.get("id") in self._entries for e in fetched):
            # Polls failed for a while (an overloaded machine): fetch the gap too.
            with contextlib.suppress(httpx.HTTPError, ValueError):
                fetched = (await client.get(f"{self.demo.controller_url}/api/history",
                                            params={"limit": 1000}, timeout=10)).json()["entries"]
        for entry in fetched:
            self._entries.setdefault(str(entry.get("id")), entry)
        # Stream ids (`ms-seq`) order the log; polls may have arrived out of order.
        self.history = sorted(self._entries.values(), key=_stream_order)
        model.decisions = [e for e in self.history
                           if e.get("transition") in (*report.STAGE_CHANGES, "complete")]
        if status.get("initialised"):
            model.status = status
        return model.status if status.get("initialised") else None

    async def _step(self, client: httpx.AsyncClient, status: dict[str, Any]) -> bool:
        """Fault handling and the end condition; True when the demo is done."""
        interval = self.demo.profile.interval
        stage = status["stage"]
        last = self.plan.stage_names[-1]
        if self.fault is None:
            if status.get("completed_at"):
                return True
            if stage == last:
                # The last stage's own gates decide "complete"; give them a bake and a
                # full run of passing cycles, then report whatever they said.
                needed = max(status.get("bake_seconds") or 0.0, self.max_window(stage)) + (
                    self.plan.settings.passes_to_advance + 2) * interval
                return float(status["time_in_stage_seconds"]) >= needed
            return False

        fault = self.fault
        if fault.injected_at is None:
            confirmed = _seconds_since((status.get("flags") or {}).get("confirmed_at"),
                                       status["now"])
            # Inject once the stage's guardrails are judged (a full window after the
            # service reported the stage's flags), so detection time is the plan's own.
            if (stage == fault.stage and confirmed is not None
                    and confirmed >= self.max_window(stage) + 2 * interval):
                await self._inject(status)
            return False
        if fault.rollback is None:
            rollback = next((e for e in self.history if e.get("transition") == "rollback"
                             and report.iso_ts(e["at"]) >= fault.injected_at - 1), None)
            if rollback is not None:
                fault.rollback = rollback
                fault.rolled_back_at = report.iso_ts(rollback["at"])
                self.model.event(
                    f"rolled back {rollback['from_stage']} → {rollback['to_stage']} "
                    f"{fault.rolled_back_at - fault.injected_at:.1f} s after the fault "
                    f"(bound {fault.bound_seconds:.0f} s)")
                await self._on_call(client)
            elif time.time() - fault.injected_at > 4 * (fault.bound_seconds or 0) + 30:
                raise DemoFailed(f"no rollback {time.time() - fault.injected_at:.0f} s after "
                                 f"the fault; the controller says: "
                                 f"{(status.get('last_decision') or {}).get('reason')}")
            return False
        # After the rollback: watch the lower stage until its guardrails were judged again
        # (a full window after the service reported its flags) and the controller holds.
        confirmed = _seconds_since((status.get("flags") or {}).get("confirmed_at"),
                                   status["now"])
        return (confirmed is not None
                and confirmed >= self.max_window(stage) + 3 * interval)

    async def _inject(self, status: dict[str, Any]) -> None:
        fault = self.fault
        assert fault is not None
        shares = self.generator.workspace_shares()
        percent = int(((status.get("flags") or {}).get("desired") or {}).get("l1_percent", 0))
        serving = [ws for ws in sorted(shares, key=shares.__getitem__, reverse=True)
                   if in_rollout(str(ws), contract.L1_ROLLOUT_GROUP_ID, percent)]
        fault.workspaces = serving[:2]
        share = sum(shares[ws] for ws in fault.workspaces)
        fault.injected_at = time.time()
        fault.notes_changed = await write_notes_bypassing_the_service(
            self.demo.database_url,
            {ws: list(self.generator.notes[ws]) for ws in fault.workspaces})
        integrity = next(c for c in self.plan.guardrails if c.name == "cache_integrity_guardrail")
        # The plan's bound: the failing cycles it needs (1 for a critical guardrail), one
        # cycle and one scrape for the evidence to arrive, and a second of slack.
        fault.bound_seconds = ((self.plan.failures_to_rollback(integrity) + 1)
                               * self.demo.profile.interval + 2 * self.demo.profile.scrape + 1)
        self.model.event(
            f"FAULT at {fault.stage}: an EHR import rewrote {fault.notes_changed} notes of "
            f"{len(fault.workspaces)} workspaces ({share * 100:.0f} % of the traffic) straight "
            "in the database — no invalidation, so L1 serves answers built from old notes")

    async def _on_call(self, client: httpx.AsyncClient) -> None:
        """The runbook's step 2 (AIAgentCacheStaleOrMismatch): drop the affected answers."""
        fault = self.fault
        assert fault is not None
        for ws in fault.workspaces:
            response = await client.post(
                f"{self.demo.replicas[0]}/v1/workspaces/{ws}/cache/invalidate", json={},
                headers={"Authorization": f"Bearer {self.demo.token}"}, timeout=10)
            response.raise_for_status()
        fault.invalidated_at = time.time()
        self.model.event(f"on-call (scripted, runbook step 2): invalidated the cached answers "
                         f"of the {len(fault.workspaces)} affected workspaces; the controller "
                         "holds until someone runs `rollout resume`")


# --- the end ---------------------------------------------------------------------------------
def build_result(demo: Demo, runner: Runner, started: float, rows: list[report.StageImpact],
                 chart: Path | None, ok: bool, error: str | None) -> dict[str, Any]:
    fault = runner.fault
    windows = {c.name: demo.plan.window_of(c).total_seconds() for c in demo.plan.all_checks()}
    return {
        "ok": ok,
        "error": error,
        "scenario": "fault" if fault else "default",
        "profile": dataclasses.asdict(demo.profile),
        "time_scale": demo.time_scale,
        "plan_path": str(demo.plan_path),
        "deviations": demo.deviations,
        "plan": {
            "stages": list(demo.plan.stage_names),
            "interval_seconds": demo.profile.interval,
            "scrape_seconds": demo.profile.scrape,
            "passes_to_advance": demo.plan.settings.passes_to_advance,
            "windows": windows,
            "bakes": {s.name: demo.plan.bake_of(i).total_seconds()
                      for i, s in enumerate(demo.plan.stages)},
            "failures_to_rollback": {c.name: demo.plan.failures_to_rollback(c)
                                     for c in demo.plan.guardrails},
        },
        "started_at": started,
        "ended_at": time.time(),
        "duration_seconds": time.time() - started,
        "history": runner.history,
        "transitions": report.transitions(runner.history),
        "final_status": runner.model.status,
        "fault": None if fault is None else {
            **dataclasses.asdict(fault), "workspaces": [str(w) for w in fault.workspaces]},
        "alerts": [body for _, body in demo.sink.items("/alertmanager")],
        "notifications": [body for _, body in demo.sink.items("/rollout")],
        "impact": [r.to_dict() for r in rows],
        "summary": report.summary_lines(rows),
        "chart": None if chart is None else str(chart),
        "pids": demo.started.pids,
        "traffic": {"requests": runner.traffic.total, "failed": runner.traffic.failed,
                    "shed": runner.generator.stats.shed},
    }


def finish(demo: Demo, runner: Runner, console: Any, started: float, ok: bool,
           error: str | None) -> dict[str, Any]:
    """Measure, print and chart the run (Prometheus still runs), then return the result."""
    end = time.time()
    visits = report.stage_visits(runner.history, end)
    rows: list[report.StageImpact] = []
    chart: Path | None = None
    if visits:
        rows = report.impact_table(demo.prometheus_url, visits, runner.traffic.latencies)
        console.print()
        console.print(report.render_table(rows))
        for line in report.summary_lines(rows):
            console.print(line, markup=False)
        chart_path = demo.args.chart or (
            DEFAULT_CHART if not demo.args.fault else DEMO_DIR / "rollout-demo-fault.png")
        status = runner.model.status or {}
        title = ("Staged rollout of the AI caches — default plan, 1 plan day = "
                 f"{demo.day_seconds:.3g} s" + (" — with a fault" if runner.fault else ""))
        events = []
        if runner.fault and runner.fault.injected_at:
            events.append((runner.fault.injected_at, "fault: notes changed\nbehind the cache"))
        chart = report.write_chart(report.ChartInputs(
            prom_url=demo.prometheus_url, start=visits[0].start, end=end,
            stages=demo.plan.stage_names, visits=visits,
            transitions=report.transitions(runner.history),
            baseline=status.get("baseline") or {}, events=events, title=title,
            window="15s" if demo.profile.min_window is None else "10s",
            integrity_limit=_integrity_limit(demo.plan) if runner.fault else None,
            gate_lines=_gate_lines(demo.plan, status.get("baseline") or {}),
            end_note=_end_note(status)),
            Path(chart_path))
        console.print(f"chart: {chart}")
    fault = runner.fault
    if fault is not None and fault.rollback is not None:
        console.print()
        console.rule("the fault scenario")
        assert fault.injected_at is not None and fault.rolled_back_at is not None
        console.print(f"rollback {fault.rollback['from_stage']} → {fault.rollback['to_stage']} "
                      f"{fault.rolled_back_at - fault.injected_at:.1f} s after the fault "
                      f"(plan bound {fault.bound_seconds:.0f} s). Reason:")
        console.print(f"  {fault.rollback['reason']}", markup=False, highlight=False)
        alerts = [b for _, b in demo.sink.items("/alertmanager")]
        if alerts:
            console.print("alert from Alertmanager's webhook:")
            console.print_json(json.dumps(_trim_alert(alerts[0])))
        notes = [b for _, b in demo.sink.items("/rollout") if b.get("event") == "transition"
                 and b.get("severity") == "critical"]
        if notes:
            console.print("the controller's notification (ROLLOUT_WEBHOOK_URL):")
            console.print_json(json.dumps(notes[0]))
    return build_result(demo, runner, started, rows, chart, ok, error)


def _gate_lines(plan: Plan, baseline: dict[str, float]) -> list[tuple[str, float, str]]:
    """The stage gates relative to the baseline p95 and cost, as lines on the chart."""
    lines = []
    for index, stage in enumerate(plan.stages):
        for check in stage.checks:
            threshold = check.threshold
            if threshold is None or threshold.baseline not in (
                    "baseline_p95_seconds", "baseline_cost_per_query_usd"):
                continue
            limit = threshold.limit(baseline)
            if limit is None or index == 1:  # dark-launch compares error rates only
                continue
            panel = "latency" if threshold.baseline == "baseline_p95_seconds" else "cost"
            note = ", dry-run" if check.dry_run else ""
            lines.append((panel, limit, f"{stage.name} gate: ≤ {threshold.factor:g} x "
                                        f"baseline{note}"))
    return lines


def _integrity_limit(plan: Plan) -> float | None:
    for check in plan.guardrails:
        if check.name == "cache_integrity_guardrail" and check.threshold is not None:
            return check.threshold.absolute
    return None


def _end_note(status: dict[str, Any]) -> str:
    if not status:
        return ""
    if status.get("completed_at"):
        return f"rollout complete at {status['stage']}"
    reason = str((status.get("last_decision") or {}).get("reason", ""))
    first = re.sub(r" \([^()]*\)", "", reason.partition(";")[0])  # drop "(baseline …, n=…)"
    if status.get("awaiting_resume"):
        return f"holds at {status['stage']} after the rollback, awaiting `rollout resume`"
    return f"holds at {status['stage']}: {first}"


def _verdict(runner: Runner) -> str:
    """Where the rollout ended, in one sentence, from the controller's own last decision."""
    status = runner.model.status or {}
    last = (status.get("last_decision") or {}).get("reason", "")
    if status.get("completed_at"):
        return f"The controller completed the rollout at {status['stage']}: {last}"
    if status.get("awaiting_resume"):
        return (f"The controller rolled back and holds at {status.get('stage')} until a person "
                f"runs `rollout resume`: {last}")
    return f"The controller holds at {status.get('stage')}: {last}"


def _trim_alert(payload: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "labels", "annotations", "startsAt")
    return {"receiver": payload.get("receiver"), "status": payload.get("status"),
            "alerts": [{k: a.get(k) for k in keep} for a in payload.get("alerts", [])]}


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the same orderly stop of everything we started."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ignore_signals() -> None:
    # While stopping, a second Ctrl-C must not leave processes behind.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Profile]:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", action="store_true",
                        help="break L1 during an L1 stage and show the automatic rollback")
    parser.add_argument("--fault-stage", default="l1-100", choices=["l1-10", "l1-50", "l1-100"],
                        help="the stage the fault hits (default: l1-100, so one run shows "
                             "the whole rollout and the rollback)")
    parser.add_argument("--unleash", action="store_true",
                        help="flags through a real Unleash server instead of the local store")
    parser.add_argument("--quick", action="store_true",
                        help="the shortened profile of the e2e test (days of 2 s, 10 s "
                             "windows, minimum samples x 0.3)")
    parser.add_argument("--day-seconds", type=float, help="seconds per plan day")
    parser.add_argument("--time-scale", type=float,
                        help="ROLLOUT_TIME_SCALE directly (overrides --day-seconds)")
    parser.add_argument("--interval", type=float, help="controller evaluation interval (s)")
    parser.add_argument("--rate", type=float, help="requests per second over both replicas")
    parser.add_argument("--min-window", type=float, help="the plan's min_window (s)")
    parser.add_argument("--min-sample-factor", type=float,
                        help="multiply the plan's traffic minimum samples")
    parser.add_argument("--max-minutes", type=float, help="give up after this long")
    parser.add_argument("--latency-scale", type=float, default=1.0,
                        help="AI_LATENCY_SCALE (default 1: the seed's 0.5 s + 1.25 s; below "
                             "~0.5 the histogram's buckets cannot tell L2 hits from misses)")
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--seed", type=int, default=24, help="traffic generator seed")
    parser.add_argument("--audit-rate", type=float, default=0.2,
                        help="L1_AUDIT_SAMPLE_RATE of the replicas")
    parser.add_argument("--chart", type=Path, help="PNG path (default docs/rollout-demo.png; "
                        ".run/demo/rollout-demo-fault.png with --fault)")
    parser.add_argument("--result-json", type=Path, help="write everything measured here")
    parser.add_argument("--plain", action="store_true",
                        help="plain lines instead of the live view (default when not a TTY)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    overrides = {name: getattr(args, name) for name in
                 ("day_seconds", "interval", "rate", "min_window", "min_sample_factor",
                  "max_minutes") if getattr(args, name) is not None}
    return args, dataclasses.replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.live import Live

    args, profile = parse_args(argv)
    console = Console()
    plain = args.plain or not console.is_terminal
    if not console.is_terminal:
        console = Console(width=150)  # logs and CI: do not squeeze the tables to 80 columns
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    demo: Demo | None = None
    result: dict[str, Any] | None = None
    code = 0
    with _signals_as_interrupt():
        try:
            demo = Demo(args, profile)
            console.print(f"[bold]ai-cache rollout demo[/] — default plan, 1 plan day = "
                          f"{demo.day_seconds:.3g} s, {profile.rate:g} req/s over two "
                          f"replicas{', flags in Unleash' if args.unleash else ''}"
                          f"{', with a fault at ' + args.fault_stage if args.fault else ''}")
            for line in demo.deviations:
                console.print(f"  plan deviation: {line}", style="yellow", markup=False)
            console.print(f"  process logs: {LOG_DIR}", style="dim")
            demo.start_services(lambda text: console.print(f"  {text}", style="dim"))
            model = LiveModel(
                title="ai-cache rollout demo" + (" — fault scenario" if args.fault else ""),
                subtitle=(f"default plan, time scale {demo.time_scale:.3g} (1 plan day = "
                          f"{demo.day_seconds:.3g} s) · controller {demo.controller_url} · "
                          f"Prometheus {demo.prometheus_url}"),
                stages=demo.plan.stage_names)
            runner = Runner(demo, model)
            error: str | None = None
            if plain:
                printer = PlainPrinter(model)
                try:
                    asyncio.run(_drive(runner, printer.update))
                except DemoFailed as exc:
                    error = str(exc)
            else:
                with Live(render(model), console=console, refresh_per_second=4,
                          transient=False) as live:
                    try:
                        asyncio.run(_drive(runner, lambda: live.update(render(model))))
                    except DemoFailed as exc:
                        error = str(exc)
            if not plain:
                console.rule("decisions")
                for entry in model.decisions:
                    console.print(f"{entry['at'][11:19]}  {entry.get('transition')}: "
                                  f"{entry['from_stage']} → {entry['to_stage']}: "
                                  f"{entry.get('reason')}", markup=False, highlight=False)
            if error:
                console.print("demo failed: " + error, style="bold red", markup=False)
                code = 1
            result = finish(demo, runner, console, started, ok=error is None, error=error)
            console.print(_verdict(runner), markup=False)
            console.print(f"done in {time.time() - started:.0f} s; stopping everything the "
                          "demo started")
        except KeyboardInterrupt:
            _ignore_signals()
            console.print("\ninterrupted: stopping everything the demo started")
            code = 130
        except DemoFailed as exc:
            console.print(f"demo failed: {exc}", style="bold red", markup=False)
            code = 1
        finally:
            _ignore_signals()
            if demo is not None:
                demo.close()
                if result is not None and args.result_json:
                    args.result_json.parent.mkdir(parents=True, exist_ok=True)
                    args.result_json.write_text(json.dumps(result, indent=2, default=str))
    with contextlib.suppress(OSError):
        shutil.rmtree(DEMO_DIR / "unleash-cache-1", ignore_errors=True)
        shutil.rmtree(DEMO_DIR / "unleash-cache-2", ignore_errors=True)
    return code


async def _drive(runner: Runner, on_tick: Any) -> None:
    async with httpx.AsyncClient(timeout=30) as client, load_client() as load:
        await runner.run(client, load, on_tick)


if __name__ == "__main__":
    sys.exit(main())
