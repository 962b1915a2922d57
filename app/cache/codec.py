"""Compact binary encodings of cached values, and their optional AES-GCM envelope.

Every decoder raises `CorruptValue` on anything it does not understand; the caller treats
that as a miss and deletes the entry. An answer in an older format raises `OutdatedValue`,
a plain miss: the next fill replaces it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.providers.base import Vector

_EMBEDDING_V1 = 1
_ANSWER_V1 = 1  # sources + answer text (until issue 15); read as a miss
_ANSWER_V2 = 2  # sources + the response's JSON fragment
_DTYPE_CODES = {"float16": 1, "float32": 2}
_DTYPES: dict[int, np.dtype[np.floating[Any]]] = {1: np.dtype("<f2"), 2: np.dtype("<f4")}
_EMBEDDING_HEADER = struct.Struct("<BBH")  # version, dtype code, dimensions
_ANSWER_HEADER = struct.Struct("<BH")  # version, number of sources
_SOURCE = struct.Struct("<16sIf")  # session id, note version, score

_PLAIN = 0
_AES_GCM = 1
_NONCE_BYTES = 12


class CorruptValue(ValueError):
    """A cached value that cannot be decoded (truncated, foreign, wrong key)."""


class OutdatedValue(CorruptValue):
    """A well-formed value in a format this version no longer serves (not corruption)."""


def encode_embedding(vector: Vector, dtype: str = "float16") -> bytes:
    code = _DTYPE_CODES[dtype]
    body: bytes = vector.astype(_DTYPES[code]).tobytes()
    return _EMBEDDING_HEADER.pack(_EMBEDDING_V1, code, vector.shape[0]) + body


def decode_embedding(data: bytes, expected_dimensions: int) -> Vector:
    if len(data) < _EMBEDDING_HEADER.size:
        raise CorruptValue("embedding too short")
    version, code, dims = _EMBEDDING_HEADER.unpack_from(data)
    dtype = _DTYPES.get(code)
    if version != _EMBEDDING_V1 or dtype is None or dims != expected_dimensions:
        raise CorruptValue("embedding header does not match")
    body = data[_EMBEDDING_HEADER.size :]
    if len(body) != dims * dtype.itemsize:
        raise CorruptValue("embedding length does not match its header")
    vector: Vector = np.frombuffer(body, dtype=dtype).astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise CorruptValue("embedding holds non-finite values")
    return vector


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A note an answer was built from: which one, which version, how relevant."""

    session_id: UUID
    version: int
    score: float


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer and the notes it was built from, as the fresh path produces it."""

    answer: str
    sources: tuple[SourceRef, ...]

    def fingerprint(self) -> frozenset[tuple[UUID, int]]:
        """What the answer depends on: the notes and their versions, not the LLM's wording."""
        return frozenset((s.session_id, s.version) for s in self.sources)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """An L1 entry as read back: the notes it was built from, and the response body's
    `"answer":…,"sources":[…]` part, rendered once when it was stored (an L1 hit sends it
    as it is, without decoding or re-encoding the answer)."""

    sources: tuple[SourceRef, ...]
    body_fragment: bytes

    def fingerprint(self) -> frozenset[tuple[UUID, int]]:
        return frozenset((s.session_id, s.version) for s in self.sources)


def answer_fragment(answer: str, sources: Iterable[tuple[UUID, float]]) -> bytes:
    """The `"answer":…,"sources":[…]` members of a query response body, as compact JSON
    (what Starlette's JSONResponse would write for the same values)."""
    document = json.dumps(
        {"answer": answer,
         "sources": [{"session_id": str(session), "score": score} for session, score in sources]},
        ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
    )
    return document[1:-1].encode("utf-8")


def encode_answer(value: CachedAnswer, fragment: bytes | None = None) -> bytes:
    """`fragment`: `answer_fragment` of this answer when the caller has rendered it already
    (the fresh path renders it once, for its response and for the stored value)."""
    parts = [_ANSWER_HEADER.pack(_ANSWER_V2, len(value.sources))]
    parts += [_SOURCE.pack(s.session_id.bytes, s.version, s.score) for s in value.sources]
    parts.append(fragment if fragment is not None else answer_fragment(
        value.answer, ((s.session_id, s.score) for s in value.sources)))
    return b"".join(parts)


def decode_answer(data: bytes) -> StoredAnswer:
    """The stored answer in `data`. Remembered by the value's bytes (a hot entry is served
    over and over, and a `StoredAnswer` is immutable): a hit then costs a hash of ~0.5 KB
    instead of rebuilding its sources."""
    return _decode_answer(data)


@lru_cache(maxsize=4096)
def _decode_answer(data: bytes) -> StoredAnswer:
    try:
        version, count = _ANSWER_HEADER.unpack_from(data)
        if version == _ANSWER_V1:
            raise OutdatedValue("answer in format 1")
        if version != _ANSWER_V2:
            raise CorruptValue("unknown answer version")
        offset = _ANSWER_HEADER.size
        sources = []
        for _ in range(count):
            raw_id, note_version, score = _SOURCE.unpack_from(data, offset)
            sources.append(SourceRef(UUID(bytes=raw_id), note_version, score))
            offset += _SOURCE.size
    except struct.error as exc:
        raise CorruptValue(f"answer cannot be decoded: {exc}") from exc
    fragment = data[offset:]
    if not fragment.startswith(b'"answer":') or not fragment.endswith(b"]"):
        raise CorruptValue("answer body is not a response fragment")
    return StoredAnswer(tuple(sources), fragment)


class Envelope:
    """Wraps encoded values: plain, or AES-GCM with a key id and the Redis key as AAD.

    Binding the Redis key as associated data means a value copied under another key (another
    workspace's, say) fails to decrypt instead of being served there.
    """

    def __init__(self, key: bytes | None = None, key_id: str = "k1") -> None:
        if key is not None and len(key) not in (16, 24, 32):
            raise ValueError("CACHE_ENCRYPTION_KEY must decode to 16, 24 or 32 bytes")
        self._aead = AESGCM(key) if key is not None else None
        self._key_id = key_id.encode()
        if len(self._key_id) > 255:
            raise ValueError("encryption key id too long")

    @property
    def encrypting(self) -> bool:
        return self._aead is not None

    def seal(self, payload: bytes, redis_key: str) -> bytes:
        if self._aead is None:
            return bytes([_PLAIN]) + payload
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, payload, redis_key.encode())
        return bytes([_AES_GCM, len(self._key_id)]) + self._key_id + nonce + sealed

    def open(self, data: bytes, redis_key: str) -> bytes:
        if not data:
            raise CorruptValue("empty value")
        kind = data[0]
        if kind == _PLAIN:
            if self._aead is not None:
                # Never serve plaintext once encryption is on: it may predate a key rotation
                # or have been planted.
                raise CorruptValue("plaintext value while encryption is required")
            return data[1:]
        if kind != _AES_GCM or self._aead is None:
            raise CorruptValue("encrypted value but no key configured")
        id_len = data[1] if len(data) > 1 else 0
        key_id = data[2 : 2 + id_len]
        if key_id != self._key_id:
            raise CorruptValue("value sealed with another key id")
        rest = data[2 + id_len :]
        try:
            return self._aead.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], redis_key.encode())
        except Exception as exc:  # cryptography raises InvalidTag, or ValueError on short data
            raise CorruptValue("value does not authenticate") from exc
