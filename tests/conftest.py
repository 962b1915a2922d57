"""Fixtures that start real services (private Redis, PostgreSQL) and build the service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.providers.base import Provider
from devstack.services import postgres as pg
from devstack.services import redis as redis_svc
from devstack.services import redis_cluster as cluster_svc
from devstack.services.common import Service
from tests.support.service import make_settings, running_service

# The real-Unleash fixtures (one server per session, started on first use).
pytest_plugins = ["tests.support.unleash", "tests.support.redis_backends"]

@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service]:
    """A private Redis for the whole run (never a shared one: tests flush it)."""
    service = redis_svc.start_private_redis(name="redis-tests")
    yield service
    redis_svc.stop(service)


@pytest.fixture(scope="session")
def redis_cluster_service() -> Iterator[cluster_svc.RedisClusterService]:
    """A private Redis Cluster (3 masters + 3 replicas) for the whole run, started on first
    use (tests flush it)."""
    service = cluster_svc.start_private_cluster(name="redis-cluster-tests")
    yield service
    cluster_svc.stop(service)


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Service]:
    service = pg.ensure_postgres(name="postgres-tests")
    yield service
    pg.stop(service)


@pytest.fixture(scope="session")
def postgres_url(postgres_service: Service) -> Iterator[str]:
    name = f"aicache_test_{uuid.uuid4().hex[:10]}"
    url = pg.create_database(postgres_service, name)
    yield url
    pg.drop_database(postgres_service, name)


@pytest.fixture
async def redis(redis_service: Service) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_service.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"


@pytest.fixture
def service(redis: Redis, redis_service: Service, sqlite_url: str) -> Callable[..., Any]:
    """`async with service(**setting_overrides) as (client, app)`: SQLite + private Redis."""

    def make(provider: Provider | None = None, **overrides: Any) -> Any:
        database_url = overrides.pop("database_url", sqlite_url)
        settings = make_settings(redis_service.url, database_url, **overrides)
        return running_service(settings, provider=provider)

    return make
