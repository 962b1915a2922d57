"""Composition root: builds every collaborator from one Settings object and wires the app."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from starlette.types import Receive, Scope, Send

from app import contract
from app.api.auth import AUDIT_FIELDS, AUDIT_LOGGER, Authenticate
from app.api.deps import ServiceContainer
from app.api.errors import install_error_handlers
from app.api.fast_query import QueryFastPath
from app.api.limits import BodyLimit
from app.api.routes import router
from app.auth.jwks import JwksError, open_jwks
from app.auth.verifier import TokenVerifier
from app.cache.breaker import BreakerState, CircuitBreaker
from app.cache.codec import Envelope
from app.cache.keys import KeyBuilder
from app.cache.store import RedisCache
from app.db.outbox import OutboxRepository
from app.db.repository import NotesRepository, make_engine
from app.flags.base import FlagSnapshot, FlagSource, FlagSourceState
from app.flags.local import LocalFlagSource
from app.logs import configure_logging, route_lines
from app.metrics import ServiceMetrics
from app.providers.base import Provider
from app.providers.local import LocalProvider
from app.providers.metered import MeteredProvider
from app.serve import Listen, reuse_port_socket, run_uvicorn
from app.service.invalidation import Invalidator
from app.service.outbox import InvalidationOutbox
from app.service.query import QueryService
from app.service.sessions import SessionService
from app.settings import Settings

log = logging.getLogger(__name__)


DEV_KEY_SECRET = Settings.model_fields["cache_key_secret"].default.get_secret_value()


class ConfigurationError(ValueError):
    """A setting is unusable; the message names it."""


def build_provider(settings: Settings) -> Provider:
    if settings.ai_provider == "cohere":
        from app.providers.cohere import CohereProvider  # noqa: PLC0415 - only when chosen

        return CohereProvider.from_settings(settings)
    return LocalProvider(
        dimensions=settings.local_embedding_dimensions,
        embed_latency_seconds=settings.local_embed_latency_seconds,
        chat_latency_seconds=settings.local_chat_latency_seconds,
        latency_scale=settings.ai_latency_scale,
        error_rate=settings.local_error_rate,
    )


def build_envelope(settings: Settings) -> Envelope:
    secret = settings.cache_encryption_key
    if secret is None or not secret.get_secret_value():
        return Envelope()
    try:
        key = base64.b64decode(secret.get_secret_value(), validate=True)
    except binascii.Error as exc:
        raise ConfigurationError("CACHE_ENCRYPTION_KEY must be base64") from exc
    try:
        return Envelope(key, settings.cache_encryption_key_id)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def build_redis(settings: Settings) -> Redis | RedisCluster:
    # No client-side retries: the breaker and the fresh path are the fallback, and a retry
    # would double the time a sick Redis costs each request. Deadlines are asyncio timeouts
    # around each operation (RedisCache), not socket timeouts: with a socket timeout,
    # redis-py can swallow a task cancellation (redis/redis-py#2551).
    if settings.redis_cluster:
        # MOVED/ASK redirections are followed whatever the retries; after a connection error
        # to a node the client re-reads the topology on its next command (a failover).
        return RedisCluster.from_url(
            settings.redis_url,
            socket_timeout=None,
            socket_connect_timeout=settings.redis_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=False,
        )
    if settings.redis_sentinels:
        return build_sentinel_master(settings)
    return Redis.from_url(settings.redis_url, **_server_options(settings))


class SentinelMaster(Redis):
    """`master_for`'s client, closing the sentinels' own clients when it is closed."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


def build_sentinel_master(settings: Settings,
                          redis_class: type[SentinelMaster] = SentinelMaster) -> Redis:
    """The Sentinel-managed master (REDIS_SENTINELS, REDIS_SENTINEL_MASTER) as redis-py's
    `Sentinel(...).master_for(name)` gives it: each new connection asks the sentinels where
    the master is (a failover is followed at the next connection, and a command that failed
    drops its connection), and a connection to a demoted master is dropped at its first
    READONLY reply. Database, credentials and TLS come from REDIS_URL; host and port from
    the sentinels."""
    options: dict[str, Any] = dict(parse_url(settings.redis_url))
    for sentinel_given in ("host", "port", "path"):
        options.pop(sentinel_given, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True  # SentinelConnectionPool picks its own TLS connection class
    password = settings.redis_sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py: untyped
        settings.sentinel_addresses,
        # The sentinels' clients as the master's: no retries, no socket timeout (the
        # caller's asyncio deadline bounds each operation, the connect included).
        sentinel_kwargs={
            "socket_timeout": None,
            "socket_connect_timeout": settings.redis_timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
            "password": password.get_secret_value() if password else None,
        },
    )
    master: Redis = sentinel.master_for(settings.redis_sentinel_master,
                                        redis_class=redis_class,
                                        **{**options, **_server_options(settings)})
    return master


