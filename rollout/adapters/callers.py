"""Who calls the controller's API: the static `ROLLOUT_API_TOKEN` (an operator, for a laptop
or the demo) or a bearer JWT verified like the service's (DESIGN.md §4; `app.auth`, PyJWT:
HS256 against a secret, RS256/ES256 against a JWKS file or URL) whose `role` claim is
`viewer` or `operator`. Controller tokens carry their own audience (`ai-cache-rollout` by
default), so a token for the cache service is refused here and the other way round, and
they need no `workspaces` claim."""

from __future__ import annotations

import hmac

from app.auth.verifier import AuthError, TokenVerifier
from rollout.ports import OPERATOR, Caller, CallerRejected

STATIC_CALLER = "rollout-api-token"


class TokenCallers:
    """A CallerVerifier over the static token and/or a JWT verifier (either may be None)."""

    def __init__(self, *, static_token: str | None, jwt: TokenVerifier | None) -> None:
        self._static = static_token.encode() if static_token else None
        self._jwt = jwt

    @property
    def configured(self) -> bool:
        return self._static is not None or (self._jwt is not None and self._jwt.configured)

    async def verify(self, token: str) -> Caller:
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return Caller(who=STATIC_CALLER, role=OPERATOR, via="static")
        if self._jwt is None or not self._jwt.configured:
            raise CallerRejected("invalid token")
        try:
            principal = await self._jwt.verify(token)
        except AuthError as exc:
            raise CallerRejected(str(exc)) from None
        return Caller(who=principal.sub, role=principal.role, via="jwt")
