"""The text form of ids, remembered: `str(UUID)` is pure Python (~2 us) and one request of
the hot path needs the same few ids a dozen times (keys, metric labels, flags, the audit
line)."""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID


@lru_cache(maxsize=65_536)
def uuid_text(value: UUID) -> str:
    return str(value)