def _server_options(settings: Settings) -> dict[str, Any]:
    """One server's client options (single Redis, Sentinel's master): see build_redis."""
    return {"socket_timeout": None, "socket_connect_timeout": settings.redis_timeout_seconds,
            "retry": Retry(NoBackoff(), 0), "retry_on_timeout": False,
            "health_check_interval": 0, "decode_responses": False}


async def build_flag_source(settings: Settings, redis: Redis | RedisCluster) -> FlagSource:
    if settings.unleash_url:
        from app.flags.unleash import UnleashFlagSource  # noqa: PLC0415 - only when chosen

        return await UnleashFlagSource.start(settings)
    source = LocalFlagSource(redis, cache_seconds=settings.flag_cache_seconds,
                             timeout_seconds=max(settings.redis_timeout_seconds, 0.2))
    await source.snapshot()  # know the flags (or that they are unreadable) before serving
    return source


async def build_verifier(settings: Settings, stack: AsyncExitStack) -> TokenVerifier:
    """The bearer token verifier of DESIGN.md §4, its JWKS read once before serving."""
    try:
        jwks = await open_jwks(
            file=settings.auth_jwks_file, url=settings.auth_jwks_url,
            timeout_seconds=settings.auth_jwks_timeout_seconds,
            refresh_seconds=settings.auth_jwks_refresh_seconds,
            min_refetch_seconds=settings.auth_jwks_min_refetch_seconds, stack=stack)
    except (JwksError, OSError, httpx.HTTPError) as exc:
        raise ConfigurationError(f"AUTH_JWKS_FILE {settings.auth_jwks_file}: {exc}") from exc
    secret = settings.auth_jwt_secret
    static = settings.service_api_token
    verifier = TokenVerifier(
        audience=settings.auth_audience,
        hs256_secret=secret.get_secret_value().encode() if secret else None,
        jwks=jwks,
        static_token=static.get_secret_value() if static else None,
        issuer=settings.auth_issuer,
        leeway_seconds=settings.auth_leeway_seconds,
        cache_seconds=settings.auth_token_cache_seconds,
    )
    if static is not None:
        log.warning("SERVICE_API_TOKEN is set: that one static token reaches every workspace "
                    "as role service (meant for local runs and demos)")
    if not verifier.configured:
        log.warning("none of AUTH_JWT_SECRET, AUTH_JWKS_FILE, AUTH_JWKS_URL, SERVICE_API_TOKEN "
                    "is set: every /v1 request is refused (401)")
    return verifier


class _FlagGauge:
    """Exports what this instance applies, refreshed whenever the snapshot is read."""

    def __init__(self, source: FlagSource, metrics: ServiceMetrics) -> None:
        self._source = source
        self._metrics = metrics
        self._last: FlagSnapshot | None = None

    @property
    def state(self) -> FlagSourceState:
        return self._source.state

    async def snapshot(self) -> FlagSnapshot:
        snap = await self._source.snapshot()
        if snap is not self._last:
            self._last = snap
            gauge = self._metrics.flag_state
            gauge.labels(flag=contract.FLAG_SHADOW_MODE).set(int(snap.shadow))
            gauge.labels(flag=contract.FLAG_L2_EMBEDDINGS).set(int(snap.l2))
            gauge.labels(flag=contract.FLAG_L1_QUERY_RESULTS).set(snap.l1_percent)
        return snap

    def l1_enabled_for(self, snapshot: FlagSnapshot, workspace_id: str) -> bool:
        return self._source.l1_enabled_for(snapshot, workspace_id)

    async def aclose(self) -> None:
        await self._source.aclose()


