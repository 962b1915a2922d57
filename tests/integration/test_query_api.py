"""The query path end to end: real app, real Redis, real SQLite, local provider."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from tests.support.auth import auth
from tests.support.service import metric_value, set_flags

WS = uuid.UUID("00000000-0000-4000-8000-000000000001")
WS_OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")
CLIENT = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
CLIENT_OTHER = uuid.UUID("00000000-0000-4000-8000-0000000000c2")
QUESTION = "How has the patient's sleep changed since starting sertraline?"
AUTH = auth(WS)


async def add_note(client: httpx.AsyncClient, ws: uuid.UUID, client_id: uuid.UUID,
                   text: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/workspaces/{ws}/sessions",
        json={"client_id": str(client_id), "subjective": text, "objective": "Calm, alert.",
              "assessment": "Improving.", "plan": "Continue sertraline 50 mg."},
        headers=auth(ws),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def ask(client: httpx.AsyncClient, ws: uuid.UUID, client_id: uuid.UUID | None,
              question: str = QUESTION) -> httpx.Response:
    response = await client.post(
        f"/v1/workspaces/{ws}/query",
        json={"query": question, "client_id": str(client_id) if client_id else None},
        headers=auth(ws),
    )
    assert response.status_code == 200, response.text
    return response


def hits(app: FastAPI, layer: str, mode: str, ws: uuid.UUID = WS) -> float:
    return metric_value(app, "ai_agent_cache_hits_total", workspace_id=str(ws),
                        cache_layer=layer, mode=mode)


async def test_second_identical_query_is_an_l1_hit_at_100_percent(service: Any,
                                                                   redis: Redis) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service() as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 7 hours since sertraline.")
        first = await ask(client, WS, CLIENT)
        second = await ask(client, WS, CLIENT, "  How has the patient's  sleep changed since "
                                               "starting\tsertraline?  ")
    assert first.json()["cache"] == {"l1": "miss", "l2": "miss"}
    assert first.headers["Cache-Status"] == "ai-l2; fwd=miss, ai-l1; fwd=miss"
    assert second.json()["cache"]["l1"] == "hit"
    assert second.headers["Cache-Status"].endswith("ai-l1; hit")
    assert second.json()["answer"] == first.json()["answer"]
    assert second.json()["sources"] == first.json()["sources"]
    assert hits(app, "query_result", "serve") == 1
    assert metric_value(app, "ai_agent_queries_total", outcome="ok", l1="on") == 2


async def test_flags_off_bypasses_both_layers_and_touches_no_cache_key(service: Any,
                                                                       redis: Redis) -> None:
    async with service() as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping better.")
        response = await ask(client, WS, CLIENT)
        await ask(client, WS, CLIENT)
    assert response.json()["cache"] == {"l1": "bypass", "l2": "bypass"}
    assert response.headers["Cache-Status"] == "ai-l2; fwd=bypass, ai-l1; fwd=bypass"
    assert [k async for k in redis.scan_iter("ai-cache:l*")] == []
    assert metric_value(app, "ai_agent_queries_total", outcome="ok", l1="off") == 2
    assert metric_value(app, "ai_agent_upstream_requests_total", kind="chat", outcome="ok") == 2


async def test_every_session_write_makes_client_and_workspace_queries_miss(
    service: Any, redis: Redis
) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service() as (client, _):
        note = await add_note(client, WS, CLIENT, "Sleeping 5 hours.")
        await add_note(client, WS, CLIENT_OTHER, "Other client, anxious.")

        async def warm() -> None:
            for target in (CLIENT, None):
                await ask(client, WS, target)
                assert (await ask(client, WS, target)).json()["cache"]["l1"] == "hit"

        async def assert_both_miss() -> None:
            for target in (CLIENT, None):
                assert (await ask(client, WS, target)).json()["cache"]["l1"] == "stale"

        await warm()
        await add_note(client, WS, CLIENT, "New note: sleeping 8 hours.")  # create
        await assert_both_miss()
        await warm()
        patched = await client.patch(f"/v1/workspaces/{WS}/sessions/{note['id']}",
                                     json={"subjective": "Sleeping 6 hours."}, headers=AUTH)
        assert patched.status_code == 200 and patched.json()["version"] == 2
        await assert_both_miss()
        await warm()
        deleted = await client.delete(f"/v1/workspaces/{WS}/sessions/{note['id']}", headers=AUTH)
        assert deleted.status_code == 204
        await assert_both_miss()
        after = await ask(client, WS, CLIENT)
        assert note["id"] not in {s["session_id"] for s in after.json()["sources"]}


async def test_a_write_for_one_client_keeps_other_clients_answers(service: Any,
                                                                  redis: Redis) -> None:
    await set_flags(redis, l1_percent=100)
    async with service() as (client, _):
        await add_note(client, WS, CLIENT, "Sleeping 5 hours.")
        await add_note(client, WS, CLIENT_OTHER, "Anxious at work.")
        await ask(client, WS, CLIENT_OTHER)
        await add_note(client, WS, CLIENT, "Sleeping 8 hours.")
        assert (await ask(client, WS, CLIENT_OTHER)).json()["cache"]["l1"] == "hit"


async def test_two_workspaces_never_share_an_l1_entry(service: Any, redis: Redis) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service() as (client, _):
        await add_note(client, WS, CLIENT, "Workspace one: sleeping 7 hours.")
        await add_note(client, WS_OTHER, CLIENT, "Workspace two: insomnia persists.")
        one = await ask(client, WS, CLIENT)
        two = await ask(client, WS_OTHER, CLIENT)
        assert two.json()["cache"] == {"l1": "miss", "l2": "miss"}
        assert one.json()["answer"] != two.json()["answer"]
        assert (await ask(client, WS_OTHER, CLIENT)).json()["answer"] == two.json()["answer"]
    l1_keys = [k async for k in redis.scan_iter("ai-cache:l1:*")]
    assert len(l1_keys) == 2
    assert {k.split(b"{")[1].split(b"}")[0].decode() for k in l1_keys} == {str(WS), str(WS_OTHER)}


async def test_no_clinical_text_in_redis_keys(service: Any, redis: Redis) -> None:
    await set_flags(redis, shadow=True, l2=True, l1_percent=100)
    async with service() as (client, _):
        await add_note(client, WS, CLIENT, "Sleeping 7 hours.")
        await ask(client, WS, CLIENT)
    keys = b" ".join([k async for k in redis.scan_iter("*")]).lower()
    for word in (b"sleep", b"sertraline", b"patient"):
        assert word not in keys


async def test_shadow_mode_serves_fresh_while_counting_hits_and_verifying(
    service: Any, redis: Redis
) -> None:
    await set_flags(redis, shadow=True)
    async with service() as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 7 hours.")
        first = await ask(client, WS, CLIENT)
        second = await ask(client, WS, CLIENT)
    assert first.json()["cache"] == {"l1": "shadow-miss", "l2": "shadow-miss"}
    assert second.json()["cache"] == {"l1": "shadow-hit", "l2": "shadow-hit"}
    assert second.headers["Cache-Status"] == (
        "ai-l2; fwd=bypass; detail=shadow-hit, ai-l1; fwd=bypass; detail=shadow-hit"
    )
    assert hits(app, "query_result", "shadow") == 1
    assert hits(app, "embedding", "shadow") == 1
    assert hits(app, "query_result", "serve") == 0
    # Fresh path both times: two generations and two embeddings upstream (plus the note's).
    assert metric_value(app, "ai_agent_upstream_requests_total", kind="chat", outcome="ok") == 2
    assert metric_value(app, "ai_agent_cache_verifications_total", cache_layer="query_result",
                        result="match") == 1
    assert metric_value(app, "ai_agent_cache_verifications_total", cache_layer="embedding",
                        result="match") == 1


async def test_l1_percentage_splits_workspaces_by_cohort(service: Any, redis: Redis) -> None:
    from app import contract
    from app.flags.bucketing import in_rollout

    workspaces = [uuid.UUID(int=i) for i in range(1, 41)]
    await set_flags(redis, l1_percent=50)
    async with service() as (client, app):
        for ws in workspaces:
            await ask(client, ws, None)
            expected = in_rollout(str(ws), contract.L1_ROLLOUT_GROUP_ID, 50)
            assert (await ask(client, ws, None)).json()["cache"]["l1"] == (
                "hit" if expected else "bypass"
            )
    on = metric_value(app, "ai_agent_queries_total", outcome="ok", l1="on")
    off = metric_value(app, "ai_agent_queries_total", outcome="ok", l1="off")
    assert on > 0 and off > 0 and on + off == 80


async def test_operator_invalidation_needs_a_token_and_drops_workspace_answers(
    service: Any, redis: Redis
) -> None:
    await set_flags(redis, l1_percent=100)
    async with service() as (client, app):
        await add_note(client, WS, CLIENT, "Sleeping 7 hours.")
        await ask(client, WS, CLIENT)
        url = f"/v1/workspaces/{WS}/cache/invalidate"
        assert (await client.post(url)).status_code == 401
        assert (await client.post(url, headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await client.post(url, headers=AUTH)).status_code == 403  # a clinician
        done = await client.post(url, headers=auth(WS, role="operator"))
        assert done.status_code == 200 and done.json() == {"scope": "workspace", "applied": True}
        assert (await ask(client, WS, CLIENT)).json()["cache"]["l1"] == "stale"
    assert metric_value(app, "ai_agent_cache_invalidations_total", workspace_id=str(WS),
                        reason="manual") == 1
