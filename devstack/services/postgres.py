"""PostgreSQL: the one `POSTGRES_URL` names, the local one on 5432, or a private cluster."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from urllib.parse import urlsplit, urlunsplit

from devstack.errors import ServiceError
from devstack.network import free_port, port_open
from devstack.paths import LOG_DIR
from devstack.processes import spawn, stop_pid
from devstack.readiness import wait_for_start
from devstack.services.common import Service, ensure_apt

DEFAULT_LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        ensure_apt("/usr/lib/postgresql", "postgresql")
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise ServiceError(f"PostgreSQL's {name} not found after installing postgresql")
    return candidates[-1]


def psql(url: str, sql: str) -> str:
    ensure_apt("psql", "postgresql-client")
    out = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if out.returncode != 0:
        raise ServiceError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _reachable(url: str) -> bool:
    try:
        return psql(url, "select 1") == "1"
    except ServiceError:
        return False


def start_private_postgres(name: str = "postgres") -> Service:
    """initdb a throwaway cluster (as the postgres user) and start it on a free port."""
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    data_dir = tempfile.mkdtemp(prefix=f"aicache-{name}-")
    shutil.chown(data_dir, user="postgres") if os.geteuid() == 0 else None
    user = "postgres" if os.geteuid() == 0 else None
    init = subprocess.run(
        (["runuser", "-u", "postgres", "--"] if user else [])
        + [initdb, "-D", data_dir, "-A", "trust", "-U", "postgres", "--no-sync"],
        capture_output=True, text=True, check=False,
    )
    if init.returncode != 0:
        raise ServiceError(f"initdb failed: {init.stderr.strip()}")
    port = free_port()
    log_file = LOG_DIR / f"{name}-{port}.log"
    proc = spawn(
        [postgres, "-D", data_dir, "-p", str(port), "-h", "127.0.0.1", "-k", data_dir,
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
        log_file=log_file, user=user,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        wait_for_start(proc, lambda: port_open("127.0.0.1", port) and _reachable(url),
                       what="postgres", where=f"port {port}", log_file=log_file, timeout=30)
    except ServiceError:
        stop_pid(proc.pid)
        raise
    return Service(name=name, url=url, pid=proc.pid, owned=True, data_dir=data_dir, port=port)


def ensure_postgres(name: str = "postgres") -> Service:
    """POSTGRES_URL if set; else the local server on 5432 if it answers; else a private one."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        return Service(name=name, url=url, owned=False)
    if port_open("127.0.0.1", 5432) and _reachable(DEFAULT_LOCAL_URL):
        return Service(name=name, url=DEFAULT_LOCAL_URL, owned=False, port=5432)
    return start_private_postgres(name)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_database(service: Service, database: str) -> str:
    psql(service.url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    psql(service.url, f'CREATE DATABASE "{database}"')
    return with_database(service.url, database)


def drop_database(service: Service, database: str) -> None:
    psql(service.url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def stop(service: Service) -> None:
    if service.owned and service.pid:
        service.stop_process(timeout=20)
        if service.data_dir:
            shutil.rmtree(service.data_dir, ignore_errors=True)
