"""Prometheus as the controller's MetricsSource (rollout.ports), over prometheus-api-client.

Behaviour (every method returns, never raises):

* One HTTP attempt per query, bounded by `timeout_seconds`: the library's default session
  retries 3 times with backoff (~6 s) and its requests have no timeout at all; here the session
  mounts adapters with `Retry(total=0)` for every URL and each request carries the timeout
  (also sent to Prometheus as the query's own `timeout`, so it gives up evaluating too). The
  controller's next cycle is the retry.
* Instant queries only. Values arrive as strings: NaN, +Inf and -Inf become `None` (no data),
  like an empty result. A scalar result is a value. More than one series is an error that
  lists the label sets: every plan query aggregates to one series, so more is a query bug,
  and picking one at random would judge a stage on an arbitrary replica.
* A connection error, a timeout, an HTTP 4xx/5xx (bad PromQL is 400 `bad_data`, an
  evaluation failure 422 `execution`, a server-side timeout 503 `timeout`) or an answer that
  is not the Prometheus API is `Measurement(error=...)` carrying Prometheus' own message;
  an error of the sample query is prefixed `sample query:`.
* The library is synchronous: each call runs in a worker thread (`asyncio.to_thread`).
* `as_of(moment)` is the same source with every instant query evaluated at `moment`
  (Prometheus' `time=` parameter) instead of now: `rollout replay` re-runs the controller's
  cycles over recorded data through it (rollout.ports.RecordedMetricsSource).
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from app.contract import (
    FLAG_L1_QUERY_RESULTS,
    FLAG_L2_EMBEDDINGS,
    FLAG_SHADOW_MODE,
    METRIC_FLAG_STATE,
)
from rollout.core.flags import FlagSettings
from rollout.core.observations import Measurement
from rollout.ports import MetricsSource, ReportedFlags
from rollout.redaction import masked

DEFAULT_TIMEOUT_SECONDS: Final = 2.0
FLAG_STATE_QUERY: Final = METRIC_FLAG_STATE
# Labels that say which series of one instance it is, not which instance reports it.
_NOT_INSTANCE_LABELS: Final = frozenset({"__name__", "flag"})
_STATUS_MESSAGE: Final = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)
_ERRNO: Final = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_MAX_LISTED_SERIES: Final = 3


class QueryError(Exception):
    """A query that did not yield a usable answer; the message is what people read, so the
    credentials of any URL in it are masked (rollout.redaction)."""

    def __init__(self, message: str) -> None:
        super().__init__(masked(message))


@dataclass(frozen=True, slots=True)
class Series:
    """One sample of an instant-vector result: its labels and its value (None if not finite)."""

    labels: Mapping[str, str]
    value: float | None


def no_retries() -> Retry:
    """One attempt: no retries on connect, read, status or redirect, no Retry-After sleeps."""
    return Retry(total=0, read=False, redirect=0, status=0, other=0, raise_on_status=False,
                 respect_retry_after_header=False)


class PrometheusSource:
    """`rollout.ports.MetricsSource` on a Prometheus HTTP API at `url`."""

    def __init__(self, url: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise ValueError(f"timeout_seconds must be a positive number, got {timeout_seconds}")
        self._url = url.rstrip("/")
        self._timeout = timeout_seconds
        session = requests.Session()
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(max_retries=no_retries()))
        # The library mounts its own adapter on the URL prefix: give it the same policy. Its
        # `timeout: int` annotation is too narrow: the value goes to requests, which takes float.
        self._client = PrometheusConnect(url=self._url, session=session, retry=no_retries(),
                                         timeout=timeout_seconds)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return self._url

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    def __repr__(self) -> str:
        return f"PrometheusSource({masked(self._url)!r}, timeout_seconds={self._timeout:g})"

    # --- MetricsSource ----------------------------------------------------------------------
    async def measure(self, query: str, sample_query: str | None) -> Measurement:
        return await asyncio.to_thread(self._measure, query, sample_query)

    async def reported_flags(self) -> ReportedFlags:
        return await asyncio.to_thread(self._reported_flags)

    # --- RecordedMetricsSource ----------------------------------------------------------------
    def as_of(self, moment: datetime) -> MetricsSource:
        """This source with every query evaluated at `moment` (timezone-aware)."""
        if moment.tzinfo is None:
            raise ValueError("as_of needs a timezone-aware moment")
        return _AsOf(self, moment)

    async def aclose(self) -> None:
        self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # --- one query --------------------------------------------------------------------------
    def query_series(self, query: str, at: datetime | None = None) -> list[Series]:
        """Run one instant query (at `at`, else now); raise QueryError with a readable
        message on any failure."""
        params = {"timeout": f"{self._timeout:g}"}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        try:
            raw = self._client.custom_query(
                query, params=params,
                timeout=self._timeout,  # type: ignore[arg-type]  # see __init__
            )
        except requests.Timeout as exc:
            raise QueryError(f"Prometheus at {self._url} did not answer within "
                             f"{self._timeout:g}s") from exc
        except requests.ConnectionError as exc:
            raise QueryError(f"cannot reach Prometheus at {self._url}: "
                             f"{_connection_reason(exc)}") from exc
        except PrometheusApiClientException as exc:
            raise QueryError(_api_error_message(str(exc))) from exc
        except (ValueError, KeyError, TypeError) as exc:  # 200 but not the Prometheus API
            # (before RequestException: requests' JSONDecodeError is both)
            raise QueryError(f"{self._url} did not answer like the Prometheus API "
                             f"({type(exc).__name__}: {exc})") from exc
        except requests.RequestException as exc:
            raise QueryError(f"request to Prometheus at {self._url} failed: {exc}") from exc
        return _parse_result(raw)

    def query_value(self, query: str, at: datetime | None = None) -> float | None:
        """The single value of `query` (at `at`, else now): None for no series, NaN or ±Inf;
        QueryError for more than one series or a failed query."""
        series = self.query_series(query, at)
        if not series:
            return None
        if len(series) > 1:
            listed = ", ".join(_format_labels(s.labels) for s in series[:_MAX_LISTED_SERIES])
            more = ", ..." if len(series) > _MAX_LISTED_SERIES else ""
            raise QueryError(f"query returned {len(series)} series, expected one (aggregate "
                             f"it, e.g. with sum()): {listed}{more}")
        return series[0].value

    def _measure(self, query: str, sample_query: str | None,
                 at: datetime | None = None) -> Measurement:
        try:
            value = self.query_value(query, at)
        except QueryError as exc:
            return Measurement(value=None, error=str(exc))
        except Exception as exc:  # the port promises never to raise
            return Measurement(value=None, error=masked(f"{type(exc).__name__}: {exc}"))
        if sample_query is None:
            return Measurement(value=value)
        try:
            sample = self.query_value(sample_query, at)
        except QueryError as exc:
            return Measurement(value=value, error=f"sample query: {exc}")
        except Exception as exc:
            return Measurement(value=value,
                               error=masked(f"sample query: {type(exc).__name__}: {exc}"))
        return Measurement(value=value, sample=sample)

    # --- flags ------------------------------------------------------------------------------
    def _reported_flags(self, at: datetime | None = None) -> ReportedFlags:
        try:
            series = self.query_series(FLAG_STATE_QUERY, at)
        except QueryError as exc:
            return ReportedFlags(settings=None, error=str(exc))
        except Exception as exc:
            return ReportedFlags(settings=None, error=masked(f"{type(exc).__name__}: {exc}"))
        return flags_from_series(series)


class _AsOf:
    """`rollout.ports.MetricsSource` on the same Prometheus, every query evaluated at one past
    moment (`PrometheusSource.as_of`). Closing it leaves the source open: the replay asks for
    one per step."""

    def __init__(self, source: PrometheusSource, moment: datetime) -> None:
        self._source, self._moment = source, moment

    @property
    def moment(self) -> datetime:
        return self._moment

    def __repr__(self) -> str:
        return f"{self._source!r}.as_of({self._moment.isoformat()!r})"

    async def measure(self, query: str, sample_query: str | None) -> Measurement:
        return await asyncio.to_thread(self._source._measure, query, sample_query,
                                       self._moment)

    async def reported_flags(self) -> ReportedFlags:
        return await asyncio.to_thread(self._source._reported_flags, self._moment)

    async def aclose(self) -> None:
        return None


def flags_from_series(series: Sequence[Series]) -> ReportedFlags:
    """Group `ai_agent_flag_state{flag}` series by reporting instance (every label but
    `flag`) and compare the instances.

    No series → settings None, 0 instances. Instances that disagree → consistent False,
    settings None. An instance that reports a flag twice with different values, misses one of
    the three flags, or reports a value that is not a flag value (NaN, a percentage outside
    0..100) cannot be said to agree with anyone: it is treated like a disagreement.
    """
    by_instance: dict[frozenset[tuple[str, str]], dict[str, float | None]] = {}
    conflicted: set[frozenset[tuple[str, str]]] = set()
    for item in series:
        key = frozenset((k, v) for k, v in item.labels.items() if k not in _NOT_INSTANCE_LABELS)
        flag = item.labels.get("flag", "")
        flags = by_instance.setdefault(key, {})
        if flag in flags and flags[flag] != item.value:
            conflicted.add(key)
        flags[flag] = item.value
    if not by_instance:
        return ReportedFlags(settings=None, instances=0)
    settings: set[FlagSettings | None] = set()
    for key, flags in by_instance.items():
        settings.add(None if key in conflicted else _settings_of(flags))
    if len(settings) == 1 and None not in settings:
        return ReportedFlags(settings=settings.pop(), instances=len(by_instance))
    return ReportedFlags(settings=None, instances=len(by_instance), consistent=False)


def _settings_of(flags: Mapping[str, float | None]) -> FlagSettings | None:
    shadow, l2 = flags.get(FLAG_SHADOW_MODE), flags.get(FLAG_L2_EMBEDDINGS)
    percent = flags.get(FLAG_L1_QUERY_RESULTS)
    if shadow is None or l2 is None or percent is None:
        return None
    if shadow not in {0.0, 1.0} or l2 not in {0.0, 1.0}:
        return None
    if not (0.0 <= percent <= 100.0 and percent == round(percent)):
        return None
    return FlagSettings(shadow=shadow == 1.0, l2=l2 == 1.0, l1_percent=round(percent))


# --- parsing ---------------------------------------------------------------------------------
def _parse_result(raw: Any) -> list[Series]:
    """The library returns `data.result`: a list of series, or `[ts, "value"]` for a scalar."""
    if not isinstance(raw, list):
        raise QueryError(f"unexpected Prometheus result: {str(raw)[:200]}")
    if len(raw) == 2 and not isinstance(raw[0], dict):  # resultType scalar (or string)
        return [Series(labels={}, value=_number(raw[1]))]
    series: list[Series] = []
    for item in raw:
        if not isinstance(item, dict) or "value" not in item:
            raise QueryError("query returned a range vector; the controller needs an instant "
                             "vector (wrap the range in rate(), increase(), *_over_time())")
        labels = {str(k): str(v) for k, v in dict(item.get("metric", {})).items()}
        series.append(Series(labels=labels, value=_number(item["value"][1])))
    return series


def _number(text: object) -> float | None:
    """Prometheus' sample string as a float; NaN and ±Inf are no data."""
    try:
        value = float(str(text))
    except ValueError as exc:
        raise QueryError(f"Prometheus returned a non-numeric value: {text!r}") from exc
    return value if math.isfinite(value) else None


def _format_labels(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def _api_error_message(text: str) -> str:
    """`HTTP Status Code 400 (b'{"status":"error",...}')` → `Prometheus 400 bad_data: ...`."""
    match = _STATUS_MESSAGE.match(text)
    if not match:
        return f"Prometheus error: {text[:500]}"
    status, content = match.group(1), match.group(2)
    try:
        body = ast.literal_eval(content)
        payload = json.loads(body)
    except (ValueError, SyntaxError):
        return f"Prometheus {status}: {content[:500]}"
    if isinstance(payload, dict) and payload.get("error"):
        kind = payload.get("errorType")
        return f"Prometheus {status}{f' {kind}' if kind else ''}: {payload['error']}"
    return f"Prometheus {status}: {str(payload)[:500]}"


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    match = _ERRNO.search(text)
    if match:
        return match.group(1).strip()
    for phrase in ("Remote end closed connection without response", "Connection reset by peer",
                   "Connection aborted"):
        if phrase in text:
            return phrase
    return text[:300]
