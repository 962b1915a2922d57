"""Authorization of the service API (issue 11, point 1; DESIGN.md §4) on the real app with a
real Redis and SQLite: every /v1 endpoint and every kind of caller, what a refused caller can
and cannot cause (keys, metric series, writes), JWKS keys from a file and from a URL, the
static token opt-in, and the audit log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from app import contract as c
from app.api.auth import Access
from app.logs import JsonFormatter
from app.main import ConfigurationError
from devstack.auth import mint
from devstack.network import free_port
from tests.support.auth import (
    STATIC_TOKEN,
    JwksServer,
    auth,
    bearer,
    ec_key,
    jwks,
    public_jwk,
    rsa_key,
    signed,
    token,
)
from tests.support.service import metric_value, set_flags, wait_for

pytestmark = pytest.mark.integration

WS = uuid.UUID("00000000-0000-4000-8000-00000000a011")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000a012")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000c011")
SECRET_TEXT = "Nightmares about the accident"  # must never leave through a refused request
QUESTION = "What did the client report about nightmares?"
NOTE = {"client_id": str(CLIENT), "subjective": SECRET_TEXT, "objective": "Tense.",
        "assessment": "PTSD symptoms.", "plan": "Trauma-focused CBT."}


# --- every endpoint, every kind of caller --------------------------------------------

# name → (method, path, body, the least role allowed, status when allowed, fast path)
ENDPOINTS: dict[str, tuple[str, str, Any, str, int, bool]] = {
    "query": ("POST", "/v1/workspaces/{ws}/query",
              {"query": QUESTION, "client_id": str(CLIENT)}, "clinician", 200, True),
    "query-route": ("POST", "/v1/workspaces/{ws}/query",
                    {"query": QUESTION, "client_id": str(CLIENT)}, "clinician", 200, False),
    "create": ("POST", "/v1/workspaces/{ws}/sessions", NOTE, "clinician", 201, True),
    "read": ("GET", "/v1/workspaces/{ws}/sessions/{note}", None, "clinician", 200, True),
    "update": ("PATCH", "/v1/workspaces/{ws}/sessions/{note}", {"plan": "EMDR."},
               "clinician", 200, True),
    "delete": ("DELETE", "/v1/workspaces/{ws}/sessions/{note}", None, "clinician", 204, True),
    "invalidate": ("POST", "/v1/workspaces/{ws}/cache/invalidate",
                   {"client_id": str(CLIENT)}, "operator", 200, True),
}
# case → (headers for an endpoint whose least role is `role`, expected status or None: allowed)
CASES: dict[str, tuple[Any, int | None]] = {
    "no-token": (lambda role: {}, 401),
    "malformed": (lambda role: {"Authorization": "Bearer not-a-jwt"}, 401),
    "bad-signature": (lambda role: bearer(mint("some-other-secret-of-32-bytes-or-more",
                                               workspaces=[WS], role=role)), 401),
    "expired": (lambda role: bearer(token(WS, role=role, ttl_seconds=-3600)), 401),
    "other-workspace": (lambda role: auth(OTHER, role=role), 404),
    "wrong-role": (lambda role: auth(WS, role="clinician" if role == "operator" else "viewer"),
                   403),
    "right-token": (lambda role: auth(WS, role=role), None),
}


# Series that move on their own, whoever calls: each replica reads the invalidation outbox
# every OUTBOX_POLL_SECONDS, and the pending set and view staleness follow those reads.
_BACKGROUND_SERIES = (c.METRIC_INVALIDATION_READS.removesuffix("_total"),
                      c.METRIC_INVALIDATION_VIEW_STALE, c.METRIC_INVALIDATION_PENDING)


async def settled_outbox(app: FastAPI) -> None:
    """The note's invalidation intent is applied and its row removed in the background after
    the 201 (and counted then): wait for it, so that what follows is the request's doing."""
    await wait_for(lambda: _applied(app), timeout=10,
                   what="the create's invalidation intent to be applied")


async def _applied(app: FastAPI) -> bool:
    return metric_value(app, c.METRIC_INVALIDATION_APPLIED, via="write") >= 1


