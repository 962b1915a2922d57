"""pytest fixtures for a real Unleash server (unleash-server from npm, on real PostgreSQL).

Import the fixtures into the test module that needs them (tests/conftest.py stays generic):

    from tests.support.unleash import unleash_server, unleash_admin  # noqa: F401

`unleash_server` is one private server per test session, started through the same starter as
scripts/unleash-start (installing Node 22 + unleash-server into the cache folder on first use)
and stopped at the end; should it die, the next test that asks for it gets it started again
and the run shows a warning with how it ended and its log. It never reuses an UNLEASH_URL
from the environment: the tests rewrite flags and tokens, which must not happen to somebody's
real Unleash. Every module gets the same server, so one session pays the ~6 s start once.

`short_lived_unleash()` starts an extra server for tests that stop it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.processes import how_it_ended, log_tail
from devstack.services import unleash as unleash_svc
from devstack.services.unleash import UnleashService
from rollout.adapters.unleash_admin import UnleashAdmin


@pytest.fixture(scope="session")
def _unleash_for_the_session() -> Iterator[UnleashService]:
    service = unleash_svc.start_private_unleash(name="unleash-tests")
    # A crashed session still must not leave node running or the database behind.
    atexit.register(unleash_svc.stop, service)
    try:
        yield service
    finally:
        unleash_svc.stop(service)
        atexit.unregister(unleash_svc.stop)


@pytest.fixture
def unleash_server(_unleash_for_the_session: UnleashService) -> UnleashService:
    """A running Unleash (url, api_url, admin/client tokens, environment) for this test:
    the session's shared server, started again if it died (with a warning that says how
    it ended and what it logged, so a crash is reported, not hidden)."""
    _restart_if_dead(_unleash_for_the_session)
    return _unleash_for_the_session


def _restart_if_dead(service: UnleashService) -> None:
    if unleash_svc.is_running(service):
        return
    warnings.warn(f"restarting the session's Unleash: {_obituary(service)}", stacklevel=2)
    unleash_svc.stop(service)  # drops its database; signals nothing that is not ours
    fresh = unleash_svc.start_private_unleash(name="unleash-tests")
    for field in dataclasses.fields(fresh):  # in place: every holder sees the new one
        setattr(service, field.name, getattr(fresh, field.name))


@pytest.fixture
async def unleash_admin(unleash_server: UnleashService) -> AsyncIterator[UnleashAdmin]:
    """An Admin API adapter on the session's server, closed after the test."""
    async with admin_for(unleash_server) as admin:
        yield admin


def _obituary(service: UnleashService) -> str:
    """How the server's process ended, and the end of its log."""
    ended = how_it_ended(service.pid, wait=5.0) if service.pid else None
    log = Path(service.log_file) if service.log_file else None
    tail = log_tail(log, 40) if log else ""
    return f"pid {service.pid} {ended or 'ended (no exit status known)'}; log {log}:\n{tail}"


def assert_still_running(service: UnleashService) -> None:
    """Fail with how the server ended and its log, not with a bare connection error."""
    if not unleash_svc.is_running(service):
        pytest.fail(f"Unleash at {service.url} is not running: {_obituary(service)}",
                    pytrace=False)


def admin_for(service: UnleashService, **kwargs: Any) -> UnleashAdmin:
    assert_still_running(service)
    return UnleashAdmin(service.api_url, service.admin_token,
                        environment=service.environment, project=service.project, **kwargs)


@contextlib.contextmanager
def short_lived_unleash(name: str = "unleash-short") -> Iterator[UnleashService]:
    """A private server of its own, for tests that stop it; stopped (again) on exit."""
    service = unleash_svc.start_private_unleash(name=name)
    try:
        yield service
    finally:
        unleash_svc.stop(service)


def raw_admin(service: UnleashService) -> httpx.Client:
    """Plain HTTP to the Admin API, for what a person would do by hand in the UI (drift)."""
    return httpx.Client(base_url=f"{service.api_url}/admin",
                        headers={"Authorization": service.admin_token}, timeout=10.0)


def delete_flags(service: UnleashService, flags: tuple[str, ...]) -> None:
    """Archive, then delete, the flags: the server looks as if they never existed."""
    with raw_admin(service) as http:
        for flag in flags:
            archived = http.delete(f"/projects/{service.project}/features/{flag}")
            assert archived.status_code in (200, 202, 404), archived.text
            deleted = http.delete(f"/archive/{flag}")
            assert deleted.status_code in (200, 202, 404), deleted.text


def environment_json(service: UnleashService, flag: str,
                     environment: str | None = None) -> dict[str, Any]:
    """The flag's environment as the Admin API returns it (enabled + strategies)."""
    env = environment or service.environment
    with raw_admin(service) as http:
        response = http.get(f"/projects/{service.project}/features/{flag}/environments/{env}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def client_features(service: UnleashService) -> dict[str, Any]:
    """What the SDKs see: the Client API with the backend token, by flag name."""
    response = httpx.get(f"{service.api_url}/client/features",
                         headers={"Authorization": service.client_token}, timeout=10.0)
    response.raise_for_status()
    return {f["name"]: f for f in response.json()["features"]}
