"""One alert end to end: a real condition → Prometheus → Alertmanager → a webhook, carrying the
links an SRE follows (runbook in this repository, dashboard panel).

The condition is real: the private Redis that redis_exporter watches is stopped, so the
project's own `AIAgentRedisDown` (alerts/rules/ai-cache-redis.alerts.yml, arm
`redis_up == 0`) fires. Its `for: 2m` is too long for a test, so Prometheus loads a
temporary copy of that rule file in which ONLY the `for:` of AIAgentRedisDown is shortened
(the test asserts that expression, labels and annotations are the project's, unchanged).
Restarting Redis on the same port then delivers the resolved notification.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.queries import REPO_ROOT, RULES_DIR, dashboard_files, iter_panels
from devstack.services import alertmanager as am_svc
from devstack.services import prometheus as prom_svc
from devstack.services import redis as redis_svc
from devstack.services import redis_exporter as exporter_svc
from devstack.services.common import Service
from devstack.webhook_sink import WebhookSink

pytestmark = pytest.mark.integration

RULE_FILE = RULES_DIR / "ai-cache-redis.alerts.yml"
ALERT = "AIAgentRedisDown"
SHORT_FOR = "1s"  # the project's rule says 2m; only this value differs in the copy
REDIS_JOB = "redis"  # the job the rule's `up{job="redis"}` arms name
REASON = "exporter cannot reach Redis"  # the rule's `redis_up == 0` arm
DELIVERY_TIMEOUT = 60.0

Alert = tuple[dict[str, Any], dict[str, Any]]


def shortened_copy(source: Path, target: Path, alert: str, for_: str) -> dict[str, Any]:
    """Write `source` to `target` with the `for:` of `alert` set to `for_`; return the rule
    as the project wrote it."""
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    original: dict[str, Any] | None = None
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                original = dict(rule)
                rule["for"] = for_
    assert original is not None, f"{alert} not in {source}"
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    # Nothing but that one `for:` differs.
    copy = yaml.safe_load(target.read_text(encoding="utf-8"))
    expected = yaml.safe_load(source.read_text(encoding="utf-8"))
    for group in expected["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["for"] = for_
    assert copy == expected
    return original


def wait_for(probe: Callable[[], list[Alert]], *, what: str,
             timeout: float = DELIVERY_TIMEOUT) -> list[Alert]:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def webhook() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def alerts_since(sink: WebhookSink, since: int) -> Iterator[Alert]:
    """(notification, alert) for every alert of the notifications from the `since`-th on."""
    for payload in sink.bodies()[since:]:
        for alert in payload.get("alerts", []):
            yield payload, alert


def test_redis_down_is_delivered_with_its_runbook_and_dashboard(
    webhook: WebhookSink, tmp_path: Path,
) -> None:
    project_rule = shortened_copy(RULE_FILE, tmp_path / RULE_FILE.name, ALERT, SHORT_FOR)
    assert project_rule["for"] == "2m"

    with contextlib.ExitStack() as cleanup:
        redis: Service = redis_svc.start_private_redis(name="redis-alert-delivery")
        # Stopped in the test; the callback is a no-op for an already stopped Redis.
        cleanup.callback(lambda: redis_svc.stop(redis) if redis.pid else None)
        exporter = exporter_svc.start_private_redis_exporter(
            redis.url, name="redis-exporter-alert-delivery")
        cleanup.callback(exporter_svc.stop, exporter)
        alertmanager = am_svc.start_private_alertmanager(
            webhook.url("/alerts"), group_wait=0.5, group_interval=1.0,
            name="alertmanager-delivery")
        cleanup.callback(am_svc.stop, alertmanager)
        prometheus = prom_svc.start_private_prometheus(
            targets={REDIS_JOB: [exporter_svc.target_of(exporter)]}, scrape_interval=1.0,
            rule_files=[tmp_path / RULE_FILE.name], alertmanager=am_svc.target_of(alertmanager),
            name="prometheus-alert-delivery", external_labels=LINK_BASES,
        )
        cleanup.callback(prom_svc.stop, prometheus)

        # Healthy first: Redis is scraped and the alert is quiet.
        prometheus.wait_for_series(f'redis_up{{job="{REDIS_JOB}"}} == 1', timeout=30)
        prometheus.wait_for_series(
            f'count_over_time(up{{job="{REDIS_JOB}"}}[1m]) >= 3', timeout=30)
        assert not prometheus.query(f'ALERTS{{alertname="{ALERT}"}}')

        # The condition: the Redis the exporter watches goes away. Only what arrives from
        # now on counts: with `for: 1s`, the rule's absent() arm may already have fired and
        # resolved in the second before the first scrape (the real 2 m hides that).
        seen = len(webhook.received())
        redis_svc.stop(redis)
        port = redis.port
        redis.pid = None

        def delivered(status: str) -> list[Alert]:
            return [(n, a) for n, a in alerts_since(webhook, seen)
                    if a["labels"].get("alertname") == ALERT and a["status"] == status
                    and a["labels"].get("reason") == REASON]

        def firing() -> list[Alert]:
            return delivered("firing")

        notification, alert = wait_for(firing, what=f"{ALERT} firing at the webhook")[0]

        # What the SRE receives: the project's labels and links, rendered.
        assert notification["status"] == "firing" and notification["groupLabels"] == {
            "alertname": ALERT}
        assert notification["receiver"] == am_svc.RECEIVER
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == project_rule["labels"]["severity"] == "critical"
        assert labels["job"] == REDIS_JOB
        assert labels["instance"] == exporter_svc.target_of(exporter)
        assert annotations["summary"] == f"Redis unavailable: {REASON}"
        assert f"{REASON} on {labels['instance']}" in annotations["description"]
        assert "<no value>" not in json.dumps(annotations)

        # Links are absolute, from Prometheus' external labels (deploy/prometheus.yml), and
        # point at a runbook that exists and a panel of the dashboard as built.
        runbook_url = annotations["runbook_url"]
        base = LINK_BASES["runbook_base_url"]
        assert re.fullmatch(re.escape(base) + r"/[A-Za-z]+\.md", runbook_url), runbook_url
        runbook = REPO_ROOT / "alerts" / "runbooks" / runbook_url.removeprefix(base + "/")
        assert runbook.is_file(), runbook
        assert ALERT in runbook.read_text(encoding="utf-8")

        dashboard_url = annotations["dashboard_url"]
        assert dashboard_url.startswith(LINK_BASES["grafana_url"] + "/d/"), dashboard_url
        assert_dashboard_panel_exists(dashboard_url.removeprefix(LINK_BASES["grafana_url"]))

        # Redis back on the same port: the exporter reconnects, the alert resolves and the
        # resolution is delivered too (the receiver has send_resolved).
        assert port is not None
        redis = redis_svc.restart_on_same_port(redis)
        prometheus.wait_for_series(f'redis_up{{job="{REDIS_JOB}"}} == 1', timeout=30)

        def resolved() -> list[Alert]:
            return delivered("resolved")

        _, resolution = wait_for(resolved, what=f"{ALERT} resolved at the webhook")[0]
        assert resolution["annotations"]["runbook_url"] == runbook_url


LINK_BASES = {"runbook_base_url": "https://git.clinic.example/ai-cache/alerts/runbooks",
              "grafana_url": "https://grafana.clinic.example"}


def assert_dashboard_panel_exists(dashboard_url: str) -> None:
    """`/d/<uid>/<slug>?viewPanel=<id>` names a committed dashboard and one of its panels."""
    match = re.fullmatch(r"/d/([\w-]+)/([\w-]+)\?viewPanel=(\d+)", dashboard_url)
    assert match, dashboard_url
    uid, _slug, panel_id = match.group(1), match.group(2), int(match.group(3))
    dashboards = {d["uid"]: d for d in
                  (json.loads(p.read_text(encoding="utf-8")) for p in dashboard_files())}
    assert uid in dashboards, (uid, sorted(dashboards))
    panel_ids = {panel.get("id") for panel in iter_panels(dashboards[uid])}
    assert panel_id in panel_ids, (dashboard_url, sorted(i for i in panel_ids if i))