def _series_name(line: str) -> str:
    """The metric a line of the text format is about (a sample, # HELP or # TYPE)."""
    return line.split()[2] if line.startswith("#") and len(line.split()) > 2 else line


async def snapshot(client: httpx.AsyncClient, app: FastAPI, redis: Redis) -> Any:
    notes = await app.state.container.notes.for_retrieval(WS, None)
    metrics = [line for line in (await client.get("/metrics")).text.splitlines()
               if not _series_name(line).startswith(_BACKGROUND_SERIES)]
    return (sorted(await redis.keys("*")), metrics, sorted((n.id, n.version) for n in notes))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_every_endpoint_answers_each_caller_as_it_should(
    service: Any, redis: Redis, endpoint: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    method, template, body, role, allowed_status, fast = ENDPOINTS[endpoint]
    make_headers, refused_status = CASES[case]
    async with service(query_fast_path=fast) as (client, app):
        await set_flags(redis, shadow=True, l2=True, l1_percent=100)
        note = (await client.post(f"/v1/workspaces/{WS}/sessions", json=NOTE,
                                  headers=auth(WS, role="service"))).json()
        path = template.format(ws=WS, note=note["id"])
        unknown_url = (await client.get("/v1/nowhere", headers=auth(WS))).json()
        await settled_outbox(app)
        before = await snapshot(client, app, redis)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="app.audit"):
            response = await client.request(method, path, json=body,
                                            headers=make_headers(role))
        if refused_status is None:
            assert response.status_code == allowed_status, response.text
            return
        assert response.status_code == refused_status, response.text
        # No data: a one-line reason, nothing of the note, the answer or the session.
        assert set(response.json()) == {"detail"} and isinstance(response.json()["detail"], str)
        for secret in (SECRET_TEXT, note["id"], str(CLIENT), "answer", "sources"):
            assert secret not in response.text
        # Nothing happened: no key, no metric series or count, no write.
        assert await snapshot(client, app, redis) == before
        if refused_status == 401:
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="ai-cache"')
            assert ('error="invalid_token"' in challenge) == (case != "no-token")
        elif refused_status == 403:
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        else:  # a workspace the token does not name looks like a URL that does not exist
            assert response.json() == unknown_url == {"detail": "Not Found"}
        (line,) = [r for r in caplog.records if r.name == "app.audit"]
        assert line.__dict__["status"] == refused_status
        assert line.__dict__["outcome"] == "denied" and line.__dict__["reason"]


async def test_a_workspace_the_token_does_not_name_never_reaches_metrics_or_redis(
    service: Any, redis: Redis
) -> None:
    for fast in (True, False):
        async with service(query_fast_path=fast) as (client, _):
            await set_flags(redis, shadow=True, l2=True, l1_percent=100)
            mine = auth(WS, role="operator")
            strangers = [uuid.uuid4() for _ in range(300)]
            for i, ws in enumerate([OTHER, *strangers]):
                headers = mine if i % 2 else {}  # a valid token for WS, or none at all
                for method, path, body in [
                    ("POST", f"/v1/workspaces/{ws}/query", {"query": f"q{i}"}),
                    ("POST", f"/v1/workspaces/{ws}/sessions", NOTE),
                    ("GET", f"/v1/workspaces/{ws}/sessions/{uuid.uuid4()}", None),
                    ("POST", f"/v1/workspaces/{ws}/cache/invalidate", {}),
                ]:
                    response = await client.request(method, path, json=body, headers=headers)
                    assert response.status_code in (401, 404), response.text
            metrics = (await client.get("/metrics")).text
            keys = [k.decode() for k in await redis.keys("*")]
            for ws in (OTHER, *strangers):
                assert str(ws) not in metrics
                assert not [k for k in keys if str(ws) in k]
            # The caller's own workspace does: the check above can see what it looks for.
            assert (await client.post(f"/v1/workspaces/{WS}/query", json={"query": "q"},
                                      headers=mine)).status_code == 200
            assert str(WS) in (await client.get("/metrics")).text
            assert [k for k in await redis.keys("*") if str(WS).encode() in k]
            await redis.flushall()


