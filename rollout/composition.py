"""The composition root: everything the controller needs, built from one RolloutSettings.

Nothing here runs at import time; `build_runtime(settings)` makes the objects (Redis and
HTTP clients connect lazily) and `Runtime.aclose()` closes what it made.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.auth.jwks import JwksError, open_jwks
from app.auth.verifier import TokenVerifier
from app.logs import configure_logging as shared_configure_logging
from rollout.adapters.callers import TokenCallers
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.prometheus import PrometheusSource
from rollout.adapters.redis_lease import RedisLease
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.adapters.unleash_admin import UnleashAdmin
from rollout.adapters.webhook import WebhookNotifier
from rollout.controller import Controller
from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.metrics import ControllerMetrics
from rollout.plans import default_plan_path
from rollout.ports import FlagWriter, MetricsSource, Notifier, NullNotifier, StateStore
from rollout.redaction import masked
from rollout.runtime_types import CyclePorts, StartupError
from rollout.settings import RolloutSettings

log = logging.getLogger("rollout")

REDIS_TIMEOUT_SECONDS = 3.0


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """The service's log shape; the controller also quiets its HTTP clients and server, and
    masks the credentials of any URL in a line (its own or a library's, tracebacks too)."""
    shared_configure_logging(fmt, level, quiet=("urllib3", "uvicorn.access"))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(MaskingFormatter(handler.formatter or logging.Formatter()))


class MaskingFormatter(logging.Formatter):
    """Wraps a handler's formatter: the finished line (message, extras, traceback) is masked
    (rollout.redaction). The adapters already mask what they say; this catches the rest."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return masked(self._inner.format(record))


# --- building blocks --------------------------------------------------------------------------


async def open_callers(settings: RolloutSettings, stack: AsyncExitStack) -> TokenCallers:
    """Who may call the HTTP API: the static token and/or JWTs (a JWKS read once before
    serving, refreshed in the background, closed with `stack`). Raises StartupError for an
    unusable ROLLOUT_AUTH_JWKS_FILE."""
    try:
        jwks = await open_jwks(
            file=settings.rollout_auth_jwks_file, url=settings.rollout_auth_jwks_url,
            timeout_seconds=settings.prometheus_timeout_seconds, refresh_seconds=300.0,
            min_refetch_seconds=10.0, stack=stack)
    except (JwksError, OSError) as exc:
        raise StartupError(f"ROLLOUT_AUTH_JWKS_FILE {settings.rollout_auth_jwks_file}: "
                           f"{exc}") from None
    secret = settings.rollout_auth_jwt_secret
    jwt = None
    if secret is not None or jwks is not None:
        jwt = TokenVerifier(
            audience=settings.rollout_auth_audience,
            hs256_secret=secret.get_secret_value().encode() if secret else None,
            jwks=jwks, issuer=settings.rollout_auth_issuer,
            leeway_seconds=settings.rollout_auth_leeway_seconds, workspaces_claim=False)
    callers = TokenCallers(static_token=settings.api_token, jwt=jwt)
    if not callers.configured:
        log.warning("none of ROLLOUT_API_TOKEN, ROLLOUT_AUTH_JWT_SECRET, ROLLOUT_AUTH_JWKS_FILE, "
                    "ROLLOUT_AUTH_JWKS_URL is set: the API's commands are disabled (403)")
    return callers


def plan_from_settings(settings: RolloutSettings) -> Plan:
    """The plan file (or the bundled one), with ROLLOUT_TIME_SCALE applied. Raises PlanError."""
    plan = load_plan(settings.rollout_plan or default_plan_path())
    if settings.rollout_time_scale is not None:
        plan = dataclasses.replace(
            plan, settings=dataclasses.replace(plan.settings,
                                               time_scale=settings.rollout_time_scale),
        )
    return plan


def interval_seconds(settings: RolloutSettings, plan: Plan) -> float:
    if settings.rollout_interval_seconds is not None:
        return settings.rollout_interval_seconds
    return plan.settings.evaluation_interval.total_seconds()


def build_flag_writer(settings: RolloutSettings) -> FlagWriter:
    """Unleash when UNLEASH_URL is set, else the local flag store in the service's Redis."""
    if settings.unleash_url:
        token = settings.unleash_admin_token
        if token is None or not token.get_secret_value():
            raise ValueError("UNLEASH_URL is set but UNLEASH_ADMIN_TOKEN is not")
        return UnleashAdmin(settings.unleash_url, token.get_secret_value(),
                            environment=settings.unleash_environment,
                            project=settings.unleash_project)
    password = settings.redis_sentinel_password
    return LocalFlagWriter.from_url(
        settings.redis_url, cluster=settings.redis_cluster,
        sentinels=settings.sentinel_addresses, sentinel_master=settings.redis_sentinel_master,
        sentinel_password=password.get_secret_value() if password else None)


def build_state_store(settings: RolloutSettings) -> StateStore:
    return build_redis_state_store(settings)


def build_redis_state_store(settings: RolloutSettings) -> RedisStateStore:
    return RedisStateStore.from_url(
        settings.state_redis_url, RolloutKeys(settings.rollout_name),
        timeout=REDIS_TIMEOUT_SECONDS,
    )


def build_metrics_source(settings: RolloutSettings) -> MetricsSource:
    return PrometheusSource(settings.prometheus_url,
                            timeout_seconds=settings.prometheus_timeout_seconds)


def build_notifier(settings: RolloutSettings) -> Notifier:
    if not settings.rollout_webhook_url:
        return NullNotifier()
    return WebhookNotifier(settings.rollout_webhook_url,
                           timeout=settings.rollout_webhook_timeout_seconds,
                           source=settings.rollout_instance_id)


@dataclass
class Runtime:
    settings: RolloutSettings
    plan: Plan
    registry: CollectorRegistry
    metrics: ControllerMetrics
    store: RedisStateStore
    lease: RedisLease
    flags: FlagWriter
    metrics_source: MetricsSource
    notifier: Notifier
    controller: Controller

    @property
    def interval_seconds(self) -> float:
        return interval_seconds(self.settings, self.plan)

    async def check_state_redis(self) -> None:
        """Warn when the state's Redis could evict it (see rollout.settings)."""
        warning = await self.store.eviction_risk()
        if warning:
            log.warning(warning, extra={"event": "eviction-risk"})

    async def aclose(self) -> None:
        for close in (self.notifier.aclose, self.metrics_source.aclose, self.flags.aclose,
                      self.store.aclose):
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", close)


def build_runtime(
    settings: RolloutSettings, *, registry: CollectorRegistry | None = None
) -> Runtime:
    plan = plan_from_settings(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ControllerMetrics(registry, plan)
    store = build_redis_state_store(settings)
    lease_client: Redis = store.redis
    lease = RedisLease(lease_client, store.keys, settings.rollout_instance_id,
                       ttl_seconds=settings.rollout_lease_seconds)
    flags = build_flag_writer(settings)
    source = build_metrics_source(settings)
    notifier = build_notifier(settings)
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=notifier, metrics=metrics,
                       instance_id=settings.rollout_instance_id)
    controller = Controller(ports, lease)
    return Runtime(settings=settings, plan=plan, registry=registry, metrics=metrics,
                   store=store, lease=lease, flags=flags, metrics_source=source,
                   notifier=notifier, controller=controller)


@asynccontextmanager
async def dry_run_ports(settings: RolloutSettings) -> AsyncIterator[CyclePorts]:
    """The ports of `rollout evaluate --dry-run`: the same adapters as the controller's, no
    metrics registry, no notifier (a dry run tells nobody), closed on the way out.
    Raises PlanError or ValueError (bad settings) before anything is opened."""
    plan = plan_from_settings(settings)
    flags = build_flag_writer(settings)
    store = build_state_store(settings)
    source = build_metrics_source(settings)
    try:
        yield CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                         notifier=NullNotifier(),
                         instance_id=f"{settings.rollout_instance_id} (dry run)")
    finally:
        for close in (source.aclose, flags.aclose, store.aclose):
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", close)
