"""The local flag store writer against a real Redis (a private redis-server per session)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.contract import (
    FLAG_L1_QUERY_RESULTS,
    FLAG_SHADOW_MODE,
    LOCAL_FIELD_L1_PERCENT,
    LOCAL_FIELD_L2,
    LOCAL_FIELD_SHADOW,
    LOCAL_FLAGS_KEY,
)
from app.flags.local import LocalFlagSource
from devstack.services.common import Service
from devstack.services.redis import start_private_redis
from devstack.services.redis import stop as stop_redis
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.composition import build_flag_writer
from rollout.core.flags import FlagSettings
from rollout.ports import FlagWriter, PermanentFlagError, TemporaryFlagError
from rollout.settings import RolloutSettings

pytestmark = pytest.mark.integration

SETTINGS = [
    FlagSettings(),
    FlagSettings(shadow=True),
    FlagSettings(shadow=True, l2=True),
    FlagSettings(shadow=True, l2=True, l1_percent=10),
    FlagSettings(shadow=True, l2=True, l1_percent=50),
    FlagSettings(l2=True, l1_percent=100),
    FlagSettings(),
]


@pytest.fixture(scope="session")
def local_flags_redis() -> Iterator[Service]:
    service = start_private_redis(name="redis-local-flags-tests")
    try:
        yield service
    finally:
        stop_redis(service)


@pytest.fixture
async def redis(local_flags_redis: Service) -> AsyncIterator[Redis]:
    client = Redis.from_url(local_flags_redis.url, decode_responses=True)
    await client.delete(LOCAL_FLAGS_KEY)
    yield client
    await client.aclose()


@pytest.fixture
async def writer(local_flags_redis: Service) -> AsyncIterator[LocalFlagWriter]:
    async with LocalFlagWriter.from_url(local_flags_redis.url) as flag_writer:
        yield flag_writer


async def hset_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hset", {}).get("calls", 0))


async def test_round_trip_one_hset_per_change(writer: LocalFlagWriter, redis: Redis) -> None:
    assert isinstance(writer, FlagWriter)
    assert await writer.read() == FlagSettings()  # no hash yet: everything off

    previous = FlagSettings()
    first = True
    for settings in SETTINGS:
        calls = await hset_calls(redis)
        result = await writer.apply(settings)
        # The first apply writes the hash even for "off": the store then says it explicitly.
        expected_calls = 1 if (settings != previous or first) else 0
        assert await hset_calls(redis) - calls == expected_calls
        assert result.before == previous and result.after == settings
        assert await writer.read() == settings
        assert await redis.hgetall(LOCAL_FLAGS_KEY) == {
            LOCAL_FIELD_SHADOW: "1" if settings.shadow else "0",
            LOCAL_FIELD_L2: "1" if settings.l2 else "0",
            LOCAL_FIELD_L1_PERCENT: str(settings.l1_percent),
        }

        calls = await hset_calls(redis)
        assert (await writer.apply(settings)).writes == ()
        assert await hset_calls(redis) == calls
        previous, first = settings, False


async def test_writes_name_the_flags_that_changed(writer: LocalFlagWriter) -> None:
    await writer.apply(FlagSettings(shadow=True, l2=True, l1_percent=10))
    result = await writer.apply(FlagSettings(shadow=False, l2=True, l1_percent=50))
    assert sorted((w.flag, w.detail) for w in result.writes) == [
        (FLAG_L1_QUERY_RESULTS, "l1_percent 10 -> 50"),
        (FLAG_SHADOW_MODE, "shadow 1 -> 0"),
    ]


async def test_malformed_values_read_as_off_and_are_rewritten(
    writer: LocalFlagWriter, redis: Redis,
) -> None:
    await redis.hset(LOCAL_FLAGS_KEY, mapping={
        LOCAL_FIELD_SHADOW: "yes", LOCAL_FIELD_L2: " 1", LOCAL_FIELD_L1_PERCENT: "150",
    })
    # Read as the service reads: only "1" is on (stripped), an out-of-range percentage is 0.
    assert await writer.read() == FlagSettings(shadow=False, l2=True, l1_percent=0)

    result = await writer.apply(FlagSettings(l2=True))
    assert {w.detail for w in result.writes} == {"shadow yes -> 0", "l2  1 -> 1",
                                                 "l1_percent 150 -> 0"}
    assert await redis.hgetall(LOCAL_FLAGS_KEY) == {
        LOCAL_FIELD_SHADOW: "0", LOCAL_FIELD_L2: "1", LOCAL_FIELD_L1_PERCENT: "0"}


async def test_other_fields_in_the_hash_are_left_alone(
    writer: LocalFlagWriter, redis: Redis,
) -> None:
    await redis.hset(LOCAL_FLAGS_KEY, "note", "set by a person")
    await writer.apply(FlagSettings(l1_percent=10))
    assert await redis.hget(LOCAL_FLAGS_KEY, "note") == "set by a person"


async def test_wrong_key_type_is_a_permanent_error(
    local_flags_redis: Service, redis: Redis,
) -> None:
    await redis.set("ai-cache:flags-test-string", "oops")
    async with LocalFlagWriter.from_url(local_flags_redis.url,
                                        key="ai-cache:flags-test-string") as writer:
        with pytest.raises(PermanentFlagError, match="WRONGTYPE"):
            await writer.read()


async def test_redis_down_is_a_temporary_error() -> None:
    service = start_private_redis(name="redis-local-flags-down")
    running = True
    try:
        async with LocalFlagWriter.from_url(service.url, timeout=1.0) as writer:
            await writer.apply(FlagSettings(l2=True))  # a pooled connection exists
            stop_redis(service)
            running = False
            with pytest.raises(TemporaryFlagError, match="Redis"):
                await writer.read()
            with pytest.raises(TemporaryFlagError):
                await writer.apply(FlagSettings())
    finally:
        if running:
            stop_redis(service)


async def test_on_a_cluster_the_service_reads_each_stage_the_controller_writes(
    redis_cluster_service: Service,
) -> None:
    """REDIS_CLUSTER=true for both: build_flag_writer makes a cluster writer, and the
    service's local flag source (its cluster client) reads exactly what it wrote."""
    settings = RolloutSettings(  # type: ignore[call-arg]
        _env_file=None, redis_url=redis_cluster_service.url, redis_cluster=True)
    assert "ROLLOUT_REDIS_URL" in " ".join(settings.missing_for_run())
    reader = RedisCluster.from_url(redis_cluster_service.url)
    await reader.delete(LOCAL_FLAGS_KEY)
    source = LocalFlagSource(reader, cache_seconds=0.0, timeout_seconds=2.0)
    writer = build_flag_writer(settings)
    assert isinstance(writer, LocalFlagWriter) and "redis cluster" in writer.target
    async with writer:
        for stage in SETTINGS:
            await writer.apply(stage)
            seen = await source.snapshot()
            assert (seen.shadow, seen.l2, seen.l1_percent, seen.source) == (
                stage.shadow, stage.l2, stage.l1_percent, "local")
    await reader.aclose()
