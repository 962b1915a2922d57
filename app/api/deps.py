"""What the routes depend on, as `Annotated[..., Depends()]` aliases."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.cache.store import RedisCache
from app.db.repository import NotesRepository
from app.flags.base import FlagSource
from app.metrics import ServiceMetrics
from app.service.invalidation import Invalidator
from app.service.query import QueryService
from app.service.sessions import SessionService
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class ServiceContainer:
    """Everything a request may need, built once by the composition root."""

    settings: Settings
    metrics: ServiceMetrics
    queries: QueryService
    sessions: SessionService
    invalidator: Invalidator
    cache: RedisCache
    notes: NotesRepository
    flags: FlagSource


# `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a
# thread hop per request on the hot path.
async def _container(request: Request) -> ServiceContainer:
    container: ServiceContainer = request.app.state.container
    return container


Container = Annotated[ServiceContainer, Depends(_container)]

_bearer = HTTPBearer(auto_error=False)


async def _require_token(
    container: Container,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = container.settings.service_api_token
    if expected is None or not expected.get_secret_value():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "writes are disabled: SERVICE_API_TOKEN is not configured")
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


WriteAccess = Annotated[None, Depends(_require_token)]
