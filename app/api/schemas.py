"""Request and response bodies of the service API (DESIGN.md §4)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.cache.codec import answer_fragment
from app.service.query import QueryResult

MAX_NOTE_FIELD_CHARS = 20_000
# The hard ceiling of the schema; the configured MAX_QUERY_CHARS (lower) is checked per request.
MAX_QUERY_CHARS_CEILING = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


_SURROGATE = re.compile("[\ud800-\udfff]")
# What "blank" means, written once for the service and for the published schema: the
# whitespace of JSON Schema's (ECMAScript's) `\s`, so a text the schema calls non-blank is
# one the service accepts, and the other way round.
_WHITESPACE = (r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
               r"\u3000\ufeff")
NON_BLANK = f"[^{_WHITESPACE}]"
_NON_BLANK = re.compile(NON_BLANK)
# Text the schema allows: no NUL (checked_text below also refuses lone surrogates, which a
# JSON Schema pattern cannot name portably).
STORABLE_TEXT = "^[^\\u0000]*$"
_TEXT_SCHEMA: dict[str, Any] = {"pattern": STORABLE_TEXT}
SOAP_FIELDS = ("subjective", "objective", "assessment", "plan")


def is_blank(value: str) -> bool:
    return _NON_BLANK.search(value) is None


def checked_text(value: str) -> str:
    """Text the service can store, embed and send back: no NUL (PostgreSQL cannot store it)
    and no lone surrogate (a JSON `"\\ud800"` that is not a character and not UTF-8)."""
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "text must not contain NUL (U+0000) characters")
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise PydanticCustomError(
            "text_surrogate",
            "text must be valid Unicode: a lone surrogate (U+D800 to U+DFFF) is not a character",
        )
    return value


class QueryRequest(_Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS_CEILING, json_schema_extra={
        "allOf": [{"pattern": STORABLE_TEXT}, {"pattern": NON_BLANK}]})
    client_id: uuid.UUID | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("query must not be blank")
        return checked_text(value)


class SourceOut(BaseModel):
    session_id: uuid.UUID
    score: float


class CacheOut(BaseModel):
    l1: str = Field(description="hit | miss | stale | bypass | shadow-hit | shadow-miss | error")
    l2: str = Field(description="hit | miss | bypass | shadow-hit | shadow-miss | error")


class QueryResponse(BaseModel):
    answer: str
    sources: list[SourceOut]
    cache: CacheOut


def render_query_response(result: QueryResult) -> bytes:
    """A QueryResponse body, encoded as Starlette's JSONResponse would. Built by hand: this
    is the hot path, and the shape is fixed by QueryResponse above. An L1 hit brings its
    `answer` and `sources` members already rendered (`StoredAnswer.body_fragment`)."""
    fragment = result.body_fragment
    if fragment is None:
        fragment = answer_fragment(result.answer, result.sources)
    return b"".join((b"{", fragment, b',"cache":{"l1":"', result.l1.status.encode(),
                     b'","l2":"', result.l2.status.encode(), b'"}}'))


class SessionCreate(_Strict):
    # The schema says what the validators check: at least one SOAP field not blank.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"pattern": NON_BLANK}}}
        for name in SOAP_FIELDS]})

    client_id: uuid.UUID
    subjective: str = Field(default="", max_length=MAX_NOTE_FIELD_CHARS,
                            json_schema_extra=_TEXT_SCHEMA)
    objective: str = Field(default="", max_length=MAX_NOTE_FIELD_CHARS,
                           json_schema_extra=_TEXT_SCHEMA)
    assessment: str = Field(default="", max_length=MAX_NOTE_FIELD_CHARS,
                            json_schema_extra=_TEXT_SCHEMA)
    plan: str = Field(default="", max_length=MAX_NOTE_FIELD_CHARS,
                      json_schema_extra=_TEXT_SCHEMA)

    _text = field_validator(*SOAP_FIELDS)(checked_text)

    @model_validator(mode="after")
    def _has_content(self) -> Self:
        if all(is_blank(f) for f in (self.subjective, self.objective, self.assessment,
                                     self.plan)):
            raise ValueError("a session note needs at least one non-blank SOAP field")
        return self


class SessionPatch(_Strict):
    # The schema says what the validators check: at least one field given as text.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in SOAP_FIELDS]})

    subjective: str | None = Field(default=None, max_length=MAX_NOTE_FIELD_CHARS,
                                   json_schema_extra=_TEXT_SCHEMA)
    objective: str | None = Field(default=None, max_length=MAX_NOTE_FIELD_CHARS,
                                  json_schema_extra=_TEXT_SCHEMA)
    assessment: str | None = Field(default=None, max_length=MAX_NOTE_FIELD_CHARS,
                                   json_schema_extra=_TEXT_SCHEMA)
    plan: str | None = Field(default=None, max_length=MAX_NOTE_FIELD_CHARS,
                             json_schema_extra=_TEXT_SCHEMA)

    @field_validator("subjective", "objective", "assessment", "plan")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else checked_text(value)

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.changes():
            raise ValueError("a patch needs at least one of subjective, objective, "
                             "assessment, plan")
        return self

    def changes(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SessionOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    client_id: uuid.UUID
    subjective: str
    objective: str
    assessment: str
    plan: str
    version: int
    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # SQLite hands timestamps back without their zone; they are stored in UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class InvalidateRequest(_Strict):
    client_id: uuid.UUID | None = None


class InvalidateResponse(BaseModel):
    scope: str
    applied: bool = Field(description="false if Redis was unreachable; retried in background")


class Problem(BaseModel):
    detail: str
