"""REDIS_SENTINELS / REDIS_SENTINEL_MASTER (issue 14): redis-py's Sentinel master client for
the service and the controller, the durability wait on by default, clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.main import SentinelMaster, build_redis
from app.settings import Settings
from rollout.settings import RolloutSettings

SENTINELS = "10.0.0.5:26379, 10.0.0.6:26379,[fd00::7]:26380"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_sentinels_and_a_master_name_give_a_sentinel_managed_master() -> None:
    chosen = settings(redis_url="rediss://app:pw@ignored:1/3", redis_sentinels=SENTINELS,
                      redis_sentinel_master="ai-cache")
    assert chosen.sentinel_addresses == [("10.0.0.5", 26379), ("10.0.0.6", 26379),
                                         ("fd00::7", 26380)]
    client = build_redis(chosen)
    assert isinstance(client, SentinelMaster)
    pool = client.connection_pool
    assert pool.service_name == "ai-cache"  # type: ignore[attr-defined]
    kwargs = pool.connection_kwargs
    # REDIS_URL gives database, credentials and TLS; never its host and port.
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "app", "pw")
    assert "SSL" in pool.connection_class.__name__
    assert "host" not in kwargs or kwargs["host"] != "ignored"
    await client.aclose()


def test_the_durability_wait_defaults_to_one_replica_under_sentinel() -> None:
    assert settings(redis_sentinels=SENTINELS,
                    redis_sentinel_master="m").invalidation_replicas == 1
    assert settings(redis_sentinels=SENTINELS, redis_sentinel_master="m",
                    redis_invalidation_replicas=0).invalidation_replicas == 0
    assert settings().invalidation_replicas == 0


@pytest.mark.parametrize(("values", "message"), [
    ({"redis_sentinels": "10.0.0.5"}, "REDIS_SENTINELS: '10.0.0.5' is not host:port"),
    ({"redis_sentinels": "h:port"}, "REDIS_SENTINELS: 'h:port' is not host:port"),
    ({"redis_sentinels": SENTINELS}, "REDIS_SENTINEL_MASTER: with REDIS_SENTINELS"),
    ({"redis_sentinel_master": "m"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS"),
    ({"redis_sentinels": SENTINELS, "redis_sentinel_master": "m", "redis_cluster": True},
     "REDIS_SENTINELS and REDIS_CLUSTER=true are exclusive"),
    ({"redis_sentinels": SENTINELS, "redis_sentinel_master": "m",
      "redis_url": "unix:///tmp/r.sock"}, "REDIS_URL: with REDIS_SENTINELS"),
])
def test_bad_sentinel_values_are_refused_naming_the_setting(values: dict[str, object],
                                                            message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def rollout_settings(**values: object) -> RolloutSettings:
    return RolloutSettings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_controller_reads_the_same_settings_and_wants_its_own_state_redis() -> None:
    chosen = rollout_settings(redis_url="redis://x/0", redis_sentinels=SENTINELS,
                              redis_sentinel_master="ai-cache")
    assert chosen.sentinel_addresses[0] == ("10.0.0.5", 26379)
    assert any("ROLLOUT_REDIS_URL (REDIS_SENTINELS" in m for m in chosen.missing_for_run())
    for bad, message in (({"redis_sentinels": "nope"}, "is not host:port"),
                         ({"redis_sentinels": SENTINELS}, "go together"),
                         ({"redis_sentinels": SENTINELS, "redis_sentinel_master": "m",
                           "redis_cluster": True}, "exclusive")):
        with pytest.raises(ValidationError, match=message):
            rollout_settings(**bad)