async def test_every_v1_operation_the_app_serves_checks_the_caller(service: Any,
                                                                    redis: Redis) -> None:
    """Deny by default, for every operation the OpenAPI document lists (a route added later
    without an `Access` dependency fails here): no token 401, another workspace's 404."""
    from app.api.routes import router

    for route in router.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            calls = [d.call for d in route.dependant.dependencies]
            assert any(isinstance(c, Access) for c in calls), route.path
    async with service() as (client, _):
        doc = (await client.get("/openapi.json")).json()
        operations = [(method.upper(), path, spec) for path, item in doc["paths"].items()
                      if path.startswith("/v1/") for method, spec in item.items()]
        assert len(operations) == 6
        for method, template, spec in operations:
            assert spec["security"] == [{"HTTPBearer": []}], (method, template)
            path = template.format(workspace_id=WS, session_id=uuid.uuid4())
            body = {"query": "q"} if template.endswith("/query") else {}
            assert (await client.request(method, path, json=body)).status_code == 401
            other = await client.request(method, path, json=body,
                                         headers=auth(OTHER, role="service"))
            assert other.status_code == 404, (method, path, other.text)


async def test_metrics_health_and_readiness_need_no_token(service: Any, redis: Redis) -> None:
    async with service() as (client, _):
        for path in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/readyz")).json()["auth"] == "ok"
        # Any other path needs a token, whether a route exists there or not.
        assert (await client.get("/anything")).status_code == 401
        assert (await client.get("/v1/workspaces")).status_code == 401


# --- JWKS: RS256 and ES256 keys from a file --------------------------------------------


async def test_jwks_file_with_rs256_and_es256_keys(service: Any, redis: Redis,
                                                   tmp_path: Path) -> None:
    rsa, ec, stranger = rsa_key(), ec_key(), rsa_key()
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(public_jwk(rsa, "rsa-1"), public_jwk(ec, "ec-1")))
    async with service(auth_jwt_secret=None, auth_jwks_file=path,
                       auth_jwks_min_refetch_seconds=0) as (client, _):
        url = f"/v1/workspaces/{WS}/query"

        async def ask(bearer_token: str) -> int:
            response = await client.post(url, json={"query": QUESTION},
                                         headers=bearer(bearer_token))
            return response.status_code

        assert await ask(signed(rsa, "rsa-1", WS)) == 200
        assert await ask(signed(ec, "ec-1", WS)) == 200
        assert await ask(signed(ec, "ec-1", OTHER)) == 404
        assert await ask(signed(stranger, "rsa-1", WS)) == 401  # right kid, wrong key
        assert await ask(signed(rsa, "ec-1", WS)) == 401  # RS256 under an ES256 key's kid
        assert await ask(signed(rsa, "rsa-1", WS, audience="other")) == 401
        assert await ask(token(WS)) == 401  # HS256: no secret configured
        # A rotation: the new key is in the file; a token naming it makes the set re-read.
        rotated = rsa_key()
        path.write_bytes(jwks(public_jwk(rotated, "rsa-2"), public_jwk(ec, "ec-1")))
        assert await ask(signed(rotated, "rsa-2", WS)) == 200


async def test_an_unusable_jwks_file_stops_the_service_at_start(service: Any, redis: Redis,
                                                                tmp_path: Path) -> None:
    for content in (None, b"not json", jwks()):
        path = tmp_path / "jwks.json"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ConfigurationError, match="AUTH_JWKS_FILE"):
            async with service(auth_jwt_secret=None, auth_jwks_file=path):
                pass


# --- JWKS from a URL: fetched asynchronously, cached, rotated, never blocking -------------


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(b"{}", free_port())
    yield server
    server.stop()


