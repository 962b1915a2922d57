"""One contract suite, two backends (issue 14): a `redis_backend` fixture parametrized over
the private single Redis and the private Redis Cluster (3 masters + 3 replicas), and a
`backend_service` fixture that runs the real service on it.

The cluster is started on first use (session fixture `redis_cluster_service`), so a run
that selects only `[single]` tests never starts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.providers.base import Provider
from devstack.services.common import Service
from tests.support.service import make_settings, running_service

RedisClient = Redis | RedisCluster


class CountingRedis(Redis):
    """Counts the requests the client sends (a pipeline is one)."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.round_trips += 1
        return super().pipeline(transaction, shard_hint)


class CountingRedisCluster(RedisCluster):
    """The same count on a cluster: a command (routed to its slot's node) is one; a
    pipeline is one (its commands go to their nodes concurrently)."""

    round_trips = 0

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        self.round_trips += 1
        return super().pipeline(transaction, shard_hint)


@dataclass
class RedisBackend:
    """Where the caches live in one run of a contract test; `raw` is flushed before it."""

    name: str
    url: str
    cluster: bool
    raw: RedisClient

    def counting_client(self) -> CountingRedis | CountingRedisCluster:
        if self.cluster:
            return CountingRedisCluster.from_url(self.url)
        return CountingRedis.from_url(self.url)


@pytest.fixture(params=["single", "cluster"])
async def redis_backend(request: pytest.FixtureRequest) -> AsyncIterator[RedisBackend]:
    if request.param == "cluster":
        service: Service = request.getfixturevalue("redis_cluster_service")
        raw: RedisClient = RedisCluster.from_url(service.url)
    else:
        service = request.getfixturevalue("redis_service")
        raw = Redis.from_url(service.url)
    await raw.flushall()
    yield RedisBackend(request.param, service.url, request.param == "cluster", raw)
    await raw.aclose()


@pytest.fixture
def backend_service(redis_backend: RedisBackend, sqlite_url: str) -> Callable[..., Any]:
    """`async with backend_service(**overrides) as (client, app)`: the real service on
    SQLite and on the parametrized Redis (REDIS_CLUSTER=true for the cluster)."""

    def make(provider: Provider | None = None, **overrides: Any) -> Any:
        database_url = overrides.pop("database_url", sqlite_url)
        settings = make_settings(redis_backend.url, database_url,
                                 redis_cluster=redis_backend.cluster, **overrides)
        return running_service(settings, provider=provider)

    return make
