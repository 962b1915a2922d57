"""The controller's HTTP API (httpx over ASGI against the real app), with its state in a real
Redis and the flags in the local flag store: status, history, metrics, page, commands, auth."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.auth.verifier import TokenVerifier
from devstack.auth import mint
from devstack.services.common import Service
from rollout.adapters.callers import TokenCallers
from rollout.adapters.local_flags import LocalFlagWriter
from rollout.adapters.redis_lease import RedisLease
from rollout.adapters.redis_state import RedisStateStore, RolloutKeys
from rollout.controller import Controller
from rollout.core.plan import Plan
from rollout.metrics import ControllerMetrics
from rollout.runtime_types import CyclePorts
from rollout.server import HistoryPage, create_app
from rollout.status import StatusView
from tests.unit.rollout_runtime.evidence_fixtures import evidence_plan
from tests.unit.rollout_runtime.fakes import (
    MID,
    T0,
    FakeMetricsSource,
    RecordingNotifier,
    small_plan,
)

pytestmark = pytest.mark.integration

TOKEN = "t0k3n-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JWT_SECRET = "controller-tests-hs256-secret-0123456789"  # >= 32 bytes
AUDIENCE = "ai-cache-rollout"  # ROLLOUT_AUTH_AUDIENCE's default


@dataclass
class Api:
    http: httpx.AsyncClient
    controller: Controller
    store: RedisStateStore
    flags: LocalFlagWriter
    notifier: RecordingNotifier


async def make_api(redis_service: Service, *, token: str | None = TOKEN,
                   jwt_secret: str | None = JWT_SECRET, leader: bool = True,
                   plan: Plan | None = None,
                   values: dict[str, float | None] | None = None,
                   clock: Callable[[], datetime] | None = None) -> tuple[Api, list[object]]:
    client = Redis.from_url(redis_service.url, decode_responses=True)
    keys = RolloutKeys(f"api-{uuid.uuid4().hex[:8]}")
    store = RedisStateStore(client, keys)
    flags = LocalFlagWriter.from_url(redis_service.url, key=f"{keys.namespace}:flags")
    plan = plan or small_plan()
    registry = CollectorRegistry()
    notifier = RecordingNotifier()
    source = FakeMetricsSource(flags, values=dict(values or {}))
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=notifier, metrics=ControllerMetrics(registry, plan),
                       instance_id="api-test")
    lease = RedisLease(client, keys, "api-test", ttl_seconds=30)
    if not leader:  # someone else holds the lease
        await client.set(keys.lease, "the-other-one", px=30_000)
    controller = Controller(ports, lease) if clock is None else Controller(ports, lease,
                                                                          clock=clock)
    await controller.refresh_lease()
    jwt = None if jwt_secret is None else TokenVerifier(
        audience=AUDIENCE, hs256_secret=jwt_secret.encode(), workspaces_claim=False)
    app = create_app(controller, registry=registry,
                     callers=TokenCallers(static_token=token, jwt=jwt))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rollout")
    cleanup: list[object] = [http, flags, client, keys]
    return Api(http, controller, store, flags, notifier), cleanup


@pytest.fixture
async def api(redis_service: Service) -> AsyncIterator[Api]:
    made, cleanup = await make_api(redis_service)
    yield made
    await _cleanup(cleanup)


async def _cleanup(cleanup: list[object]) -> None:
    http, flags, client, keys = cleanup
    await http.aclose()  # type: ignore[attr-defined]
    await client.delete(*keys.all(), f"{keys.namespace}:flags")  # type: ignore[attr-defined]
    await flags.aclose()  # type: ignore[attr-defined]
    await client.aclose()  # type: ignore[attr-defined]


async def test_status_before_and_after_the_first_cycle(api: Api) -> None:
    response = await api.http.get("/api/status")
    assert response.status_code == 200
    status = response.json()
    assert status["initialised"] is False and status["stage"] == "off"
    assert status["leader"] == {"instance_id": "api-test", "is_leader": True,
                                "holder": "api-test"}

    assert await api.controller.tick() is not None
    status = (await api.http.get("/api/status")).json()
    assert status["initialised"] is True
    assert [s["position"] for s in status["stages"]] == ["current", "pending", "pending"]
    assert status["paused"] is False and status["in_cooldown"] is False
    assert status["last_decision"]["action"] == "hold"
    [check] = status["checks"]
    assert check["check"] == "base" and check["verdict"] in ("pass", "no_data")
    assert status["bake_seconds"] == 60.0
    assert status["flags"]["desired"] == {"shadow": False, "l2": False, "l1_percent": 0}


async def test_history_and_its_limit(api: Api) -> None:
    for _ in range(3):
        await api.controller.tick()
    entries = (await api.http.get("/api/history", params={"limit": 2})).json()["entries"]
    assert len(entries) == 2 and entries[0]["id"] > entries[1]["id"]
    assert (await api.http.get("/api/history", params={"limit": 0})).status_code == 422
    assert (await api.http.get("/api/history", params={"limit": "x"})).status_code == 422


async def test_metrics_endpoint(api: Api) -> None:
    await api.controller.tick()
    text = (await api.http.get("/metrics")).text
    for name in ("rollout_stage_index 0.0", 'rollout_stage_info{stage="off"} 1.0',
                 "rollout_paused 0.0", "rollout_is_leader 1.0",
                 "rollout_last_evaluation_timestamp_seconds",
                 "rollout_stage_entered_timestamp_seconds", 'rollout_checks_total{check="base"'):
        assert name in text


async def test_status_page_for_people(api: Api) -> None:
    await api.controller.tick()
    response = await api.http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    # refreshed by its own script, which the CSP allows by this response's nonce only
    csp = response.headers["content-security-policy"]
    nonce = csp.split("script-src 'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page and "fetch('api/status'" in page
    assert "Stages" in page and "Gates and guardrails" in page and "Last decisions" in page
    assert "Next" in page and 'id="stage-chart"' in page
    assert "off" in page and "mid" in page
    fragment = (await api.http.get("/", params={"fragment": "true"})).text
    assert fragment.startswith("<header") and fragment.endswith("</main>")
    assert "<script" not in fragment and "<style" not in fragment
    second = (await api.http.get("/")).headers["content-security-policy"]
    assert second != csp  # a fresh nonce per response


async def test_status_history_and_page_show_the_evidence(redis_service: Service) -> None:
    """Issue 10: a statistical gate's evidence and the objectives go through the log and the
    last-cycle summary in Redis and come out of /api/status, /api/history and the page."""
    now = [T0]
    # 5 stale answers in 1 000 audits against a 1 % limit: inconclusive; cost 10 %: met.
    made, cleanup = await make_api(redis_service, plan=evidence_plan(), clock=lambda: now[0],
                                   values={"stale": 5, "cohort": 3, "control": 3, "cost": 100})
    try:
        for seconds in (0, 70, 80, 91):  # off → mid, the flags confirmed, then judged
            now[0] = T0 + timedelta(seconds=seconds)
            assert await made.controller.tick() is not None
        status = (await made.http.get("/api/status")).json()
        assert status["stage"] == "mid"
        checks = {check["check"]: check for check in status["checks"]}
        stale = checks["stale"]
        assert stale["kind"] == "gate" and stale["verdict"] == "inconclusive"
        assert stale["evidence"]["trials"] == 1000 and stale["evidence"]["needed_more"] > 0
        assert stale["limit_text"] == "limit \u2264 1 %"
        assert checks["cost"]["kind"] == "objective" and checks["cost"]["verdict"] == "pass"
        assert checks["cost"]["evidence"]["lower"] < 0.1 < checks["cost"]["evidence"]["upper"]
        [latest] = (await made.http.get("/api/history", params={"limit": 1})).json()["entries"]
        assert {c["check"]: c["evidence"] for c in latest["checks"]}["stale"] == stale["evidence"]
        page = (await made.http.get("/")).text
        assert 'class="verdict inconclusive"' in page and "more (\u2248" in page
        assert "limit \u2264 1 %" in page and "<h2>Objectives</h2>" in page
        assert "met</span>" in page and " to " in page
    finally:
        await _cleanup(cleanup)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
    {"Authorization": "Basic dXNlcjpwYXNz"},
])
async def test_commands_need_the_bearer_token(api: Api, headers: dict[str, str]) -> None:
    response = await api.http.post("/api/pause", json={"who": "a", "why": "b"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await api.store.load()).state is None


async def test_an_unauthenticated_bad_body_is_401_not_422(api: Api) -> None:
    response = await api.http.post("/api/pause", content=b"not json")
    assert response.status_code == 401


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/pause", {"who": "alice"}, "why"),
    ("/api/pause", {"why": "x"}, "who"),
    ("/api/pause", {"who": "alice", "why": "   "}, "why"),
    ("/api/pause", {"who": "alice", "why": "x", "extra": 1}, "extra"),
    ("/api/promote", {"who": "alice", "why": "x", "full": "yes"}, "full"),
])
async def test_a_bad_body_is_422_naming_the_field(
    api: Api, path: str, body: dict[str, object], field: str
) -> None:
    response = await api.http.post(path, json=body, headers=AUTH)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_options_that_do_not_belong_to_a_command_are_422(api: Api) -> None:
    response = await api.http.post("/api/pause", json={"who": "a", "why": "b", "full": True},
                                   headers=AUTH)
    assert response.status_code == 422 and "promote only" in response.json()["detail"]
    response = await api.http.post("/api/promote", json={"who": "a", "why": "b", "to": "off"},
                                   headers=AUTH)
    assert response.status_code == 422 and "rollback only" in response.json()["detail"]
    response = await api.http.post("/api/pause", content=b"{", headers=AUTH)
    assert response.status_code == 422


async def test_pause_then_a_second_pause_is_409_with_the_reason(api: Api) -> None:
    await api.controller.tick()
    response = await api.http.post("/api/pause", json={"who": "alice", "why": "INC-7"},
                                   headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "pause"
    assert (await api.http.get("/api/status")).json()["pause"]["why"] == "INC-7"
    again = await api.http.post("/api/pause", json={"who": "bob", "why": "me too"},
                                headers=AUTH)
    assert again.status_code == 409
    assert "already paused by alice" in again.json()["detail"]
    [latest] = (await api.http.get("/api/history", params={"limit": 1})).json()["entries"]
    assert latest["command"] == {"name": "pause", "who": "alice", "why": "INC-7",
                                 "full": False, "to": None}
    assert api.notifier.events() == ["pause"]


async def test_promote_and_rollback_write_the_flags(api: Api) -> None:
    await api.controller.tick()
    response = await api.http.post("/api/promote", json={"who": "alice", "why": "go"},
                                   headers=AUTH)
    assert response.status_code == 200
    assert response.json()["to_stage"] == "mid"
    assert await api.flags.read() == MID
    response = await api.http.post("/api/rollback", json={"who": "bob", "why": "no",
                                                          "to": "off"}, headers=AUTH)
    assert response.status_code == 200 and response.json()["to_stage"] == "off"
    status = (await api.http.get("/api/status")).json()
    assert status["stage"] == "off" and status["last_rollback"]["by"] == "bob"
    bad = await api.http.post("/api/rollback", json={"who": "bob", "why": "x", "to": "zzz"},
                              headers=AUTH)
    assert bad.status_code == 409 and "unknown stage 'zzz'" in bad.json()["detail"]


async def test_a_standby_refuses_commands_and_names_the_leader(redis_service: Service) -> None:
    api, cleanup = await make_api(redis_service, leader=False)
    try:
        response = await api.http.post("/api/pause", json={"who": "a", "why": "b"},
                                        headers=AUTH)
        assert response.status_code == 503
        assert response.json()["leader"] == "the-other-one"
        status = (await api.http.get("/api/status")).json()
        assert status["leader"]["is_leader"] is False
        assert status["leader"]["holder"] == "the-other-one"
    finally:
        await _cleanup(cleanup)


def bearer(role: str, *, sub: str = "alice@clinic", audience: str = AUDIENCE,
           secret: str = JWT_SECRET, ttl_seconds: float = 6 * 3600) -> dict[str, str]:
    # Minted at collection, used up to a whole suite later: a TTL longer than any run.
    token = mint(secret, workspaces=[], role=role, sub=sub, audience=audience,
                 ttl_seconds=ttl_seconds)
    return {"Authorization": f"Bearer {token}"}


async def test_an_operator_jwt_steers_and_is_recorded_as_who_acted(api: Api) -> None:
    response = await api.http.post("/api/pause", json={"who": "someone-else", "why": "inc-9"},
                                   headers=bearer("operator"))
    assert response.status_code == 200, response.text
    state = (await api.store.load()).state
    assert state is not None and state.paused
    [entry] = (await api.http.get("/api/history", params={"limit": 1})).json()["entries"]
    assert entry["by"] == "alice@clinic"  # the token's sub, not the body's claim


@pytest.mark.parametrize(("headers", "status", "says"), [
    (bearer("viewer"), 403, "may read the rollout, not steer it"),
    (bearer("clinician"), 403, "'operator' needed"),
    (bearer("operator", audience="ai-cache"), 401, "not valid"),  # a token for the service
    (bearer("operator", ttl_seconds=-3600), 401, "expired"),
    (bearer("operator", secret="another-secret-of-at-least-32-bytes!"), 401, "not valid"),
])
async def test_a_jwt_that_may_not_steer_changes_nothing(
    api: Api, headers: dict[str, str], status: int, says: str,
) -> None:
    response = await api.http.post("/api/pause", json={"who": "a", "why": "b"}, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert (await api.store.load()).state is None
    # Reading needs no token, whoever asks.
    assert (await api.http.get("/api/status", headers=headers)).status_code == 200


async def test_no_credentials_configured_disables_commands(redis_service: Service) -> None:
    api, cleanup = await make_api(redis_service, token=None, jwt_secret=None)
    try:
        response = await api.http.post("/api/pause", json={"who": "a", "why": "b"},
                                       headers=AUTH)
        assert response.status_code == 403
        assert "ROLLOUT_API_TOKEN" in response.json()["detail"]
    finally:
        await _cleanup(cleanup)


async def test_unknown_command_is_404(api: Api) -> None:
    response = await api.http.post("/api/destroy", json={"who": "a", "why": "b"}, headers=AUTH)
    assert response.status_code in (404, 405)


async def test_openapi_documents_the_typed_status_history_and_commands(api: Api) -> None:
    schema = (await api.http.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    assert {"StatusView", "LogEntry", "CheckRecord", "HistoryPage", "CommandResult"} <= set(
        components)
    assert "stage" in components["StatusView"]["properties"]
    ok = schema["paths"]["/api/status"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/StatusView")
    pause = schema["paths"]["/api/pause"]["post"]
    assert set(pause["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {
        "who", "why", "full", "to"}


async def test_the_cli_reads_what_the_api_serves(api: Api) -> None:
    await api.controller.tick()
    # The CLI parses /api/status and /api/history into the models the server declared.
    status = StatusView.model_validate((await api.http.get("/api/status")).json())
    assert status.initialised and status.stage == "off" and status.checks
    entries = HistoryPage.model_validate((await api.http.get("/api/history")).json()).entries
    assert entries[0].kind == "cycle" and entries[0].flags is not None
    assert entries[0].flags.desired == status.flags.desired
