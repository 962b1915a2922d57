"""Helpers to run the real service in-process and poke at it (flags, metrics, waiting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app import contract
from app.main import create_app
from app.providers.base import Provider
from app.settings import Settings
from tests.support.auth import SECRET


async def set_flags(redis: Redis | RedisCluster, *, shadow: bool = False, l2: bool = False,
                    l1_percent: int = 0) -> None:
    await redis.hset(contract.LOCAL_FLAGS_KEY, mapping={
        contract.LOCAL_FIELD_SHADOW: int(shadow),
        contract.LOCAL_FIELD_L2: int(l2),
        contract.LOCAL_FIELD_L1_PERCENT: l1_percent,
    })


def make_settings(redis_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "ai_provider": "local",
        "ai_latency_scale": 0.0,
        "local_embedding_dimensions": 256,
        # JWTs from tests.support.auth; no static token unless a test opts in.
        "auth_jwt_secret": SECRET,
        "service_api_token": None,
        "redis_timeout_seconds": 1.0,
        "flag_cache_seconds": 0.0,
        "l1_audit_sample_rate": 0.0,
        "breaker_reset_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_service(
    settings: Settings, *, provider: Provider | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The real app (lifespan and all) behind an in-process HTTP client."""
    app = create_app(settings, registry=CollectorRegistry(), provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client, app


def metric_value(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.container.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def wait_for(predicate: Callable[[], Awaitable[bool]], *, timeout: float,
                   what: str, interval: float = 0.02) -> None:
    """Poll an async condition until true; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
