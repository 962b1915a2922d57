"""The controller's memory in Redis: state, append-only decision log, pending intent.

Keys (one namespace per rollout; the `{NAME}` hash tag keeps them in one Redis Cluster slot
so the Lua scripts may touch them together). None of them ever gets a TTL: under a
`volatile-*` policy Redis never evicts them; under `allkeys-*` it could, which is why the
controller warns at start (see `eviction_risk`) and why ROLLOUT_REDIS_URL exists.

    rollout:{NAME}:state        JSON of RolloutState.to_dict()
    rollout:{NAME}:log          Stream, one entry per cycle/command (field `entry`: JSON),
                                never trimmed
    rollout:{NAME}:intent       JSON of a stage change whose flags are being written
    rollout:{NAME}:last-cycle   JSON summary of the last evaluation (checks, flags)
    rollout:{NAME}:lease        the leader's instance id, with a PX expiry (rollout.lease)
    rollout:{NAME}:fence        the last fencing token issued (INCR, never expires)

Every write goes through one Lua script that first compares the caller's fencing token
with the fence key: a controller that was paused while another took over cannot write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from rollout.core.state import RolloutState
from rollout.ports import FencedOut, Leader, StoredSnapshot, StoreError
from rollout.records import CycleSummary, IntentRecord, LogEntry

log = logging.getLogger("rollout.state")

KEY_PREFIX: Final = "rollout"
DEFAULT_NAMESPACE: Final = "default"
ENTRY_FIELD: Final = "entry"


@dataclass(frozen=True, slots=True)
class RolloutKeys:
    """Every Redis key of one rollout. The only place key names are spelled."""

    namespace: str = DEFAULT_NAMESPACE

    def _key(self, suffix: str) -> str:
        return f"{KEY_PREFIX}:{{{self.namespace}}}:{suffix}"

    @property
    def state(self) -> str:
        return self._key("state")

    @property
    def log(self) -> str:
        return self._key("log")

    @property
    def intent(self) -> str:
        return self._key("intent")

    @property
    def last_cycle(self) -> str:
        return self._key("last-cycle")

    @property
    def lease(self) -> str:
        return self._key("lease")

    @property
    def fence(self) -> str:
        return self._key("fence")

    def all(self) -> tuple[str, ...]:
        return (self.state, self.log, self.intent, self.last_cycle, self.lease, self.fence)


# KEYS: fence, state, log, intent, last-cycle
# ARGV: token, state JSON ('' keeps it), entry JSON, 'clear'|'keep', last-cycle JSON ('' keeps)
_COMMIT: Final = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current or ''}
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
local id = redis.call('XADD', KEYS[3], '*', 'entry', ARGV[3])
if ARGV[4] == 'clear' then redis.call('DEL', KEYS[4]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5]) end
return {1, id}
"""

