"""Helpers for the observability proof (tests/integration/test_observability_proof.py): real
service and controller processes, background traffic, and the vector selectors of a PromQL
expression.

Everything here starts processes on 127.0.0.1 only and stops them by their own pid.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.environment import child_env
from devstack.network import free_port
from devstack.processes import log_tail, pid_alive, spawn, stop_pid
from devstack.readiness import wait_for_http
from devstack.traffic.generator import TrafficGenerator, TrafficStats


@dataclass
class Process:
    """One child process we started; `stop()` signals only its pid, while it is ours."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_file: Path

    @property
    def target(self) -> str:
        return self.url.removeprefix("http://")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines)

    def wait_ready(self, path: str, *, timeout: float = 45.0) -> None:
        """Until `path` answers 200; fails early (with the log) if the process died."""
        wait_for_http(self.popen, f"{self.url}{path}", what=self.name,
                      log_file=self.log_file, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> None:
        stop_pid(self.popen.pid, timeout=timeout)
        assert not pid_alive(self.popen.pid)


def _spawn(name: str, args: list[str], env: dict[str, str], workdir: Path,
           port: int) -> Process:
    log_file = workdir / f"{name}.log"
    popen = spawn(args, log_file=log_file, env=env, cwd=workdir)
    return Process(name=name, url=f"http://127.0.0.1:{port}", popen=popen, log_file=log_file)


def start_service(name: str, *, redis_url: str, database_url: str, token: str,
                  workdir: Path, **settings: str) -> Process:
    """`python -m app --port P` with the local provider; returns once /readyz is 200."""
    port = free_port()
    env = child_env(
        REDIS_URL=redis_url, DATABASE_URL=database_url, AI_PROVIDER="local",
        SERVICE_API_TOKEN=token, INSTANCE_NAME=name, LOG_FORMAT="json",
        LOG_LEVEL="WARNING", **settings,
    )
    process = _spawn(name, [sys.executable, "-m", "app", "--port", str(port)], env, workdir,
                     port)
    try:
        process.wait_ready("/readyz")
    except BaseException:
        process.stop()
        raise
    return process


def spawn_controller(name: str, *, port: int, redis_url: str, prometheus_url: str,
                     token: str, workdir: Path, **settings: str) -> Process:
    """`python -m rollout run` (local flag store in `redis_url`); not waited for."""
    env = child_env(
        REDIS_URL=redis_url, PROMETHEUS_URL=prometheus_url, ROLLOUT_API_TOKEN=token,
        ROLLOUT_HOST="127.0.0.1", ROLLOUT_PORT=str(port), ROLLOUT_INSTANCE_ID=name,
        ROLLOUT_LOG_LEVEL="WARNING", **settings,
    )
    return _spawn(name, [sys.executable, "-m", "rollout", "run"], env, workdir, port)


# --- traffic -------------------------------------------------------------------------------


@dataclass
class TrafficTotals:
    queries: int = 0
    writes: int = 0
    errors: int = 0
    l1: dict[str, int] = field(default_factory=dict)
    l2: dict[str, int] = field(default_factory=dict)

    def add(self, stats: TrafficStats) -> None:
        self.queries += stats.queries
        self.writes += stats.writes
        self.errors += stats.errors
        for mine, theirs in ((self.l1, stats.l1), (self.l2, stats.l2)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count


class BackgroundTraffic:
    """The traffic generator (devstack/traffic) against several service replicas, in a
    thread, until stopped.

    One generator per replica (each replica has its own notes database), each seeding its
    notes first, then sending short open-loop bursts at `rate` requests/s until `stop()`.
    """

    def __init__(self, base_urls: list[str], token: str, *, rate: float,
                 burst_seconds: float = 2.0) -> None:
        self.generators = [TrafficGenerator(url, token, seed=7 + index)
                           for index, url in enumerate(base_urls)]
        self.rate = rate
        self.burst_seconds = burst_seconds
        self.totals = TrafficTotals()
        self.failure: BaseException | None = None
        self.seeded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="traffic", daemon=True)

    def start(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def wait_seeded(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.seeded.wait(0.1):
            self.raise_if_failed()
            if time.monotonic() >= deadline:
                raise AssertionError(f"traffic: notes not seeded within {timeout:g}s")

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"traffic generator failed: {self.failure!r}") from self.failure

    def stop(self) -> TrafficTotals:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        return self.totals

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the test thread
            self.failure = exc

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(g.seed_notes(client) for g in self.generators))
            self.seeded.set()
            while not self._stop.is_set():
                bursts = await asyncio.gather(*(
                    g.run(client, rate=self.rate, duration=self.burst_seconds)
                    for g in self.generators))
                for stats in bursts:
                    self.totals.add(stats)


# --- PromQL ----------------------------------------------------------------------------------

_TOKENS = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<braces>\{(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^}"'])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d[\w.]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>\S)
""", re.VERBOSE)
# Followed by a parenthesised list of label names, not by an expression.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left",
                                  "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"})


def vector_selectors(expr: str) -> list[str]:
    """Every instant/range vector selector of `expr` (`name{matchers}`), in order, unique.

    A small tokenizer, enough for the PromQL this repository writes: function and
    aggregation names (an identifier before `(` or `by`/`without`), keywords, label lists
    after `by`/`on`/..., strings, ranges and numbers are skipped.
    """
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKENS.finditer(expr)]
    selectors: list[str] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "ident" and text.lower() in _LABEL_LIST_KEYWORDS:
            index += 1
            if index < len(tokens) and tokens[index][0] == "open":
                depth = 0
                while index < len(tokens):
                    depth += {"open": 1, "close": -1}.get(tokens[index][0], 0)
                    index += 1
                    if depth == 0:
                        break
            continue
        if kind == "ident" and (text.lower() in _KEYWORDS or following[0] == "open"
                                or following[1].lower() in {"by", "without"}):
            index += 1
            continue
        if kind == "ident":
            selector = text + (following[1] if following[0] == "braces" else "")
            index += 2 if following[0] == "braces" else 1
        elif kind == "braces":
            selector = text
            index += 1
        else:
            index += 1
            continue
        if selector not in selectors:
            selectors.append(selector)
    return selectors


def metric_name(selector: str) -> str:
    return selector.split("{", 1)[0]
