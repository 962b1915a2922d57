"""Domain errors → clear HTTP answers (never a traceback to the client)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.db.repository import ConcurrentUpdate, DatabaseError
from app.providers.base import ProviderError
from app.service.sessions import NoteNotFound

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NoteNotFound)
    async def _not_found(_: Request, exc: NoteNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"session {exc.args[0]} not found in this workspace"},
                            status_code=404)

    @app.exception_handler(ConcurrentUpdate)
    async def _conflict(_: Request, exc: ConcurrentUpdate) -> JSONResponse:
        return JSONResponse(
            {"detail": f"session {exc.args[0]} changed while updating it; retry"},
            status_code=409,
        )

    @app.exception_handler(ProviderError)
    async def _provider(_: Request, exc: ProviderError) -> JSONResponse:
        log.warning("provider failed (temporary=%s): %s", exc.temporary, exc)
        return JSONResponse({"detail": "the AI provider is unavailable; try again"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(DatabaseError)
    async def _database(_: Request, exc: DatabaseError) -> JSONResponse:
        log.error("database failed: %s", exc)
        return JSONResponse({"detail": "the notes database is unavailable; try again"},
                            status_code=503, headers={"Retry-After": "1"})
