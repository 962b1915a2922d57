"""HTTP mapping of the service API. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.api.auth import (
    CreateAccess,
    DeleteAccess,
    InvalidateAccess,
    QueryAccess,
    ReadAccess,
    UpdateAccess,
)
from app.api.deps import Container, ServiceContainer
from app.api.schemas import (
    InvalidateRequest,
    InvalidateResponse,
    Problem,
    QueryRequest,
    QueryResponse,
    SessionCreate,
    SessionOut,
    SessionPatch,
    render_query_response,
)
from app.db.repository import NoteFields, NoteRecord

router = APIRouter()

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "No bearer token, or one that is not valid"},
    403: {"model": Problem, "description": "The token's role may not do this"},
    404: {"model": Problem,
          "description": "Not found (also: a workspace the token does not name)"},
    409: {"model": Problem}, 503: {"model": Problem},
}


def _session_out(record: NoteRecord) -> SessionOut:
    return SessionOut(
        id=record.id, workspace_id=record.workspace_id, client_id=record.client_id,
        subjective=record.fields.subjective, objective=record.fields.objective,
        assessment=record.fields.assessment, plan=record.fields.plan, version=record.version,
        created_at=record.created_at, updated_at=record.updated_at,
    )


@router.post(
    "/v1/workspaces/{workspace_id}/query",
    response_model=QueryResponse,
    responses=_ERRORS,
    tags=["query"],
    openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/json": {"schema": QueryRequest.model_json_schema()}},
    }},
)
async def query(workspace_id: uuid.UUID, request: Request, audit: QueryAccess) -> Response:
    # The hot path parses its body itself (pydantic straight from the bytes) and reads the
    # container from the app state: FastAPI's generic body and dependency machinery is a
    # large share of an L1 hit's CPU. The rules are the same as a declared body's.
    try:
        body = QueryRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    container: ServiceContainer = request.app.state.container
    if len(body.query) > container.settings.max_query_chars:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query is {len(body.query)} characters; the limit is "
            f"{container.settings.max_query_chars}",
        )
    audit.client = body.client_id
    result = await container.queries.answer(workspace_id, body.client_id, body.query)
    audit.sources = tuple(source for source, _ in result.sources)
    return Response(render_query_response(result), media_type="application/json",
                    headers={"Cache-Status": result.cache_status},
                    background=BackgroundTask(result.after) if result.after else None)


@router.post("/v1/workspaces/{workspace_id}/sessions", status_code=201,
             response_model=SessionOut, responses=_ERRORS, tags=["sessions"])
async def create_session(
    workspace_id: uuid.UUID, body: SessionCreate, container: Container, audit: CreateAccess
) -> SessionOut:
    audit.client = body.client_id
    fields = NoteFields(body.subjective, body.objective, body.assessment, body.plan)
    record = await container.sessions.create(workspace_id, body.client_id, fields)
    audit.session = record.id
    return _session_out(record)


@router.get("/v1/workspaces/{workspace_id}/sessions/{session_id}", response_model=SessionOut,
            responses=_ERRORS, tags=["sessions"])
async def get_session(
    workspace_id: uuid.UUID, session_id: uuid.UUID, container: Container, audit: ReadAccess
) -> SessionOut:
    audit.session = session_id
    record = await container.sessions.get(workspace_id, session_id)
    audit.client = record.client_id
    return _session_out(record)


@router.patch("/v1/workspaces/{workspace_id}/sessions/{session_id}",
              response_model=SessionOut, responses=_ERRORS, tags=["sessions"])
async def update_session(
    workspace_id: uuid.UUID, session_id: uuid.UUID, body: SessionPatch, container: Container,
    audit: UpdateAccess,
) -> SessionOut:
    audit.session = session_id
    record = await container.sessions.update(workspace_id, session_id, body.changes())
    audit.client = record.client_id
    return _session_out(record)


@router.delete("/v1/workspaces/{workspace_id}/sessions/{session_id}", status_code=204,
               responses=_ERRORS, tags=["sessions"])
async def delete_session(
    workspace_id: uuid.UUID, session_id: uuid.UUID, container: Container, audit: DeleteAccess
) -> Response:
    audit.session = session_id
    await container.sessions.delete(workspace_id, session_id)
    return Response(status_code=204)


@router.post("/v1/workspaces/{workspace_id}/cache/invalidate",
             response_model=InvalidateResponse, responses=_ERRORS, tags=["operations"])
async def invalidate(
    workspace_id: uuid.UUID, container: Container, audit: InvalidateAccess,
    body: InvalidateRequest | None = None,
) -> InvalidateResponse:
    client_id = body.client_id if body else None
    audit.client = client_id
    # Recorded in the outbox first: if Redis cannot take it now, it is retried by any
    # replica and L1 stays off for the workspace until it lands (applied=false).
    applied = await container.outbox.invalidate(workspace_id, client_id, "manual")
    return InvalidateResponse(scope="workspace" if client_id is None else "client",
                              applied=applied)


@router.get("/metrics", include_in_schema=False)
async def metrics(container: Container) -> Response:
    return Response(generate_latest(container.metrics.exposed), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(container: Container) -> JSONResponse:
    database = await container.notes.ping()
    redis_ok = await container.cache.ping()
    body = {
        "status": "ready" if database else "not-ready",
        "database": "ok" if database else "unavailable",
        # Redis is a cache: the service answers without it (fresh path), so it is reported
        # but does not make the instance unready.
        "redis": "ok" if redis_ok else "unavailable",
        "flags": container.flags.state,
        "l1_invalidations_pending": container.outbox.pending,
        # Whether bearer tokens can be verified: "keys-unavailable" (a JWKS never read) or
        # "not-configured" means every /v1 request is answered 401.
        "auth": container.verifier.state,
    }
    return JSONResponse(body, status_code=200 if database else 503)
