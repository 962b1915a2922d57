"""Bearer tokens for local runs: the demo, the traffic generator, benchmarks and tests sign
their own HS256 JWTs (DESIGN.md §4 claims) with a secret they generate and give the service
as AUTH_JWT_SECRET — the laptop form of what an identity provider does in production."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

AUDIENCE = "ai-cache"  # the service's default AUTH_AUDIENCE


def mint(secret: str, *, workspaces: Iterable[uuid.UUID | str], role: str = "clinician",
         sub: str = "devstack", ttl_seconds: float = 3600.0, audience: str = AUDIENCE,
         **claims: Any) -> str:
    """An HS256 JWT for `workspaces` and `role`; extra `claims` are added (or override)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub, "role": role, "workspaces": [str(ws) for ws in workspaces],
        "aud": audience, "iat": now, "exp": now + int(ttl_seconds),
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass(frozen=True)
class LocalIssuer:
    """A generated HS256 secret, the service settings that trust it, and tokens signed
    with it."""

    secret: str
    audience: str = AUDIENCE

    @classmethod
    def generate(cls) -> LocalIssuer:
        return cls(secrets.token_urlsafe(48))

    def env(self) -> dict[str, str]:
        """The service's environment that makes it accept this issuer's tokens."""
        return {"AUTH_JWT_SECRET": self.secret, "AUTH_AUDIENCE": self.audience}

    def token(self, workspaces: Iterable[uuid.UUID | str], *, role: str = "clinician",
              sub: str = "devstack", ttl_seconds: float = 24 * 3600.0) -> str:
        return mint(self.secret, workspaces=workspaces, role=role, sub=sub,
                    ttl_seconds=ttl_seconds, audience=self.audience)

    def headers(self, workspaces: Iterable[uuid.UUID | str], *, role: str = "clinician",
                sub: str = "devstack") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(workspaces, role=role, sub=sub)}"}
