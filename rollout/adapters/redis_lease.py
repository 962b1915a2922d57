"""One active controller: a Redis lease with a fencing token.

Acquisition is `SET lease owner NX PX ttl` plus `INCR fence`, in one Lua script so that a
token is issued exactly when the lease is won. Renewal extends the expiry only while the key
still names this owner *and* the fence still holds this process's token (two processes
started with the same ROLLOUT_INSTANCE_ID cannot both believe they lead). Every state write
checks the token (rollout.adapters.redis_state), so a leader that was paused past its lease
and wakes up cannot overwrite its successor's state.

Leadership is also bounded locally: a process considers itself leader only until
`renewed_at + ttl * safety` on its own monotonic clock, so it stops acting before the key
can have expired in Redis, even if it cannot reach Redis to learn that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from rollout.adapters.redis_state import RolloutKeys

log = logging.getLogger("rollout.lease")

# KEYS: lease, fence. ARGV: owner, ttl ms. Returns the new token, or 0 when held by another.
_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

# KEYS: lease, fence. ARGV: owner, ttl ms, token. 1 = renewed, 0 = lost.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease, fence. ARGV: owner, token.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """rollout.ports.Lease over Redis. Call `refresh()` every ttl/3 or so."""

    def __init__(
        self,
        redis: Redis,
        keys: RolloutKeys,
        owner: str,
        *,
        ttl_seconds: float = 15.0,
        safety: float = 0.8,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the lease needs a positive ttl")
        self._redis = redis
        self._keys = keys
        self._owner = owner
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._valid_for = ttl_seconds * safety
        self._monotonic = monotonic
        self._token: int | None = None
        self._valid_until = 0.0
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def token(self) -> int | None:
        return self._token if self.is_leader else None

    @property
    def is_leader(self) -> bool:
        return self._token is not None and self._monotonic() < self._valid_until

    @property
    def ttl_seconds(self) -> float:
        return self._ttl_ms / 1000

    async def refresh(self) -> bool:
        """Renew if leading, else try to acquire. Redis errors propagate (the caller logs);
        leadership then lapses by itself when the local validity runs out."""
        started = self._monotonic()
        keys = [self._keys.lease, self._keys.fence]
        try:
            if self._token is not None:
                renewed = await self._renew(
                    keys=keys, args=[self._owner, self._ttl_ms, self._token]
                )
                if int(renewed) == 1:
                    self._valid_until = started + self._valid_for
                    return True
                log.warning("lost the controller lease (token %s)", self._token,
                            extra={"owner": self._owner})
                self.lost()
            token = int(await self._acquire(keys=keys, args=[self._owner, self._ttl_ms]))
        except RedisError:
            if not self.is_leader:
                self._token = None
            raise
        if token > 0:
            self._token = token
            self._valid_until = started + self._valid_for
            log.info("acquired the controller lease with fencing token %s", token,
                     extra={"owner": self._owner, "fence": token})
            return True
        return False

    async def release(self) -> None:
        """Give the lease up (on shutdown) so that a standby takes over at once."""
        token = self._token
        self.lost()
        if token is None:
            return
        await self._release(keys=[self._keys.lease, self._keys.fence], args=[self._owner, token])

    async def holder(self) -> str | None:
        raw = await self._redis.get(self._keys.lease)
        if raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def lost(self) -> None:
        self._token = None
        self._valid_until = 0.0
