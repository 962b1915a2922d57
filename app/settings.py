"""The service's settings: one object per process, built in the composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service reads from its environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where things live
    redis_url: str = "redis://127.0.0.1:6379/0"
    # REDIS_CLUSTER=true: REDIS_URL names one node of a Redis Cluster, as redis-py's
    # RedisCluster.from_url takes it (redis[s]://[user:password@]host:port, database 0);
    # the other nodes are discovered from it. Caches and the local flag store then use
    # redis-py's async cluster client.
    redis_cluster: bool = False
    # REDIS_SENTINELS=host:port,host:port and REDIS_SENTINEL_MASTER=name: a Sentinel-managed
    # master, reached as redis-py's Sentinel(...).master_for(name) does (each new connection
    # asks the sentinels where the master is, so a failover is followed). REDIS_URL then gives
    # only the database, credentials and TLS (rediss://) of the master's connections: its
    # host and port are not used. REDIS_SENTINEL_PASSWORD: the sentinels' own password, if
    # they have one. Not with REDIS_CLUSTER=true.
    redis_sentinels: str = ""
    redis_sentinel_master: str = ""
    redis_sentinel_password: SecretStr | None = None
    # Replicas that must acknowledge a generation bump (`WAIT n ms` after the MULTI) before
    # it counts as applied: a failover cannot then bring an old generation back. Fewer in
    # time: the invalidation stays pending (no L1 for that workspace) and is applied again.
    # Unset: 1 with REDIS_CLUSTER=true or REDIS_SENTINELS (a master that fails over has a
    # replica), 0 on one server.
    redis_invalidation_replicas: int | None = Field(default=None, ge=0, le=5)
    redis_invalidation_wait_ms: int = Field(default=100, ge=1, le=5000)
    database_url: str = "sqlite+aiosqlite:///./ai-cache.db"

    # Providers
    ai_provider: Literal["local", "cohere"] = "local"
    ai_latency_scale: float = Field(default=1.0, ge=0.0)
    local_embed_latency_seconds: float = Field(default=0.5, ge=0.0)
    local_chat_latency_seconds: float = Field(default=1.25, ge=0.0)
    local_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    local_embedding_dimensions: int = Field(default=1024, ge=8, le=8192)
    cohere_api_key: SecretStr = SecretStr("")
    cohere_base_url: str = "http://127.0.0.1:8400"
    cohere_embed_model: str = "embed-v4.0"
    cohere_chat_model: str = "command-a-03-2025"
    cohere_embedding_dimensions: int = Field(default=1024, ge=8, le=8192)
    cohere_timeout_seconds: float = Field(default=10.0, gt=0)
    cohere_max_retries: int = Field(default=2, ge=0, le=10)
    price_embed_usd: float = Field(default=0.002, ge=0)
    price_chat_usd: float = Field(default=0.015, ge=0)

    # Retrieval
    retrieval_top_k: int = Field(default=4, ge=1, le=50)
    max_query_chars: int = Field(default=2000, ge=1)
    # Answer well-formed queries in a pure ASGI middleware ahead of FastAPI's machinery (about
    # a third of an L1 hit's CPU). Off: every query goes through the FastAPI route.
    query_fast_path: bool = True
    # Request bodies above this are refused (413) before they are parsed. The largest body the
    # API accepts is a note of 4 x 20,000 characters: 80 KB in ASCII, up to ~960 KB when a
    # client JSON-escapes every character (12 bytes for a non-BMP one); 1 MiB refuses none.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Caches
    cache_key_secret: SecretStr = SecretStr("dev-only-cache-key-secret-change-me")
    cache_encryption_key: SecretStr | None = None  # base64 of 16/24/32 bytes; enables AES-GCM
    cache_encryption_key_id: str = Field(default="k1", min_length=1, max_length=16)
    cache_key_prefix: str = "ai-cache"
    l2_ttl_seconds: int = Field(default=3600, ge=1)
    l1_ttl_seconds: int = Field(default=300, ge=1)
    l2_scope: Literal["workspace", "global"] = "workspace"
    l2_dtype: Literal["float16", "float32"] = "float16"
    # Each audit re-ranks the notes (DB read + embedding lookup): ~5 ms of CPU. Every served
    # hit is a candidate (DESIGN.md §7: integrity evidence must grow with exposure, and at
    # low traffic every hit counts); the cap below is what bounds the CPU.
    l1_audit_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # ...at most this many a second per replica (0: no cap), so that audit CPU stays flat as
    # hits grow: 5/s is 18,000 audits an hour and at most ~2.5 % of one core.
    l1_audit_max_per_second: float = Field(default=5.0, ge=0.0)
    redis_timeout_seconds: float = Field(default=0.05, gt=0)
    # Cache fills run once the response is sent; at most this many at once per replica (more
    # means Redis is slow: a fill past the limit is dropped and counted, a later miss).
    cache_fill_max_running: int = Field(default=256, ge=1)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)

    # Durable invalidation (app/service/outbox.py). Every replica reads the outbox of
    # pending invalidations this often, and serves L1 only while its last read started less
    # than the lease ago; a writer that cannot reach Redis waits 1.1 leases before it
    # acknowledges the write, so by then every replica serving L1 has read the intent.
    outbox_poll_seconds: float = Field(default=0.2, gt=0.0)
    outbox_lease_seconds: float = Field(default=1.0, gt=0.0, le=30.0)
    # Intents left pending are retried with a backoff doubling from the poll interval to this.
    outbox_retry_max_seconds: float = Field(default=2.0, gt=0.0)

    # Flags
    flag_cache_seconds: float = Field(default=1.0, ge=0.0, le=1.0)
    l1_stickiness: str = "userId"
    unleash_url: str | None = None
    unleash_api_token: SecretStr | None = None
    unleash_environment: str = "development"
    unleash_app_name: str = "ai-cache-service"
    unleash_refresh_seconds: int = Field(default=2, ge=1)
    unleash_cache_dir: str = ".run/unleash-cache"

    # Authorization (DESIGN.md §4): every /v1 request carries `Authorization: Bearer <JWT>`,
    # verified against an HS256 secret (a laptop, the demo) and/or the RS256/ES256 keys of a
    # JWKS (a file, or a URL fetched asynchronously and cached). None configured: every /v1
    # request is refused.
    auth_jwt_secret: SecretStr | None = None
    auth_jwks_file: Path | None = None
    auth_jwks_url: str | None = None
    auth_audience: str = Field(default="ai-cache", min_length=1)
    auth_issuer: str | None = None  # when set, tokens must carry exactly this `iss`
    auth_leeway_seconds: float = Field(default=30.0, ge=0.0, le=300.0)  # clock skew on exp
    # A JWKS is re-read this often (and at most every AUTH_JWKS_MIN_REFETCH_SECONDS when a
    # token names a key it does not hold: a rotation). A failed read keeps the last keys.
    auth_jwks_refresh_seconds: float = Field(default=300.0, ge=1.0)
    auth_jwks_min_refetch_seconds: float = Field(default=10.0, ge=0.0)
    auth_jwks_timeout_seconds: float = Field(default=5.0, gt=0.0)
    # A verified token is remembered (by its exact text) this long, capped by its `exp`, so
    # an L1 hit does not pay a signature check each time; 0 verifies every request.
    auth_token_cache_seconds: float = Field(default=60.0, ge=0.0, le=600.0)
    # Explicit opt-in for local runs and demos: this one static bearer token is accepted as
    # role `service` in every workspace. Unset (the default) in production.
    service_api_token: SecretStr | None = None

    # Process
    instance_name: str = "ai-cache-service"
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @field_validator("unleash_url")
    @classmethod
    def _unleash_url_ends_in_api(cls, value: str | None) -> str | None:
        if value and not value.rstrip("/").endswith("/api"):
            raise ValueError("UNLEASH_URL must be the API URL ending in /api")
        return value.rstrip("/") if value else value

    @field_validator("auth_jwt_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value().encode()) < 32:
            raise ValueError("AUTH_JWT_SECRET must be at least 32 bytes (HS256 key length)")
        return value

    @field_validator("service_api_token")
    @classmethod
    def _static_token_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("SERVICE_API_TOKEN must be at least 16 characters")
        return value

    @field_validator("auth_jwks_url", "auth_issuer", "auth_jwks_file",
                     "redis_invalidation_replicas", "redis_sentinel_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _outbox_reads_fit_in_the_lease(self) -> Settings:
        # A read may take up to half a lease (its timeout); the next starts one interval
        # later. Both must fit in the lease, or L1 would stop between two healthy reads.
        if self.outbox_poll_seconds > self.outbox_lease_seconds / 2:
            raise ValueError("OUTBOX_POLL_SECONDS must be at most half of OUTBOX_LEASE_SECONDS")
        return self

    @property
    def invalidation_replicas(self) -> int:
        """REDIS_INVALIDATION_REPLICAS, or its default for the Redis mode."""
        if self.redis_invalidation_replicas is not None:
            return self.redis_invalidation_replicas
        return 1 if self.redis_cluster or self.redis_sentinels else 0

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return parse_sentinels(self.redis_sentinels)

    @model_validator(mode="after")
    def _redis_url_fits_the_mode(self) -> Settings:
        check_redis_url(self.redis_url, cluster=self.redis_cluster)
        return self

    @model_validator(mode="after")
    def _sentinel_settings_agree(self) -> Settings:
        check_sentinel_settings(self.redis_sentinels, self.redis_sentinel_master,
                                cluster=self.redis_cluster, redis_url=self.redis_url)
        return self

    @model_validator(mode="after")
    def _one_jwks_source(self) -> Settings:
        if self.auth_jwks_file is not None and self.auth_jwks_url is not None:
            raise ValueError("set AUTH_JWKS_FILE or AUTH_JWKS_URL, not both")
        return self


def check_redis_url(url: str, *, cluster: bool) -> None:
    """Refuse a REDIS_URL the chosen mode cannot use, naming the setting."""
    parts = urlsplit(url)
    if parts.scheme.endswith("+cluster"):
        raise ValueError(f"REDIS_URL: the scheme {parts.scheme}:// is not used here; name one "
                         "node as redis://host:port and set REDIS_CLUSTER=true")
    if not cluster:
        return
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("REDIS_URL: with REDIS_CLUSTER=true it must be redis://host:port "
                         "or rediss://host:port (one node of the cluster)")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"REDIS_URL: a Redis Cluster has only database 0, not "
                         f"{parts.path.strip('/')!r}")


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (an IPv6 host in brackets) as (host, port) pairs."""
    addresses = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS: {item!r} is not host:port "
                             "(expected host:port,host:port)")
        addresses.append((host, int(port)))
    return addresses


def check_sentinel_settings(sentinels: str, master: str, *, cluster: bool,
                            redis_url: str) -> None:
    """Refuse a half-given or contradictory Sentinel configuration, naming the setting."""
    addresses = parse_sentinels(sentinels)
    if not addresses:
        if master.strip():
            raise ValueError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not "
                             "(host:port,host:port of the sentinels)")
        return
    if cluster:
        raise ValueError("REDIS_SENTINELS and REDIS_CLUSTER=true are exclusive: a Redis "
                         "Cluster fails over by itself, Sentinel manages one master")
    if not master.strip() or any(ch.isspace() for ch in master):
        raise ValueError("REDIS_SENTINEL_MASTER: with REDIS_SENTINELS it must name the "
                         "master the sentinels monitor (their `sentinel monitor NAME …`)")
    if urlsplit(redis_url).scheme not in ("redis", "rediss"):
        raise ValueError("REDIS_URL: with REDIS_SENTINELS it must be redis://… or rediss://… "
                         "(it gives the master's database, credentials and TLS; Sentinel "
                         "names its host and port)")
