"""Redis key names for the caches. Keys never contain raw text: only HMACs of normalised text.

Every key of a workspace carries the workspace id as a Redis Cluster hash tag, so that an L1
entry and the generation counters it depends on live in one slot and one Lua script can
check and fill them atomically.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from uuid import UUID

from app.ids import uuid_text

_WHITESPACE = re.compile(r"\s+")

# Bump when the meaning of a cached answer changes (prompt, retrieval, encoding) or when
# `normalise` changes which questions share a digest, so that old entries are simply never
# read again instead of being misread. a2: normalisation without NFKC and case folding.
L1_SCHEMA = "a2"
# The same for embeddings (the key had no version before: that was e1).
L2_SCHEMA = "e2"


def hash_tag(key: str) -> str | None:
    """The Redis Cluster hash tag of a key (`{...}`), or None: keys with the same tag share
    a slot, so one script may touch them together."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else None


def normalise(text: str) -> str:
    """The canonical form of a question: what is keyed is also what is embedded and answered.

    Only changes that cannot change meaning: NFC (canonically equivalent sequences are the
    same text by Unicode's definition: precomposed vs decomposed accents, U+212A KELVIN
    SIGN vs K) and runs of whitespace (any Unicode space, tabs, line breaks) collapsed to
    one space, trimmed. Never NFKC — it turns `x²` into `x2`, `½` into `1` U+2044 `2`,
    `①` into `1`, `ﬁ` into `fi`, full-width letters into ASCII — and never case folding:
    case carries clinical meaning in acronyms (`SAD`/`sad`, `MS`/`ms`, `ADD`/`add`,
    `PE`/`pe`), `casefold` maps `ß` to `ss`, and Turkish dotted/dotless i do not fold
    pairwise. A question asked in another case is one more miss, never someone else's
    answer; and because the provider is given this same text, two questions that share an
    entry send the same text upstream, so a cached value can only disagree with a fresh one
    if the provider or the notes do.
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


@dataclass(frozen=True, slots=True)
class L1Keys:
    """The entry key of one cached answer and the generation keys it depends on."""

    entry: str
    generations: tuple[str, ...]


class KeyBuilder:
    """Builds every cache key from a server-side secret and a prefix."""

    def __init__(self, secret: bytes, prefix: str = "ai-cache") -> None:
        if not secret:
            raise ValueError("the cache key secret must not be empty")
        self.prefix = prefix
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: each digest
        # then costs two copies and two short hashes, not a key schedule (~1 us, not ~3).
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(secret).digest() if len(secret) > block else secret
                  ).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(self, text: str) -> str:
        """128-bit HMAC-SHA256 of the normalised text, URL-safe base64 (22 chars)."""
        inner = self._inner.copy()
        inner.update(normalise(text).encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()[:16]).rstrip(b"=").decode()

    def client_generation(self, workspace_id: UUID, client_id: UUID) -> str:
        return f"{self.prefix}:gen:{{{uuid_text(workspace_id)}}}:c:{uuid_text(client_id)}"

    def workspace_generation(self, workspace_id: UUID) -> str:
        """Bumped by every session write in the workspace: guards workspace-wide answers."""
        return f"{self.prefix}:gen:{{{uuid_text(workspace_id)}}}:ws"

    def workspace_epoch(self, workspace_id: UUID) -> str:
        """Bumped only by an operator's workspace-wide invalidation: guards every answer."""
        return f"{self.prefix}:gen:{{{uuid_text(workspace_id)}}}:epoch"

    def l1(self, workspace_id: UUID, client_id: UUID | None, query: str,
           digest: str | None = None) -> L1Keys:
        """`digest` (of `query`) may be passed when the caller already has it."""
        digest = digest or self.digest(query)
        epoch = self.workspace_epoch(workspace_id)
        if client_id is None:
            return L1Keys(
                entry=f"{self.prefix}:l1:{L1_SCHEMA}:{{{uuid_text(workspace_id)}}}:ws:{digest}",
                generations=(self.workspace_generation(workspace_id), epoch),
            )
        return L1Keys(
            entry=(f"{self.prefix}:l1:{L1_SCHEMA}:{{{uuid_text(workspace_id)}}}:c:"
                   f"{uuid_text(client_id)}:{digest}"),
            generations=(self.client_generation(workspace_id, client_id), epoch),
        )

    def l2(self, workspace_id: UUID | None, model: str, dimensions: int, text: str,
           digest: str | None = None) -> str:
        """Embedding key; `workspace_id=None` is the opt-in global scope."""
        scope = "global" if workspace_id is None else f"{{{uuid_text(workspace_id)}}}"
        digest = digest or self.digest(text)
        return f"{self.prefix}:l2:{L2_SCHEMA}:{scope}:{model}:{dimensions}:{digest}"
