"""A real Unleash server (npm `unleash-server`) on a loopback port, or the one UNLEASH_URL names.

Node 22 and unleash-server come from unleash_install.py (a cache folder outside the
repository). Every private start gets a fresh PostgreSQL database: Unleash creates the
INIT_*_API_TOKENS only when its token table is empty, so a reused database would silently
keep old tokens.

    svc = start_private_unleash()      # UnleashService: url, api_url, tokens, environment
    ...
    stop(svc)                          # SIGTERM (then SIGKILL), drop the database

`python -m scripts.svc.unleash start|stop|status [--format json|env]` (unleash_cli.py) is the
same for people (scripts/unleash-start and scripts/unleash-stop wrap it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.errors import ServiceError
from devstack.network import on_a_free_port
from devstack.paths import LOG_DIR, RUN_DIR
from devstack.processes import pid_alive, spawn, stop_pid
from devstack.readiness import http_status, wait_for_start
from devstack.services import postgres
from devstack.services.common import DetailedService, Service, stop_owned
from devstack.services.unleash_install import DEPLOY_DIR, ensure_installed

SERVER_JS = DEPLOY_DIR / "server.js"
ENVIRONMENT = "development"  # exists in a fresh Unleash, enabled in project `default`
PROJECT = "default"
START_TIMEOUT = 120.0  # a cold first start runs ~200 migrations; ~6 s on a warm machine
STATE_FILE = RUN_DIR / "unleash.json"


@dataclass
class UnleashService(DetailedService):
    """A Service plus what a client needs: API URL, tokens, environment, its database."""

    api_url: str = ""
    admin_token: str = ""
    client_token: str = ""
    environment: str = ENVIRONMENT
    project: str = PROJECT
    database: str | None = None
    postgres: dict[str, Any] | None = None  # the PostgreSQL Service it runs on
    log_file: str | None = None

    def env(self) -> dict[str, str]:
        """The variables the service (client token) and the controller (admin token) read."""
        return {
            "UNLEASH_URL": self.api_url,
            "UNLEASH_API_TOKEN": self.client_token,
            "UNLEASH_ADMIN_TOKEN": self.admin_token,
            "UNLEASH_ENVIRONMENT": self.environment,
        }


def api_url_of(url: str) -> str:
    """Unleash's SDK convention is the API URL (…/api); accept the server base too."""
    url = url.rstrip("/")
    return url if url.endswith("/api") else f"{url}/api"


def _get(url: str, token: str | None = None) -> int:
    return http_status(url, headers={"Authorization": token} if token else None)


def _accepts_our_token(svc: UnleashService) -> bool:
    # /health answers only after migrations and token setup, but check the admin token too:
    # a ready server that rejects our token is a failed start, not a slow one.
    return (_get(f"{svc.url}/health") == 200
            and _get(f"{svc.api_url}/admin/projects", svc.admin_token) == 200)


def start_private_unleash(
    *, name: str = "unleash", port: int | None = None, pg: Service | None = None,
    log_level: str = "warn", timeout: float = START_TIMEOUT,
) -> UnleashService:
    """Start unleash-server on a free 127.0.0.1 port with a fresh database; we own it."""
    node = ensure_installed()
    pg_service = pg or postgres.ensure_postgres(f"{name}-postgres")
    try:
        return on_a_free_port(
            lambda free: _start_once(node, name, free, pg_service, log_level, timeout), port
        )
    except BaseException:
        if pg is None:
            postgres.stop(pg_service)
        raise


def _start_once(node: Path, name: str, port: int, pg: Service, log_level: str,
                timeout: float) -> UnleashService:
    database = f"unleash_{port}_{secrets.token_hex(4)}"
    db_url = postgres.create_database(pg, database)
    base = f"http://127.0.0.1:{port}"
    data_dir = RUN_DIR / f"{name}-{port}"
    log_file = LOG_DIR / f"{name}-{port}.log"
    svc = UnleashService(
        name=name, url=base, owned=True, data_dir=str(data_dir), port=port,
        api_url=api_url_of(base),
        # Token format is project:environment.secret; `*:*` makes an admin token.
        admin_token=f"*:*.{secrets.token_hex(24)}",
        client_token=f"{PROJECT}:{ENVIRONMENT}.{secrets.token_hex(24)}",
        database=database, postgres=asdict(pg), log_file=str(log_file),
    )
    # A clean environment: the parent's UNLEASH_URL (the SDK's API URL) or NODE_OPTIONS
    # must not leak into the server's own configuration.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "TZ": "UTC",
        "NODE_ENV": "production",
        "UNLEASH_SERVER_DIR": str(node.parents[3]),
        "DATABASE_URL": db_url,
        "DATABASE_SSL": "false",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "UNLEASH_URL": base,
        "INIT_ADMIN_API_TOKENS": svc.admin_token,
        "INIT_BACKEND_API_TOKENS": svc.client_token,
        "SEND_TELEMETRY": "false",
        "CHECK_VERSION": "false",
        "LOG_LEVEL": log_level,
    }
    proc = spawn([str(node), str(SERVER_JS)], log_file=log_file, env=env, cwd=data_dir.parent)
    svc.pid = proc.pid
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        svc.save_sidecar()
        wait_for_start(proc, lambda: _accepts_our_token(svc), what="unleash", where=svc.url,
                       log_file=log_file, timeout=timeout, interval=0.1)
    except BaseException:
        stop_pid(proc.pid, timeout=10)
        postgres.drop_database(pg, database)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return svc


def ensure_unleash(name: str = "unleash") -> UnleashService:
    """The Unleash named by UNLEASH_URL + UNLEASH_ADMIN_TOKEN if set, else a private one."""
    url = os.environ.get("UNLEASH_URL")
    admin = os.environ.get("UNLEASH_ADMIN_TOKEN")
    if url and admin:
        api = api_url_of(url)
        return UnleashService(
            name=name, url=api.removesuffix("/api"), owned=False, api_url=api,
            admin_token=admin, client_token=os.environ.get("UNLEASH_API_TOKEN", ""),
            environment=os.environ.get("UNLEASH_ENVIRONMENT", ENVIRONMENT),
        )
    return start_private_unleash(name=name)


def stop(service: Service) -> None:
    """Stop an Unleash we started and drop its database; leave anything else alone."""
    svc = UnleashService.from_service(service)
    if not stop_owned(svc, timeout=15, also=service):
        return
    if svc.postgres:
        pg = Service(**svc.postgres)
        if pg.owned:
            postgres.stop(pg)
        elif svc.database:
            with contextlib.suppress(ServiceError):
                postgres.drop_database(pg, svc.database)


def is_running(service: Service) -> bool:
    svc = UnleashService.from_service(service)
    if svc.owned and svc.pid and not pid_alive(svc.pid):
        return False
    try:
        return _get(f"{svc.url}/health") == 200
    except httpx.HTTPError:
        return False


def bootstrap_flags(svc: UnleashService) -> list[str]:
    """Create the three rollout flags (idempotent); returns the writes that were made."""
    import asyncio

    from rollout.adapters.unleash_admin import UnleashAdmin

    async def run() -> list[str]:
        async with UnleashAdmin(svc.api_url, svc.admin_token, environment=svc.environment,
                                project=svc.project) as admin:
            return [str(write) for write in await admin.bootstrap()]

    return asyncio.run(run())
