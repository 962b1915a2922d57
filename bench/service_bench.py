"""The service benchmark: four measures, each side by side in one run, reported as ratios.

    .venv/bin/python -m bench.service_bench [--quick] [--json]

1. L1-hit throughput and p50/p99 of the real service (`python -m app`, one uvicorn worker,
   flags of the `l1-100` stage, every request a hit) vs the ceiling (`bench/ceiling_app.py`:
   a bare FastAPI endpoint doing one Redis GET of a same-size payload), both driven by wrk,
   with the server's CPU per request from /proc. For diagnosis only, the same service with
   L1_AUDIT_SAMPLE_RATE=0 runs in the same rotation.
2. Invalidation time (the real `Invalidator.note_changed` → `RedisCache.bump_generations`)
   with 10^3 vs 10^6 cached answers present, and a SCAN MATCH + DEL invalidation at the
   same sizes for comparison.
3. Redis `MEMORY USAGE` of one 1024-dimension L2 entry as the service writes it, and the
   cosine similarity of the decoded vector to the original.
4. Miss-path overhead: all flags on with every request a miss vs caching off.

Absolute figures drift on a shared machine, so compared variants are interleaved (ABBA
order over several rounds) and the verdicts use the median of the per-round ratios.
Everything this starts (Redis servers, the service, the ceiling) is stopped on exit, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app import contract
from app.cache.breaker import CircuitBreaker
from app.cache.codec import (
    CachedAnswer,
    Envelope,
    SourceRef,
    decode_embedding,
    encode_answer,
    encode_embedding,
)
from app.cache.keys import KeyBuilder
from app.cache.store import RedisCache
from app.main import build_redis
from app.metrics import ServiceMetrics
from app.service.invalidation import Invalidator
from app.settings import Settings
from devstack.errors import ServiceError
from devstack.network import free_port
from devstack.paths import RUN_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import wait_for_http
from devstack.services.common import Service
from devstack.services.redis import start_private_redis, stop

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results" / "latest.json"

# Targets (issue 2, "Benchmark").
TARGET_RPS_RATIO = 0.7  # service req/s >= 0.7 x ceiling
TARGET_P50_RATIO = 1.5  # service p50 <= 1.5 x ceiling
TARGET_INVALIDATION_MS = 1.0  # at the large size
TARGET_INVALIDATION_RATIO = 2.0  # large / small
TARGET_L2_BYTES = 2800  # 2.8 KB, read as 2,800 bytes (the stricter reading)
TARGET_COSINE = 0.9999
TARGET_MISS_OVERHEAD_MS = 1.0

QUESTION = "How has the patient's sleep changed since starting sertraline?"
CEILING_KEY = "bench:ceiling:payload"
NOTES = (
    "Sleeping 5 hours a night, waking at 3 am. Started sertraline 50 mg this week.",
    "Sleep improving: 6 hours, fewer awakenings since starting sertraline.",
    "Reports 7 hours of sleep. Mood brighter. Mild nausea in the mornings.",
    "Anxious about work deadlines; sleep back to 6 hours. Practising sleep hygiene.",
    "Sleeping 7 to 8 hours. No nausea. Sertraline continued at 50 mg.",
    "Weekend travel disrupted sleep; otherwise stable. Appetite normal.",
    "Nightmares reduced. Sleep onset under 20 minutes most nights.",
    "Stable on sertraline; sleeping well; discussed tapering plan for later this year.",
)

# Part 2 layout: every workspace holds 100 answers (10 clients x 9, plus 10 workspace-wide).
CLIENTS_PER_WORKSPACE = 10
ANSWERS_PER_CLIENT = 9
WORKSPACE_WIDE_ANSWERS = 10
ANSWERS_PER_WORKSPACE = CLIENTS_PER_WORKSPACE * ANSWERS_PER_CLIENT + WORKSPACE_WIDE_ANSWERS
DIGEST_CHARS = 22  # KeyBuilder.digest: 128-bit HMAC, URL-safe base64 without padding
SCAN_COUNT = 1000
# The service's default Redis timeout is 50 ms. On this shared 2-CPU machine a scheduler stall
# can exceed that, which would send a hit down the fail-open fresh path (or make the ceiling
# answer 500) and measure the stall, not the hit path. A successful request never waits for
# the timeout, so raising it changes nothing else; both servers get the same value.
REDIS_TIMEOUT_SECONDS = 1.0
BENCH_NS = uuid.UUID("6f6a1f0e-5b7c-4c0e-9a51-0d5b1c2e7a10")

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not measure what it promised (a process died, a check failed)."""


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    rounds: int
    seconds: int  # per wrk run
    warmup_seconds: int
    connections: int  # L1-hit runs
    miss_connections: int  # miss-path runs
    sizes: tuple[int, int]  # cached answers present, small and large
    bump_calls: int  # timed invalidations per size
    scan_calls: tuple[int, int]  # timed SCAN invalidations per size


FULL = Plan(quick=False, rounds=5, seconds=5, warmup_seconds=2, connections=16,
            miss_connections=1, sizes=(1_000, 1_000_000), bump_calls=2_000, scan_calls=(20, 3))
