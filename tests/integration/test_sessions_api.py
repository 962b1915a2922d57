"""Session CRUD and input validation, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.auth import auth

WS = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
CLIENT = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
NOTE = {"client_id": str(CLIENT), "subjective": "Sleeps badly.", "objective": "Tired.",
        "assessment": "Insomnia.", "plan": "Sleep hygiene."}
AUTH = auth(WS)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_crud_round_trip(service: Any, redis: Redis, database_url: str) -> None:
    async with service(database_url=database_url) as (client, _):
        base = f"/v1/workspaces/{WS}/sessions"
        created = await client.post(base, json=NOTE, headers=AUTH)
        assert created.status_code == 201, created.text
        note = created.json()
        assert note["version"] == 1 and note["workspace_id"] == str(WS)
        fetched = await client.get(f"{base}/{note['id']}", headers=AUTH)
        assert fetched.status_code == 200 and fetched.json()["plan"] == "Sleep hygiene."
        patched = await client.patch(f"{base}/{note['id']}", json={"plan": "CBT-I referral."},
                                     headers=AUTH)
        assert patched.status_code == 200
        assert patched.json()["plan"] == "CBT-I referral." and patched.json()["version"] == 2
        assert patched.json()["subjective"] == "Sleeps badly."
        assert (await client.delete(f"{base}/{note['id']}", headers=AUTH)).status_code == 204
        assert (await client.get(f"{base}/{note['id']}", headers=AUTH)).status_code == 404
        assert (await client.delete(f"{base}/{note['id']}", headers=AUTH)).status_code == 404


async def test_a_session_is_invisible_from_another_workspace(service: Any, redis: Redis,
                                                             database_url: str) -> None:
    async with service(database_url=database_url) as (client, _):
        note = (await client.post(f"/v1/workspaces/{WS}/sessions", json=NOTE,
                                  headers=AUTH)).json()
        # A workspace the caller may reach, that does not hold this note.
        other_ws = uuid.uuid4()
        both = auth(WS, other_ws)
        other = f"/v1/workspaces/{other_ws}/sessions/{note['id']}"
        assert (await client.get(other, headers=both)).status_code == 404
        assert (await client.patch(other, json={"plan": "x"}, headers=both)).status_code == 404
        assert (await client.delete(other, headers=both)).status_code == 404
        assert (await client.get(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                 headers=AUTH)).json()["plan"] == "Sleep hygiene."


BAD_REQUESTS = [
    ("post", "/v1/workspaces/not-a-uuid/query", {"query": "q"}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": ""}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": "   "}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": "x" * 2001}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": 42}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": "q", "client_id": "nope"}, 422),
    ("post", f"/v1/workspaces/{WS}/query", {"query": "q", "extra": 1}, 422),
    ("post", f"/v1/workspaces/{WS}/query", None, 422),
    ("post", f"/v1/workspaces/{WS}/sessions", {**NOTE, "client_id": "x"}, 422),
    ("post", f"/v1/workspaces/{WS}/sessions", {"client_id": str(CLIENT)}, 422),
    ("post", f"/v1/workspaces/{WS}/sessions", {**NOTE, "plan": 5}, 422),
    ("post", f"/v1/workspaces/{WS}/sessions", {**NOTE, "plan": "x" * 20_001}, 422),
    ("get", f"/v1/workspaces/{WS}/sessions/123", None, 422),
    ("get", f"/v1/workspaces/{WS}/sessions/{uuid.uuid4()}", None, 404),
    ("patch", f"/v1/workspaces/{WS}/sessions/{uuid.uuid4()}", {}, 422),
    ("patch", f"/v1/workspaces/{WS}/sessions/{uuid.uuid4()}", {"plan": "x"}, 404),
    ("post", f"/v1/workspaces/{WS}/cache/invalidate", {"client_id": "x"}, 422),
]


@pytest.mark.parametrize(("method", "url", "body", "status"), BAD_REQUESTS,
                         ids=[f"{m}-{i}" for i, (m, *_rest) in enumerate(BAD_REQUESTS)])
async def test_bad_input_gets_a_clear_4xx_and_writes_nothing(
    service: Any, redis: Redis, method: str, url: str, body: Any, status: int
) -> None:
    async with service() as (client, app):
        # An operator: the invalidation row must reach its body's validation.
        response = await client.request(method, url, json=body,
                                        headers=auth(WS, role="operator"))
        assert response.status_code == status, response.text
        assert response.json()["detail"]
        notes = await app.state.container.notes.for_retrieval(WS, None)
        assert notes == []


async def test_writes_need_a_token(service: Any, redis: Redis) -> None:
    base = f"/v1/workspaces/{WS}/sessions"
    async with service() as (client, app):
        assert (await client.post(base, json=NOTE)).status_code == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert (await client.post(base, json=NOTE, headers=wrong)).status_code == 401
        assert await app.state.container.notes.for_retrieval(WS, None) == []
    # No key configured at all: every token is refused (deny by default).
    async with service(auth_jwt_secret=None) as (client, app):
        refused = await client.post(base, json=NOTE, headers=AUTH)
        assert refused.status_code == 401
        assert (await client.get("/readyz")).json()["auth"] == "not-configured"
        assert await app.state.container.notes.for_retrieval(WS, None) == []


async def test_provider_failure_on_write_is_a_503_and_stores_nothing(service: Any,
                                                                     redis: Redis) -> None:
    async with service(local_error_rate=1.0) as (client, app):
        response = await client.post(f"/v1/workspaces/{WS}/sessions", json=NOTE, headers=AUTH)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert await app.state.container.notes.for_retrieval(WS, None) == []
        failed = await client.post(f"/v1/workspaces/{WS}/query", json={"query": "q"},
                                   headers=AUTH)
        assert failed.status_code == 503


async def test_openapi_document_describes_the_api(service: Any, redis: Redis) -> None:
    async with service() as (client, _):
        doc = (await client.get("/openapi.json")).json()
    assert "/v1/workspaces/{workspace_id}/query" in doc["paths"]
    assert "/v1/workspaces/{workspace_id}/sessions/{session_id}" in doc["paths"]
    assert doc["paths"]["/v1/workspaces/{workspace_id}/query"]["post"]["responses"]["200"]


async def test_health_and_readiness(service: Any, redis: Redis) -> None:
    async with service() as (client, _):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["redis"] == "ok" and ready["flags"] == "local"