# KEYS: fence, intent. ARGV: token, intent JSON
_BEGIN: Final = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current or ''}
end
redis.call('SET', KEYS[2], ARGV[2])
return {1, ''}
"""


class RedisStateStore:
    """rollout.ports.StateStore over Redis. Works with either decode_responses setting."""

    def __init__(self, redis: Redis, keys: RolloutKeys | None = None, *,
                 owns_client: bool = False) -> None:
        self._redis = redis
        self.keys = keys or RolloutKeys()
        self._owns_client = owns_client
        self._commit = redis.register_script(_COMMIT)
        self._begin = redis.register_script(_BEGIN)

    @classmethod
    def from_url(cls, url: str, keys: RolloutKeys | None = None, *,
                 timeout: float = 3.0) -> RedisStateStore:
        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                decode_responses=True)
        return cls(client, keys, owns_client=True)

    @property
    def redis(self) -> Redis:
        return self._redis

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    # --- reads ---------------------------------------------------------------------------------

    async def load(self) -> StoredSnapshot:
        keys = self.keys
        try:
            raw_state, raw_intent, raw_fence = await self._redis.mget(
                [keys.state, keys.intent, keys.fence]
            )
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the rollout state: {exc}") from exc
        state = None
        if raw_state is not None:
            try:
                state = RolloutState.from_dict(json.loads(_text(raw_state)))
            except (ValueError, KeyError, TypeError) as exc:
                # Acting on a guess would be worse than stopping: a person must look.
                raise StoreError(f"{keys.state} holds an unreadable state: {exc}") from exc
        intent, unreadable = None, None
        if raw_intent is not None:
            try:
                intent = IntentRecord.model_validate_json(_text(raw_intent))
            except ValidationError:
                unreadable = _text(raw_intent)
        return StoredSnapshot(state=state, intent=intent, fence=_int(raw_fence),
                              unreadable_intent=unreadable)

    async def history(self, limit: int = 50) -> list[LogEntry]:
        """The newest `limit` log entries, newest first, each with its stream `id`."""
        try:
            rows = await self._redis.xrevrange(self.keys.log, count=max(1, limit))
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the decision log: {exc}") from exc
        return [_decode_entry(_text(entry_id), fields or {}) for entry_id, fields in rows or ()]

    async def log_length(self) -> int:
        try:
            return int(await self._redis.xlen(self.keys.log))
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the decision log: {exc}") from exc

    async def last_cycle(self) -> CycleSummary | None:
        try:
            raw = await self._redis.get(self.keys.last_cycle)
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the last cycle: {exc}") from exc
        if raw is None:
            return None
        try:
            return CycleSummary.model_validate_json(_text(raw))
        except ValidationError:
            # Only a summary for the page: the next cycle writes a good one.
            return None

    async def leader(self) -> Leader:
        """Who holds the lease now and for how many more milliseconds."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.lease)
                pipe.pttl(self.keys.lease)
                holder, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the lease: {exc}") from exc
        if holder is None:
            return Leader(None)
        return Leader(_text(holder), int(ttl) if int(ttl) >= 0 else None)

    async def rollout_names(self) -> list[str]:
        """Every `NAME` with a `rollout:{NAME}:*` key here (SCAN, never KEYS: a shared Redis
        may hold millions of cache keys)."""
        names: set[str] = set()
        try:
            async for key in self._redis.scan_iter(match=f"{KEY_PREFIX}:{{*}}:*", count=1000):
                _, _, rest = _text(key).partition(":{")
                name, closed, _ = rest.partition("}:")
                if closed:
                    names.add(name)
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot list the rollouts: {exc}") from exc
        return sorted(names)

    # --- fenced writes ---------------------------------------------------------------------------

    async def check_fence(self, token: int) -> None:
        try:
            current = await self._redis.get(self.keys.fence)
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read the fencing token: {exc}") from exc
        if _int(current) != token:
            raise FencedOut(token, _int(current))

    async def begin_transition(self, intent: IntentRecord, token: int) -> None:
        result = await self._run(
            self._begin, [self.keys.fence, self.keys.intent],
            [str(token), intent.model_dump_json()], "store the transition intent",
        )
        _check(result, token)

    async def commit(
        self,
        *,
        token: int,
        entry: LogEntry,
        state: RolloutState | None = None,
        clear_intent: bool = True,
        last_cycle: CycleSummary | None = None,
    ) -> str:
        keys = self.keys
        result = await self._run(
            self._commit,
            [keys.fence, keys.state, keys.log, keys.intent, keys.last_cycle],
            [
                str(token),
                "" if state is None else _dump(state.to_dict()),
                entry.to_json(),
                "clear" if clear_intent else "keep",
                "" if last_cycle is None else last_cycle.model_dump_json(exclude_none=True),
            ],
            "record the cycle",
        )
        _check(result, token)
        return _text(result[1])

    async def append_unfenced(self, entry: LogEntry) -> str:
        """Log an entry outside any leadership (the CLI's `flags set`). Never touches state."""
        try:
            entry_id = await self._redis.xadd(self.keys.log, {ENTRY_FIELD: entry.to_json()})
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot append to the decision log: {exc}") from exc
        return _text(entry_id)

    # --- the eviction policy ---------------------------------------------------------------------

    async def eviction_risk(self) -> str | None:
        """A warning when this Redis may evict the controller's keys, else None."""
        try:
            reply = await self._redis.config_get("maxmemory-policy")
        except ResponseError as exc:
            # Managed Redis often disables CONFIG; say so rather than pretend it is safe.
            return (f"cannot check maxmemory-policy ({exc}); make sure this Redis never evicts "
                    "the rollout:* keys (use ROLLOUT_REDIS_URL or a volatile-*/noeviction policy)")
        except (RedisError, OSError) as exc:
            return f"cannot check maxmemory-policy: {exc}"
        policy = _text(next(iter(reply.values()), "")) if reply else ""
        if policy.startswith("allkeys"):
            return (f"Redis maxmemory-policy is {policy}: under memory pressure it may evict the "
                    "rollout's state and decision log. Give the controller its own Redis "
                    "(ROLLOUT_REDIS_URL) or use a volatile-* or noeviction policy")
        return None

    async def _run(self, script: Any, keys: list[str], args: list[str], what: str) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot {what}: {exc}") from exc


def _check(result: Any, token: int) -> None:
    if int(result[0]) != 1:
        raise FencedOut(token, _int(result[1]) if result[1] not in (b"", "") else None)


def _decode_entry(entry_id: str, fields: Mapping[Any, Any]) -> LogEntry:
    raw = None
    for key, value in fields.items():
        if _text(key) == ENTRY_FIELD:
            raw = _text(value)
    return LogEntry.from_json(raw, entry_id=entry_id)


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    if value is None:
        return 0
    try:
        return int(_text(value))
    except ValueError:
        return 0
