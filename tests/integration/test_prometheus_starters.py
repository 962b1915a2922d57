"""The Prometheus, redis_exporter and Alertmanager starters (devstack/services) on real binaries,
and the fake exporter the Prometheus tests scrape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import yaml

from app import contract as c
from devstack import promql
from devstack.errors import ServiceError
from devstack.network import port_open
from devstack.paths import REPO_ROOT
from devstack.processes import pid_alive
from devstack.readiness import wait_until
from devstack.services import alertmanager as am_svc
from devstack.services import prometheus as prom_svc
from devstack.services import redis as redis_svc
from devstack.services import redis_exporter as rx_svc
from devstack.services.common import Service
from devstack.services.prometheus import PrometheusService
from devstack.webhook_sink import WebhookSink
from tests.support.fake_exporter import FakeExporter, Scenario
from tests.support.prometheus import (  # noqa: F401 - fixtures
    FIRST_DATA_TIMEOUT,
    fake_exporters,
    prometheus_factory,
)

pytestmark = pytest.mark.integration

StartExporters = Callable[..., list[FakeExporter]]
StartPrometheus = Callable[..., PrometheusService]


def _assert_stopped(service: Service, pid: int | None) -> None:
    assert pid is not None
    assert not pid_alive(pid)
    assert service.port is not None and not port_open("127.0.0.1", service.port)
    assert service.data_dir is None or not Path(service.data_dir).exists()


def _absent(url: str, expr: str, *, timeout: float = 15.0) -> None:
    wait_until(lambda: promql.query(url, expr) == [], timeout=timeout,
               what=f"{expr} to return nothing")


# --- Prometheus ---------------------------------------------------------------------------------
def test_prometheus_scrapes_generated_targets_and_stops(
    fake_exporters: StartExporters,  # noqa: F811
) -> None:
    (exporter,) = fake_exporters(Scenario())
    svc = prom_svc.start_private_prometheus(targets={"ai-agent": [exporter.target]},
                                            scrape_interval=1.0, name="prometheus-starter-test")
    pid = svc.pid
    try:
        assert svc.owned and pid and svc.url == f"http://127.0.0.1:{svc.port}"
        config = yaml.safe_load(Path(str(svc.config_file)).read_text())
        assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s",
                                    "evaluation_interval": "1s"}
        jobs = {job["job_name"]: job["static_configs"][0]["targets"]
                for job in config["scrape_configs"]}
        assert jobs == {"ai-agent": [exporter.target], "prometheus": [f"127.0.0.1:{svc.port}"]}
        started = time.monotonic()
        up = svc.wait_for_series(f'up{{job="ai-agent",instance="{exporter.target}"}} == 1',
                                 timeout=FIRST_DATA_TIMEOUT)
        assert up[0]["value"][1] == "1"
        assert time.monotonic() - started < FIRST_DATA_TIMEOUT
        # Scraped with the contract's names.
        svc.wait_for_series(f'{c.METRIC_QUERIES}{{instance="{exporter.target}"}}',
                            min_series=4)
    finally:
        prom_svc.stop(svc)
    _assert_stopped(svc, pid)
    assert svc.pid is None
    prom_svc.stop(svc)  # idempotent: never signals a pid twice


def test_prometheus_reload_changes_targets(
    fake_exporters: StartExporters, prometheus_factory: StartPrometheus,  # noqa: F811
) -> None:
    a, b = fake_exporters(Scenario(), Scenario())
    svc = prometheus_factory({"ai-agent": [a.target]})
    svc.wait_for_series(f'up{{instance="{a.target}"}} == 1', timeout=FIRST_DATA_TIMEOUT)

    prom_svc.reconfigure(svc, targets={"ai-agent": [a.target, b.target]})
    svc.wait_for_series(f'up{{instance="{b.target}"}} == 1', timeout=FIRST_DATA_TIMEOUT)

    prom_svc.reconfigure(svc, targets={"ai-agent": [b.target]})
    # A dropped target's series are marked stale at once.
    _absent(svc.url, f'up{{instance="{a.target}"}}', timeout=FIRST_DATA_TIMEOUT)
    assert promql.query(svc.url, f'up{{instance="{b.target}"}}')


def test_prometheus_reconfigure_rejects_a_bad_rule_file(
    prometheus_factory: StartPrometheus, tmp_path: Path,  # noqa: F811
) -> None:
    svc = prometheus_factory()
    before = Path(str(svc.config_file)).read_text()
    bad = tmp_path / "bad.rules.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: sum(\n")
    with pytest.raises(ServiceError, match="invalid"):
        prom_svc.reconfigure(svc, rule_files=[bad])
    assert Path(str(svc.config_file)).read_text() == before
    assert prom_svc.is_ready(svc.url)


@pytest.fixture
def webhook() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def test_rules_fire_through_alertmanager_to_a_webhook(
    prometheus_factory: StartPrometheus, webhook: WebhookSink, tmp_path: Path,  # noqa: F811
) -> None:
    rules = tmp_path / "test.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "starter-test", "rules": [{
        "alert": "StarterTestAlwaysFiring", "expr": "vector(1)",
        "labels": {"severity": "info"},
        "annotations": {"runbook_url": "https://example.invalid/runbook"},
    }]}]}))
    am = am_svc.start_private_alertmanager(webhook.url("/hook"), group_wait=0.5, group_interval=1.0,
                                           name="alertmanager-starter-test")
    try:
        prometheus_factory(rule_files=[rules], alertmanager=am_svc.target_of(am))
        wait_until(lambda: any(
            alert["labels"]["alertname"] == "StarterTestAlwaysFiring"
            for payload in webhook.bodies() for alert in payload["alerts"]),
            timeout=60, interval=0.2, what="the alert at the webhook")
        alert = next(a for p in webhook.bodies() for a in p["alerts"])
        assert alert["status"] == "firing"
        assert alert["annotations"]["runbook_url"] == "https://example.invalid/runbook"
    finally:
        am_svc.stop(am)


def test_stop_only_stops_what_we_started(
    prometheus_factory: StartPrometheus, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    first, second = prometheus_factory(), prometheus_factory()
    monkeypatch.setenv("PROMETHEUS_URL", second.url)
    reused = prom_svc.ensure_prometheus()
    assert reused == Service(name="prometheus", url=second.url, owned=False)
    prom_svc.stop(reused)
    with pytest.raises(ServiceError, match="not started here"):
        prom_svc.reconfigure(reused, targets={})
    assert prom_svc.is_ready(second.url)

    first_pid = first.pid
    prom_svc.stop(first)
    _assert_stopped(first, first_pid)
    assert second.pid is not None and pid_alive(second.pid)
    assert prom_svc.is_ready(second.url)


# --- redis_exporter ----------------------------------------------------------------------------
@pytest.fixture
def private_redis() -> Iterator[Service]:
    # Its own Redis: the test sets maxmemory and provokes OOM, which no shared Redis may see.
    service = redis_svc.start_private_redis(name="redis-exporter-tests")
    yield service
    if service.data_dir and Path(service.data_dir).exists():  # a test may have stopped it
        redis_svc.stop(service)


def _sample(url: str, line_prefix: str) -> float | None:
    for line in rx_svc.scrape(url).splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    return None


def test_redis_exporter_reports_a_private_redis(private_redis: Service) -> None:
    exporter = rx_svc.start_private_redis_exporter(private_redis.url,
                                                   name="redis-exporter-tests")
    pid = exporter.pid
    try:
        assert exporter.owned and rx_svc.target_of(exporter) == f"127.0.0.1:{exporter.port}"
        assert rx_svc.redis_up(exporter.url) == 1.0
        client = redis_client.Redis.from_url(private_redis.url)
        client.config_set("maxmemory", 64 * 1024 * 1024)
        wait_until(lambda: _sample(exporter.url, "redis_memory_max_bytes") == 64 * 1024 * 1024,
                   timeout=10, what="redis_memory_max_bytes = 64 MiB")
        assert (_sample(exporter.url, "redis_memory_used_bytes") or 0) > 0

        # Out of memory under noeviction: the write is refused and counted per error type.
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        with pytest.raises(redis_client.exceptions.ResponseError, match="maxmemory"):
            client.set("k", "v")
        wait_until(lambda: (_sample(exporter.url, 'redis_errors_total{err="OOM"}') or 0) >= 1,
                   timeout=10, what='redis_errors_total{err="OOM"} >= 1')
        client.close()

        redis_svc.stop(private_redis)
        wait_until(lambda: rx_svc.redis_up(exporter.url) == 0.0, timeout=15,
                   what="redis_up 0 after Redis stopped")
    finally:
        rx_svc.stop(exporter)
    _assert_stopped(exporter, pid)
    rx_svc.stop(exporter)


def test_redis_exporter_without_a_redis_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_EXPORTER_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(rx_svc, "RUN_DIR", Path("/nonexistent-run-dir"))
    with pytest.raises(ServiceError, match="no Redis to export"):
        rx_svc.ensure_redis_exporter()


# --- Alertmanager ------------------------------------------------------------------------------
def test_alertmanager_starts_without_clustering_and_stops(webhook: WebhookSink) -> None:
    svc = am_svc.start_private_alertmanager(webhook.url("/hook"), name="alertmanager-starter-test")
    pid = svc.pid
    try:
        with urllib.request.urlopen(f"{svc.url}/api/v2/status", timeout=5) as response:
            status = json.loads(response.read())
        assert status["cluster"]["status"] == "disabled"
        config = yaml.safe_load(status["config"]["original"])
        assert config["receivers"][0]["webhook_configs"][0]["url"] == webhook.url("/hook")
        assert config["route"]["group_wait"] == "1s"
    finally:
        am_svc.stop(svc)
    _assert_stopped(svc, pid)
    am_svc.stop(svc)


# --- reuse and the CLI ---------------------------------------------------------------------------
def test_ensure_reuses_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:9090/")
    monkeypatch.setenv("REDIS_EXPORTER_URL", "http://127.0.0.1:9121")
    monkeypatch.setenv("ALERTMANAGER_URL", "http://127.0.0.1:9093")
    services = [prom_svc.ensure_prometheus(), rx_svc.ensure_redis_exporter(),
                am_svc.ensure_alertmanager()]
    assert [(s.url, s.owned, s.pid) for s in services] == [
        ("http://127.0.0.1:9090", False, None), ("http://127.0.0.1:9121", False, None),
        ("http://127.0.0.1:9093", False, None)]
    prom_svc.stop(services[0])
    rx_svc.stop(services[1])
    am_svc.stop(services[2])


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_cli_start_configure_status_stop(
    tmp_path: Path, fake_exporters: StartExporters, private_redis: Service,  # noqa: F811
) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PROMETHEUS_URL", "REDIS_EXPORTER_URL", "ALERTMANAGER_URL"}}
    env |= {"AI_CACHE_RUN_DIR": str(tmp_path / "run"), "REDIS_URL": private_redis.url}
    (exporter,) = fake_exporters(Scenario())
    started: dict[str, dict[str, Any]] = {}
    try:
        for name in ("prometheus", "redis_exporter", "alertmanager"):
            out = _cli(["scripts.svc", "start", name], env)
            assert out.returncode == 0, out.stderr
            started[name] = json.loads(out.stdout)
            assert started[name]["owned"] and started[name]["url"].startswith("http://127.0.0.1:")
            again = _cli(["scripts.svc", "start", name], env)  # already running: the same one
            assert json.loads(again.stdout)["pid"] == started[name]["pid"]
        assert rx_svc.redis_up(started["redis_exporter"]["url"]) == 1.0
        assert am_svc.is_ready(started["alertmanager"]["url"])

        prom_url = started["prometheus"]["url"]
        redis_target = rx_svc.target_of(Service("", started["redis_exporter"]["url"]))
        out = _cli(["scripts.svc.prometheus", "configure", "--scrape-interval", "1s",
                    "--target", f"ai-agent={exporter.target}", "--target", f"redis={redis_target}"],
                   env)
        assert out.returncode == 0, out.stderr
        promql.wait_for_series(prom_url, 'up{job=~"ai-agent|redis"} == 1', min_series=2,
                                 timeout=FIRST_DATA_TIMEOUT)
        status = _cli(["scripts.svc.prometheus", "status", "--format", "env"], env)
        assert status.returncode == 0
        assert status.stdout.strip() == f"export PROMETHEUS_URL={prom_url}"
    finally:
        for name in started:
            out = _cli(["scripts.svc", "stop", name], env)
            assert out.returncode == 0, out.stderr
    for name, info in started.items():
        assert not pid_alive(info["pid"]), name
        assert not (tmp_path / "run" / f"{name}.json").exists()
        assert not Path(info["data_dir"]).exists()


# --- the fake exporter ---------------------------------------------------------------------------
def test_two_fake_exporters_expose_the_contract_independently(
    fake_exporters: StartExporters,  # noqa: F811
) -> None:
    a, b = fake_exporters(Scenario(requests_per_second=200, error_rate_off=0.25, shadow=True),
                          Scenario(requests_per_second=0, export_flags=False,
                                   export_redis=False))
    assert a.port != b.port
    wait_until(lambda: a.generated >= 100, timeout=10, what="traffic on exporter a")
    text_a = urllib.request.urlopen(a.url, timeout=5).read().decode()
    text_b = urllib.request.urlopen(b.url, timeout=5).read().decode()
    for metric in (c.METRIC_QUERIES, c.METRIC_QUERY_DURATION + "_bucket", c.METRIC_CACHE_HITS,
                   c.METRIC_CACHE_VERIFICATIONS, c.METRIC_UPSTREAM_COST, c.METRIC_FLAG_STATE,
                   "redis_memory_used_bytes", "redis_memory_max_bytes",
                   "redis_evicted_keys_total", 'redis_errors_total{err="OOM"}', "redis_up"):
        assert f"\n{metric}" in text_a, metric
    assert f'{c.METRIC_FLAG_STATE}{{flag="{c.FLAG_SHADOW_MODE}"}} 1.0' in text_a
    assert c.METRIC_FLAG_STATE + "{" not in text_b and "redis_up" not in text_b

    # Exact rates: every fourth request of the control cohort fails.
    queries = a.metrics.queries
    errors = queries.labels(outcome=c.OUTCOME_ERROR, l1=c.COHORT_OFF)._value.get()
    ok = queries.labels(outcome=c.OUTCOME_OK, l1=c.COHORT_OFF)._value.get()
    assert errors / (errors + ok) == pytest.approx(0.25, abs=0.01)
    assert b.generated == 0
