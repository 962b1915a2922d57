"""Redis key names for the caches. Keys never contain raw text: only HMACs of normalised text.

Every key of a workspace carries the workspace id as a Redis Cluster hash tag, so that an L1
entry and the generation counters it depends on live in one slot and one Lua script can
check and fill them atomically.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from uuid import UUID

_WHITESPACE = re.compile(r"\s+")

# Bump when the meaning of a cached answer changes (prompt, retrieval, encoding), so that old
# entries are simply never read again instead of being misread.
L1_SCHEMA = "a1"


def hash_tag(key: str) -> str | None:
    """The Redis Cluster hash tag of a key (`{...}`), or None: keys with the same tag share
    a slot, so one script may touch them together."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else None


def normalise(text: str) -> str:
    """NFKC, casefold, collapse whitespace: `What  is X?` and `what is x?` share an entry."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


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
        self._secret = secret
        self.prefix = prefix

    def digest(self, text: str) -> str:
        """128-bit HMAC-SHA256 of the normalised text, URL-safe base64 (22 chars)."""
        mac = hmac.new(self._secret, normalise(text).encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def client_generation(self, workspace_id: UUID, client_id: UUID) -> str:
        return f"{self.prefix}:gen:{{{workspace_id}}}:c:{client_id}"

    def workspace_generation(self, workspace_id: UUID) -> str:
        """Bumped by every session write in the workspace: guards workspace-wide answers."""
        return f"{self.prefix}:gen:{{{workspace_id}}}:ws"

    def workspace_epoch(self, workspace_id: UUID) -> str:
        """Bumped only by an operator's workspace-wide invalidation: guards every answer."""
        return f"{self.prefix}:gen:{{{workspace_id}}}:epoch"

    def l1(self, workspace_id: UUID, client_id: UUID | None, query: str,
           digest: str | None = None) -> L1Keys:
        """`digest` (of `query`) may be passed when the caller already has it."""
        digest = digest or self.digest(query)
        epoch = self.workspace_epoch(workspace_id)
        if client_id is None:
            return L1Keys(
                entry=f"{self.prefix}:l1:{L1_SCHEMA}:{{{workspace_id}}}:ws:{digest}",
                generations=(self.workspace_generation(workspace_id), epoch),
            )
        return L1Keys(
            entry=f"{self.prefix}:l1:{L1_SCHEMA}:{{{workspace_id}}}:c:{client_id}:{digest}",
            generations=(self.client_generation(workspace_id, client_id), epoch),
        )

    def l2(self, workspace_id: UUID | None, model: str, dimensions: int, text: str,
           digest: str | None = None) -> str:
        """Embedding key; `workspace_id=None` is the opt-in global scope."""
        scope = "global" if workspace_id is None else f"{{{workspace_id}}}"
        return f"{self.prefix}:l2:{scope}:{model}:{dimensions}:{digest or self.digest(text)}"
