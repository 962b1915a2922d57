"""Authorization of the service API, and its audit log (DESIGN.md §4).

Two steps, so that nothing is reachable by forgetting one:

* `Authenticate`, a pure ASGI middleware and the outermost of ours, refuses every request
  outside `PUBLIC_PATHS` (/metrics, /healthz, /readyz and the API docs) without a bearer
  token that `TokenVerifier` accepts: 401 with `WWW-Authenticate`, before any body is read
  or any route, cache or metric is touched. It writes one audit line per such request when
  the response is done.
* `Access(action)`, a dependency of every /v1 route, checks the verified caller against the
  route's workspace (not in the token: 404, the body of any unknown URL, so a workspace the
  caller cannot reach looks like one that does not exist) and then its role (403). The query
  fast path applies the same check and leaves every request it does not allow to the route.

The audit line (logger `app.audit`, INFO, one per request that needed a token): who (`sub`,
role, how verified), workspace, action, the ids involved (session, client, the notes an
answer was built from), the HTTP status, and for refusals the reason. Never any text.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.principal import Action, Principal
from app.auth.verifier import AuthError
from app.ids import uuid_text

AUDIT_LOGGER = "app.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)
# What an audit line carries besides its message (the attributes `AuditRecord.emit` sets).
AUDIT_FIELDS = ("audit", "who", "role", "via", "workspace", "action", "method", "path",
                "status", "outcome", "session", "client", "sources", "reason")

# No clinical data behind these: process health, readiness, metrics (ids and counts only)
# and the API's own description. Everything else needs a token.
PUBLIC_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/openapi.json", "/docs",
                          "/docs/oauth2-redirect", "/redoc"})
REALM = "ai-cache"
NOT_FOUND = "Not Found"  # Starlette's body for a URL no route matches


@dataclass(slots=True)
class AuditRecord:
    """What one request did, filled in as it goes; written once it is answered."""

    method: str
    path: str
    principal: Principal | None = None
    action: Action | None = None
    workspace: uuid.UUID | None = None
    session: uuid.UUID | None = None
    client: uuid.UUID | None = None
    sources: tuple[uuid.UUID, ...] | None = None
    reason: str | None = None  # why it was refused

    def emit(self, status: int) -> None:
        if not audit_log.isEnabledFor(logging.INFO):
            return
        who = self.principal
        outcome = "denied" if self.reason else ("ok" if status < 400 else "failed")
        fields: dict[str, Any] = {
            "audit": True,
            "who": who.sub if who else None,
            "role": who.role if who else None,
            "via": who.via if who else None,
            "workspace": uuid_text(self.workspace) if self.workspace else None,
            "action": str(self.action) if self.action else None,
            "method": self.method,
            "path": self.path[:200],
            "status": status,
            "outcome": outcome,
        }
        if self.session is not None:
            fields["session"] = str(self.session)
        if self.client is not None:
            fields["client"] = uuid_text(self.client)
        if self.sources is not None:
            fields["sources"] = [uuid_text(s) for s in self.sources]
        if self.reason is not None:
            fields["reason"] = self.reason
        # The record is made here and handed to the logger's handlers: what `info(...,
        # extra=fields)` does, minus its generic steps (it is written on every request).
        line = logging.LogRecord(AUDIT_LOGGER, logging.INFO, __file__, 0,
                                 "audit %s %s %s who=%s workspace=%s",
                                 (fields["action"] or self.method, status, outcome,
                                  fields["who"], fields["workspace"]), None)
        line.__dict__.update(fields)
        audit_log.handle(line)


def audit_record(scope: Scope) -> AuditRecord | None:
    state: dict[str, Any] = scope.get("state", {})
    record: AuditRecord | None = state.get("audit")
    return record


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return None  # two Authorization headers: ambiguous, refused
            found = value
    if found is None:
        return None
    scheme, _, token = found.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")[:200]


class Authenticate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        record = AuditRecord(scope["method"], scope["path"])
        state = scope.setdefault("state", {})
        state["audit"] = record
        token = bearer_token(scope["headers"])
        if token is None:
            record.reason = "no_token"
            await _unauthorized(send, "a bearer token is required", f'Bearer realm="{REALM}"')
            record.emit(401)
            return
        try:
            principal = await scope["app"].state.container.verifier.verify(token)
        except AuthError as exc:
            record.reason = exc.reason
            await _unauthorized(
                send, str(exc),
                f'Bearer realm="{REALM}", error="invalid_token", '
                f'error_description="{_quoted(str(exc))}"')
            record.emit(401)
            return
        record.principal = principal
        state["principal"] = principal
        status = 500  # what the server answers if the app raises before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            record.emit(status)


async def _unauthorized(send: Send, detail: str, challenge: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode("latin-1", "replace")),
    ]})
    await send({"type": "http.response.body", "body": body})


# Declares the scheme in the OpenAPI document; the middleware has verified the token already.
_bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT",
                            description="A JWT with `sub`, `role`, `workspaces` and `exp`.")


class Access:
    """The dependency that lets a verified caller do `action` in the path's workspace."""

    def __init__(self, action: Action) -> None:
        self.action = action

    async def __call__(
        self, request: Request, workspace_id: uuid.UUID,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
    ) -> AuditRecord:
        record = audit_record(request.scope)
        principal = record.principal if record is not None else None
        if record is None or principal is None:  # never reached through Authenticate
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        record.action = self.action
        record.workspace = workspace_id
        denial = refusal(principal, workspace_id, self.action)
        if denial is not None:
            record.reason = denial
            if denial == "other_workspace":
                raise HTTPException(404, NOT_FOUND)
            raise HTTPException(
                403, f"this token's role may not do {self.action}",
                headers={"WWW-Authenticate":
                         f'Bearer realm="{REALM}", error="insufficient_scope"'})
        return record


def refusal(principal: Principal, workspace_id: uuid.UUID, action: Action) -> str | None:
    """None if `principal` may do `action` in the workspace, else why not (audit reason)."""
    if not principal.reaches(workspace_id):
        return "other_workspace"
    if not principal.may(action):
        return "role"
    return None


QueryAccess = Annotated[AuditRecord, Depends(Access(Action.QUERY))]
ReadAccess = Annotated[AuditRecord, Depends(Access(Action.SESSION_READ))]
CreateAccess = Annotated[AuditRecord, Depends(Access(Action.SESSION_CREATE))]
UpdateAccess = Annotated[AuditRecord, Depends(Access(Action.SESSION_UPDATE))]
DeleteAccess = Annotated[AuditRecord, Depends(Access(Action.SESSION_DELETE))]
InvalidateAccess = Annotated[AuditRecord, Depends(Access(Action.CACHE_INVALIDATE))]
