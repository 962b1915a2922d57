"""The rollout flags in the local flag store: the Redis hash of app.contract (DESIGN.md §3).

Same interface as the Unleash adapter (rollout.ports.FlagWriter), for runs without Unleash.
The hash holds `shadow` and `l2` as "0"/"1" and `l1_percent` as "0".."100"; reading follows
the service's rules (anything but "1" is off, a malformed or out-of-range percentage is 0), so
the controller sees exactly what the service applies. `apply` writes all three fields in one
HSET, so the service never reads a half-written stage, and only when a field differs from its
canonical text (a hand-edited " 1" is rewritten as "1").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Self

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    AuthenticationError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from app.contract import (
    FLAG_L1_QUERY_RESULTS,
    FLAG_L2_EMBEDDINGS,
    FLAG_SHADOW_MODE,
    LOCAL_FIELD_L1_PERCENT,
    LOCAL_FIELD_L2,
    LOCAL_FIELD_SHADOW,
    LOCAL_FLAGS_KEY,
)
from rollout.core.flags import FlagSettings
from rollout.ports import ApplyResult, FlagWrite, PermanentFlagError, TemporaryFlagError

_FLAG_OF_FIELD: Final = {
    LOCAL_FIELD_SHADOW: FLAG_SHADOW_MODE,
    LOCAL_FIELD_L2: FLAG_L2_EMBEDDINGS,
    LOCAL_FIELD_L1_PERCENT: FLAG_L1_QUERY_RESULTS,
}


def encode_settings(settings: FlagSettings) -> dict[str, str]:
    """The canonical hash fields for `settings`."""
    return {
        LOCAL_FIELD_SHADOW: "1" if settings.shadow else "0",
        LOCAL_FIELD_L2: "1" if settings.l2 else "0",
        LOCAL_FIELD_L1_PERCENT: str(settings.l1_percent),
    }


def decode_settings(fields: Mapping[str, str]) -> FlagSettings:
    """Hash fields → settings, by the service's rules: missing or malformed means off."""
    try:
        percent = int(fields.get(LOCAL_FIELD_L1_PERCENT, "").strip() or 0)
    except ValueError:
        percent = 0
    return FlagSettings(
        shadow=fields.get(LOCAL_FIELD_SHADOW, "").strip() == "1",
        l2=fields.get(LOCAL_FIELD_L2, "").strip() == "1",
        l1_percent=percent if 0 <= percent <= 100 else 0,
    )


class LocalFlagWriter:
    """FlagWriter over the local flag store. Owns the Redis client only if it made it."""

    def __init__(self, redis: Redis | RedisCluster, *, key: str = LOCAL_FLAGS_KEY,
                 owns_client: bool = False, sentinel: Sentinel | None = None) -> None:
        self._redis = redis
        self._key = key
        self._owns_client = owns_client
        self._sentinel = sentinel  # closed with the client we made

    @classmethod
    def from_url(cls, url: str, *, key: str = LOCAL_FLAGS_KEY, timeout: float = 2.0,
                 cluster: bool = False, sentinels: Sequence[tuple[str, int]] = (),
                 sentinel_master: str = "", sentinel_password: str | None = None,
                 ) -> LocalFlagWriter:
        """`cluster`: `url` names one node of the Redis Cluster the service's caches and
        flag store live on (REDIS_CLUSTER=true); the hash is one key, so one slot.
        `sentinels`: the store is on the master `sentinel_master` these sentinels monitor
        (REDIS_SENTINELS), `url` giving only its database, credentials and TLS."""
        # Short timeouts: a hung Redis must cost the controller one cycle, not hang it.
        if sentinels:
            sentinel = Sentinel(list(sentinels), sentinel_kwargs={  # type: ignore[no-untyped-call]
                "socket_timeout": timeout, "socket_connect_timeout": timeout,
                "password": sentinel_password})
            master = sentinel.master_for(sentinel_master, **_master_options(url),
                                         socket_timeout=timeout,
                                         socket_connect_timeout=timeout, decode_responses=False)
            return cls(master, key=key, owns_client=True, sentinel=sentinel)
        client: Redis | RedisCluster = (
            RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  decode_responses=False) if cluster else
            Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                           decode_responses=False))
        return cls(client, key=key, owns_client=True)

    @property
    def target(self) -> str:
        if isinstance(self._redis, RedisCluster):
            seed = self._redis.get_default_node()
            where = f"{seed.host}:{seed.port}" if seed else "?"
            return f"local flag store redis cluster {where} key={self._key}"
        kwargs = self._redis.connection_pool.connection_kwargs
        if self._sentinel is not None:
            master = getattr(self._redis.connection_pool, "service_name", "?")
            return (f"local flag store redis sentinel master {master}/{kwargs.get('db', 0)} "
                    f"key={self._key}")
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        return f"local flag store redis {where}/{kwargs.get('db', 0)} key={self._key}"

    async def read(self) -> FlagSettings:
        return decode_settings(await self._fields())

    async def apply(self, desired: FlagSettings) -> ApplyResult:
        current = await self._fields()
        wanted = encode_settings(desired)
        changed = {f: v for f, v in wanted.items() if current.get(f) != v}
        writes: tuple[FlagWrite, ...] = ()
        if changed:
            try:
                await self._redis.hset(self._key, mapping=wanted)  # type: ignore[arg-type]
            except (RedisError, RedisClusterException, OSError) as exc:
                raise _error(exc, "HSET", self._key) from exc
            writes = tuple(
                FlagWrite(_FLAG_OF_FIELD[f], "hset",
                          f"{f} {current.get(f, '<missing>')!s} -> {v}")
                for f, v in changed.items()
            )
        return ApplyResult(before=decode_settings(current), after=desired, writes=writes)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
            if self._sentinel is not None:
                await self._sentinel.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _fields(self) -> dict[str, str]:
        try:
            raw = await self._redis.hgetall(self._key)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise _error(exc, "HGETALL", self._key) from exc
        return {_text(k): _text(v) for k, v in raw.items()}


def _master_options(url: str) -> dict[str, Any]:
    """REDIS_URL's database, credentials and TLS for a Sentinel-managed master (the
    sentinels name its host and port)."""
    options: dict[str, Any] = dict(parse_url(url))
    for sentinel_given in ("host", "port", "path"):
        options.pop(sentinel_given, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True  # SentinelConnectionPool picks its own TLS connection class
    return options


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _error(exc: BaseException, command: str, key: str) -> TemporaryFlagError | PermanentFlagError:
    message = f"Redis {command} {key} failed: {type(exc).__name__}: {exc}"
    # These do not heal by waiting: the key holds another type, or the password is wrong.
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("WRONGTYPE", "NOAUTH", "NOPERM"))
    ):
        return PermanentFlagError(message, operation=f"{command} {key}")
    return TemporaryFlagError(message, operation=f"{command} {key}")
