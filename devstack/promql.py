"""A small synchronous client of Prometheus' HTTP API for the tooling: instant and range
queries, other API reads (rules, targets), and waiting until an expression returns series.

The controller's own adapter (rollout/adapters/prometheus.py) is production code with a
contract of its own (verdicts, sample counts, timeouts per check) and stays separate; this
one serves tests, benchmarks and the demo, and raises ServiceError with Prometheus' own
message, so a bad expression reads as such in a test failure.

    promql.query(url, 'up{job="ai-agent"}')          # [{"metric": {...}, "value": [t, "1"]}]
    promql.value(url, "sum(rate(x[1m]))")            # 0.25, or None for no series / NaN
    promql.range_points(url, expr, start, end, 2.0)  # [(t, v), ...] of the first series
    promql.wait_for_series(url, expr, min_series=2)  # polls; never a sleep in a caller
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

from devstack.errors import ServiceError

Series = dict[str, Any]


def api(url: str, endpoint: str, params: Mapping[str, str] | None = None, *,
        timeout: float = 5.0) -> Any:
    """GET /api/v1/`endpoint` and return its `data`. ServiceError "cannot reach …" when
    nothing answers (wait_for_series keeps polling then), with Prometheus' message otherwise.
    """
    where = f"{url.rstrip('/')}/api/v1/{endpoint}"
    try:
        # trust_env=False: a loopback Prometheus of ours, never behind a developer's proxy.
        response = httpx.get(where, params=dict(params or {}), timeout=timeout,
                             trust_env=False)
    except httpx.TransportError as exc:
        raise ServiceError(f"cannot reach prometheus at {url}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError as exc:
        raise ServiceError(f"prometheus answered {response.status_code} with non-JSON: "
                           f"{response.content[:200]!r}") from exc
    if response.status_code != 200 or answer.get("status") != "success":
        raise ServiceError(f"prometheus {endpoint} failed ({response.status_code} "
                           f"{answer.get('errorType')}): {answer.get('error')}")
    return answer["data"]


def query(url: str, expr: str, *, timeout: float = 5.0) -> list[Series]:
    """One instant query; the `result` list (a scalar comes back as one sample without
    labels)."""
    data = api(url, "query", {"query": expr}, timeout=timeout)
    if data["resultType"] in {"scalar", "string"}:
        return [{"metric": {}, "value": data["result"]}]
    result: list[Series] = data["result"]
    return result


def value(url: str, expr: str, *, timeout: float = 10.0) -> float | None:
    """The value of an instant query's first series; None for no series or a non-finite
    value (a ratio over no traffic is NaN, which is "no data", not a number)."""
    result = query(url, expr, timeout=timeout)
    if not result:
        return None
    number = float(result[0]["value"][1])
    return number if math.isfinite(number) else None


def range_points(url: str, expr: str, start: float, end: float, step: float, *,
                 timeout: float = 30.0) -> list[tuple[float, float]]:
    """A range query's first series as (timestamp, value) pairs, non-finite values dropped."""
    data = api(url, "query_range", {"query": expr, "start": f"{start:.3f}",
                                    "end": f"{end:.3f}", "step": f"{step:g}"},
               timeout=timeout)
    if not data["result"]:
        return []
    points = ((float(ts), float(text)) for ts, text in data["result"][0]["values"])
    return [(ts, number) for ts, number in points if math.isfinite(number)]


def wait_for_series(
    url: str, expr: str, *, timeout: float = 30.0, min_series: int = 1, interval: float = 0.2,
) -> list[Series]:
    """Poll `expr` until it returns at least `min_series` series; return them.

    Query errors other than "cannot reach" fail at once (a bad expression will not get
    better); at the deadline ServiceError says what was last seen.
    """
    deadline = time.monotonic() + timeout
    last: object = "nothing yet"
    while True:
        try:
            result = query(url, expr)
            if len(result) >= min_series:
                return result
            last = f"{len(result)} series"
        except ServiceError as exc:
            if "cannot reach" not in str(exc):
                raise
            last = exc
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {expr!r} to return "
                               f"{min_series}+ series (last: {last})")
        time.sleep(interval)
