"""Traffic under a Redis failover (issue 14), shared by the Cluster and Sentinel failover
tests: steady readers and note writers through the real service, every answer checked by
the race test's oracle, and the cache errors the service counted meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from tests.integration.test_invalidation_race import cited_versions
from tests.integration.test_query_api import AUTH, CLIENT, WS
from tests.support.service import metric_value


class Traffic:
    """Readers and writers until stopped; every answer checked against the versions whose
    write had returned before the query started (the race test's oracle)."""

    def __init__(self, client: httpx.AsyncClient, notes: list[dict[str, object]]) -> None:
        self.client = client
        self.acknowledged = {str(n["id"]): 1 for n in notes}
        self.violations: list[str] = []
        self.answers = 0
        self.hits = 0
        self.cache_errors = 0
        self.stop = asyncio.Event()
        self.rng = random.Random(7)

    async def reader(self) -> None:
        while not self.stop.is_set():
            required = dict(self.acknowledged)
            response = await self.client.post(
                f"/v1/workspaces/{WS}/query", headers=AUTH,
                json={"query": "How is the patient sleeping?",
                      "client_id": self.rng.choice([str(CLIENT), None])})
            assert response.status_code == 200, response.text
            self.answers += 1
            self.hits += response.json()["cache"]["l1"] == "hit"
            self.cache_errors += response.json()["cache"]["l1"] == "error"
            for session, version in cited_versions(response.json()["answer"]).items():
                if version < required[session]:
                    self.violations.append(f"{session} v{version} < v{required[session]}")
            await asyncio.sleep(0.005)

    async def writer(self) -> None:
        revision = 0
        while not self.stop.is_set():
            target = self.rng.choice(list(self.acknowledged))
            revision += 1
            response = await self.client.patch(
                f"/v1/workspaces/{WS}/sessions/{target}", headers=AUTH,
                json={"plan": f"Revision {revision} at {time.monotonic()}"})
            if response.status_code == 409:
                continue
            assert response.status_code == 200, response.text
            self.acknowledged[target] = max(self.acknowledged[target],
                                            response.json()["version"])
            await asyncio.sleep(self.rng.uniform(0.05, 0.15))

    @contextlib.asynccontextmanager
    async def running(self, *, readers: int = 6, writers: int = 2) -> AsyncIterator[Traffic]:
        """Readers and writers for the duration of the block; their failures are raised."""
        workers = [asyncio.create_task(self.reader()) for _ in range(readers)]
        workers += [asyncio.create_task(self.writer()) for _ in range(writers)]
        try:
            yield self
        finally:
            self.stop.set()
            await asyncio.gather(*workers, return_exceptions=False)

    async def until(self, condition: str, predicate: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
            await asyncio.sleep(0.05)


def cache_errors(app: FastAPI) -> float:
    """Every cache error the service counted (lookups, fills, invalidations, deletes)."""
    return sum(metric_value(app, "ai_agent_cache_errors_total", cache_layer=layer, op=op)
               for layer in ("query_result", "embedding")
               for op in ("lookup", "fill", "invalidate", "delete"))
