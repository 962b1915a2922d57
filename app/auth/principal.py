"""Who is calling, and what each role may do (DESIGN.md §4, Authorization)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CLINICIAN = "clinician"  # reads and writes notes, asks questions
    OPERATOR = "operator"  # a clinician's rights, and invalidating cached answers
    SERVICE = "service"  # trusted backends (and the static token of local runs): everything


class Action(StrEnum):
    """What a /v1 request does; the audit log names it."""

    QUERY = "query"
    SESSION_READ = "session.read"
    SESSION_CREATE = "session.create"
    SESSION_UPDATE = "session.update"
    SESSION_DELETE = "session.delete"
    CACHE_INVALIDATE = "cache.invalidate"


_CLINICAL = frozenset({Action.QUERY, Action.SESSION_READ, Action.SESSION_CREATE,
                       Action.SESSION_UPDATE, Action.SESSION_DELETE})
PERMISSIONS: dict[str, frozenset[Action]] = {
    Role.CLINICIAN: _CLINICAL,
    Role.OPERATOR: _CLINICAL | {Action.CACHE_INVALIDATE},
    Role.SERVICE: frozenset(Action),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. `role` is as the token says: a role this service does not know
    may do nothing. `workspaces` None means every workspace (the static token only)."""

    sub: str
    role: str
    workspaces: frozenset[uuid.UUID] | None
    via: str  # "jwt" | "static"

    def reaches(self, workspace_id: uuid.UUID) -> bool:
        return self.workspaces is None or workspace_id in self.workspaces

    def may(self, action: Action) -> bool:
        return action in PERMISSIONS.get(self.role, frozenset())
