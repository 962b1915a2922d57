"""HTTP to Unleash's Admin API: one request at a time, errors mapped to the FlagWriter port's.

TemporaryFlagError for connection errors, timeouts, 5xx and 429; PermanentFlagError for
401/403/404/400/409/422 and any other 4xx, with the server's own message. Nothing is
retried here: the controller's next cycle is the retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from rollout.ports import FlagError, PermanentFlagError, TemporaryFlagError

DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=2.0, pool=2.0)

_HINTS: Final = {
    401: "the admin token was rejected: check UNLEASH_ADMIN_TOKEN",
    403: "the token may not use the Admin API: UNLEASH_ADMIN_TOKEN must be an admin token "
         "(like '*:*.<secret>'), not a client/backend token",
    404: "check the project, environment and flag names",
    429: "Unleash is rate limiting; the next cycle retries",
}


class UnleashHttp:
    """JSON over the Admin API. `api_url` is the API root (`…/api`) or the server base."""

    def __init__(
        self,
        api_url: str,
        admin_token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root = api_url.rstrip("/")
        self.api_url = root if root.endswith("/api") else f"{root}/api"
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": admin_token, "Accept": "application/json",
                     "User-Agent": "ai-cache-rollout-controller"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, json: Any = None,
                      allow_404: bool = False) -> Any:
        """The decoded JSON answer; None for an empty body, or for 404 when allowed."""
        operation = f"{method} {self.api_url}{path}"
        try:
            response = await self._client.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise TemporaryFlagError(
                f"Unleash did not answer {operation} in time ({type(exc).__name__}, "
                f"read timeout {self._timeout.read}s)", operation=operation,
            ) from exc
        except httpx.TransportError as exc:
            raise TemporaryFlagError(
                f"cannot reach Unleash for {operation}: {type(exc).__name__}: {exc}",
                operation=operation,
            ) from exc
        if response.status_code == 404 and allow_404:
            return None
        if response.status_code >= 400:
            raise _http_error(response, operation)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentFlagError(
                f"Unleash answered {operation} with {response.status_code} but not JSON "
                f"(is UNLEASH_URL the Unleash API URL?): {response.text[:200]!r}",
                status=response.status_code, operation=operation,
            ) from exc


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        details = body.get("details")
        messages: list[str] = []
        if isinstance(body.get("message"), str):
            messages.append(body["message"])
        if isinstance(details, Sequence):
            messages += [str(d.get("message")) for d in details
                         if isinstance(d, Mapping) and d.get("message")
                         and d.get("message") not in messages]
        if messages:
            return "; ".join(messages)
    return str(body)[:300]


def _http_error(response: httpx.Response, operation: str) -> FlagError:
    status = response.status_code
    hint = _HINTS.get(status)
    message = (f"Unleash answered {status} {response.reason_phrase} to {operation}: "
               f"{_server_message(response)}" + (f" ({hint})" if hint else ""))
    if status == 429 or status >= 500:
        return TemporaryFlagError(message, status=status, operation=operation)
    return PermanentFlagError(message, status=status, operation=operation)
