"""The public keys that sign tokens, from a JWKS file or URL, kept fresh without ever
blocking the event loop: a file is read in a worker thread, a URL fetched with httpx's async
client; both are re-read every `refresh_seconds` in the background (requests keep using the
keys they have), and at once — at most every `min_refetch_seconds`, one read shared by all
the requests that wait for it — when a token names a key id the set does not hold (a key
rotation). A failed read keeps the last good keys."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

log = logging.getLogger(__name__)

# Asymmetric algorithms only: an HS256 key in a published key set would be a shared secret.
JWKS_ALGORITHMS = ("RS256", "ES256")
MAX_JWKS_BYTES = 1_048_576

Loader = Callable[[], Awaitable[bytes]]


class JwksError(ValueError):
    """A key set that cannot be used (not JSON, no `keys`, no usable key)."""


def parse_jwks(raw: bytes) -> tuple[PyJWK, ...]:
    """The signing keys of a JWKS document that this service accepts (RS256 and ES256 on
    P-256); other keys (encryption keys, HMAC keys, other curves) are left out."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise JwksError(f"not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError('no "keys" list')
    keys: list[PyJWK] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK.from_dict(entry)
        except PyJWTError:
            continue
        if key.algorithm_name in JWKS_ALGORITHMS:
            keys.append(key)
    if not keys:
        raise JwksError(f"no usable signing key ({' or '.join(JWKS_ALGORITHMS)})")
    return tuple(keys)


def file_loader(path: Path) -> Loader:
    async def load() -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    return load


def url_loader(client: httpx.AsyncClient, url: str) -> Loader:
    async def load() -> bytes:
        response = await client.get(url)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
        return response.content

    return load


class JwksKeys:
    def __init__(self, load: Loader, *, source: str, refresh_seconds: float,
                 min_refetch_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self.source = source
        self._refresh_seconds = refresh_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._clock = clock
        self._keys: tuple[PyJWK, ...] = ()
        self._loaded_at: float | None = None
        self._attempted_at = -math.inf
        self._reading: asyncio.Task[bool] | None = None

    @property
    def available(self) -> bool:
        return bool(self._keys)

    async def start(self) -> None:
        """First read; raises JwksError/OSError/httpx.HTTPError if it fails."""
        self._attempted_at = self._clock()
        self._install(parse_jwks(await self._load()))

    async def key(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The key that verifies a token with header `kid` and `alg`, or None."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._refresh_seconds:
            if self._keys:
                self._read_in_background()
            elif now - self._attempted_at >= self._min_refetch_seconds:
                await self.refresh()
        found = self._find(kid, algorithm)
        if found is None and self._clock() - self._attempted_at >= self._min_refetch_seconds:
            await self.refresh()  # perhaps a key rotation: one shared read, rate-limited
            found = self._find(kid, algorithm)
        return found

    async def refresh(self) -> bool:
        """Read the key set again (joining a read already under way); False if it failed."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read())
        # Shielded: a request that goes away must not cancel the read others wait for.
        return await asyncio.shield(self._reading)

    def _read_in_background(self) -> None:
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read())

    async def _read(self) -> bool:
        self._attempted_at = self._clock()
        try:
            keys = parse_jwks(await self._load())
        except (JwksError, OSError, httpx.HTTPError) as exc:
            log.warning("could not read the JWKS from %s (%s: %s); keeping %d key(s)",
                        self.source, type(exc).__name__, exc, len(self._keys))
            return False
        self._install(keys)
        return True

    def _install(self, keys: tuple[PyJWK, ...]) -> None:
        before = {k.key_id for k in self._keys}
        self._keys = keys
        self._loaded_at = self._clock()
        after = {k.key_id for k in keys}
        if after != before:
            log.info("JWKS from %s: %d signing key(s), kid %s", self.source, len(keys),
                     ", ".join(sorted(str(k) for k in after)))

    def _find(self, kid: str | None, algorithm: str) -> PyJWK | None:
        candidates = [k for k in self._keys if k.algorithm_name == algorithm]
        if kid is None:  # no key id: only unambiguous when one key has this algorithm
            return candidates[0] if len(candidates) == 1 else None
        return next((k for k in candidates if k.key_id == kid), None)

    async def aclose(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()


async def open_jwks(*, file: Path | None, url: str | None, timeout_seconds: float,
                    refresh_seconds: float, min_refetch_seconds: float,
                    stack: AsyncExitStack) -> JwksKeys | None:
    """The key set of `file` or `url` (None when neither is given), read once before the
    process serves and closed with `stack`. A file that cannot be used raises (JwksError or
    OSError: it is the operator's to get right, so the process should not start); a URL that
    cannot be read is logged and fetched again when a token needs it (an identity provider
    down at start must not keep the process down)."""
    if file is None and url is None:
        return None
    if file is not None:
        source, load = str(file), file_loader(file)
    else:
        assert url is not None
        client = httpx.AsyncClient(timeout=timeout_seconds)
        stack.push_async_callback(client.aclose)
        parsed = httpx.URL(url)
        port = f":{parsed.port}" if parsed.port else ""
        source = f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"  # no credentials
        load = url_loader(client, url)
    keys = JwksKeys(load, source=source, refresh_seconds=refresh_seconds,
                    min_refetch_seconds=min_refetch_seconds)
    stack.push_async_callback(keys.aclose)
    try:
        await keys.start()
    except (JwksError, OSError, httpx.HTTPError) as exc:
        if file is not None:
            raise
        log.error("could not read the JWKS from %s (%s: %s); RS256/ES256 tokens are refused "
                  "until it can be read", source, type(exc).__name__, exc)
    return keys
