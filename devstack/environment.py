"""The environment of a child process we start (a service replica, `rollout run`): the
parent's, less every variable of ours that could point the child somewhere else.

A developer's shell often holds REDIS_URL, PROMETHEUS_URL or UNLEASH_* for a stack of their
own; a test or the demo that passed them on would make its children read and write that
stack instead of the private services started for them, and a stray setting would change
what is measured. So every prefix the service's or the controller's settings read is
scrubbed, and the caller sets exactly what the child should see.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from devstack.paths import REPO_ROOT

# Each prefix, and why it must not leak into a child:
SCRUBBED_PREFIXES: tuple[str, ...] = (
    "REDIS_",         # REDIS_URL (caches, local flags), REDIS_TIMEOUT_SECONDS, REDIS_EXPORTER_URL
    "DATABASE_",      # DATABASE_URL: the notes database the child would read and write
    "PROMETHEUS_",    # PROMETHEUS_URL (+ timeout): where the controller measures its gates
    "ALERTMANAGER_",  # ALERTMANAGER_URL / _WEBHOOK_URL: where the starters' alerts would go
    "ROLLOUT_",       # the controller: its state Redis, plan, time scale, port, API token,
                      # webhook, instance id; any of them turns a test's controller into another
    "UNLEASH_",       # the flag source: a set UNLEASH_URL switches the service and controller
                      # from the local store to somebody's Unleash
    "SERVICE_",       # SERVICE_API_TOKEN: the static-token opt-in, only where a test sets it
    "AUTH_",          # AUTH_JWT_SECRET / _JWKS_FILE / _JWKS_URL / _AUDIENCE: which tokens the
                      # child trusts; a developer's identity provider must not be one of them
    "INSTANCE_",      # INSTANCE_NAME: the replica label the metrics are told apart by
    "AI_",            # AI_PROVIDER, AI_LATENCY_SCALE (the service's provider and its speed)
    "LOCAL_",         # the local provider's latencies, error rate and embedding size
    "COHERE_",        # COHERE_API_KEY & co.: a key in the shell must never reach a test child
    "PRICE_",         # the prices behind the cost metric the cost gates judge
    "CACHE_",         # CACHE_KEY_SECRET / _ENCRYPTION_KEY / _KEY_PREFIX: replicas must share
                      # the keys they are given, not a developer's
    "L1_", "L2_",     # cache TTLs, scope, dtype, audit rate: what the rollout measures
    "FLAG_",          # FLAG_CACHE_SECONDS: how soon a replica sees a flag change
    "BREAKER_",       # the Redis circuit breaker's threshold and reset
    "RETRIEVAL_",     # RETRIEVAL_TOP_K: how much work an answer is
    "MAX_QUERY_",     # MAX_QUERY_CHARS
    "QUERY_",         # QUERY_FAST_PATH: which code path serves the hit path
    "LOG_",           # LOG_FORMAT / LOG_LEVEL: the children's logs are parsed as set here
)


def is_ours(name: str) -> bool:
    """A variable that the service's or the controller's settings would read."""
    return name.startswith(SCRUBBED_PREFIXES)


def scrubbed(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) without any variable of ours."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if not is_ours(name)}


def child_env(values: Mapping[str, str] | None = None, /, **more: str) -> dict[str, str]:
    """The scrubbed environment, the repository on the import path (children run in a
    scratch directory, where no stray .env file is read), then exactly `values` and `more`."""
    return scrubbed() | {"PYTHONPATH": str(REPO_ROOT)} | dict(values or {}) | more
