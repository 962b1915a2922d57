"""Cohere provider: v2 embed and chat through the official SDK, with one retry policy of ours.

The SDK's own retry loop is switched off (client- and request-level `max_retries=0`): it
retries on statuses we do not want retried (408/409), it does not retry read timeouts, and its
backoff can wait up to 60 s. Every call goes through `_call`, which owns the single policy:
bounded exponential backoff with jitter, Retry-After honoured up to a cap, a hard per-attempt
deadline, and a `ProviderError` that says whether a later retry could help.

Nothing clinical is logged: only lengths, counts, attempt numbers and status codes.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

import cohere
import httpx
import numpy as np
from cohere.core.api_error import ApiError
from cohere.core.parse_error import ParsingError
from cohere.core.request_options import RequestOptions
from cohere.v2.client import OMIT

from app.providers.base import EmbedInput, ProviderError, RetrievedNote, Vector

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Cohere's documented per-call limit for v2 embed.
EMBED_BATCH_SIZE: Final = 96
# Server messages end up in exception text; keep them short enough to be safe in any log line.
_MAX_SERVER_MESSAGE_CHARS: Final = 300

SYSTEM_PROMPT: Final = (
    "You are an assistant for clinicians reviewing their own therapy session notes. "
    "Answer the question using only the session notes provided as documents. "
    "If the notes do not contain the answer, say that the notes do not contain this "
    "information. Do not use outside knowledge, do not speculate, and do not invent details."
)

Sleep = Callable[[float], Awaitable[None]]


class _Temporary(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class CohereProvider:
    """`Provider` backed by Cohere's v2 API (or anything that speaks it, such as the test stub)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        embed_model: str,
        chat_model: str,
        dimensions: int,
        timeout_seconds: float,
        max_retries: int,
        backoff_base_seconds: float = 0.25,
        backoff_max_seconds: float = 4.0,
        retry_after_cap_seconds: float = 5.0,
        httpx_client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not api_key:
            # Fail at startup rather than with a 401 on the first query.
            raise ValueError("a Cohere API key is required (COHERE_API_KEY)")
        if dimensions <= 0:
            raise ValueError("dimensions must be positive")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._embed_model = embed_model
        self._chat_model = chat_model
        self._dimensions = dimensions
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._retry_after_cap = retry_after_cap_seconds
        self._sleep = sleep
        self._owns_http = httpx_client is None
        # An explicit httpx client: the SDK's default one would carry its 300 s timeout.
        self._http = httpx_client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds))
        self._client = cohere.AsyncClientV2(
            api_key=api_key,
            base_url=base_url.rstrip("/"),
            timeout=timeout_seconds,
            max_retries=0,
            httpx_client=self._http,
            log_warning_experimental_features=False,
        )
        self._request_options: RequestOptions = {"timeout": timeout_seconds, "max_retries": 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> CohereProvider:
        return cls(
            api_key=settings.cohere_api_key.get_secret_value(),
            base_url=settings.cohere_base_url,
            embed_model=settings.cohere_embed_model,
            chat_model=settings.cohere_chat_model,
            dimensions=settings.cohere_embedding_dimensions,
            timeout_seconds=settings.cohere_timeout_seconds,
            max_retries=settings.cohere_max_retries,
        )

    @property
    def name(self) -> str:
        return "cohere"

    @property
    def embed_model(self) -> str:
        return self._embed_model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        vectors: list[Vector] = []
        for start in range(0, len(texts), EMBED_BATCH_SIZE):
            batch = list(texts[start : start + EMBED_BATCH_SIZE])
            vectors.extend(await self._embed_batch(batch, input_type))
        return vectors

    async def _embed_batch(self, texts: list[str], input_type: EmbedInput) -> list[Vector]:
        response = await self._call(
            "embed",
            lambda: self._client.embed(
                model=self._embed_model,
                input_type=input_type,
                texts=texts,
                embedding_types=["float"],
                output_dimension=self._dimensions,
                request_options=self._request_options,
            ),
        )
        floats = response.embeddings.float_ if response.embeddings is not None else None
        if floats is None:
            raise ProviderError("Cohere embed response has no float embeddings", temporary=False)
        try:
            matrix = np.asarray(floats, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ProviderError(
                "Cohere embed response is not a rectangular array of numbers", temporary=False
            ) from exc
        expected = (len(texts), self._dimensions)
        if matrix.shape != expected:
            log.warning(
                "cohere embed shape mismatch: got %s, expected %s", matrix.shape, expected
            )
            raise ProviderError(
                f"Cohere embed returned shape {matrix.shape}, expected {expected}",
                temporary=False,
            )
        if not np.isfinite(matrix).all():
            raise ProviderError("Cohere embed returned non-finite values", temporary=False)
        return [matrix[i] for i in range(matrix.shape[0])]

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        documents: list[cohere.Document] = [
            cohere.Document(id=str(note.session_id), data={"text": note.text}) for note in notes
        ]
        messages: cohere.ChatMessages = [
            cohere.SystemChatMessageV2(content=SYSTEM_PROMPT),
            cohere.UserChatMessageV2(content=question),
        ]
        response = await self._call(
            "chat",
            lambda: self._client.chat(
                model=self._chat_model,
                messages=messages,
                # Documents rather than prompt text: the model cites them by id and the API
                # keeps them apart from the instructions.
                documents=documents or OMIT,
                request_options=self._request_options,
            ),
        )
        finish_reason = str(response.finish_reason)
        if finish_reason in ("ERROR", "TIMEOUT"):
            raise ProviderError(f"Cohere chat finished with {finish_reason}", temporary=True)
        content = response.message.content if response.message is not None else None
        parts = [
            item.text
            for item in content or ()
            if isinstance(item, cohere.TextAssistantMessageResponseContentItem)
            and isinstance(item.text, str)
        ]
        answer = "".join(parts).strip()
        if not answer:
            raise ProviderError("Cohere chat returned no text", temporary=False)
        if finish_reason == "MAX_TOKENS":
            log.warning("cohere chat answer truncated at max tokens (%d chars)", len(answer))
        return answer

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(self, kind: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                # httpx timeouts are per phase (connect, each read...); this is the whole attempt.
                async with asyncio.timeout(self._timeout):
                    result = await attempt_once()
            except Exception as exc:
                failure = _classify(exc)
                if not isinstance(failure, _Temporary):
                    log.warning("cohere %s failed permanently: %s", kind, _describe(exc))
                    raise failure from exc
                if attempt == attempts:
                    log.warning(
                        "cohere %s failed after %d attempts: %s", kind, attempts, failure.reason
                    )
                    raise ProviderError(
                        f"Cohere {kind} failed after {attempts} attempts: {failure.reason}",
                        temporary=True,
                    ) from exc
                delay = self._delay(attempt, failure.retry_after)
                log.info(
                    "cohere %s attempt %d/%d failed (%s) after %.3fs; retrying in %.3fs",
                    kind, attempt, attempts, failure.reason, time.monotonic() - started, delay,
                )
                await self._sleep(delay)
            else:
                if attempt > 1:
                    log.info("cohere %s succeeded on attempt %d/%d", kind, attempt, attempts)
                return result
        raise AssertionError("unreachable: the loop returns or raises")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._retry_after_cap)
        ceiling = min(self._backoff_max, self._backoff_base * 2.0 ** (attempt - 1))
        # Half fixed, half random: spreads synchronized clients without ever retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _classify(exc: Exception) -> _Temporary | ProviderError:  # noqa: PLR0911  (a table)
    """Temporary (retry) or a permanent ProviderError carrying the server's message."""
    if isinstance(exc, ApiError):
        status = exc.status_code
        if status is not None and (status == 429 or status >= 500 or status == 408):
            return _Temporary(f"HTTP {status}", _retry_after(exc.headers))
        if status is not None and 200 <= status < 300:
            return ProviderError(f"Cohere returned an unreadable {status} body", temporary=False)
        message = _server_message(exc.body)
        return ProviderError(f"Cohere rejected the request (HTTP {status}): {message}",
                             temporary=False)
    if isinstance(exc, ParsingError):
        return ProviderError("Cohere response did not match the v2 schema", temporary=False)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return _Temporary("timeout")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return _Temporary(type(exc).__name__)
    if isinstance(exc, httpx.HTTPError):
        return ProviderError(f"Cohere request failed: {type(exc).__name__}", temporary=False)
    return ProviderError(f"Cohere call failed: {type(exc).__name__}", temporary=False)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__


def _server_message(body: object) -> str:
    if isinstance(body, Mapping):
        value = body.get("message") or body.get("detail") or body.get("error")
        text = str(value) if value is not None else ""
    elif isinstance(body, str | bytes):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
    else:
        text = "" if body is None else str(body)
    text = " ".join(text.split())
    if len(text) > _MAX_SERVER_MESSAGE_CHARS:
        text = text[:_MAX_SERVER_MESSAGE_CHARS] + "…"
    return text or "(no message)"


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent/invalid."""
    if not headers:
        return None
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
