"""The controller's one way of keeping credentials out of what it shows and logs.

`masked(text)` rewrites every URL in `text` (a bare URL is a text too) so that no secret
it carries survives: the userinfo (`user:password@`, `:password@`, `token@`) becomes `***@`,
the value of every query parameter whose name says it is a secret (`token`, `access_token`,
`api_key`, `password`, `sig`, `X-Amz-Signature`, …) becomes `***`, and a path segment that
looks like a generated secret (16+ characters of letters *and* digits, as in Slack's
`/services/T…/B…/<secret>` or Discord's `/webhooks/<id>/<token>`) becomes `***`. Everything
else, and any text without a URL, is returned unchanged.

`masked_model(model)` is the same rule applied to every string of a pydantic model (a log
entry or a status read back from Redis may predate the masking, or quote an error).

It is pure (no I/O), so every layer may use it: adapters for their
`target` and error messages, the runtime for logs, the HTTP API and the page for what they
serve, the CLI for what it prints.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

from pydantic import BaseModel

_M = TypeVar("_M", bound=BaseModel)

MASK: Final = "***"

# scheme://rest-of-the-url, up to whitespace or a character that ends a URL in prose or repr.
_URL: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>`]+)")
_SECRET_PARAM: Final = re.compile(
    r"token|secret|passw|pwd|pass$|^pass|key|auth|sig|credential|session|apikey", re.IGNORECASE)
_SECRET_SEGMENT: Final = re.compile(r"(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])"
                                    r"[A-Za-z0-9_\-]{16,}")


def masked(text: str) -> str:
    """`text` with the credentials of every URL in it replaced (see the module docstring)."""
    if "://" not in text:
        return text
    return _URL.sub(_mask_url, text)


def _mask_url(match: re.Match[str]) -> str:
    rest = match["rest"]
    # authority ends at the first '/', '?' or '#'; its userinfo at the last '@' inside it.
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    path = "/".join(MASK if _SECRET_SEGMENT.fullmatch(part) else part
                    for part in path.split("/"))
    if query:
        query = "&".join(_mask_param(param) for param in query.split("&"))
    return f"{match['scheme']}{authority}{path}{question}{query}{hash_}{fragment}"


def _mask_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if eq and value and _SECRET_PARAM.search(name):
        return f"{name}={MASK}"
    return param


def masked_model(model: _M) -> _M:
    """A copy of `model` with `masked` applied to every string in it (the model itself when
    nothing needed masking)."""
    data = model.model_dump(mode="python", exclude_computed_fields=True)
    shown = _masked_data(data)
    return model if shown == data else type(model).model_validate(shown)


def _masked_data(data: Any) -> Any:
    if isinstance(data, str):
        return masked(data)
    if isinstance(data, dict):
        return {key: _masked_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(_masked_data(value) for value in data)
    return data
