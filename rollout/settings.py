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
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollout.redaction import MASK, masked

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
    # Each field's description is its line in `rollout --help` (settings_help below).
    prometheus_url: str = Field(default="http://127.0.0.1:9090",
                                description="Prometheus the checks query (required by run)")
    prometheus_timeout_seconds: float = Field(default=3.0, gt=0,
                                              description="timeout of one Prometheus query")
    # The service's Redis: the local flag store lives here (when no Unleash is configured).
    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           description="the service's Redis: local flag store, and the "
                                       "controller's state unless ROLLOUT_REDIS_URL "
                                       "(run needs one of the two)")
    # REDIS_CLUSTER means the same as to the service: REDIS_URL names one node of a cluster.
    redis_cluster: bool = Field(default=False, description="REDIS_URL names one node of a "
                                "Redis Cluster (the local flag store's); ROLLOUT_REDIS_URL "
                                "is then required for the controller's state")
    # REDIS_SENTINELS / REDIS_SENTINEL_MASTER mean the same as to the service: the local flag
    # store is on a Sentinel-managed master (REDIS_URL gives its database and credentials).
    redis_sentinels: str = Field(default="", description="host:port,host:port of the "
                                 "sentinels of the service's Redis (the local flag store's); "
                                 "ROLLOUT_REDIS_URL is then required for the controller's state")
    redis_sentinel_master: str = Field(default="", description="the master name the "
                                       "sentinels monitor (with REDIS_SENTINELS)")
    redis_sentinel_password: SecretStr | None = Field(default=None, description=(
        "the sentinels' own password, if any"))
    # The controller's own Redis for state, log and lease; falls back to REDIS_URL.
    rollout_redis_url: str | None = Field(default=None, description="the controller's own "
                                          "Redis for state, log and lease (preferred)")
    unleash_url: str | None = Field(default=None, description="Unleash API URL (…/api); "
                                    "unset: flags in REDIS_URL's local flag store")
    unleash_admin_token: SecretStr | None = Field(default=None,
                                                  description="Unleash admin API token")
    unleash_environment: str = Field(default="development", description="Unleash environment")
    unleash_project: str = Field(default="default", description="Unleash project")

    # --- the plan and the loop ----------------------------------------------------------------
    rollout_plan: Path | None = Field(default=None,
                                      description="plan file (unset: the bundled default plan)")
    rollout_time_scale: float | None = Field(default=None, gt=0,
                                             description="overrides the plan's time_scale")
    rollout_interval_seconds: float | None = Field(default=None, gt=0, description=(
        "seconds between evaluations (unset: the plan's)"))
    rollout_lease_seconds: float = Field(default=15.0, gt=0,
                                         description="leader lease of `rollout run`")
    rollout_instance_id: str = Field(default_factory=default_instance_id, min_length=1,
                                     description="this process's name in the lease and log")
    # Namespace of the controller's Redis keys (`rollout:{NAME}:state`, ...).
    rollout_name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                              description="which rollout: namespace of its Redis keys")

    # --- HTTP and people ------------------------------------------------------------------------
    rollout_host: str = Field(default=DEFAULT_HOST, description="address `rollout run` "
                              "listens on")
    rollout_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535,
                              description="port `rollout run` listens on")
    rollout_url: str | None = Field(default=None, description="where the CLI finds a running "
                                    "controller (unset: status/history read Redis)")
    rollout_api_token: SecretStr | None = Field(default=None, description="static operator "
                                                "token: run accepts it, the CLI sends it")
    # Bearer JWTs with `role` viewer|operator (DESIGN.md §4's keys and claims, no workspaces):
    # HS256 against the secret, RS256/ES256 against a JWKS file or URL.
    rollout_auth_jwt_secret: SecretStr | None = Field(default=None, description=(
        "HS256 secret (32+ bytes) of operator/viewer JWTs"))
    rollout_auth_jwks_file: Path | None = Field(default=None, description=(
        "JWKS file of RS256/ES256 JWT keys"))
    rollout_auth_jwks_url: str | None = Field(default=None,
                                              description="JWKS URL of RS256/ES256 JWT keys")
    rollout_auth_audience: str = Field(default="ai-cache-rollout", min_length=1,
                                       description="required JWT `aud`")
    rollout_auth_issuer: str | None = Field(default=None, description="required JWT `iss`")
    rollout_auth_leeway_seconds: float = Field(default=30.0, ge=0.0, le=300.0,
                                               description="clock skew allowed on JWT exp")
    rollout_webhook_url: str | None = Field(default=None,
                                            description="where transition notices are POSTed")
    rollout_webhook_timeout_seconds: float = Field(default=3.0, gt=0,
                                                   description="timeout of one notice")
    rollout_log_format: Literal["console", "json"] = Field(default="console",
                                                           description="console or json")
    rollout_log_level: str = Field(default="INFO", description="log level")

    @field_validator(
        "rollout_redis_url", "unleash_url", "rollout_url", "rollout_webhook_url",
        "rollout_plan", "rollout_auth_jwt_secret", "rollout_auth_jwks_file",
        "rollout_auth_jwks_url", "rollout_auth_issuer", "redis_sentinel_password",
        mode="before",
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

    @field_validator("redis_url", "rollout_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Redis.from_url would raise deep inside a command; say it here, naming the variable.
        if value is not None and urlsplit(value).scheme not in _REDIS_SCHEMES:
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {masked(value)!r}")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str) -> str:
        parse_sentinels(value)  # refused here, naming the variable, not at the first write
        return value

    @model_validator(mode="after")
    def _sentinel_settings_agree(self) -> RolloutSettings:
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("REDIS_SENTINELS and REDIS_CLUSTER=true are exclusive")
        if bool(self.redis_sentinels.strip()) != bool(self.redis_sentinel_master.strip()):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together (the "
                             "sentinels, and the name of the master they monitor)")
        if self.redis_sentinels and urlsplit(self.redis_url).scheme == "unix":
            raise ValueError("REDIS_URL: with REDIS_SENTINELS it must be redis://… or "
                             "rediss://… (the master's database and credentials)")
        return self

    @field_validator("prometheus_url", "unleash_url", "rollout_url", "rollout_webhook_url",
                     "rollout_auth_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"must be an http:// or https:// URL, got {masked(value)!r}")
        return value

    def missing_for_run(self) -> list[str]:
        """What `rollout run` refuses to guess (issue 13): where its state and flags live,
        where it reads metrics, and who may command it. Only values set in the environment
        or a .env file count, never the defaults."""
        given = self.model_fields_set
        missing = []
        if not given & {"redis_url", "rollout_redis_url"}:
            missing.append("REDIS_URL (or ROLLOUT_REDIS_URL)")
        if self.redis_cluster and self.rollout_redis_url is None:
            # State, log and lease use transactions across their keys: their own Redis.
            missing.append("ROLLOUT_REDIS_URL (REDIS_CLUSTER=true: the controller's state "
                           "needs its own Redis)")
        if self.redis_sentinels and self.rollout_redis_url is None:
            # REDIS_URL's host is not the master's under Sentinel: state on its own Redis.
            missing.append("ROLLOUT_REDIS_URL (REDIS_SENTINELS: the controller's state "
                           "needs its own Redis)")
        if "prometheus_url" not in given:
            missing.append("PROMETHEUS_URL")
        if not (self.api_token or self.rollout_auth_jwt_secret or self.rollout_auth_jwks_file
                or self.rollout_auth_jwks_url):
            missing.append("ROLLOUT_API_TOKEN (or ROLLOUT_AUTH_JWT_SECRET / "
                           "ROLLOUT_AUTH_JWKS_FILE / ROLLOUT_AUTH_JWKS_URL)")
        return missing

    def resolved(self) -> list[tuple[str, str, bool]]:
        """Every setting as (VARIABLE, shown value, set explicitly), secrets masked: what
        `rollout run` prints at start."""
        rows = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = MASK if value.get_secret_value() else "(empty)"
            elif value is None:
                shown = "(unset)"
            else:
                shown = masked(str(value))
            rows.append((name.upper(), shown, name in self.model_fields_set))
        return rows

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return parse_sentinels(self.redis_sentinels)

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


_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (an IPv6 host in brackets) as (host, port) pairs: the service's
    REDIS_SENTINELS convention (app/settings.py; the controller may not import it)."""
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


def settings_help() -> str:
    """The settings, one line each, for `rollout --help`'s epilog."""
    lines = ["settings (environment or ./.env; see .env.example):"]
    for name, field in RolloutSettings.model_fields.items():
        default = field.default if field.default_factory is None else "(per process)"
        shown = "" if default is None else f" [default {default}]"
        lines.append(f"  {name.upper():32} {field.description or ''}{shown}")
    return "\n".join(lines)