QUICK = Plan(quick=True, rounds=3, seconds=2, warmup_seconds=1, connections=16,
             miss_connections=1, sizes=(1_000, 100_000), bump_calls=500, scan_calls=(10, 3))


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    value: str
    target: str
    ratio: str
    verdict: str  # PASS | MISS | info


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def say(text: str) -> None:
    print(text, flush=True)


def ms(seconds: float) -> float:
    return seconds * 1000.0


# --- wrk ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_WRK_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_WRK_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_us_per_request: float | None = None  # of the server process, all threads


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def parse_wrk(output: str) -> WrkResult:
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in _WRK_PERCENTILE.findall(output)}
    rps, total = _WRK_RPS.search(output), _WRK_TOTAL.search(output)
    if rps is None or total is None or 50 not in percentiles or 99 not in percentiles:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    non_2xx = _WRK_NON_2XX.search(output)
    sockets = _WRK_SOCKET.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


def run_wrk(url: str, script: Path, env: dict[str, str], *, seconds: int,
            connections: int, pid: int | None = None) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (scripts/bootstrap installs it, or: "
                         "apt-get install wrk)")
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
           "-s", str(script), url]
    ticks = cpu_ticks(pid) if pid else 0
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if pid and result.requests:
        used = (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
        result = replace(result, cpu_us_per_request=used * 1e6 / result.requests)
    if result.non_2xx or result.socket_errors:
        raise BenchError(f"wrk saw {result.non_2xx} non-2xx responses and "
                         f"{result.socket_errors} socket errors against {url}:\n{done.stdout}")
    return result


# --- processes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    url: str
    pid: int
    log: Path


def start_server(stack: ExitStack, name: str, args: list[str], *, env: dict[str, str],
                 cwd: Path, port: int) -> Server:
    """Start an HTTP server we own (stopped by `stack`), and wait for its /healthz."""
    log = RUN_DIR / "logs" / f"bench-{name}-{port}.log"
    proc = spawn(args, log_file=log, env=env, cwd=cwd)
    stack.callback(stop_pid, proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, f"{url}/healthz", what=name, log_file=log, timeout=60)
    except ServiceError as exc:
        raise BenchError(str(exc)) from exc
    return Server(name=name, url=url, pid=proc.pid, log=log)


def start_redis(stack: ExitStack, name: str) -> Service:
    service = start_private_redis(name=name)
    stack.callback(stop, service)
    return service


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM and Ctrl-C raise KeyboardInterrupt wherever the benchmark is, so it unwinds.

    Not asyncio.run's default (cancel the main task): with a socket timeout set, redis-py 8.1
    on Python 3.11 swallows a good share of cancellations (the awaited command just returns),
    so a cancelled measurement loop would carry on. An exception cannot be swallowed that way.
    """
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored
        signal.signal(signal.SIGINT, _on_signal)


# --- the running service --------------------------------------------------------------------


@dataclass(slots=True)
class Rig:
    """What parts 1 and 4 drive: the real service and the ceiling, on one private Redis."""

    plan: Plan
    redis: Service
    sync_redis: SyncRedis
    service: Server
    no_audit: Server  # the same service with L1_AUDIT_SAMPLE_RATE=0 (diagnosis only)
    ceiling: Server
    http: httpx.Client
    token: str
    key_secret: str
    workspace: uuid.UUID = field(default_factory=uuid.uuid4)
    client: uuid.UUID = field(default_factory=uuid.uuid4)

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
        response = self.http.post(f"{base}{self.query_path}",
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


def _delta(before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float],
           name: str, layer: str | None = None, mode: str | None = None) -> float:
    total = 0.0
    for key, value in after.items():
        if key[0] == name and layer in (None, key[1]) and mode in (None, key[2]):
            total += value - before.get(key, 0.0)
    return total


def seed_notes(rig: Rig) -> None:
    headers = {"Authorization": f"Bearer {rig.token}"}
    for text in NOTES:
        response = rig.http.post(
            f"{rig.service.url}/v1/workspaces/{rig.workspace}/sessions", headers=headers,
            json={"client_id": str(rig.client), "subjective": text, "objective": "Calm, alert.",
                  "assessment": "Improving.", "plan": "Continue sertraline 50 mg."},
        )
        if response.status_code != 201:
            raise BenchError(f"seeding a note failed: {response.status_code} {response.text}")


def _alternate(round_index: int, variants: Sequence[T]) -> list[T]:
    """ABBA: even rounds in order, odd rounds reversed, so drift hits both variants alike."""
    return list(variants) if round_index % 2 == 0 else list(reversed(variants))


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _medians(runs: dict[str, list[WrkResult]]) -> dict[str, dict[str, float]]:
    return {name: {"rps": _med([x.rps for x in rs]), "p50_ms": _med([x.p50_ms for x in rs]),
                   "p99_ms": _med([x.p99_ms for x in rs]),
                   "cpu_us": _med([x.cpu_us_per_request or 0.0 for x in rs])}
            for name, rs in runs.items()}


# --- 1. L1 hit vs ceiling --------------------------------------------------------------------


def _rotate(round_index: int, variants: Sequence[T]) -> list[T]:
    """Each round starts with another variant and odd rounds run backwards (ABBA for two)."""
    shift = round_index // 2 % len(variants)
    order = list(variants[shift:]) + list(variants[:shift])
    return order if round_index % 2 == 0 else order[::-1]


def part1_l1_hit(rig: Rig) -> tuple[list[Row], dict[str, Any]]:
    plan = rig.plan
    say(f"\n[1] L1 hit vs ceiling: wrk -t1 -c{plan.connections} -d{plan.seconds}s x "
        f"{plan.rounds} rounds per variant, rotated order")
    # The last rollout stage (`l1-100`): shadow off, L2 on, L1 at 100 %.
    rig.set_flags(shadow=False, l2=True, l1_percent=100)
    hit = rig.wait_for_cache_status(lambda: QUESTION, lambda s: s.endswith("ai-l1; hit"),
                                    "an L1 hit")
    rig.wait_for_cache_status(lambda: QUESTION, lambda s: s.endswith("ai-l1; hit"),
                              "an L1 hit (audit off)", base=rig.no_audit.url)
    keys = KeyBuilder(rig.key_secret.encode(), "ai-cache")
    entry = keys.l1(rig.workspace, rig.client, QUESTION).entry
    entry_bytes = int(rig.sync_redis.strlen(entry))
    if entry_bytes == 0:
        raise BenchError(f"the warmed L1 entry {entry} is not in Redis")
    filler = (hit.json()["answer"] + " ") * (entry_bytes // 10 + 1)
    rig.sync_redis.set(CEILING_KEY, filler[:entry_bytes].encode())
    ceiling_response = rig.http.post(f"{rig.ceiling.url}{rig.query_path}",
                                     json={"query": QUESTION, "client_id": str(rig.client)})
    say(f"    L1 entry {entry_bytes} B in Redis; response bodies: service "
        f"{len(hit.content)} B, ceiling {len(ceiling_response.content)} B")

    body = json.dumps({"query": QUESTION, "client_id": str(rig.client)})
    env = {"BENCH_BODY": body}
    script = BENCH / "post_query.lua"
    servers = {"service": rig.service, "no-audit": rig.no_audit, "ceiling": rig.ceiling}
    services = ("service", "no-audit")
    before = {name: rig.counters(servers[name].url) for name in services}
    served = dict.fromkeys(services, 0)
    for name, server in servers.items():  # warm-up, not recorded
        warm = run_wrk(server.url + rig.query_path, script, env,
                       seconds=plan.warmup_seconds, connections=plan.connections)
        if name in served:
            served[name] += warm.requests
    runs: dict[str, list[WrkResult]] = {name: [] for name in servers}
    for r in range(plan.rounds):
        for name in _rotate(r, list(servers)):
            result = run_wrk(servers[name].url + rig.query_path, script, env,
                             seconds=plan.seconds, connections=plan.connections,
                             pid=servers[name].pid)
            runs[name].append(result)
            if name in served:
                served[name] += result.requests
            say(f"    round {r + 1} {name:8s} {result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                f"  p99 {result.p99_ms:6.2f} ms  CPU {result.cpu_us_per_request or 0:5.0f} us/req")
    checks: dict[str, dict[str, float]] = {}
    for name in services:
        after = rig.counters(servers[name].url)
        hits = _delta(before[name], after, contract.METRIC_CACHE_HITS,
                      contract.LAYER_QUERY_RESULT, contract.MODE_SERVE)
        misses = _delta(before[name], after, contract.METRIC_CACHE_MISSES,
                        contract.LAYER_QUERY_RESULT)
        if misses or hits < served[name]:
            raise BenchError(f"{name}: not every request was an L1 hit: {hits:.0f} hits and "
                             f"{misses:.0f} misses for {served[name]} requests")
        checks[name] = {"l1_hits": hits, "l1_misses": misses, "requests": served[name]}
    say("    check: every request to both services was an L1 hit (their metrics: "
        + ", ".join(f"{n} {c['l1_hits']:.0f} hits for {c['requests']:.0f} requests"
                    for n, c in checks.items()) + ")")

    def ratio(name: str, metric: Callable[[WrkResult], float]) -> float:
        pairs = zip(runs[name], runs["ceiling"], strict=True)
        return _med([metric(a) / metric(b) for a, b in pairs])

    ratios = {name: {"rps": ratio(name, lambda x: x.rps),
                     "p50": ratio(name, lambda x: x.p50_ms),
                     "p99": ratio(name, lambda x: x.p99_ms),
                     "cpu": ratio(name, lambda x: x.cpu_us_per_request or 0.0)}
              for name in services}
    med = _medians(runs)
    svc, noa, ceil = med["service"], med["no-audit"], med["ceiling"]
    rows = [
        Row("1a L1-hit throughput, service vs ceiling",
            f"{svc['rps']:,.0f} vs {ceil['rps']:,.0f} req/s",
            f">= {TARGET_RPS_RATIO:.2f}x", f"{ratios['service']['rps']:.2f}x",
            verdict(ratios["service"]["rps"] >= TARGET_RPS_RATIO)),
        Row("1b L1-hit p50, service vs ceiling",
            f"{svc['p50_ms']:.2f} vs {ceil['p50_ms']:.2f} ms",
            f"<= {TARGET_P50_RATIO:.2f}x", f"{ratios['service']['p50']:.2f}x",
            verdict(ratios["service"]["p50"] <= TARGET_P50_RATIO)),
        Row("1c L1-hit p99, service vs ceiling",
            f"{svc['p99_ms']:.2f} vs {ceil['p99_ms']:.2f} ms",
            "-", f"{ratios['service']['p99']:.2f}x", "info"),
        Row("1d server CPU per L1 hit, service vs ceiling",
            f"{svc['cpu_us']:.0f} vs {ceil['cpu_us']:.0f} us",
            "-", f"{ratios['service']['cpu']:.2f}x", "info"),
        Row("1e same, L1_AUDIT_SAMPLE_RATE=0: req/s, p50",
            f"{noa['rps']:,.0f} req/s, {noa['p50_ms']:.2f} ms",
            "(diagnosis)", f"{ratios['no-audit']['rps']:.2f}x, {ratios['no-audit']['p50']:.2f}x",
            "info"),
        Row("1f same, L1_AUDIT_SAMPLE_RATE=0: CPU per hit",
            f"{noa['cpu_us']:.0f} us", "(diagnosis)", f"{ratios['no-audit']['cpu']:.2f}x",
            "info"),
    ]
    data = {
        "flags": {"shadow": 0, "l2": 1, "l1_percent": 100},
        "variants": {"service": "python -m app, defaults (L1_AUDIT_SAMPLE_RATE=0.01, "
                                "L1_AUDIT_MAX_PER_SECOND=5, QUERY_FAST_PATH=true)",
                     "no-audit": "python -m app, L1_AUDIT_SAMPLE_RATE=0",
                     "ceiling": "bench/ceiling_app.py"},
        "wrk": {"threads": 1, "connections": plan.connections, "seconds": plan.seconds,
                "rounds": plan.rounds},
        "l1_entry_bytes": entry_bytes,
        "response_bytes": {"service": len(hit.content), "ceiling": len(ceiling_response.content)},
        "medians": med,
        "ratios_to_ceiling": ratios,
        "runs": {name: [asdict(x) for x in rs] for name, rs in runs.items()},
        "checks": checks,
    }
    return rows, data


# --- 2. invalidation with 10^3 vs 10^6 answers present ----------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """The keys part 2 writes, in the service's real key layout, with real values."""

    keys: KeyBuilder
    value_client: bytes  # "<client gen>,<epoch>\n" + sealed encoded answer
    value_workspace: bytes  # "<workspace gen>,<epoch>\n" + sealed encoded answer
    token: bytes

    @staticmethod
    def workspace(index: int) -> uuid.UUID:
        return uuid.uuid5(BENCH_NS, f"workspace-{index}")

    @staticmethod
    def client(workspace_index: int, index: int) -> uuid.UUID:
        return uuid.uuid5(BENCH_NS, f"client-{workspace_index}-{index}")

    def workspace_pattern(self, workspace: uuid.UUID) -> str:
        """SCAN pattern for every L1 entry of a workspace (client-scoped and workspace-wide)."""
        entry = self.keys.l1(workspace, None, "x").entry
        return entry[: entry.index("}") + 1] + ":*"

    def workspace_entries(self, index: int) -> list[tuple[bytes, bytes]]:
        ws = self.workspace(index)
        # Deterministic per workspace (so part 2 can restore exactly the entries it deleted);
        # 18 random bytes encode to 24 URL-safe base64 chars, of which a digest keeps 22.
        raw = random.Random(index).randbytes(18 * ANSWERS_PER_WORKSPACE)
        digests = base64.urlsafe_b64encode(raw)
        out: list[tuple[bytes, bytes]] = []
        cut = 0
        prefixes = [(self.keys.l1(ws, self.client(index, c), "x").entry, ANSWERS_PER_CLIENT,
                     self.value_client) for c in range(CLIENTS_PER_WORKSPACE)]
        prefixes.append((self.keys.l1(ws, None, "x").entry, WORKSPACE_WIDE_ANSWERS,
                         self.value_workspace))
        for entry, count, value in prefixes:
            prefix = entry[:-DIGEST_CHARS].encode()
            for _ in range(count):
                out.append((prefix + digests[cut:cut + DIGEST_CHARS], value))
                cut += 24
        return out

    def generation_keys(self, index: int) -> list[bytes]:
        ws = self.workspace(index)
        gens = [self.keys.client_generation(ws, self.client(index, c))
                for c in range(CLIENTS_PER_WORKSPACE)]
        gens += [self.keys.workspace_generation(ws), self.keys.workspace_epoch(ws)]
        return [g.encode() for g in gens]


def make_layout() -> Layout:
    keys = KeyBuilder(secrets.token_bytes(32), "ai-cache")
    sources = tuple(SourceRef(uuid.uuid4(), 1, 0.8 - i / 10) for i in range(4))
    answer = CachedAnswer(
        answer="From the session notes:\n" + "\n".join(
            f"- {NOTES[i]} [session {s.session_id}, v1]" for i, s in enumerate(sources[:3])),
        sources=sources,
    )
    token = b"0123456789abcdef"
    sealed = Envelope().seal(encode_answer(answer), "k")
    return Layout(keys=keys, value_client=token + b"," + token + b"\n" + sealed,
                  value_workspace=token + b"," + token + b"\n" + sealed, token=token)


def _resp_set(key: bytes, value: bytes, ttl: int) -> bytes:
    ttl_b = str(ttl).encode()
    return b"".join((b"*5\r\n$3\r\nSET\r\n$%d\r\n" % len(key), key,
                     b"\r\n$%d\r\n" % len(value), value,
                     b"\r\n$2\r\nEX\r\n$%d\r\n" % len(ttl_b), ttl_b, b"\r\n"))


def _populate_chunks(layout: Layout, answers: int) -> Iterator[bytes]:
    l1_ttl, gen_ttl = 3600, 86_400  # long enough not to expire during the measurement
    parts: list[bytes] = []
    for w in range(answers // ANSWERS_PER_WORKSPACE):
        parts.extend(_resp_set(k, v, l1_ttl) for k, v in layout.workspace_entries(w))
        parts.extend(_resp_set(g, layout.token, gen_ttl) for g in layout.generation_keys(w))
        if len(parts) >= 50_000:
            yield b"".join(parts)
            parts.clear()
    if parts:
        yield b"".join(parts)


def populate(redis: Service, layout: Layout, answers: int) -> float:
    """Mass-insert `answers` L1 entries (and their generation keys) with `redis-cli --pipe`."""
    cli = shutil.which("redis-cli")
    if cli is None or redis.port is None:
        raise BenchError("redis-cli is missing")
    started = time.perf_counter()
    with subprocess.Popen([cli, "-h", "127.0.0.1", "-p", str(redis.port), "--pipe"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for chunk in _populate_chunks(layout, answers):
                proc.stdin.write(chunk)
            proc.stdin.close()
            output = proc.stdout.read().decode(errors="replace")
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0 or "errors: 0," not in output:
        raise BenchError(f"redis-cli --pipe failed: {output}")
    return time.perf_counter() - started


async def _scan_invalidate(redis: Redis, pattern: str) -> int:
    """What the design forbids: SCAN the keyspace for the workspace's entries and DEL them."""
    deleted, cursor = 0, 0
    while True:
        cursor, found = await redis.scan(cursor, match=pattern, count=SCAN_COUNT)
        if found:
            deleted += int(await redis.delete(*found))
        if cursor == 0:
            return deleted


async def _measure_invalidation(plan: Plan, layout: Layout,
                                urls: dict[int, str]) -> dict[str, Any]:
    sizes = list(plan.sizes)
    ws, client = Layout.workspace(0), Layout.client(0, 0)
    pattern = layout.workspace_pattern(ws)
    target_entries = layout.workspace_entries(0)
    redis_clients: dict[int, Redis] = {}
    invalidators: dict[int, Invalidator] = {}
    for size, url in urls.items():
        settings = Settings(_env_file=None, redis_url=url,
                            redis_timeout_seconds=REDIS_TIMEOUT_SECONDS)
        redis = build_redis(settings)  # the service's Redis client configuration
        redis_clients[size] = redis
        metrics = ServiceMetrics(CollectorRegistry())
        cache = RedisCache(redis, CircuitBreaker(settings.breaker_failure_threshold,
                                                 settings.breaker_reset_seconds),
                           metrics, generation_ttl_seconds=max(86_400,
                                                               settings.l1_ttl_seconds * 2))
        invalidators[size] = Invalidator(cache, layout.keys, metrics)
    try:
        dbsize = {size: int(await redis_clients[size].dbsize()) for size in sizes}
        bumps: dict[int, list[float]] = {size: [] for size in sizes}
        for i in range(50 + plan.bump_calls):  # 50 warm-up calls each
            for size in _alternate(i, sizes):
                started = time.perf_counter()
                applied = await invalidators[size].note_changed(ws, client, "bench")
                elapsed = time.perf_counter() - started
                if not applied:
                    raise BenchError(f"invalidation failed with {size} answers present")
                if i >= 50:
                    bumps[size].append(elapsed)

        scans: dict[int, list[float]] = {size: [] for size in sizes}
        deleted: dict[int, list[int]] = {size: [] for size in sizes}
        calls = dict(zip(sizes, plan.scan_calls, strict=True))
        for i in range(max(calls.values())):
            for n in _alternate(i, sizes):
                if i >= calls[n]:
                    continue
                redis = redis_clients[n]
                async with redis.pipeline(transaction=False) as pipe:  # restore, untimed
                    for key, value in target_entries:
                        pipe.set(key, value, ex=3600)
                    await pipe.execute()
                started = time.perf_counter()
                deleted[n].append(await _scan_invalidate(redis, pattern))
                scans[n].append(time.perf_counter() - started)
    finally:
        for inv in invalidators.values():
            await inv.aclose()
        for redis in redis_clients.values():
            await redis.aclose()
    return {"bumps": bumps, "scans": scans, "deleted": deleted, "dbsize": dbsize,
            "pattern": pattern}


def part2_invalidation(plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    small, large = plan.sizes
    label = {small: f"10^{len(str(small)) - 1}", large: f"10^{len(str(large)) - 1}"}
    say(f"\n[2] invalidation with {label[small]} vs {label[large]} cached answers present"
        + (" (--quick: 10^5 stands in for 10^6)" if plan.quick else ""))
    layout = make_layout()
    with ExitStack() as stack:
        urls: dict[int, str] = {}
        for size in plan.sizes:
            redis = start_redis(stack, f"bench-inv-{size}")
            took = populate(redis, layout, size)
            urls[size] = redis.url
            say(f"    populated {size:,} L1 entries ({len(layout.value_client)} B values, real "
                f"key layout, {ANSWERS_PER_WORKSPACE} per workspace) in {took:.1f} s")
        found = asyncio.run(_measure_invalidation(plan, layout, urls))

    bumps: dict[int, list[float]] = found["bumps"]
    scans: dict[int, list[float]] = found["scans"]
    for size in plan.sizes:
        expected = size + (size // ANSWERS_PER_WORKSPACE) * (CLIENTS_PER_WORKSPACE + 2)
        if found["dbsize"][size] < expected:
            raise BenchError(f"expected >= {expected} keys with {size} answers, found "
                             f"{found['dbsize'][size]}")
        if any(d != ANSWERS_PER_WORKSPACE for d in found["deleted"][size]):
            raise BenchError(f"SCAN invalidation deleted {found['deleted'][size]} entries, "
                             f"expected {ANSWERS_PER_WORKSPACE} each time")
    bump_med = {size: ms(_med(times)) for size, times in bumps.items()}
    bump_p99 = {size: ms(float(np.percentile(times, 99))) for size, times in bumps.items()}
    scan_med = {size: ms(_med(times)) for size, times in scans.items()}
    ratio = bump_med[large] / bump_med[small]
    for size in plan.sizes:
        say(f"    {label[size]:>5}: Invalidator.note_changed median {bump_med[size]:.3f} ms "
            f"(p99 {bump_p99[size]:.3f} ms, {len(bumps[size])} calls); SCAN+DEL median "
            f"{scan_med[size]:.1f} ms ({len(scans[size])} calls)")
    rows = [
        Row(f"2a invalidation at {label[large]} answers (median)",
            f"{bump_med[large]:.3f} ms (p99 {bump_p99[large]:.3f})",
            f"<= {TARGET_INVALIDATION_MS:.1f} ms", "-",
            verdict(bump_med[large] <= TARGET_INVALIDATION_MS)),
        Row(f"2b invalidation {label[large]} / {label[small]}",
            f"{bump_med[large]:.3f} / {bump_med[small]:.3f} ms",
            f"<= {TARGET_INVALIDATION_RATIO:.1f}x", f"{ratio:.2f}x",
            verdict(ratio <= TARGET_INVALIDATION_RATIO)),
        Row(f"2c SCAN+DEL invalidation {label[large]} / {label[small]}",
            f"{scan_med[large]:.1f} / {scan_med[small]:.2f} ms", "(comparison)",
            f"{scan_med[large] / scan_med[small]:.0f}x", "info"),
    ]
    data = {
        "quick_substitute": plan.quick,
        "sizes": list(plan.sizes),
        "layout": {"answers_per_workspace": ANSWERS_PER_WORKSPACE,
                   "value_bytes": len(layout.value_client), "scan_pattern": found["pattern"],
                   "scan_count": SCAN_COUNT, "dbsize": found["dbsize"]},
        "bump_median_ms": bump_med, "bump_p99_ms": bump_p99, "bump_ratio": ratio,
        "scan_median_ms": scan_med,
    }
    return rows, data


# --- 3. memory of one L2 entry ---------------------------------------------------------------


async def _l2_memory(url: str) -> dict[str, dict[str, float]]:
    settings = Settings(_env_file=None, redis_url=url)
    keys = KeyBuilder(secrets.token_bytes(32), settings.cache_key_prefix)
    workspace = uuid.uuid4()
    model, dims = settings.cohere_embed_model, 1024
    rng = np.random.default_rng(20240611)
    vectors = rng.standard_normal((100, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    variants = [
        ("float16", settings.l2_dtype, Envelope()),
        ("float32", "float32", Envelope()),
        ("float16 + AES-GCM", settings.l2_dtype, Envelope(os.urandom(32), "k1")),
    ]
    out: dict[str, dict[str, float]] = {}
    redis = build_redis(settings)
    try:
        for name, dtype, envelope in variants:
            usages, cosines, sizes = [], [], []
            for i, vector in enumerate(vectors):
                key = keys.l2(workspace, model, dims, f"{name} question number {i}")
                value = envelope.seal(encode_embedding(vector, dtype), key)
                await redis.set(key, value, ex=settings.l2_ttl_seconds)
                usages.append(int(await redis.memory_usage(key, samples=0) or 0))
                stored = await redis.get(key)
                if not isinstance(stored, bytes):
                    raise BenchError(f"L2 entry {key} vanished")
                decoded = decode_embedding(envelope.open(stored, key), dims).astype(np.float64)
                original = vector.astype(np.float64)
                cosines.append(float(decoded @ original
                                     / (np.linalg.norm(decoded) * np.linalg.norm(original))))
                sizes.append(len(value))
                await redis.delete(key)
            out[name] = {"memory_usage_bytes": max(usages), "memory_usage_min": min(usages),
                         "value_bytes": max(sizes), "key_bytes": len(key),
                         "cosine_min": min(cosines)}
    finally:
        await redis.aclose()
    return out


def part3_l2_memory(redis: Service) -> tuple[list[Row], dict[str, Any]]:
    say("\n[3] MEMORY USAGE of one 1024-d L2 entry (KeyBuilder.l2 + encode_embedding + "
        "Envelope, SET EX), 100 random unit vectors")
    found = asyncio.run(_l2_memory(redis.url))
    for name, m in found.items():
        say(f"    {name:18s} MEMORY USAGE {m['memory_usage_bytes']:.0f} B (value "
            f"{m['value_bytes']:.0f} B, key {m['key_bytes']:.0f} B), min cosine "
            f"{m['cosine_min']:.9f}")
    f16, f32, enc = found["float16"], found["float32"], found["float16 + AES-GCM"]
    rows = [
        Row("3a L2 entry MEMORY USAGE (float16)", f"{f16['memory_usage_bytes']:,.0f} B",
            f"<= {TARGET_L2_BYTES:,} B", f"{f16['memory_usage_bytes'] / TARGET_L2_BYTES:.2f}x",
            verdict(f16["memory_usage_bytes"] <= TARGET_L2_BYTES)),
        Row("3b cosine decoded vs original (min/100)", f"{f16['cosine_min']:.9f}",
            f">= {TARGET_COSINE}", "-", verdict(f16["cosine_min"] >= TARGET_COSINE)),
        Row("3c L2 entry, float32 / float16+AES-GCM",
            f"{f32['memory_usage_bytes']:,.0f} / {enc['memory_usage_bytes']:,.0f} B",
            "(comparison)", f"{f32['memory_usage_bytes'] / f16['memory_usage_bytes']:.2f}x / "
            f"{enc['memory_usage_bytes'] / f16['memory_usage_bytes']:.2f}x", "info"),
    ]
    return rows, {"variants": found, "target_bytes": TARGET_L2_BYTES}


# --- 4. miss-path overhead --------------------------------------------------------------------


def part4_miss_overhead(rig: Rig) -> tuple[list[Row], dict[str, Any]]:
    plan = rig.plan
    say(f"\n[4] miss path: all flags on, every request a miss, vs caching off: wrk -t1 "
        f"-c{plan.miss_connections} -d{plan.seconds}s x {plan.rounds} rounds, ABBA; "
        f"AI_LATENCY_SCALE=0")
    say("    (provider latency 0: it is identical in both variants and cancels out of the "
        "difference; a sleep would only add timer jitter and hide background work; one "
        "connection, so p50 is service time, not queueing)")
    script = BENCH / "unique_query.lua"
    url = rig.service.url + rig.query_path
    probe_count = iter(range(1_000_000))

    def probe() -> str:
        return f"{QUESTION} probe {uuid.uuid4().hex} {next(probe_count)}"

    variants: dict[str, tuple[dict[str, Any], Callable[[str], bool]]] = {
        "on": ({"shadow": True, "l2": True, "l1_percent": 100},
               lambda s: s == "ai-l2; fwd=miss; stored, ai-l1; fwd=miss; stored"),
        "off": ({"shadow": False, "l2": False, "l1_percent": 0},
                lambda s: s == "ai-l2; fwd=bypass, ai-l1; fwd=bypass"),
    }

    def switch(name: str) -> None:
        flags, expected = variants[name]
        rig.set_flags(**flags)
        rig.wait_for_cache_status(probe, expected, f"flags {name}")

    def wrk_env(tag: str) -> dict[str, str]:
        return {"BENCH_RUN": f"{tag}-{uuid.uuid4().hex[:12]}", "BENCH_CLIENT": str(rig.client)}

    runs: dict[str, list[WrkResult]] = {"on": [], "off": []}
    hit_checks: list[float] = []
    for name in ("on", "off"):  # warm-up, not recorded
        switch(name)
        run_wrk(url, script, wrk_env("warm"), seconds=plan.warmup_seconds,
                connections=plan.miss_connections)
    for r in range(plan.rounds):
        for name in _alternate(r, ["on", "off"]):
            switch(name)
            before = rig.counters()
            result = run_wrk(url, script, wrk_env(f"r{r}{name}"), seconds=plan.seconds,
                             connections=plan.miss_connections, pid=rig.service.pid)
            after = rig.counters()
            hits = _delta(before, after, contract.METRIC_CACHE_HITS)
            misses = _delta(before, after, contract.METRIC_CACHE_MISSES,
                            contract.LAYER_QUERY_RESULT, contract.MODE_SERVE)
            if hits or (name == "on" and misses < result.requests):
                raise BenchError(f"round {r + 1} {name}: {hits:.0f} cache hits and {misses:.0f}"
                                 f" L1 misses for {result.requests} requests")
            hit_checks.append(hits)
            runs[name].append(result)
            say(f"    round {r + 1} flags {name:3s} {result.rps:7.0f} req/s  p50 "
                f"{result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  CPU "
                f"{result.cpu_us_per_request or 0:5.0f} us/req")
    rig.set_flags(shadow=False, l2=False, l1_percent=0)
    say("    check: every 'on' request missed L1 and L2 (metrics), no cache hits at all")

    on, off = runs["on"], runs["off"]
    added_p50 = _med([a.p50_ms - b.p50_ms for a, b in zip(on, off, strict=True)])
    added_p99 = _med([a.p99_ms - b.p99_ms for a, b in zip(on, off, strict=True)])
    added_cpu = _med([(a.cpu_us_per_request or 0) - (b.cpu_us_per_request or 0)
                      for a, b in zip(on, off, strict=True)])
    med = _medians(runs)
    rows = [
        Row("4a miss-path added p50 (all on vs off)",
            f"{med['on']['p50_ms']:.3f} vs {med['off']['p50_ms']:.3f} ms",
            f"<= {TARGET_MISS_OVERHEAD_MS:.1f} ms", f"+{added_p50:.3f} ms",
            verdict(added_p50 <= TARGET_MISS_OVERHEAD_MS)),
        Row("4b miss-path added p99 (all on vs off)",
            f"{med['on']['p99_ms']:.3f} vs {med['off']['p99_ms']:.3f} ms", "-",
            f"+{added_p99:.3f} ms", "info"),
        Row("4c miss-path added server CPU per request",
            f"{med['on']['cpu_us']:.0f} vs {med['off']['cpu_us']:.0f} us", "-",
            f"+{added_cpu:.0f} us", "info"),
    ]
    data = {
        "provider_latency_scale": 0.0,
        "wrk": {"threads": 1, "connections": plan.miss_connections, "seconds": plan.seconds,
                "rounds": plan.rounds},
        "medians": med, "added_p50_ms": added_p50, "added_p99_ms": added_p99,
        "added_cpu_us": added_cpu,
        "runs": {name: [asdict(x) for x in rs] for name, rs in runs.items()},
    }
    return rows, data


# --- driver --------------------------------------------------------------------------------


def start_rig(stack: ExitStack, plan: Plan) -> Rig:
    tmp = Path(tempfile.mkdtemp(prefix="aicache-bench-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    redis = start_redis(stack, "bench-redis")
    token, key_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
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
        "SERVICE_API_TOKEN": token,
        "CACHE_KEY_SECRET": key_secret,
        "FLAG_CACHE_SECONDS": "1.0",
        "REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_SECONDS),
    }
    port = free_port()
    service = start_server(stack, "service", [sys.executable, "-m", "app", "--host",
                                              "127.0.0.1", "--port", str(port)],
                           env=service_env, cwd=tmp, port=port)
    port = free_port()
    no_audit = start_server(stack, "service-no-audit",
                            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port",
                             str(port)],
                            env={**service_env, "L1_AUDIT_SAMPLE_RATE": "0"}, cwd=tmp, port=port)
    port = free_port()
    ceiling = start_server(stack, "ceiling", [sys.executable, "-m", "bench.ceiling_app",
                                              "--port", str(port), "--redis-url", redis.url,
                                              "--key", CEILING_KEY, "--redis-timeout",
                                              str(REDIS_TIMEOUT_SECONDS)],
                           env=base_env, cwd=tmp, port=port)
    sync_redis = SyncRedis.from_url(redis.url)
    stack.callback(sync_redis.close)
    http = httpx.Client(timeout=10.0)
    stack.callback(http.close)
    rig = Rig(plan=plan, redis=redis, sync_redis=sync_redis, service=service, no_audit=no_audit,
              ceiling=ceiling, http=http, token=token, key_secret=key_secret)
    seed_notes(rig)
    say(f"started: redis {redis.url} (pid {redis.pid}), service {service.url} (pid "
        f"{service.pid}), the same with L1_AUDIT_SAMPLE_RATE=0 {no_audit.url} (pid "
        f"{no_audit.pid}), ceiling {ceiling.url} (pid {ceiling.pid}); {len(NOTES)} notes seeded")
    return rig


def print_table(rows: Sequence[Row]) -> None:
    headers = Row("measure", "value", "target", "ratio", "verdict")
    widths = [max(len(getattr(r, f)) for r in (headers, *rows))
              for f in ("measure", "value", "target", "ratio", "verdict")]

    def line(r: Row) -> str:
        cells = (r.measure, r.value, r.target, r.ratio, r.verdict)
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    say("")
    say(line(headers))
    say("  ".join("-" * w for w in widths))
    for row in rows:
        say(line(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short run (< 1 min): fewer, shorter rounds; 10^5 instead of 10^6")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    install_signal_handlers()
    started = time.monotonic()
    say(f"service benchmark ({'quick' if plan.quick else 'full'}) on {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (a shared machine: figures are ratios)")
    rows: list[Row] = []
    data: dict[str, Any] = {"mode": "quick" if plan.quick else "full", "plan": asdict(plan),
                            "cpus": os.cpu_count(),
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        with ExitStack() as stack:
            rig = start_rig(stack, plan)
            r1, data["l1_hit"] = part1_l1_hit(rig)
            r2, data["invalidation"] = part2_invalidation(plan)
            r3, data["l2_memory"] = part3_l2_memory(rig.redis)
            r4, data["miss_path"] = part4_miss_overhead(rig)
            rows = [*r1, *r2, *r3, *r4]
    except KeyboardInterrupt:
        say("\ninterrupted: everything this benchmark started has been stopped")
        return 130
    except BenchError as exc:
        say(f"\nbenchmark failed: {exc}")
        return 1
    elapsed = time.monotonic() - started
    print_table(rows)
    say(f"\n{'quick' if plan.quick else 'full'} run, {elapsed:.0f} s, load average now "
        f"{os.getloadavg()[0]:.2f}; verdicts use medians of per-round ratios of interleaved runs")
    data["rows"] = [asdict(r) for r in rows]
    data["elapsed_seconds"] = elapsed
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(RESULTS)
        say(f"results written to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