async def test_jwks_url_is_fetched_once_then_cached_and_reread_on_rotation(
    service: Any, redis: Redis, jwks_server: JwksServer
) -> None:
    rsa, ec = rsa_key(), ec_key()
    jwks_server.document = jwks(public_jwk(rsa, "rsa-1"), public_jwk(ec, "ec-1"))
    jwks_server.start()
    async with service(auth_jwt_secret=None, auth_jwks_url=jwks_server.url,
                       auth_jwks_min_refetch_seconds=1.0) as (client, _):
        assert jwks_server.reads == 1  # read once, before serving
        url = f"/v1/workspaces/{WS}/query"
        for key, kid in [(rsa, "rsa-1"), (ec, "ec-1")] * 10:
            response = await client.post(url, json={"query": QUESTION},
                                         headers=bearer(signed(key, kid, WS)))
            assert response.status_code == 200, response.text
        assert jwks_server.reads == 1  # cached

        await asyncio.sleep(1.0)  # past the minimum time between reads
        rotated = ec_key()
        jwks_server.document = jwks(public_jwk(rsa, "rsa-1"), public_jwk(rotated, "ec-2"))
        response = await client.post(url, json={"query": QUESTION},
                                     headers=bearer(signed(rotated, "ec-2", WS)))
        assert response.status_code == 200 and jwks_server.reads == 2
        # Unknown key ids right after a read: refused without hammering the provider.
        bogus = await asyncio.gather(*(
            client.post(url, json={"query": QUESTION},
                        headers=bearer(signed(ec_key(), f"bogus-{i}", WS)))
            for i in range(20)))
        assert {r.status_code for r in bogus} == {401} and jwks_server.reads == 2


async def test_a_slow_jwks_fetch_does_not_block_the_event_loop(
    service: Any, redis: Redis, jwks_server: JwksServer
) -> None:
    rsa = rsa_key()
    jwks_server.document = jwks(public_jwk(rsa, "rsa-1"))
    jwks_server.start()
    async with service(auth_jwt_secret=None, auth_jwks_url=jwks_server.url,
                       auth_jwks_min_refetch_seconds=0) as (client, _):
        url = f"/v1/workspaces/{WS}/query"
        known = bearer(signed(rsa, "rsa-1", WS))
        assert (await client.post(url, json={"query": QUESTION}, headers=known)
                ).status_code == 200
        jwks_server.delay = 1.5
        waiting = asyncio.create_task(client.post(
            url, json={"query": QUESTION}, headers=bearer(signed(rsa_key(), "new", WS))))
        await asyncio.sleep(0.2)  # the slow read is under way
        assert not waiting.done()
        started = time.monotonic()
        for _ in range(10):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.post(url, json={"query": QUESTION}, headers=known)
                    ).status_code == 200
        assert time.monotonic() - started < 1.0  # served while the read was still going
        assert not waiting.done()
        assert (await waiting).status_code == 401  # the set it read has no key "new"


async def test_an_identity_provider_down_at_start_delays_tokens_not_the_service(
    service: Any, redis: Redis, jwks_server: JwksServer
) -> None:
    ec = ec_key()
    jwks_server.document = jwks(public_jwk(ec, "ec-1"))  # not started yet: nobody listens
    async with service(auth_jwt_secret=None, auth_jwks_url=jwks_server.url,
                       auth_jwks_min_refetch_seconds=0.2) as (client, _):
        assert (await client.get("/readyz")).json()["auth"] == "keys-unavailable"
        url = f"/v1/workspaces/{WS}/query"
        headers = bearer(signed(ec, "ec-1", WS))
        assert (await client.post(url, json={"query": QUESTION}, headers=headers)
                ).status_code == 401
        jwks_server.start()
        await asyncio.sleep(0.25)
        assert (await client.post(url, json={"query": QUESTION}, headers=headers)
                ).status_code == 200
        assert (await client.get("/readyz")).json()["auth"] == "ok"


# --- the static token: an explicit opt-in for local runs ---------------------------------


