"""A realistic, reusable traffic generator for the service.

Many workspaces and clients; questions drawn from a skewed (Zipf-like) distribution, so a
few questions repeat often — exactly repeated, never paraphrased, as cache hits need —;
a steady rate of session writes that cause invalidations. Open loop at a fixed rate, so a
slow service shows up as latency, not as less load.

    python -m scripts.traffic --url http://127.0.0.1:8000 --token T --rate 20 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

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
    latencies: list[float] = field(default_factory=list)
    l1: Counter[str] = field(default_factory=Counter)
    l2: Counter[str] = field(default_factory=Counter)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    def __init__(self, base_url: str, token: str, shape: TrafficShape | None = None,
                 seed: int = 7) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
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

    def _note(self) -> dict[str, str]:
        n = self.rng.randint(3, 9)
        return {k: self.rng.choice(v).format(n=n) for k, v in NOTE_FRAGMENTS.items()}

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def seed_notes(self, client: httpx.AsyncClient) -> None:
        """Create the initial notes (concurrently, a few at a time)."""
        semaphore = asyncio.Semaphore(8)

        async def one(ws: uuid.UUID, client_id: uuid.UUID) -> None:
            async with semaphore:
                response = await client.post(
                    f"{self.base_url}/v1/workspaces/{ws}/sessions",
                    json={"client_id": str(client_id), **self._note()}, headers=self._auth)
                response.raise_for_status()
                self.notes[ws].append(response.json()["id"])

        await asyncio.gather(*(one(ws, c) for ws in self.workspaces for c in self.clients[ws]
                               for _ in range(self.shape.notes_per_client)))

    async def _one_request(self, client: httpx.AsyncClient) -> None:
        ws = self.rng.choices(self.workspaces, self._workspace_weights)[0]
        started = time.perf_counter()
        try:
            if self.rng.random() < self.shape.write_share and self.notes[ws]:
                note = self.rng.choice(self.notes[ws])
                response = await client.patch(
                    f"{self.base_url}/v1/workspaces/{ws}/sessions/{note}",
                    json={"plan": self._note()["plan"]}, headers=self._auth)
                self.stats.writes += 1
                if response.status_code not in (200, 409):
                    self.stats.errors += 1
                return
            question = self.rng.choices(QUESTION_TEMPLATES, self._weights)[0]
            client_id = (None if self.rng.random() < self.shape.workspace_wide_share
                         else self.rng.choice(self.clients[ws]))
            response = await client.post(
                f"{self.base_url}/v1/workspaces/{ws}/query",
                json={"query": question, "client_id": str(client_id) if client_id else None})
            self.stats.queries += 1
            if response.status_code != 200:
                self.stats.errors += 1
                return
            self.stats.latencies.append(time.perf_counter() - started)
            cache = response.json()["cache"]
            self.stats.l1[cache["l1"]] += 1
            self.stats.l2[cache["l2"]] += 1
        except httpx.HTTPError:
            self.stats.errors += 1

    async def run(self, client: httpx.AsyncClient, *, rate: float, duration: float) -> TrafficStats:
        """Send `rate` requests per second for `duration` seconds (open loop)."""
        self.stats = TrafficStats()
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - start) < duration:
            due = int(elapsed * rate) + 1
            while sent < due:
                task = asyncio.create_task(self._one_request(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - start)))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        return self.stats


async def _main(args: argparse.Namespace) -> int:
    generator = TrafficGenerator(args.url, args.token, seed=args.seed)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await generator.seed_notes(client)
        stats = await generator.run(client, rate=args.rate, duration=args.duration)
    print(f"queries={stats.queries} writes={stats.writes} errors={stats.errors} "
          f"p50={stats.p(0.5) * 1000:.0f}ms p95={stats.p(0.95) * 1000:.0f}ms "
          f"l1={dict(stats.l1)} l2={dict(stats.l2)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.traffic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
