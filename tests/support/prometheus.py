"""pytest fixtures and helpers for tests against a real Prometheus scraping fake exporters.

Import what a module needs (tests/conftest.py stays generic):

    from tests.support.prometheus import fake_exporters, prometheus_factory  # noqa: F401

* `fake_exporters(*scenarios)` starts FakeExporters (tests/support/fake_exporter.py), stopped
  after the test.
* `prometheus_factory(targets={job: [host:port]}, ...)` starts a private Prometheus through
  devstack/services/prometheus.py with a 1 s scrape and evaluation interval, stopped after
  the test.
  Tests never reuse PROMETHEUS_URL: they reconfigure and stop what they start.
* `running_stack(*scenarios)` is the same as a context manager, for module-scoped fixtures:
  exporters + one Prometheus scraping them all as job `ai-agent`, returned once every exporter
  has been scraped at least `min_scrapes` times (the first scrape of a new target comes ~5 s
  after start; the wait polls the HTTP API, never sleeps).
* `eventually(probe, accept, timeout=...)` polls an async probe until it is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from devstack.services import prometheus as prom_svc
from devstack.services.prometheus import PrometheusService
from tests.support.fake_exporter import FakeExporter, Scenario

SCRAPE_INTERVAL = 1.0
SERVICE_JOB = "ai-agent"
# Start (~1 s) + the scrape manager's 5 s tick + a couple of scrapes, with room for a slow CI.
FIRST_DATA_TIMEOUT = 30.0

T = TypeVar("T")


def start_prometheus(targets: Mapping[str, Sequence[str]] | None = None,
                     **kwargs: Any) -> PrometheusService:
    kwargs.setdefault("scrape_interval", SCRAPE_INTERVAL)
    kwargs.setdefault("name", "prometheus-tests")
    return prom_svc.start_private_prometheus(targets=targets or {}, **kwargs)


@contextlib.contextmanager
def running_prometheus(targets: Mapping[str, Sequence[str]] | None = None,
                       **kwargs: Any) -> Iterator[PrometheusService]:
    svc = start_prometheus(targets, **kwargs)
    try:
        yield svc
    finally:
        prom_svc.stop(svc)


def wait_for_scraped(prometheus: PrometheusService, exporters: Sequence[FakeExporter], *,
                     min_scrapes: int = 3, timeout: float = FIRST_DATA_TIMEOUT) -> float:
    """Wait until Prometheus holds `min_scrapes` samples of every exporter's queries counter
    (so rate()/increase() have data); returns the seconds waited."""
    started = time.monotonic()
    instances = "|".join(e.target for e in exporters)
    prometheus.wait_for_series(
        f'count_over_time(ai_agent_queries_total{{instance=~"{instances}",l1="off",'
        f'outcome="ok"}}[1m]) >= {min_scrapes}',
        timeout=timeout, min_series=len(exporters),
    )
    return time.monotonic() - started


@dataclass
class Stack:
    """Fake service replicas and the Prometheus that scrapes them."""

    prometheus: PrometheusService
    exporters: list[FakeExporter]
    first_data_seconds: float

    @property
    def url(self) -> str:
        return self.prometheus.url


@contextlib.contextmanager
def running_stack(*scenarios: Scenario, min_scrapes: int = 3,
                  **prometheus_kwargs: Any) -> Iterator[Stack]:
    """Exporters for `scenarios` (one by default) scraped as job `ai-agent` by a private
    Prometheus; yields once data flows."""
    exporters = [FakeExporter(scenario, seed=index + 1)
                 for index, scenario in enumerate(scenarios or (Scenario(),))]
    try:
        for exporter in exporters:
            exporter.start()
        with running_prometheus({SERVICE_JOB: [e.target for e in exporters]},
                                **prometheus_kwargs) as prometheus:
            waited = wait_for_scraped(prometheus, exporters, min_scrapes=min_scrapes)
            yield Stack(prometheus=prometheus, exporters=exporters, first_data_seconds=waited)
    finally:
        for exporter in exporters:
            exporter.stop()


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *,
                     timeout: float = 20.0, interval: float = 0.2, what: str = "") -> T:
    """Await `probe()` until `accept(result)`; at the deadline fail with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or 'a condition'}; "
                        f"last: {result!r}")
        await asyncio.sleep(interval)


@pytest.fixture
def fake_exporters() -> Iterator[Callable[..., list[FakeExporter]]]:
    """`fake_exporters(Scenario(...), Scenario(...))` → started exporters, stopped after."""
    started: list[FakeExporter] = []

    def start(*scenarios: Scenario) -> list[FakeExporter]:
        batch = [FakeExporter(s, seed=len(started) + i + 1).start()
                 for i, s in enumerate(scenarios or (Scenario(),))]
        started.extend(batch)
        return batch

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def prometheus_factory() -> Iterator[Callable[..., PrometheusService]]:
    """`prometheus_factory(targets={...}, rule_files=[...], ...)` → a private Prometheus
    (1 s scrape/evaluation interval unless given), stopped after the test."""
    started: list[PrometheusService] = []

    def start(targets: Mapping[str, Sequence[str]] | None = None,
              **kwargs: Any) -> PrometheusService:
        svc = start_prometheus(targets, **kwargs)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        prom_svc.stop(svc)
