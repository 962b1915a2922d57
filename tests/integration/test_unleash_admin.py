"""The Admin API adapter against a real Unleash server (npm unleash-server + PostgreSQL)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.contract import (
    ALL_FLAGS,
    DEFAULT_STICKINESS,
    FLAG_L1_QUERY_RESULTS,
    FLAG_L2_EMBEDDINGS,
    FLAG_SHADOW_MODE,
    L1_ROLLOUT_GROUP_ID,
)
from devstack.services import unleash as unleash_svc
from devstack.services.unleash import UnleashService
from rollout.adapters.unleash_admin import UnleashAdmin
from rollout.core.flags import FlagSettings
from rollout.ports import FlagWriter, PermanentFlagError, TemporaryFlagError
from tests.support.unleash import (
    admin_for,
    client_features,
    delete_flags,
    environment_json,
    raw_admin,
    short_lived_unleash,
    unleash_admin,  # noqa: F401 - fixture
    unleash_server,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.integration

STAGES = [  # DESIGN.md §7, then a rollback and back to off
    FlagSettings(),
    FlagSettings(shadow=True),
    FlagSettings(shadow=True, l2=True),
    FlagSettings(shadow=True, l2=True, l1_percent=10),
    FlagSettings(shadow=True, l2=True, l1_percent=50),
    FlagSettings(shadow=False, l2=True, l1_percent=100),
    FlagSettings(shadow=True, l2=True, l1_percent=10),
    FlagSettings(),
]


def l1_strategies(service: UnleashService) -> list[dict[str, Any]]:
    strategies: list[dict[str, Any]] = environment_json(service, FLAG_L1_QUERY_RESULTS)[
        "strategies"]
    return strategies


def eventually(check: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


def lifecycle_races_logged(service: UnleashService) -> int:
    return Path(str(service.log_file)).read_text().count("feature_lifecycles_feature_fkey")


async def test_deleting_flags_right_after_creating_them_leaves_the_server_running(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    """unleash-server 8.2.0 inserts a flag's lifecycle stage from an async listener; a flag
    deleted right after its creation makes that insert fail, and db-migrate's process-wide
    handler used to exit(1) on it (a CI run lost its server that way). deploy/unleash/server.js
    keeps the server up: create and delete until the race is in the log, then it answers."""
    seen_before = lifecycle_races_logged(unleash_server)
    deadline = time.monotonic() + 90
    rounds = 0
    while lifecycle_races_logged(unleash_server) == seen_before:
        assert time.monotonic() < deadline, f"the race did not happen in {rounds} rounds"
        await unleash_admin.bootstrap()
        delete_flags(unleash_server, ALL_FLAGS)
        rounds += 1
    assert unleash_svc.is_running(unleash_server)
    await unleash_admin.bootstrap()
    assert await unleash_admin.read() == FlagSettings()


async def test_bootstrap_twice_gives_same_state_and_one_strategy(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    delete_flags(unleash_server, ALL_FLAGS)

    first = await unleash_admin.bootstrap()
    assert {w.flag for w in first if w.action == "create"} == set(ALL_FLAGS)
    state = {flag: environment_json(unleash_server, flag) for flag in ALL_FLAGS}

    second = await unleash_admin.bootstrap()
    assert second == ()
    assert {flag: environment_json(unleash_server, flag) for flag in ALL_FLAGS} == state

    for flag in (FLAG_SHADOW_MODE, FLAG_L2_EMBEDDINGS):
        assert state[flag]["enabled"] is False
        assert [s["name"] for s in state[flag]["strategies"]] == ["default"]
    l1 = state[FLAG_L1_QUERY_RESULTS]
    assert l1["enabled"] is False
    assert len(l1["strategies"]) == 1
    assert l1["strategies"][0]["name"] == "flexibleRollout"
    assert l1["strategies"][0]["parameters"] == {
        "rollout": "0", "stickiness": DEFAULT_STICKINESS, "groupId": L1_ROLLOUT_GROUP_ID}
    assert await unleash_admin.read() == FlagSettings()


async def test_bootstrap_keeps_what_the_flags_expose(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    settings = FlagSettings(shadow=True, l2=False, l1_percent=30)
    await unleash_admin.apply(settings)
    assert await unleash_admin.bootstrap() == ()
    assert await unleash_admin.read() == settings


async def test_apply_read_round_trip_through_the_stages(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    await unleash_admin.bootstrap()
    strategy_id = l1_strategies(unleash_server)[0]["id"]
    previous = await unleash_admin.read()
    for settings in STAGES:
        result = await unleash_admin.apply(settings)
        assert result.before == previous
        assert result.after == settings
        assert result.changed == (settings != previous)
        assert await unleash_admin.read() == settings

        again = await unleash_admin.apply(settings)
        assert again.writes == (), f"{settings.describe()} re-applied wrote {again.writes}"

        # One strategy, updated in place, with the bucketing parameters always present.
        strategies = l1_strategies(unleash_server)
        assert [s["id"] for s in strategies] == [strategy_id]
        assert strategies[0]["parameters"] == {
            "rollout": str(settings.l1_percent), "stickiness": DEFAULT_STICKINESS,
            "groupId": L1_ROLLOUT_GROUP_ID}
        # 0 % is stored as the flag switched off (see the adapter's docstring).
        l1_env = environment_json(unleash_server, FLAG_L1_QUERY_RESULTS)
        assert l1_env["enabled"] is (settings.l1_percent > 0)
        previous = settings


async def test_l1_10_to_50_updates_the_strategy_in_place(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    await unleash_admin.apply(FlagSettings(shadow=True, l2=True, l1_percent=10))
    before = l1_strategies(unleash_server)

    writes = await unleash_admin.set_rollout(50)

    assert [(w.flag, w.action) for w in writes] == [(FLAG_L1_QUERY_RESULTS, "update-strategy")]
    after = l1_strategies(unleash_server)
    assert len(after) == 1 and after[0]["id"] == before[0]["id"]
    assert after[0]["parameters"] == {"rollout": "50", "stickiness": "userId",
                                      "groupId": FLAG_L1_QUERY_RESULTS}
    assert await unleash_admin.set_rollout(50) == ()
    assert (await unleash_admin.flag_state(FLAG_L1_QUERY_RESULTS)).rollout == 50

    # The SDKs (backend token, Client API) see the same single strategy.
    def sdk_sees_50() -> bool:
        feature = client_features(unleash_server)[FLAG_L1_QUERY_RESULTS]
        return feature["enabled"] and [s["parameters"] for s in feature["strategies"]] == [
            {"rollout": "50", "stickiness": "userId", "groupId": FLAG_L1_QUERY_RESULTS}]

    eventually(sdk_sees_50)


async def test_set_enabled_is_per_environment_and_idempotent(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    await unleash_admin.apply(FlagSettings())
    writes = await unleash_admin.set_enabled(FLAG_L2_EMBEDDINGS, True, environment="production")
    assert [(w.action, w.detail) for w in writes] == [("enable", "production")]
    assert await unleash_admin.set_enabled(FLAG_L2_EMBEDDINGS, True,
                                           environment="production") == ()
    assert (await unleash_admin.flag_state(FLAG_L2_EMBEDDINGS, "production")).enabled
    assert not (await unleash_admin.flag_state(FLAG_L2_EMBEDDINGS)).enabled
    assert await unleash_admin.read() == FlagSettings()  # development is what we manage
    await unleash_admin.set_enabled(FLAG_L2_EMBEDDINGS, False, environment="production")


async def test_apply_repairs_drift_and_reports_it(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    settings = FlagSettings(shadow=True, l2=True, l1_percent=10)
    await unleash_admin.apply(settings)
    keep = l1_strategies(unleash_server)[0]
    env = f"/projects/default/features/{FLAG_L1_QUERY_RESULTS}/environments/development"
    with raw_admin(unleash_server) as http:
        # What a hurried person might do in the UI: a second strategy, other stickiness,
        # and the shadow switch flipped.
        http.post(f"{env}/strategies", json={
            "name": "flexibleRollout",
            "parameters": {"rollout": "80", "stickiness": "default", "groupId": "x"},
        }).raise_for_status()
        http.put(f"{env}/strategies/{keep['id']}", json={
            "name": "flexibleRollout",
            "parameters": {"rollout": "10", "stickiness": "sessionId",
                           "groupId": FLAG_L1_QUERY_RESULTS},
        }).raise_for_status()
        http.post(f"/projects/default/features/{FLAG_SHADOW_MODE}/environments/development/off"
                  ).raise_for_status()

    drifted = await unleash_admin.read()
    assert drifted.shadow is False and drifted.l1_percent == 80  # the widest exposure

    result = await unleash_admin.apply(settings)
    actions = sorted((w.flag, w.action) for w in result.writes)
    assert actions == sorted([
        (FLAG_SHADOW_MODE, "enable"),
        (FLAG_L1_QUERY_RESULTS, "update-strategy"),
        (FLAG_L1_QUERY_RESULTS, "delete-strategy"),
    ])
    strategies = l1_strategies(unleash_server)
    assert [s["id"] for s in strategies] == [keep["id"]]
    assert strategies[0]["parameters"]["stickiness"] == "userId"
    assert await unleash_admin.read() == settings
    assert (await unleash_admin.apply(settings)).writes == ()


async def test_zero_percent_is_the_flag_switched_off(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    await unleash_admin.apply(FlagSettings(l1_percent=50))
    result = await unleash_admin.apply(FlagSettings(l1_percent=0))
    # Switch off before lowering, so a rollback never passes through a wider exposure.
    assert [w.action for w in result.writes] == ["disable", "update-strategy"]

    # Someone switches it on in the UI: nobody is exposed, and read() says so.
    await unleash_admin.set_enabled(FLAG_L1_QUERY_RESULTS, True)
    assert (await unleash_admin.read()).l1_percent == 0
    repaired = await unleash_admin.apply(FlagSettings(l1_percent=0))
    assert [w.action for w in repaired.writes] == ["disable"]

    raised = await unleash_admin.apply(FlagSettings(l1_percent=10))
    assert [w.action for w in raised.writes] == ["update-strategy", "enable"]
    await unleash_admin.apply(FlagSettings())


async def test_apply_creates_a_missing_flag(
    unleash_server: UnleashService, unleash_admin: UnleashAdmin,  # noqa: F811
) -> None:
    delete_flags(unleash_server, (FLAG_L1_QUERY_RESULTS,))
    assert (await unleash_admin.read()).l1_percent == 0  # missing reads as off
    result = await unleash_admin.apply(FlagSettings(l2=True, l1_percent=10))
    assert [(w.flag, w.action) for w in result.writes if w.flag == FLAG_L1_QUERY_RESULTS] == [
        (FLAG_L1_QUERY_RESULTS, "create"), (FLAG_L1_QUERY_RESULTS, "add-strategy"),
        (FLAG_L1_QUERY_RESULTS, "enable")]
    assert len(l1_strategies(unleash_server)) == 1
    assert await unleash_admin.read() == FlagSettings(l2=True, l1_percent=10)


async def test_admin_is_a_flag_writer(unleash_admin: UnleashAdmin) -> None:  # noqa: F811
    assert isinstance(unleash_admin, FlagWriter)
    assert "token" not in unleash_admin.target.lower()
    assert unleash_admin.api_url.endswith("/api")


async def test_wrong_token_is_a_permanent_error_with_the_server_message(
    unleash_server: UnleashService,  # noqa: F811
) -> None:
    async with UnleashAdmin(unleash_server.api_url, "*:*.not-the-token") as admin:
        with pytest.raises(PermanentFlagError) as caught:
            await admin.read()
    assert caught.value.status == 401
    assert "401" in caught.value.message
    assert "You must log in to use Unleash" in caught.value.message  # the server's words
    assert "UNLEASH_ADMIN_TOKEN" in caught.value.message
    assert "not-the-token" not in caught.value.message

    # A backend (client) token is a valid token, but not for the Admin API.
    async with UnleashAdmin(unleash_server.api_url, unleash_server.client_token) as admin:
        with pytest.raises(PermanentFlagError) as caught:
            await admin.apply(FlagSettings(l2=True))
    assert caught.value.status == 403
    assert "admin token" in caught.value.message


async def test_unknown_environment_and_project_are_permanent(
    unleash_server: UnleashService,  # noqa: F811
) -> None:
    async with admin_for(unleash_server) as admin:
        with pytest.raises(PermanentFlagError, match="environment 'staging'"):
            await admin.flag_state(FLAG_L2_EMBEDDINGS, "staging")
    async with UnleashAdmin(unleash_server.url, unleash_server.admin_token,
                            project="no-such-project") as admin:
        with pytest.raises(PermanentFlagError) as caught:
            await admin.apply(FlagSettings())
    # Flag names are global: the flags exist, just not in that project.
    assert caught.value.status == 409
    assert "already exists" in caught.value.message
    assert "'no-such-project'" in caught.value.message


async def test_unleash_stopped_is_a_temporary_error() -> None:
    with short_lived_unleash() as service:
        async with admin_for(service) as admin:
            await admin.apply(FlagSettings(shadow=True, l1_percent=10))  # pooled connection
            unleash_svc.stop(service)
            assert not unleash_svc.is_running(service)

            with pytest.raises(TemporaryFlagError) as caught:
                await admin.read()
            assert "cannot reach Unleash" in caught.value.message
            with pytest.raises(TemporaryFlagError):
                await admin.apply(FlagSettings())
    # The starter stopped only its own process and dropped its database.
    assert service.database is not None
    from devstack.services.postgres import psql

    assert service.postgres is not None
    exists = psql(service.postgres["url"],
                  f"select count(*) from pg_database where datname = '{service.database}'")
    assert exists == "0"


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A real TCP listener that accepts and never answers (a hung Unleash)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


async def test_a_hung_server_is_a_temporary_error_within_the_timeout(stalled_port: int) -> None:
    timeout = httpx.Timeout(0.5, connect=0.5)
    async with UnleashAdmin(f"http://127.0.0.1:{stalled_port}/api", "*:*.x",
                            timeout=timeout) as admin:
        started = time.monotonic()
        with pytest.raises(TemporaryFlagError, match="in time"):
            await admin.read()
        assert time.monotonic() - started < 5


class _StatusHandler(BaseHTTPRequestHandler):
    # Stand-in for answers a healthy Unleash will not give on demand (overload, rate limit);
    # the body follows Unleash's error shape.
    def do_GET(self) -> None:
        status = int(self.path.rsplit("/status-", 1)[-1].split("/")[0])
        body = b'{"name":"StandInError","message":"try again later"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "kind"), [
    (500, TemporaryFlagError), (502, TemporaryFlagError), (503, TemporaryFlagError),
    (429, TemporaryFlagError), (400, PermanentFlagError), (409, PermanentFlagError),
])
async def test_http_statuses_map_to_typed_errors(status: int, kind: type[Exception]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        async with UnleashAdmin(f"http://127.0.0.1:{port}/status-{status}", "*:*.x",
                                project="p") as admin:
            with pytest.raises(kind) as caught:
                await admin.read()
        assert caught.value.status == status  # type: ignore[attr-defined]
        assert "try again later" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()
