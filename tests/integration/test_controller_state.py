"""The controller's Redis state store, decision log and lease/fencing against a real Redis
(the private redis-server of tests/conftest.py), and one cycle end to end on it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devstack.services.common import Service
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.redis_lease import RedisLease
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.controller import Controller
from rollout.core.state import RolloutState
from rollout.cycle import run_cycle
from rollout.metrics import ControllerMetrics
from rollout.ports import FencedOut
from rollout.records import CycleSummary, IntentRecord, LogEntry
from rollout.runtime_types import CyclePorts
from tests.unit.rollout_runtime.fakes import (
    MID,
    OFF,
    T0,
    FakeMetricsSource,
    RecordingNotifier,
    SimulatedCrash,
    small_plan,
)

pytestmark = pytest.mark.integration


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = 5.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {within}s")


@pytest.fixture
async def client(redis_service: Service) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_service.url, decode_responses=True)
    yield redis
    await redis.aclose()


@pytest.fixture
def keys() -> RolloutKeys:
    return RolloutKeys(f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def store(client: Redis, keys: RolloutKeys) -> AsyncIterator[RedisStateStore]:
    yield RedisStateStore(client, keys)
    await client.delete(*keys.all())


async def token_for(store: RedisStateStore) -> int:
    return int(await store.redis.incr(store.keys.fence))


CYCLE = LogEntry(kind="cycle", at=T0)
INTENT = IntentRecord(at=T0, action="advance", by="controller", from_stage="off",
                      to_stage="mid", flags=MID, state=RolloutState.initial("mid", T0).to_dict())

# --- state and log ---------------------------------------------------------------------------


async def test_state_round_trips_under_a_key_that_never_expires(
    store: RedisStateStore, client: Redis
) -> None:
    assert (await store.load()).state is None
    token = await token_for(store)
    state = RolloutState(2, "l2", T0, pass_streak=3, baseline={"p95": 1.75},
                         failure_streaks={"errors": 1})
    await store.commit(token=token, entry=CYCLE, state=state)
    loaded = await store.load()
    assert loaded.state == state and loaded.fence == token
    for key in (store.keys.state, store.keys.log, store.keys.fence):
        assert await client.ttl(key) == -1  # no expiry: nothing but eviction could drop it
    assert all(key.startswith("rollout:{") for key in store.keys.all())


async def test_the_log_is_append_only_and_read_newest_first(store: RedisStateStore) -> None:
    token = await token_for(store)
    for number in range(25):
        await store.commit(token=token, entry=LogEntry(kind="cycle", at=T0, note=str(number)))
    assert await store.log_length() == 25
    newest = await store.history(limit=10)
    assert [e.note for e in newest] == [str(n) for n in range(24, 14, -1)]
    assert all(e.id for e in newest)
    assert len(await store.history(limit=100)) == 25


async def test_commit_writes_state_log_last_cycle_and_clears_the_intent_atomically(
    store: RedisStateStore,
) -> None:
    token = await token_for(store)
    await store.begin_transition(INTENT, token)
    assert (await store.load()).intent == INTENT
    await store.commit(token=token, entry=CYCLE, clear_intent=False)
    assert (await store.load()).intent is not None
    await store.commit(token=token, entry=CYCLE, state=RolloutState.initial("mid", T0),
                       last_cycle=CycleSummary(kind="cycle", action="hold"))
    snapshot = await store.load()
    assert snapshot.intent is None and snapshot.state is not None
    assert await store.last_cycle() == CycleSummary(kind="cycle", action="hold")


async def test_a_stale_token_can_write_nothing(store: RedisStateStore) -> None:
    old = await token_for(store)
    await store.commit(token=old, entry=CYCLE, state=RolloutState.initial("off", T0))
    new = await token_for(store)
    with pytest.raises(FencedOut) as fenced:
        await store.commit(token=old, entry=CYCLE,
                           state=RolloutState.initial("mid", T0))
    assert fenced.value.current == new
    with pytest.raises(FencedOut):
        await store.begin_transition(INTENT, old)
    with pytest.raises(FencedOut):
        await store.check_fence(old)
    snapshot = await store.load()
    assert snapshot.state is not None and snapshot.state.stage_name == "off"
    assert snapshot.intent is None and await store.log_length() == 1
    await store.check_fence(new)


async def test_eviction_policy_warning(store: RedisStateStore, client: Redis) -> None:
    original = (await client.config_get("maxmemory-policy"))["maxmemory-policy"]
    try:
        await client.config_set("maxmemory-policy", "allkeys-lru")
        warning = await store.eviction_risk()
        assert warning is not None and "allkeys-lru" in warning
        assert "ROLLOUT_REDIS_URL" in warning
        for safe in ("volatile-lru", "noeviction"):
            await client.config_set("maxmemory-policy", safe)
            assert await store.eviction_risk() is None
    finally:
        await client.config_set("maxmemory-policy", original)


# --- lease and fencing -----------------------------------------------------------------------


def lease(client: Redis, keys: RolloutKeys, owner: str, ttl: float = 0.5) -> RedisLease:
    return RedisLease(client, keys, owner, ttl_seconds=ttl)


async def test_one_leads_the_other_stands_by_and_takes_over_when_renewals_stop(
    client: Redis, keys: RolloutKeys, store: RedisStateStore
) -> None:
    first, second = lease(client, keys, "A"), lease(client, keys, "B")
    assert await first.refresh() is True
    assert await second.refresh() is False
    assert first.is_leader and not second.is_leader
    assert await second.holder() == "A"
    first_token = first.token
    assert first_token is not None

    assert await first.refresh() is True  # renewing keeps the token
    assert first.token == first_token
    # A stops renewing (paused, or partitioned): B takes over once the key expires.
    await eventually(second.refresh, within=3.0, what="takeover by the standby")
    assert second.token is not None and second.token > first_token
    assert await second.holder() == "B"

    # A's local validity has lapsed too, and when it wakes its renewal fails.
    await eventually(lambda: _async(not first.is_leader), what="A stops leading")
    assert await first.refresh() is False
    # Whatever A still tries to write is rejected by the fence.
    with pytest.raises(FencedOut):
        await store.commit(token=first_token, entry=CYCLE,
                           state=RolloutState.initial("mid", T0))
    assert (await store.load()).state is None


async def test_release_hands_over_at_once(client: Redis, keys: RolloutKeys) -> None:
    first, second = lease(client, keys, "A", ttl=30), lease(client, keys, "B", ttl=30)
    assert await first.refresh()
    assert not await second.refresh()
    await first.release()
    assert not first.is_leader
    assert await second.refresh()


async def test_a_duplicate_instance_id_cannot_lead_twice(
    client: Redis, keys: RolloutKeys
) -> None:
    first, twin = lease(client, keys, "same", ttl=30), lease(client, keys, "same", ttl=30)
    assert await first.refresh()
    assert not await twin.refresh()


async def _async(value: bool) -> bool:
    return value


# --- a cycle on the real store ---------------------------------------------------------------


@pytest.fixture
async def flags(redis_service: Service, keys: RolloutKeys) -> AsyncIterator[LocalFlagWriter]:
    writer = LocalFlagWriter.from_url(redis_service.url, key=f"{keys.namespace}:flags")
    yield writer
    await writer.aclose()


async def test_crash_between_flag_write_and_state_write_recovers_once_on_redis(
    store: RedisStateStore, flags: LocalFlagWriter, client: Redis
) -> None:
    plan = small_plan()
    source = FakeMetricsSource(flags)
    registry = CollectorRegistry()
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=RecordingNotifier(), metrics=ControllerMetrics(registry, plan),
                       instance_id="A")
    token = await token_for(store)
    await run_cycle(ports, now=T0, token=token)
    assert await flags.read() == OFF

    original_commit = store.commit

    async def dying_commit(**kwargs: object) -> str:
        state = kwargs.get("state")
        if isinstance(state, RolloutState) and state.stage_name == "mid":
            raise SimulatedCrash("killed after the flags, before the state")
        return await original_commit(**kwargs)  # type: ignore[arg-type]

    store.commit = dying_commit  # type: ignore[method-assign]
    with pytest.raises(SimulatedCrash):
        await run_cycle(ports, now=T0 + timedelta(seconds=70), token=token)
    store.commit = original_commit  # type: ignore[method-assign]
    assert await flags.read() == MID
    snapshot = await store.load()
    assert snapshot.state is not None and snapshot.state.stage_name == "off"
    assert snapshot.intent is not None and snapshot.intent.to_stage == "mid"

    # A new controller (new token) starts and reconciles.
    successor = await token_for(store)
    fresh_registry = CollectorRegistry()
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=RecordingNotifier(),
                       metrics=ControllerMetrics(fresh_registry, plan), instance_id="B")
    flags_before = await client.hgetall(f"{store.keys.namespace}:flags")
    await run_cycle(ports, now=T0 + timedelta(seconds=80), token=successor)
    snapshot = await store.load()
    assert snapshot.state is not None and snapshot.state.stage_name == "mid"
    assert snapshot.intent is None
    assert await client.hgetall(f"{store.keys.namespace}:flags") == flags_before
    kinds = [e.kind for e in await store.history(10)]
    assert kinds[:2] == ["cycle", "recovered"]
    assert fresh_registry.get_sample_value(
        "rollout_transitions_total", {"from_stage": "off", "to_stage": "mid", "kind": "advance"}
    ) == 1


async def test_two_controllers_only_one_acts(
    client: Redis, keys: RolloutKeys, store: RedisStateStore, flags: LocalFlagWriter
) -> None:
    plan = small_plan()
    source = FakeMetricsSource(flags)
    controllers = []
    for owner in ("A", "B"):
        ports = CyclePorts(plan=plan, store=RedisStateStore(client, keys), flags=flags,
                           metrics_source=source, instance_id=owner,
                           metrics=ControllerMetrics(CollectorRegistry(), plan))
        controllers.append(Controller(ports, lease(client, keys, owner, ttl=30),
                                      clock=lambda: T0))
    leaders = [await c.refresh_lease() for c in controllers]
    assert leaders == [True, False]
    reports = [await c.tick() for c in controllers]
    assert reports[0] is not None and reports[1] is None
    entries = await store.history(10)
    assert [e.instance for e in entries] == ["A"]
