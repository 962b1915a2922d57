"""REDIS_CLUSTER and REDIS_URL: the convention chosen for a cluster, and clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.main import build_redis
from app.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["redis://10.0.0.5:7000", "redis://10.0.0.5:7000/0",
                                 "rediss://user:pw@cache.internal:6380"])
async def test_a_cluster_is_one_node_url_and_redis_cluster_true(url: str) -> None:
    client = build_redis(settings(redis_url=url, redis_cluster=True))
    assert isinstance(client, RedisCluster)
    await client.aclose()


async def test_the_default_is_one_server() -> None:
    client = build_redis(settings(redis_url="redis://127.0.0.1:6379/3"))
    assert isinstance(client, Redis)
    await client.aclose()


@pytest.mark.parametrize(("values", "message"), [
    ({"redis_url": "redis://h:7000/2", "redis_cluster": True},
     "REDIS_URL: a Redis Cluster has only database 0"),
    ({"redis_url": "unix:///tmp/redis.sock", "redis_cluster": True},
     "REDIS_URL: with REDIS_CLUSTER=true it must be redis://host:port"),
    ({"redis_url": "redis+cluster://h:7000"}, "set REDIS_CLUSTER=true"),
    ({"redis_url": "redis://h:7000", "redis_cluster": "maybe"}, "redis_cluster"),
])
def test_bad_values_are_refused_naming_the_setting(values: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)
