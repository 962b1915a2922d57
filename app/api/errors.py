"""Domain errors → clear HTTP answers (never a traceback to the client).

Validation errors (422) echo at most a short excerpt of what was sent (`_excerpt`): never a
whole body, and never a string that cannot be encoded (a lone surrogate, undecodable bytes).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from app.db.errors import DatabaseError
from app.db.repository import ConcurrentUpdate
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

    @app.exception_handler(OSError)
    async def _unreachable(_: Request, exc: OSError) -> JSONResponse:
        # The notes database unreachable at connect time (asyncpg's ConnectionRefusedError,
        # a DNS failure, a connect timeout): SQLAlchemy passes such OSErrors through
        # unwrapped, so they are not DatabaseError. An outage, not a bug — but only when it
        # came from the database driver; any other OSError stays a 500. (Redis errors never
        # get here: RedisCache turns them into misses, and they alone feed its breaker.)
        if not _from_database(exc):
            raise exc
        log.error("database unreachable: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"detail": "the notes database is unavailable; try again"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # A path parameter that a route and its authorization dependency both declare
        # (workspace_id) is reported by each: say it once.
        errors: list[dict[str, Any]] = []
        for error in map(_safe_error, exc.errors()):
            if error not in errors:
                errors.append(error)
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's "There was an error parsing the body" for a body that is not UTF-8.
            bad = exc.__cause__
            return JSONResponse({"detail": [{
                "type": "json_invalid", "loc": ["body", bad.start], "input": {},
                "msg": f"Invalid JSON: the body is not valid UTF-8 (byte "
                       f"0x{bad.object[bad.start]:02x} at position {bad.start})",
            }]}, status_code=422)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; every
            # route on it (GET, PATCH and DELETE of a session) is what `Allow` must list.
            allowed = _methods_for(request)
            if allowed:
                exc = HTTPException(405, exc.detail, headers={"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)


def _methods_for(request: Request) -> list[str]:
    """The methods the published API documents for this request's path (the OpenAPI is
    what callers read; the routes of included routers are not listed on the app)."""
    path = request.url.path
    for pattern, methods in _documented_paths(request.app):
        if pattern.match(path):
            return methods
    return []


def _documented_paths(app: FastAPI) -> list[tuple[re.Pattern[str], list[str]]]:
    cached: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "documented_paths", None)
    if cached is None:
        cached = [(compile_path(path)[0], sorted(m.upper() for m in operations))
                  for path, operations in app.openapi().get("paths", {}).items()]
        app.state.documented_paths = cached
    return cached


_DATABASE_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.", "app.db.")


def _from_database(exc: BaseException) -> bool:
    """Whether `exc` was raised through the database layer or its drivers."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DATABASE_MODULES):
            return True
        tb = tb.tb_next
    return False


# The longest string a validation error echoes back (the input, a location, a message).
EXCERPT_CHARS = 80


def _safe_error(error: Any) -> dict[str, Any]:
    if not isinstance(error, dict):
        return {"msg": _excerpt(str(error), 200)}
    out: dict[str, Any] = {}
    for name, value in error.items():
        if name == "url":
            continue
        if name == "loc" and isinstance(value, list | tuple):
            out[name] = [p if isinstance(p, int) else _excerpt(str(p)) for p in value]
        elif name == "msg":
            out[name] = _excerpt(str(value), 300)
        elif name == "ctx" and isinstance(value, dict):
            out[name] = {str(k): _excerpt_value(v) for k, v in value.items()}
        else:
            out[name] = _excerpt_value(value)
    return out


def _excerpt_value(value: Any) -> Any:
    """A JSON value to echo: scalars as they are, text cut short, large containers as an
    excerpt of their JSON text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _excerpt(value)
    if isinstance(value, bytes | bytearray):
        head = bytes(value[:EXCERPT_CHARS]).decode("utf-8", "backslashreplace")
        return _excerpt(head, size=f"{len(value)} bytes" if len(value) > EXCERPT_CHARS else "")
    if isinstance(value, dict | list | tuple):
        small = _small_container(value)
        if small is not None:
            return small
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
        return _excerpt(text)
    return _excerpt(str(value))


def _small_container(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Any:
    """`value` made safe if it is small (a few short scalars), else None."""
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    if len(items) > 8:
        return None
    safe: list[tuple[Any, Any]] = []
    for key, item in items:
        if isinstance(item, str | bytes | bytearray) and len(item) > EXCERPT_CHARS:
            return None
        if not (item is None or isinstance(item, bool | int | float | str | bytes | bytearray)):
            return None
        safe.append((_excerpt(str(key)), _excerpt_value(item)))
    return dict(safe) if isinstance(value, dict) else [v for _, v in safe]


def _excerpt(text: str, limit: int = EXCERPT_CHARS, *, size: str = "") -> str:
    """At most `limit` characters of `text`, always encodable as UTF-8 (a lone surrogate
    becomes the text of its escape, `\\ud800`); `size` says how long the whole was."""
    cut = text[:limit]
    if not cut.isascii():
        cut = cut.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]
    if size or len(text) > limit:
        return f"{cut}… ({size or f'{len(text)} characters'})"
    return cut