async def test_the_static_token_works_only_when_opted_in(service: Any, redis: Redis,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    ws = uuid.uuid4()
    static = bearer(STATIC_TOKEN)
    async with service() as (client, _):
        response = await client.post(f"/v1/workspaces/{ws}/sessions", json=NOTE,
                                     headers=static)
        assert response.status_code == 401
    with caplog.at_level(logging.INFO):
        async with service(service_api_token=STATIC_TOKEN) as (client, _):
            created = await client.post(f"/v1/workspaces/{ws}/sessions", json=NOTE,
                                        headers=static)
            assert created.status_code == 201
            note = created.json()["id"]
            assert (await client.get(f"/v1/workspaces/{ws}/sessions/{note}",
                                     headers=static)).status_code == 200
            assert (await client.post(f"/v1/workspaces/{ws}/query", json={"query": QUESTION},
                                      headers=static)).status_code == 200
            assert (await client.post(f"/v1/workspaces/{ws}/cache/invalidate", json={},
                                      headers=static)).status_code == 200
            # JWTs keep working beside it.
            assert (await client.post(f"/v1/workspaces/{ws}/query", json={"query": QUESTION},
                                      headers=auth(ws))).status_code == 200
    assert any("SERVICE_API_TOKEN is set" in r.getMessage() for r in caplog.records)
    audit = [r.__dict__ for r in caplog.records if r.name == "app.audit"]
    assert [(a["status"], a["via"], a["who"], a["role"]) for a in audit] == [
        (401, None, None, None),  # before the opt-in
        *[(status, "static", "service-api-token", "service") for status in (201, 200, 200, 200)],
        (200, "jwt", "test-clinician", "clinician"),
    ]


# --- the audit log -----------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "route"])
async def test_every_clinical_read_and_write_is_audited_without_text(
    service: Any, redis: Redis, caplog: pytest.LogCaptureFixture, fast: bool
) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    clinician, operator = auth(WS, sub="dr-who"), auth(WS, role="operator", sub="ops-1")
    with caplog.at_level(logging.INFO, logger="app.audit"):
        async with service(query_fast_path=fast) as (client, _):
            base = f"/v1/workspaces/{WS}/sessions"
            note = (await client.post(base, json=NOTE, headers=clinician)).json()["id"]
            await client.get(f"{base}/{note}", headers=clinician)
            await client.patch(f"{base}/{note}", json={"plan": "EMDR."}, headers=clinician)
            for _ in range(2):  # a miss, then an L1 hit
                await client.post(f"/v1/workspaces/{WS}/query", headers=clinician,
                                  json={"query": QUESTION, "client_id": str(CLIENT)})
            await client.post(f"/v1/workspaces/{WS}/cache/invalidate", json={},
                              headers=operator)
            await client.post(f"/v1/workspaces/{WS}/cache/invalidate", json={},
                              headers=clinician)
            await client.get(f"/v1/workspaces/{OTHER}/sessions/{note}", headers=clinician)
            await client.delete(f"{base}/{note}", headers=clinician)
            await client.get(f"{base}/{note}")
    records = [r for r in caplog.records if r.name == "app.audit"]
    seen = [(r.__dict__["action"], r.__dict__["status"], r.__dict__["outcome"],
             r.__dict__["who"], r.__dict__["workspace"], r.__dict__.get("session"),
             r.__dict__.get("reason")) for r in records]
    ws = str(WS)
    assert seen == [
        ("session.create", 201, "ok", "dr-who", ws, note, None),
        ("session.read", 200, "ok", "dr-who", ws, note, None),
        ("session.update", 200, "ok", "dr-who", ws, note, None),
        ("query", 200, "ok", "dr-who", ws, None, None),
        ("query", 200, "ok", "dr-who", ws, None, None),
        ("cache.invalidate", 200, "ok", "ops-1", ws, None, None),
        ("cache.invalidate", 403, "denied", "dr-who", ws, None, "role"),
        ("session.read", 404, "denied", "dr-who", str(OTHER), None, "other_workspace"),
        ("session.delete", 204, "ok", "dr-who", ws, note, None),
        (None, 401, "denied", None, None, None, "no_token"),
    ]
    # The answer's sources are named (which notes were disclosed), by id.
    assert records[3].__dict__["sources"] == [note] == records[4].__dict__["sources"]
    assert records[3].__dict__["client"] == str(CLIENT)
    # Never any text: not the note's, not the question's, in any line as it is written.
    formatter = JsonFormatter()
    for record in records:
        line = formatter.format(record)
        json.loads(line)
        for text in (SECRET_TEXT, "PTSD", "EMDR", QUESTION, "nightmares"):
            assert text.lower() not in line.lower(), line
