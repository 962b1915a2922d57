"""One service replica's exporter (random traffic: controller_traffic) plus the private
Prometheus scraping it, restartable (a test may stop Prometheus)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from devstack.services import prometheus as prom_svc
from devstack.services.prometheus import PrometheusService
from tests.support.controller_replica import base_scenario
from tests.support.controller_traffic import ServiceExporter
from tests.support.prometheus import SERVICE_JOB, start_prometheus, wait_for_scraped

SCRAPE_SECONDS = 1.0  # tests.support.prometheus scrapes every second


class ControllerStack:
    """One fake replica's exporter and a private Prometheus scraping it every second."""

    def __init__(self) -> None:
        self.exporter = ServiceExporter(base_scenario(), seed=7)
        self.prometheus: PrometheusService | None = None
        self.first_data_seconds = 0.0

    def start(self) -> ControllerStack:
        self.exporter.start()
        self.ensure_prometheus()
        return self

    @property
    def url(self) -> str:
        assert self.prometheus is not None, "Prometheus is not running"
        return self.prometheus.url

    def ensure_prometheus(self) -> None:
        """(Re)start Prometheus if it is not running, and wait until it has data."""
        if self.prometheus is not None and prom_svc.is_running(self.prometheus):
            return
        self.stop_prometheus()
        self.prometheus = start_prometheus({SERVICE_JOB: [self.exporter.target]},
                                           name="prometheus-controller")
        self.first_data_seconds = wait_for_scraped(self.prometheus, [self.exporter])

    def stop_prometheus(self) -> None:
        if self.prometheus is not None:
            prom_svc.stop(self.prometheus)

    def reset(self) -> None:
        self.exporter.scenario = base_scenario()

    def close(self) -> None:
        try:
            self.stop_prometheus()
        finally:
            self.exporter.stop()


@contextlib.contextmanager
def running_controller_stack() -> Iterator[ControllerStack]:
    stack = ControllerStack()
    try:
        yield stack.start()
    finally:
        stack.close()
