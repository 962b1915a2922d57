"""A realistic, reusable traffic generator for the service.

Many workspaces and clients; questions drawn from a skewed (Zipf-like) distribution, so a
few questions repeat often — exactly repeated, never paraphrased, as cache hits need —;
a steady rate of session writes that cause invalidations. Open loop at a fixed rate, so a
slow service shows up as latency, not as less load.

    python -m scripts.traffic --url http://127.0.0.1:8000 --jwt-secret S --rate 20 --duration 60

Several `--url`s (replicas) share the load round-robin. Every request carries a bearer
token: a given one (`--token`: a JWT naming the generator's workspaces, or the service's
static SERVICE_API_TOKEN), or, from a `LocalIssuer` (`--jwt-secret`, the service's
AUTH_JWT_SECRET), an HS256 JWT for the generator's own workspaces with role clinician.
Library use: `TrafficGenerator(urls, token_or_issuer, shape, seed)`, `await
seed_notes(client)`, then `await run(client, rate=…, duration=…)` or, open-ended,
`run(client, rate=…, stop=event)`; observers get one `RequestRecord` per request as it
completes (the demo attributes them to rollout stages).
Pass a client from `transport.load_client()`: httpx's own connection pool costs O(requests
in flight) per request, which at ~100 in flight makes the generator, not the service, slow.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from devstack.auth import LocalIssuer

QUESTION_TEMPLATES = [
    "How has the client's sleep changed over the last sessions?",
    "What medication changes were made recently?",
    "Summarise the current treatment plan.",
    "What triggers for anxiety has the client reported?",
    "Has the client mentioned any side effects?",
    "What homework was assigned in the last session?",
    "How is the client's mood trending?",
    "Were there any safety concerns noted?",
    "What coping strategies are working?",
    "What are the goals agreed for the next month?",
    "How is the client's appetite?",
    "Has the client's work situation changed?",
    "What did the client say about family support?",
    "Is the client attending group sessions?",
    "What was the assessment at intake?",
    "How often is the client exercising?",
]
NOTE_FRAGMENTS = {
    "subjective": ["Reports sleeping {n} hours a night.", "Feels anxious before work meetings.",
                   "Mood is better this week.", "Appetite reduced; skipping breakfast.",
                   "Family visit went well; felt supported."],
    "objective": ["Calm, good eye contact.", "Restless, fidgeting.", "Speech normal rate.",
                  "Appears tired.", "Engaged and future-oriented."],
    "assessment": ["Generalised anxiety, improving.", "Insomnia persists.",
                   "Depressive symptoms stable.", "Good response to CBT techniques.",
                   "No current safety concerns."],
    "plan": ["Continue sertraline {n}0 mg.", "Sleep hygiene homework.",
             "Practise breathing exercise daily.", "Review in two weeks.",
             "Refer to group therapy."],
}


@dataclass
class TrafficStats:
    queries: int = 0
    writes: int = 0
    errors: int = 0
    shed: int = 0  # not sent: `max_in_flight` requests were already waiting
    latencies: list[float] = field(default_factory=list)
    l1: Counter[str] = field(default_factory=Counter)
    l2: Counter[str] = field(default_factory=Counter)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request, for observers (per-stage statistics, live views)."""

    at: float  # wall clock (time.time()) when the request was sent
    kind: Literal["query", "write"]
    ok: bool
    latency: float  # seconds, as the client saw it
    status: int | None = None  # None: no HTTP answer (connection refused, timeout)
    l1: str | None = None  # the body's cache outcome, queries with a 200 only
    l2: str | None = None


Observer = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class TrafficShape:
    workspaces: int = 12
    clients_per_workspace: int = 4
    notes_per_client: int = 3
    zipf_s: float = 1.1
    workspace_wide_share: float = 0.2
    write_share: float = 0.03  # of all requests


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank ** s) for rank in range(1, n + 1)]


