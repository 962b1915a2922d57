"""Sticky percentage bucketing, identical to Unleash's flexibleRollout.

Unleash normalises `"{groupId}:{identifier}"` with murmur3 x86_32 (seed 0) into 1..100 and
enables the flag when that number is <= the rollout percentage. Using the same function
means the local flag store and Unleash put every workspace in the same cohort, and a
workspace in the 10 % is still in the 50 %.
"""

from __future__ import annotations

import mmh3

NORMALIZER = 100


def normalized_bucket(identifier: str, group_id: str) -> int:
    return int(mmh3.hash(f"{group_id}:{identifier}", 0, signed=False)) % NORMALIZER + 1


def in_rollout(identifier: str, group_id: str, percentage: int) -> bool:
    return percentage > 0 and normalized_bucket(identifier, group_id) <= percentage
