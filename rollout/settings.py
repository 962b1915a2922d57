"""The controller's settings: one object per process, built by the composition root (or the
CLI's `main`) from the environment and an optional `.env` file, never at import time.

Where the controller's state lives matters: it must survive the cache's eviction policy.
Give it its own Redis with `ROLLOUT_REDIS_URL` (preferred), or run the shared Redis with a
`volatile-*` or `noeviction` policy (the controller's keys never expire, so `volatile-*`
never picks them). At start the controller checks `maxmemory-policy` and warns when an
`allkeys-*` policy could evict the rollout's state.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


def default_instance_id() -> str:
    # Host and pid say which process leads; the random part keeps two restarts of the same
    # pid (containers often run as pid 1) from being mistaken for one another.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RolloutSettings(BaseSettings):
    """Everything `rollout run` and the CLI read from their environment."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- inputs and outputs -----------------------------------------------------------------
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout_seconds: float = Field(default=3.0, gt=0)
    # The service's Redis: the local flag store lives here (when no Unleash is configured).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The controller's own Redis for state, log and lease; falls back to REDIS_URL.
    rollout_redis_url: str | None = None
    unleash_url: str | None = None
    unleash_admin_token: SecretStr | None = None
    unleash_environment: str = "development"
    unleash_project: str = "default"

    # --- the plan and the loop ----------------------------------------------------------------
    rollout_plan: Path | None = None  # None: the bundled default plan
    rollout_time_scale: float | None = Field(default=None, gt=0)  # overrides the plan's
    rollout_interval_seconds: float | None = Field(default=None, gt=0)  # None: the plan's
    rollout_lease_seconds: float = Field(default=15.0, gt=0)
    rollout_instance_id: str = Field(default_factory=default_instance_id, min_length=1)
    # Namespace of the controller's Redis keys (`rollout:{NAME}:state`, ...).
    rollout_name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # --- HTTP and people ------------------------------------------------------------------------
    rollout_host: str = DEFAULT_HOST
    rollout_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    rollout_url: str | None = None  # where the CLI finds a running controller
    rollout_api_token: SecretStr | None = None  # static: an operator (laptop, demo)
    # Bearer JWTs with `role` viewer|operator (DESIGN.md §4's keys and claims, no workspaces):
    # HS256 against the secret, RS256/ES256 against a JWKS file or URL.
    rollout_auth_jwt_secret: SecretStr | None = None
    rollout_auth_jwks_file: Path | None = None
    rollout_auth_jwks_url: str | None = None
    rollout_auth_audience: str = Field(default="ai-cache-rollout", min_length=1)
    rollout_auth_issuer: str | None = None
    rollout_auth_leeway_seconds: float = Field(default=30.0, ge=0.0, le=300.0)
    rollout_webhook_url: str | None = None
    rollout_webhook_timeout_seconds: float = Field(default=3.0, gt=0)
    rollout_log_format: Literal["console", "json"] = "console"
    rollout_log_level: str = "INFO"

    @field_validator(
        "rollout_redis_url", "unleash_url", "rollout_url", "rollout_webhook_url",
        "rollout_plan", "rollout_auth_jwt_secret", "rollout_auth_jwks_file",
        "rollout_auth_jwks_url", "rollout_auth_issuer", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in a .env file means "not set", not "the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rollout_auth_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (HS256 keys shorter than the hash "
                             "are refused)")
        return value

    @property
    def state_redis_url(self) -> str:
        return self.rollout_redis_url or self.redis_url

    @property
    def controller_url(self) -> str:
        """ROLLOUT_URL, or the address `rollout run` listens on by default."""
        if self.rollout_url:
            return self.rollout_url.rstrip("/")
        host = "127.0.0.1" if self.rollout_host in ("0.0.0.0", "::") else self.rollout_host  # noqa: S104
        return f"http://{host}:{self.rollout_port}"

    @property
    def api_token(self) -> str | None:
        if self.rollout_api_token is None:
            return None
        token = self.rollout_api_token.get_secret_value()
        return token or None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.rollout_lease_seconds)
