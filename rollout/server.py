"""The controller's HTTP face (DESIGN.md §8): metrics, status, history, commands, a page.

    GET  /                     status page for people (HTML, refreshes itself)
    GET  /metrics              Prometheus text format (the controller's own registry)
    GET  /healthz              process up
    GET  /api/status           JSON snapshot (rollout.status.StatusView)
    GET  /api/history?limit=N  decision log, newest first (1 <= N <= 1000, default 50)
    POST /api/pause|resume|promote|rollback
         body {"who": str, "why": str, "full": bool (promote), "to": str (rollback)}
         Authorization: Bearer <a JWT with role operator, or $ROLLOUT_API_TOKEN>
         200 done · 401 no/bad token · 403 no credentials configured, or a role that may
         only read (viewer) · 409 rejected (the message
         says why) · 422 bad body · 502 flags could not be written (nothing changed) ·
         503 this instance stands by, or Redis is unreachable

Commands run only on the instance holding the lease; a standby answers 503 naming the leader.
Reading (the page, /api/status, /api/history) needs no token, as the page needs none: what
they show is masked (rollout.redaction) and carries no clinical data. A JWT's `sub` is who
acted in the log; with the shared static token the body's `who` is.
The response models are declared, so `/openapi.json` documents every shape.
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from rollout.controller import Controller
from rollout.core.decision import CommandRejected
from rollout.ports import OPERATOR, Caller, CallerRejected, CallerVerifier, StoreError
from rollout.records import FlagsRecord, LogEntry
from rollout.redaction import masked, masked_model
from rollout.runtime_types import CommandFailed, CommandName, ManualCommand, NotLeader
from rollout.status import StatusView, build_status
from rollout.status_page import render_status_fragment, render_status_page

log = logging.getLogger("rollout.server")

COMMANDS: Final[tuple[CommandName, ...]] = ("pause", "resume", "promote", "rollback")
# The page folds the holds between transitions: it reads enough entries to fill its rows.
PAGE_HISTORY: Final = 500
MAX_HISTORY: Final = 1000


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    who: str = Field(min_length=1, max_length=200)
    why: str = Field(min_length=1, max_length=2000)
    full: StrictBool = False
    to: str | None = Field(default=None, min_length=1, max_length=200)


class HistoryPage(BaseModel):
    entries: list[LogEntry]
    limit: int


class CommandResult(BaseModel):
    ok: bool = True
    action: str
    from_stage: str
    to_stage: str
    reason: str
    log_id: str | None
    flags: FlagsRecord | None
    state: dict[str, Any]


async def gather_status(controller: Controller) -> StatusView:
    """The status snapshot as this instance sees it (any instance can answer)."""
    store = controller.ports.store
    snapshot = await store.load()
    last = await store.last_cycle()
    holder = await _holder(controller)  # informational: the state read above succeeded
    return build_status(
        controller.ports.plan, snapshot.state, last, controller.now(),
        instance_id=controller.lease.owner, is_leader=controller.is_leader, holder=holder,
        intent=snapshot.intent,
    )


def create_app(
    controller: Controller,
    *,
    registry: CollectorRegistry,
    callers: CallerVerifier,
) -> FastAPI:
    # No /docs: its page loads scripts from a CDN; /openapi.json is enough for tools.
    app = FastAPI(title="ai-cache rollout controller", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "leader": controller.is_leader, "instance": controller.lease.owner}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/status", response_model=StatusView,
             responses={503: {"description": "the state store is unreachable"}})
    async def status() -> StatusView | JSONResponse:
        try:
            return await gather_status(controller)
        except StoreError as exc:
            return _error(503, str(exc))

    @app.get("/api/history", response_model=HistoryPage,
             responses={503: {"description": "the state store is unreachable"}})
    async def history(
        limit: int = Query(default=50, ge=1, le=MAX_HISTORY),
    ) -> HistoryPage | JSONResponse:
        try:
            entries = await controller.ports.store.history(limit)
        except StoreError as exc:
            return _error(503, str(exc))
        return HistoryPage(entries=[masked_model(e) for e in entries], limit=limit)

    @app.get("/", response_class=HTMLResponse, response_model=None)
    async def page(fragment: bool = Query(default=False, description=(
            "only the header and main, which the page swaps in"))) -> HTMLResponse:
        try:
            snapshot = await gather_status(controller)
            entries = await controller.ports.store.history(PAGE_HISTORY)
        except StoreError as exc:
            return HTMLResponse(
                f"<!doctype html><meta http-equiv=refresh content=10><title>rollout: store down"
                f"</title><p>Cannot read the rollout state: {_escape(masked(str(exc)))}</p>",
                status_code=503,
            )
        # The page needs no token: what it shows is masked (rollout.redaction). Its one
        # style and one script run under a fresh nonce; nothing else may (CSP).
        nonce = secrets.token_urlsafe(16)
        shown = [masked_model(e) for e in entries]
        return HTMLResponse(
            render_status_fragment(snapshot, shown) if fragment
            else render_status_page(snapshot, shown, nonce=nonce),
            headers={"Content-Security-Policy": page_csp(nonce),
                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    async def read_command(name: CommandName, request: Request) -> ManualCommand | JSONResponse:
        caller = await _steering_caller(callers, request)
        if isinstance(caller, JSONResponse):
            return caller
        try:
            body = CommandBody.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return _error(422, "invalid request body", errors=_errors(exc))
        if body.full and name != "promote":
            return _error(422, "`full` applies to promote only")
        if body.to is not None and name != "rollback":
            return _error(422, "`to` applies to rollback only")
        # A JWT names who acts; the static token is shared, so the body says who.
        who = caller.who if caller.via == "jwt" else body.who
        return ManualCommand(name=name, who=who, why=body.why, full=body.full, to=body.to)

    async def command(name: CommandName, request: Request) -> JSONResponse:
        wanted = await read_command(name, request)
        if isinstance(wanted, JSONResponse):
            return wanted
        try:
            report = await controller.command(wanted)
        except CommandRejected as exc:
            return _error(409, str(exc))
        except NotLeader as exc:
            holder = await _holder(controller)
            return _error(503, f"{exc}" + (f" (leader: {holder})" if holder else ""),
                         leader=holder)
        except CommandFailed as exc:
            entry = masked_model(exc.report.entry).model_dump(mode="json")
            return _error(502, str(exc), entry=entry)
        except StoreError as exc:
            return _error(503, str(exc))
        log.info("%s by %s via the API: %s", name, wanted.who, wanted.why,
                 extra={"event": "command", "by": wanted.who})
        decision = report.decision
        assert decision is not None
        return JSONResponse(masked_model(CommandResult(
            action=decision.action.value, from_stage=decision.from_stage,
            to_stage=decision.target_stage, reason=decision.reason, log_id=report.log_id,
            flags=report.flags, state=report.state_after.to_dict(),
        )).model_dump(mode="json"))

    # One route per command keeps the URL set closed (an unknown command is a plain 404).
    for name in COMMANDS:
        app.add_api_route(
            f"/api/{name}", _bind(command, name), methods=["POST"], name=name,
            response_model=CommandResult, openapi_extra={"requestBody": {"content": {
                "application/json": {"schema": CommandBody.model_json_schema()}}}},
        )
    return app


def page_csp(nonce: str) -> str:
    """The status page's policy: its own inline style and script by nonce, fetches to this
    origin only, no plugins, frames, base or form targets."""
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": masked(detail), **extra}, status_code=status,
                        headers=headers)


async def _steering_caller(callers: CallerVerifier, request: Request) -> Caller | JSONResponse:
    """The operator behind a command: 403 with no credentials configured, 401 for a
    missing or unusable token, 403 for a role that may only read."""
    if not callers.configured:
        return _error(403, "commands are disabled: set ROLLOUT_API_TOKEN or "
                          "ROLLOUT_AUTH_JWT_SECRET / ROLLOUT_AUTH_JWKS_FILE / "
                          "ROLLOUT_AUTH_JWKS_URL on the controller")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "missing bearer token (Authorization: Bearer <operator JWT or "
                          "$ROLLOUT_API_TOKEN>)")
    try:
        caller = await callers.verify(given.strip())
    except CallerRejected as exc:
        return _error(401, str(exc))
    if not caller.may_steer:
        log.warning("%s (role %s) was refused a command", caller.who, caller.role,
                    extra={"event": "command-refused", "by": caller.who})
        return _error(403, f"role {caller.role!r} may read the rollout, not steer it "
                          f"(role {OPERATOR!r} needed)")
    return caller


def _bind(
    handler: Callable[[CommandName, Request], Awaitable[JSONResponse]], name: CommandName
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        return await handler(name, request)

    return endpoint


async def _holder(controller: Controller) -> str | None:
    try:
        return await controller.lease.holder()
    except Exception:  # only to name the leader in a 503; the answer is 503 either way
        return None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors()
    ]


def _escape(text: str) -> str:
    return html.escape(text)