class TrafficGenerator:
    def __init__(self, base_url: str | Sequence[str], token: str | LocalIssuer,
                 shape: TrafficShape | None = None, seed: int = 7, *,
                 observers: Sequence[Observer] = ()) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("TrafficGenerator needs at least one base URL")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.base_url = self.base_urls[0]
        # Round-robin like the simplest load balancer: every replica sees the same mix.
        self._turn = itertools.cycle(self.base_urls)
        self.observers: list[Observer] = list(observers)
        self.shape = shape or TrafficShape()
        self.rng = random.Random(seed)
        self.stats = TrafficStats()
        self.workspaces = [uuid.UUID(int=self.rng.getrandbits(128), version=4)
                           for _ in range(self.shape.workspaces)]
        self.clients = {ws: [uuid.UUID(int=self.rng.getrandbits(128), version=4)
                             for _ in range(self.shape.clients_per_workspace)]
                        for ws in self.workspaces}
        self.notes: dict[uuid.UUID, list[str]] = {ws: [] for ws in self.workspaces}
        self._weights = zipf_weights(len(QUESTION_TEMPLATES), self.shape.zipf_s)
        self._workspace_weights = zipf_weights(len(self.workspaces), 0.8)
        self.token = (token if isinstance(token, str) else
                      token.token(self.workspaces, role="clinician", sub="traffic-generator"))
        self._auth = {"Authorization": f"Bearer {self.token}"}

    def _url(self) -> str:
        return next(self._turn)

    def workspace_shares(self) -> dict[uuid.UUID, float]:
        """Each workspace's expected share of the requests (its Zipf weight, normalised)."""
        total = sum(self._workspace_weights)
        return {ws: w / total for ws, w in zip(self.workspaces, self._workspace_weights,
                                                 strict=True)}

    def _observe(self, record: RequestRecord) -> None:
        for observer in self.observers:
            observer(record)

    def _note(self) -> dict[str, str]:
        n = self.rng.randint(3, 9)
        return {k: self.rng.choice(v).format(n=n) for k, v in NOTE_FRAGMENTS.items()}

    async def seed_notes(self, client: httpx.AsyncClient) -> None:
        """Create the initial notes (concurrently, a few at a time)."""
        semaphore = asyncio.Semaphore(8)

        async def one(ws: uuid.UUID, client_id: uuid.UUID) -> None:
            async with semaphore:
                response = await client.post(
                    f"{self._url()}/v1/workspaces/{ws}/sessions",
                    json={"client_id": str(client_id), **self._note()}, headers=self._auth)
                response.raise_for_status()
                self.notes[ws].append(response.json()["id"])

        await asyncio.gather(*(one(ws, c) for ws in self.workspaces for c in self.clients[ws]
                               for _ in range(self.shape.notes_per_client)))

    async def _one_request(self, client: httpx.AsyncClient) -> None:
        ws = self.rng.choices(self.workspaces, self._workspace_weights)[0]
        sent_at = time.time()
        started = time.perf_counter()
        kind: Literal["query", "write"] = "query"
        status: int | None = None
        ok = False
        l1 = l2 = None
        try:
            if self.rng.random() < self.shape.write_share and self.notes[ws]:
                kind = "write"
                note = self.rng.choice(self.notes[ws])
                self.stats.writes += 1
                response = await client.patch(
                    f"{self._url()}/v1/workspaces/{ws}/sessions/{note}",
                    json={"plan": self._note()["plan"]}, headers=self._auth)
                status = response.status_code
                ok = status in (200, 409)  # 409: a concurrent update won, as it may
                if not ok:
                    self.stats.errors += 1
                return
            question = self.rng.choices(QUESTION_TEMPLATES, self._weights)[0]
            client_id = (None if self.rng.random() < self.shape.workspace_wide_share
                         else self.rng.choice(self.clients[ws]))
            self.stats.queries += 1
            response = await client.post(
                f"{self._url()}/v1/workspaces/{ws}/query",
                json={"query": question, "client_id": str(client_id) if client_id else None},
                headers=self._auth)
            status = response.status_code
            if status != 200:
                self.stats.errors += 1
                return
            ok = True
            self.stats.latencies.append(time.perf_counter() - started)
            cache = response.json()["cache"]
            l1, l2 = cache["l1"], cache["l2"]
            self.stats.l1[l1] += 1
            self.stats.l2[l2] += 1
        except httpx.HTTPError:
            self.stats.errors += 1
        finally:
            if self.observers:
                self._observe(RequestRecord(
                    at=sent_at, kind=kind, ok=ok, latency=time.perf_counter() - started,
                    status=status, l1=l1, l2=l2))

    async def run(self, client: httpx.AsyncClient, *, rate: float,
                  duration: float = math.inf, stop: asyncio.Event | None = None,
                  drain_timeout: float = 30.0,
                  max_in_flight: int | None = None) -> TrafficStats:
        """Send `rate` requests per second (open loop) for `duration` seconds or until `stop`
        is set, then wait up to `drain_timeout` s for the requests still in flight.

        With `max_in_flight`, a request due while that many are still open is not sent
        (counted in `stats.shed`): an overloaded machine then sees less load instead of an
        ever-growing queue inside the generator.
        """
        if math.isinf(duration) and stop is None:
            raise ValueError("run() without a duration needs a stop event")
        self.stats = TrafficStats()
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - start) < duration:
            if stop is not None and stop.is_set():
                break
            due = int(elapsed * rate) + 1
            while sent < due:
                if max_in_flight is not None and len(tasks) >= max_in_flight:
                    self.stats.shed += 1
                    sent += 1
                    continue
                task = asyncio.create_task(self._one_request(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - start)))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
        return self.stats