class ServiceApp(FastAPI):
    """The FastAPI application with the query fast path (app/api/fast_query.py) in front of
    all of it — FastAPI's own per-request work (its telemetry check, Starlette's middleware
    stack) included — so that an L1 hit passes through nothing else."""

    def __init__(self, *, fast_path: bool, fast_path_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast_path = QueryFastPath(
            super().__call__, container=lambda: self.state.container,
            max_body_bytes=fast_path_body_bytes, exception_handlers=self.exception_handlers,
        ) if fast_path else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fast_path is not None and scope["type"] == "http":
            await self._fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    provider: Provider | None = None,
) -> FastAPI:
    """The service. Collaborators are built in the lifespan, from `settings` only."""
    metrics = ServiceMetrics(registry or CollectorRegistry())
    envelope = build_envelope(settings)  # fail at construction, not at the first request
    if settings.cache_key_secret.get_secret_value() == DEV_KEY_SECRET:
        log.warning("CACHE_KEY_SECRET is the development default; set a secret in production")
    # The audit log speaks at INFO whatever LOG_LEVEL says (it is not diagnostics).
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            verifier = await build_verifier(settings, stack)
            redis = build_redis(settings)
            stack.push_async_callback(redis.aclose)
            engine = make_engine(settings.database_url)
            notes = NotesRepository(engine)
            stack.push_async_callback(notes.aclose)
            await notes.create_schema()

            inner = provider or build_provider(settings)
            metered = MeteredProvider(inner, metrics, embed_price=settings.price_embed_usd,
                                      chat_price=settings.price_chat_usd)
            stack.push_async_callback(metered.aclose)

            on_redis_back: list[Callable[[], None]] = []

            def on_breaker(state: BreakerState) -> None:
                metrics.cache_circuit_open.set(1 if state is BreakerState.OPEN else 0)
                log.warning("redis circuit breaker %s", state.value)
                if state is BreakerState.CLOSED:
                    for hook in on_redis_back:
                        hook()

            breaker = CircuitBreaker(settings.breaker_failure_threshold,
                                     settings.breaker_reset_seconds, on_change=on_breaker)
            cache = RedisCache(redis, breaker, metrics,
                               timeout_seconds=settings.redis_timeout_seconds,
                               generation_ttl_seconds=max(86_400, settings.l1_ttl_seconds * 2),
                               wait_replicas=settings.invalidation_replicas,
                               wait_ms=settings.redis_invalidation_wait_ms)
            stack.push_async_callback(cache.aclose)
            keys = KeyBuilder(settings.cache_key_secret.get_secret_value().encode(),
                              settings.cache_key_prefix)
            flags = _FlagGauge(await build_flag_source(settings, redis), metrics)
            stack.push_async_callback(flags.aclose)
            outbox = InvalidationOutbox(
                OutboxRepository(engine), Invalidator(cache, keys, metrics), metrics,
                poll_seconds=settings.outbox_poll_seconds,
                lease_seconds=settings.outbox_lease_seconds,
                retry_max_seconds=settings.outbox_retry_max_seconds,
            )
            on_redis_back.append(outbox.redis_recovered)
            await outbox.start()  # what is still pending is known before the first answer
            stack.push_async_callback(outbox.aclose)
            queries = QueryService(
                settings=settings, provider=metered, notes=notes, cache=cache, keys=keys,
                envelope=envelope, flags=flags, metrics=metrics, outbox=outbox,
            )
            stack.push_async_callback(queries.drain)
            sessions = SessionService(provider=metered, notes=notes, outbox=outbox)
            app.state.container = ServiceContainer(
                settings=settings, metrics=metrics, queries=queries, sessions=sessions,
                outbox=outbox, cache=cache, notes=notes, flags=flags,
                verifier=verifier,
            )
            log.info("service ready: provider=%s flags=%s l2_scope=%s encryption=%s",
                     metered.name, flags.state, settings.l2_scope,
                     "on" if envelope.encrypting else "off")
            yield

    app = ServiceApp(
        fast_path=settings.query_fast_path,
        # A JSON-escaped query may take 6 bytes a character; a longer body is the route's
        # (and one over MAX_BODY_BYTES is BodyLimit's to refuse).
        fast_path_body_bytes=min(settings.max_query_chars * 6 + 1024, settings.max_body_bytes),
        title="AI cache service",
        summary="Clinical RAG answers over session notes, with L1/L2 Redis caches behind flags.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(router)
    install_error_handlers(app)
    # No body past the limit reaches a route.
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    # Outermost of ours (added last): a request without a valid token reaches nothing else,
    # not even the body limit (its body is never read).
    app.add_middleware(Authenticate)
    return app


def run_worker(listen: Listen) -> None:
    """One of several workers (a spawned process, app/serve.py): its own settings, logging,
    app and SO_REUSEPORT socket. Here, not in __main__: a spawned process finds its target
    by module name."""
    settings = Settings()
    configure_service_logging(settings)
    run_uvicorn(create_app(settings), listen, reuse_port_socket(listen))


def configure_service_logging(settings: Settings) -> None:
    """The service's logs on stderr in LOG_FORMAT; the audit log, one line per request, by
    its own lean writer in the same shape (app.logs.LineHandler)."""
    configure_logging(settings.log_format, settings.log_level)
    route_lines(AUDIT_LOGGER, settings.log_format, AUDIT_FIELDS)
