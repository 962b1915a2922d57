"""The stack parts 1, 4 and 5 drive: the real service and the ceiling, each with one worker
and with two, on one private Redis, seeded with notes, with the service's own metrics to
check what was served; with `--compare REF`, the service as it was at REF too."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis

from app import contract
from bench.service_bench.plan import (
    NOTES,
    REDIS_TIMEOUT_SECONDS,
    REPO,
    BenchError,
    Plan,
)
from bench.service_bench.report import say
from bench.service_bench.servers import Server, start_redis, start_server
from devstack.auth import LocalIssuer
from devstack.network import free_port
from devstack.services.common import Service

CEILING_KEY = "bench:ceiling:payload"


@dataclass(slots=True)
class Rig:
    """What parts 1 and 4 drive: the real service and the ceiling, on one private Redis."""

    plan: Plan
    redis: Service
    sync_redis: SyncRedis
    # "service", "ceiling", "service-2w", "ceiling-2w" (two workers), and "ref" (the service
    # at --compare REF, one worker) when asked for.
    servers: dict[str, Server]
    http: httpx.Client
    issuer: LocalIssuer  # the services' AUTH_JWT_SECRET
    key_secret: str
    service_env: dict[str, str]  # what every copy of the service runs with
    tmp: Path
    workspace: uuid.UUID = field(default_factory=uuid.uuid4)
    client: uuid.UUID = field(default_factory=uuid.uuid4)
    # A clinician's bearer JWT for the bench's workspace, the same for every request (the
    # service verifies it once, then remembers it, as it does for any client).
    auth: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.auth = self.issuer.headers([self.workspace], role="clinician", sub="bench")

    @property
    def service(self) -> Server:
        return self.servers["service"]

    @property
    def ceiling(self) -> Server:
        return self.servers["ceiling"]


    @property
    def query_path(self) -> str:
        return f"/v1/workspaces/{self.workspace}/query"

    def set_flags(self, *, shadow: bool, l2: bool, l1_percent: int) -> None:
        self.sync_redis.hset(contract.LOCAL_FLAGS_KEY, mapping={
            contract.LOCAL_FIELD_SHADOW: int(shadow),
            contract.LOCAL_FIELD_L2: int(l2),
            contract.LOCAL_FIELD_L1_PERCENT: l1_percent,
        })

    def ask(self, base: str, query: str) -> httpx.Response:
        response = self.http.post(f"{base}{self.query_path}", headers=self.auth,
                                  json={"query": query, "client_id": str(self.client)})
        if response.status_code != 200:
            raise BenchError(f"query answered {response.status_code}: {response.text}")
        return response

    def wait_for_cache_status(self, query: Callable[[], str], expected: Callable[[str], bool],
                              what: str, base: str | None = None) -> httpx.Response:
        """Ask until the Cache-Status header shows the flags took effect (cached ≤ 1 s)."""
        deadline = time.monotonic() + 15
        while True:
            response = self.ask(base or self.service.url, query())
            status = response.headers.get("Cache-Status", "")
            if expected(status):
                return response
            if time.monotonic() > deadline:
                raise BenchError(f"service never reached {what}; last Cache-Status: {status!r}")
            time.sleep(0.1)

    def counters(self, base: str | None = None) -> dict[tuple[str, str, str], float]:
        """(name, cache_layer, mode) → value of the cache hit/miss counters of our workspace."""
        text = self.http.get(f"{base or self.service.url}/metrics").text
        found: dict[tuple[str, str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in (contract.METRIC_CACHE_HITS, contract.METRIC_CACHE_MISSES):
                    continue
                if sample.labels.get("workspace_id") != str(self.workspace):
                    continue
                found[(sample.name, sample.labels["cache_layer"], sample.labels["mode"])] = (
                    sample.value
                )
        return found


def counter_delta(before: dict[tuple[str, str, str], float],
                  after: dict[tuple[str, str, str], float],
                  name: str, layer: str | None = None, mode: str | None = None) -> float:
    total = 0.0
    for key, value in after.items():
        if key[0] == name and layer in (None, key[1]) and mode in (None, key[2]):
            total += value - before.get(key, 0.0)
    return total


def seed_notes(rig: Rig) -> None:
    for text in NOTES:
        response = rig.http.post(
            f"{rig.service.url}/v1/workspaces/{rig.workspace}/sessions", headers=rig.auth,
            json={"client_id": str(rig.client), "subjective": text, "objective": "Calm, alert.",
                  "assessment": "Improving.", "plan": "Continue sertraline 50 mg."},
        )
        if response.status_code != 201:
            raise BenchError(f"seeding a note failed: {response.status_code} {response.text}")


def start_rig(stack: ExitStack, plan: Plan, ref_tree: Path | None = None) -> Rig:
    """Everything parts 1, 4 and 5 drive; `ref_tree`: a checkout of --compare's REF, whose
    service runs beside this one (same Redis, database, secrets and interpreter)."""
    tmp = Path(tempfile.mkdtemp(prefix="aicache-bench-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    redis = start_redis(stack, "bench-redis")
    issuer, key_secret = LocalIssuer.generate(), secrets.token_urlsafe(32)
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }
    # cwd is the temp dir, so no developer's .env file leaks into the measured settings.
    service_env = {
        **base_env,
        "REDIS_URL": redis.url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "AI_PROVIDER": "local",
        "AI_LATENCY_SCALE": "0",
        "LOCAL_EMBEDDING_DIMENSIONS": "1024",
        **issuer.env(),
        "CACHE_KEY_SECRET": key_secret,
        "FLAG_CACHE_SECONDS": "1.0",
        "REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_SECONDS),
    }
    ceiling_args = ["--redis-url", redis.url, "--key", CEILING_KEY, "--redis-timeout",
                    str(REDIS_TIMEOUT_SECONDS)]
    servers: dict[str, Server] = {}
    for name, workers in (("service", 1), ("service-2w", 2)):
        servers[name] = start_service(stack, name, service_env, tmp, workers)
    if ref_tree is not None:
        # Its own key prefix: another revision may store L1 values in another format, and
        # two formats under one key would turn each other's hits into misses.
        servers["ref"] = start_service(stack, "ref", {**service_env, "PYTHONPATH": str(ref_tree),
                                                      "CACHE_KEY_PREFIX": "ai-cache-ref"},
                                       tmp, 1, cwd=ref_tree)
    for name, workers in (("ceiling", 1), ("ceiling-2w", 2)):
        port = free_port()
        servers[name] = start_server(
            stack, name, [sys.executable, "-m", "bench.ceiling_app", "--port", str(port),
                          "--workers", str(workers), *ceiling_args],
            env=base_env, cwd=tmp, port=port, workers=workers)
    sync_redis = SyncRedis.from_url(redis.url)
    stack.callback(sync_redis.close)
    http = httpx.Client(timeout=10.0)
    stack.callback(http.close)
    rig = Rig(plan=plan, redis=redis, sync_redis=sync_redis, servers=servers, http=http,
              issuer=issuer, key_secret=key_secret, service_env=service_env, tmp=tmp)
    seed_notes(rig)
    say(f"started: redis {redis.url} (pid {redis.pid}); "
        + ", ".join(f"{name} {server.url} (pid {server.pid})" for name, server in servers.items())
        + f"; {len(NOTES)} notes seeded")
    return rig


def start_service(stack: ExitStack, name: str, env: dict[str, str], tmp: Path, workers: int,
                  cwd: Path | None = None) -> Server:
    """`python -m app` with `workers` workers. `cwd`: a checkout of another revision (its
    `app` package comes first on the path); the process still runs in `tmp` otherwise."""
    port = free_port()
    args = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    return start_server(stack, name, args, env=env, cwd=cwd or tmp, port=port, workers=workers)
