"""The local store's bucketing must equal Unleash's flexibleRollout, workspace by workspace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from UnleashClient import UnleashClient
from UnleashClient.cache import FileCache
from UnleashClient.utils import InstanceAllowType, normalized_hash

from app import contract
from app.flags.bucketing import in_rollout, normalized_bucket

WORKSPACES = [str(uuid.UUID(int=(i * 2654435761) % (1 << 128))) for i in range(10_000)]


def test_buckets_equal_the_unleash_sdk_normalisation_for_10000_ids() -> None:
    group = contract.L1_ROLLOUT_GROUP_ID
    assert [normalized_bucket(ws, group) for ws in WORKSPACES] == [
        normalized_hash(ws, group) for ws in WORKSPACES
    ]


@pytest.fixture(scope="module")
def unleash_at() -> Iterator[Any]:
    """A real UnleashClient evaluating a bootstrapped flexibleRollout (no server needed)."""
    clients: list[UnleashClient] = []

    def make(percent: int, tmp: str) -> UnleashClient:
        cache = FileCache(f"bucketing-{percent}", directory=tmp)
        cache.bootstrap_from_dict({
            "version": 1,
            "features": [{
                "name": contract.FLAG_L1_QUERY_RESULTS, "enabled": True, "type": "release",
                "strategies": [{"name": "flexibleRollout", "parameters": {
                    "rollout": str(percent), "stickiness": "userId",
                    "groupId": contract.L1_ROLLOUT_GROUP_ID}}],
            }],
        })
        client = UnleashClient(
            url="http://127.0.0.1:9/api", app_name="bucketing-test", cache=cache,
            disable_metrics=True, disable_registration=True,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )
        client.initialize_client(fetch_toggles=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.destroy()


@pytest.mark.parametrize("percent", [10, 50])
def test_cohorts_equal_unleash_client_decisions(unleash_at: Any, percent: int,
                                                tmp_path: Any) -> None:
    client = unleash_at(percent, str(tmp_path))
    ours = [in_rollout(ws, contract.L1_ROLLOUT_GROUP_ID, percent) for ws in WORKSPACES]
    theirs = [client.is_enabled(contract.FLAG_L1_QUERY_RESULTS, {"userId": ws})
              for ws in WORKSPACES]
    assert ours == theirs
    assert abs(sum(ours) / len(ours) - percent / 100) < 0.02


def test_cohorts_only_grow_as_the_percentage_rises() -> None:
    group = contract.L1_ROLLOUT_GROUP_ID
    ten = {ws for ws in WORKSPACES if in_rollout(ws, group, 10)}
    fifty = {ws for ws in WORKSPACES if in_rollout(ws, group, 50)}
    assert ten < fifty
    assert all(in_rollout(ws, group, 100) for ws in WORKSPACES)
    assert not any(in_rollout(ws, group, 0) for ws in WORKSPACES)
