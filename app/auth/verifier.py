"""Bearer token → Principal: a JWT verified with PyJWT (HS256 against a secret, RS256/ES256
against a JWKS), or the static token of local runs when it is configured.

The algorithm is chosen by the key that is configured for it, never by the token alone: an
HS256 token is checked against the secret only, an RS256/ES256 one against a JWKS key of
that very algorithm (PyJWK binds it), so no token can make a public key act as an HMAC
secret. A verified token is remembered by its exact text for a short while (capped by its
`exp`), so the hot path does not pay a signature check per request.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import ExpiredSignatureError, InvalidTokenError

from app.auth.jwks import JWKS_ALGORITHMS, JwksKeys
from app.auth.principal import Principal, Role

STATIC_SUBJECT = "service-api-token"
_MAX_TOKEN_CHARS = 8192  # a JWT with a few hundred workspace ids fits many times over


class AuthError(Exception):
    """The request carries no usable credentials (401). `reason` is for the audit log, the
    message for the caller (the `error_description` of WWW-Authenticate)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Remembered:
    principal: Principal
    until: float  # wall clock


class TokenVerifier:
    def __init__(
        self,
        *,
        audience: str,
        hs256_secret: bytes | None = None,
        jwks: JwksKeys | None = None,
        static_token: str | None = None,
        issuer: str | None = None,
        leeway_seconds: float = 30.0,
        cache_seconds: float = 60.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
        workspaces_claim: bool = True,
    ) -> None:
        self._audience = audience
        # False for callers that reach no workspace (the rollout controller's viewers and
        # operators): the claim is then neither required nor read.
        self._workspaces_claim = workspaces_claim
        self._secret = hs256_secret
        self._jwks = jwks
        self._static = static_token.encode() if static_token else None
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._remembered: dict[str, _Remembered] = {}
        self._required = ["exp", "sub", "aud", *(["iss"] if issuer else [])]

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._jwks is not None or self._static is not None

    @property
    def state(self) -> str:
        """For /readyz: whether tokens can be verified at all right now."""
        if not self.configured:
            return "not-configured"
        if self._secret is None and self._static is None and not (
            self._jwks is not None and self._jwks.available
        ):
            return "keys-unavailable"
        return "ok"

    async def verify(self, token: str) -> Principal:
        remembered = self._remembered.get(token)
        if remembered is not None:
            if remembered.until > self._clock():
                return remembered.principal
            del self._remembered[token]
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return Principal(sub=STATIC_SUBJECT, role=Role.SERVICE, workspaces=None,
                             via="static")
        if len(token) > _MAX_TOKEN_CHARS:
            raise AuthError("malformed", "the bearer token is too long")
        claims = await self._decode(token)
        principal = _principal(claims, workspaces_claim=self._workspaces_claim)
        if self._cache_seconds > 0:
            self._remember(token, principal, float(claims["exp"]))
        return principal

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise AuthError("malformed", "the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise AuthError("malformed", "the token's header names no algorithm")
        key: bytes | PyJWK | None = None
        if algorithm == "HS256":
            key = self._secret
        elif algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            key = await self._jwks.key(kid if isinstance(kid, str) else None, algorithm)
        if key is None:
            raise AuthError("unknown_key", "no key of this service verifies this token "
                            "(algorithm or key id not accepted)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[algorithm], audience=self._audience,
                issuer=self._issuer, leeway=self._leeway,
                options={"require": self._required, "enforce_minimum_key_length": True},
            )
        except ExpiredSignatureError:
            raise AuthError("expired", "the token has expired") from None
        except InvalidTokenError as exc:
            raise AuthError("invalid", f"the token is not valid: {exc}") from None
        return claims

    def _remember(self, token: str, principal: Principal, exp: float) -> None:
        if len(self._remembered) >= self._cache_size:
            # Oldest first (dicts keep insertion order): bounded, O(1), no LRU bookkeeping.
            del self._remembered[next(iter(self._remembered))]
        until = min(exp, self._clock() + self._cache_seconds)
        self._remembered[token] = _Remembered(principal, until)


def _principal(claims: dict[str, Any], *, workspaces_claim: bool = True) -> Principal:
    sub, role, workspaces = claims.get("sub"), claims.get("role"), claims.get("workspaces")
    if not isinstance(sub, str) or not sub:
        raise AuthError("claims", "the token's `sub` must be a non-empty string")
    if not isinstance(role, str) or not role:
        raise AuthError("claims", "the token has no `role`")
    if not workspaces_claim:
        return Principal(sub=sub, role=role, workspaces=frozenset(), via="jwt")
    if not isinstance(workspaces, list):
        raise AuthError("claims", "the token's `workspaces` must be a list of workspace ids")
    ids: set[uuid.UUID] = set()
    for value in workspaces:
        try:
            ids.add(uuid.UUID(value))
        except (TypeError, ValueError, AttributeError):
            raise AuthError("claims", "the token's `workspaces` must be workspace ids "
                            "(UUIDs)") from None
    return Principal(sub=sub, role=role, workspaces=frozenset(ids), via="jwt")
