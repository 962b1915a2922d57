"""What the routes depend on, as `Annotated[..., Depends()]` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.auth.verifier import TokenVerifier
from app.cache.store import RedisCache
from app.db.repository import NotesRepository
from app.flags.base import FlagSource
from app.metrics import ServiceMetrics
from app.service.outbox import InvalidationOutbox
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
    outbox: InvalidationOutbox
    cache: RedisCache
    notes: NotesRepository
    flags: FlagSource
    verifier: TokenVerifier


# `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a
# thread hop per request on the hot path.
async def _container(request: Request) -> ServiceContainer:
    container: ServiceContainer = request.app.state.container
    return container


Container = Annotated[ServiceContainer, Depends(_container)]
