"""The service's settings: one object per process, built in the composition root."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service reads from its environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where things live
    redis_url: str = "redis://127.0.0.1:6379/0"
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
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)

    # Flags
    flag_cache_seconds: float = Field(default=1.0, ge=0.0, le=1.0)
    l1_stickiness: str = "userId"
    unleash_url: str | None = None
    unleash_api_token: SecretStr | None = None
    unleash_environment: str = "development"
    unleash_app_name: str = "ai-cache-service"
    unleash_refresh_seconds: int = Field(default=2, ge=1)
    unleash_cache_dir: str = ".run/unleash-cache"

    # Writes (session notes, operator invalidation) need `Authorization: Bearer <token>`.
    # Unset means writes are refused: state never changes without a token.
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
