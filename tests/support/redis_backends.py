"""One contract suite, three backends (issue 14): a `redis_backend` fixture parametrized over
the private single Redis and the private Redis Cluster (3 masters + 3 replicas) — and, for
the suites that opt in with `on_every_backend`, a private Sentinel-managed master (1 master,
1 replica, 3 sentinels) — and a `backend_service` fixture that runs the real service on it.

The cluster and the Sentinel deployment are started on first use (session fixtures
`redis_cluster_service`, `redis_sentinel_service`), so a run that selects only `[single]`
tests never starts them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.cache.direct import direct_commands
from app.main import SentinelMaster, build_sentinel_master
from app.providers.base import Provider
from app.settings import Settings
from devstack.network import free_port
from devstack.services import redis_sentinel as sentinel_svc
from devstack.services.common import Service
from tests.support.service import make_settings, running_service

RedisClient = Redis | RedisCluster

# The backends of the default parametrization, and all of them (the cache contract suite).
DEFAULT_BACKENDS = ["single", "cluster"]
ALL_BACKENDS = [*DEFAULT_BACKENDS, "sentinel"]
# `pytestmark = on_every_backend` in a module: its `redis_backend` tests run on all three.
on_every_backend = pytest.mark.parametrize("redis_backend", ALL_BACKENDS, indirect=True)


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


class CountingDirect:
    """The caches' direct commands (app/cache/direct.py), each counted as a round trip of
    `client` (the client they were made from)."""

    def __init__(self, client: CountingRedis | CountingRedisCluster) -> None:
        self._client = client
        self._direct = direct_commands(client)

    async def call(self, key: str, *args: Any) -> Any:
        self._client.round_trips += 1
        return await self._direct.call(key, *args)

    async def aclose(self) -> None:
        await self._direct.aclose()


class CountingSentinelMaster(CountingRedis, SentinelMaster):
    """The count on the service's Sentinel-managed master client."""


@dataclass
class RedisBackend:
    """Where the caches live in one run of a contract test; `raw` is flushed before it."""

    name: str
    url: str
    cluster: bool
    raw: RedisClient
    # Sentinel only: the settings that name the sentinels and the master.
    sentinel_settings: dict[str, str] = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        """Replicas of the master holding a workspace's keys (what the service WAITs for)."""
        return 0 if self.name == "single" else 1

    def settings_overrides(self) -> dict[str, Any]:
        """The service's settings for this backend (REDIS_URL aside)."""
        if self.cluster:
            return {"redis_cluster": True}
        return dict(self.sentinel_settings)

    def counting_client(self) -> CountingRedis | CountingRedisCluster:
        if self.cluster:
            return CountingRedisCluster.from_url(self.url)
        if self.sentinel_settings:
            counting = build_sentinel_master(self.service_settings(), CountingSentinelMaster)
            assert isinstance(counting, CountingSentinelMaster)
            return counting
        return CountingRedis.from_url(self.url)

    def unreachable_client(self) -> RedisClient:
        """A client of the same kind whose server (or sentinels) nothing listens for."""
        dead_url = f"redis://127.0.0.1:{free_port()}"
        if self.cluster:
            return RedisCluster.from_url(dead_url)
        if self.sentinel_settings:
            return build_sentinel_master(Settings(
                _env_file=None, redis_url=self.url,  # type: ignore[call-arg]
                redis_sentinels=f"127.0.0.1:{free_port()}",
                redis_sentinel_master=self.sentinel_settings["redis_sentinel_master"]))
        return Redis.from_url(dead_url)

    def service_settings(self) -> Settings:
        return backend_settings(self.url, self.settings_overrides())


def backend_settings(url: str, overrides: dict[str, Any]) -> Settings:
    """The service's settings for a backend; a 1 s connect timeout (the service's is 50 ms),
    so that a loaded CI machine does not fail a contract test's first connect."""
    return Settings(_env_file=None, redis_url=url,  # type: ignore[call-arg]
                    redis_timeout_seconds=1.0, **overrides)


@pytest.fixture(scope="session")
def redis_sentinel_service() -> Iterator[sentinel_svc.RedisSentinelService]:
    """A private Sentinel-managed master (1 replica, 3 sentinels) for the whole run, started
    on first use (tests flush it)."""
    service = sentinel_svc.start_private_sentinel(name="redis-sentinel-tests")
    yield service
    sentinel_svc.stop(service)


def sentinel_settings(service: sentinel_svc.RedisSentinelService) -> dict[str, str]:
    return {"redis_sentinels": service.sentinels,
            "redis_sentinel_master": service.master_name}


@pytest.fixture(params=DEFAULT_BACKENDS)
async def redis_backend(request: pytest.FixtureRequest) -> AsyncIterator[RedisBackend]:
    if request.param == "cluster":
        service: Service = request.getfixturevalue("redis_cluster_service")
        backend = RedisBackend("cluster", service.url, True, RedisCluster.from_url(service.url))
    elif request.param == "sentinel":
        deployment = request.getfixturevalue("redis_sentinel_service")
        chosen = sentinel_settings(deployment)
        raw = build_sentinel_master(backend_settings(deployment.url, chosen))
        backend = RedisBackend("sentinel", deployment.url, False, raw, chosen)
    else:
        service = request.getfixturevalue("redis_service")
        backend = RedisBackend("single", service.url, False, Redis.from_url(service.url))
    await backend.raw.flushall()
    yield backend
    await backend.raw.aclose()


@pytest.fixture
def backend_service(redis_backend: RedisBackend, sqlite_url: str) -> Callable[..., Any]:
    """`async with backend_service(**overrides) as (client, app)`: the real service on
    SQLite and on the parametrized Redis (REDIS_CLUSTER=true for the cluster, REDIS_SENTINELS
    and REDIS_SENTINEL_MASTER for Sentinel)."""

    def make(provider: Provider | None = None, **overrides: Any) -> Any:
        database_url = overrides.pop("database_url", sqlite_url)
        settings = make_settings(redis_backend.url, database_url,
                                 **{**redis_backend.settings_overrides(), **overrides})
        return running_service(settings, provider=provider)

    return make
