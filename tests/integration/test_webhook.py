"""The webhook notifier against a real local HTTP listener (a tiny server in a thread)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from devstack.network import free_port
from devstack.webhook_sink import WebhookSink
from rollout.adapters.webhook import WebhookNotifier, slack_payload
from rollout.cycle import run_cycle
from rollout.ports import Notification
from rollout.runtime_types import CyclePorts
from tests.unit.rollout_runtime.evidence_fixtures import evidence_plan
from tests.unit.rollout_runtime.fakes import (
    T0,
    FakeFlagWriter,
    FakeMetricsSource,
    FakeStore,
    small_plan,
)

pytestmark = pytest.mark.integration


HOOK = "/hooks/rollout"


@pytest.fixture
def listener() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def notification(**overrides: Any) -> Notification:
    values: dict[str, Any] = {
        "event": "transition", "title": "Rollout ROLLED BACK: l1-50 \u2192 l1-10",
        "reason": "p95 212 ms > 180 ms (n=4 120): l1-50 \u2192 l1-10", "stage": "l1-10",
        "at": T0, "from_stage": "l1-50", "to_stage": "l1-10", "severity": "critical",
    }
    values.update(overrides)
    return Notification(**values)


async def test_posts_slack_compatible_json_with_the_reason_line(listener: WebhookSink) -> None:
    notifier = WebhookNotifier(listener.url(HOOK), source="controller-a")
    try:
        await notifier.notify(notification())
    finally:
        await notifier.aclose()
    listener.wait_for(1)
    [body] = listener.bodies()
    # Slack parses `text` too: its `>` arrives as `&gt;` and Slack shows it as `>`; the
    # unescaped message is in `plain_text` for receivers that do not speak Slack.
    assert "p95 212 ms &gt; 180 ms (n=4 120): l1-50 \u2192 l1-10" in body["text"]
    assert "p95 212 ms > 180 ms (n=4 120): l1-50 \u2192 l1-10" in body["plain_text"]
    assert body["blocks"][0]["type"] == "section"
    assert any("p95 212 ms" in block.get("text", {}).get("text", "")
               for block in body["blocks"])
    assert body["event"] == "transition" and body["to_stage"] == "l1-10"
    assert listener.received()[0].headers["Content-Type"] == "application/json"
    assert notifier.sent == 1 and notifier.failed == 0


async def test_an_error_status_is_logged_not_raised(
    listener: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    listener.status = 500
    notifier = WebhookNotifier(listener.url(HOOK))
    try:
        await notifier.notify(notification())
    finally:
        await notifier.aclose()
    assert notifier.failed == 1
    assert "webhook answered 500" in caplog.text


async def test_a_slow_webhook_costs_at_most_its_timeout(listener: WebhookSink) -> None:
    listener.delay = 2.0
    notifier = WebhookNotifier(listener.url(HOOK), timeout=0.3)
    started = time.monotonic()
    try:
        await notifier.notify(notification())
    finally:
        await notifier.aclose()
    assert time.monotonic() - started < 1.5
    assert notifier.failed == 1


async def test_nobody_listening_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/", timeout=1.0)
    try:
        await notifier.notify(notification())
    finally:
        await notifier.aclose()
    assert notifier.failed == 1
    assert "webhook delivery failed" in caplog.text


def test_long_reasons_are_clipped_for_slack() -> None:
    payload = slack_payload(notification(reason="x" * 10_000))
    assert all(len(block["text"]["text"]) <= 3000 for block in payload["blocks"]
               if "text" in block)


async def test_a_rollback_cycle_notifies_the_webhook(listener: WebhookSink) -> None:
    plan = small_plan()
    flags = FakeFlagWriter()
    source = FakeMetricsSource(flags)
    store = FakeStore()
    notifier = WebhookNotifier(listener.url(HOOK))
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=notifier)
    token = store.issue_token()
    try:
        for seconds in (0, 70, 80):
            await run_cycle(ports, now=T0 + timedelta(seconds=seconds), token=token)
        listener.wait_for(1)  # the advance
        source.values["errors"] = 2.0
        await run_cycle(ports, now=T0 + timedelta(seconds=91), token=token)
    finally:
        await notifier.aclose()
    listener.wait_for(2)
    rollback = listener.bodies()[-1]
    assert rollback["severity"] == "critical"
    assert "errors 2 &gt; 1 (n=1 000)" in rollback["text"]
    assert "errors 2 > 1 (n=1 000)" in rollback["plain_text"]
    assert "mid \u2192 off" in rollback["text"]


async def test_slack_control_sequences_in_a_reason_are_escaped_not_sent(
    listener: WebhookSink,
) -> None:
    """A reason (a person's `--why`, a check message) that contains `<!channel>` must not ping
    the channel: every text Slack parses carries `&lt;`/`&gt;`/`&amp;` instead (Slack shows
    them as the characters), and nothing else in the reason is altered."""
    notifier = WebhookNotifier(listener.url(HOOK), source="controller <!here>")
    reason = "paused: <!channel> look & see <@U0123ABC> <https://evil.example|here> [/oops]"
    try:
        await notifier.notify(notification(
            event="pause", title="Rollout paused by <!everyone>", reason=reason,
            by="mallory <!subteam^S1>", fields={"why": "<!channel>"}))
    finally:
        await notifier.aclose()
    listener.wait_for(1)
    [body] = listener.bodies()
    slack_texts = [body["text"]]
    for block in body["blocks"]:
        if "text" in block:
            slack_texts.append(block["text"]["text"])
        slack_texts += [element["text"] for element in block.get("elements", [])]
    for text in slack_texts:
        assert "<" not in text and ">" not in text, text
    escaped = ("paused: &lt;!channel&gt; look &amp; see &lt;@U0123ABC&gt; "
               "&lt;https://evil.example|here&gt; [/oops]")
    assert escaped in body["text"]
    assert escaped in body["blocks"][1]["text"]["text"]
    context = body["blocks"][2]["elements"][0]["text"]
    assert "mallory &lt;!subteam^S1&gt;" in context and "controller &lt;!here&gt;" in context
    assert "why: &lt;!channel&gt;" in context
    assert body["plain_text"].endswith(reason)


async def test_a_rollback_on_evidence_sends_the_bound_and_the_objectives(
    listener: WebhookSink,
) -> None:
    """Issue 10: the transition's message lists the deciding check's estimate, bound, margin,
    n and verdict, and the objectives with their intervals — escaped where Slack parses text,
    as written in `plain_text`."""
    plan = evidence_plan()
    flags = FakeFlagWriter()
    source = FakeMetricsSource(flags, values={"stale": 0, "cohort": 3, "control": 3,
                                              "cost": 100})
    store = FakeStore()
    notifier = WebhookNotifier(listener.url(HOOK))
    ports = CyclePorts(plan=plan, store=store, flags=flags, metrics_source=source,
                       notifier=notifier)
    token = store.issue_token()
    try:
        for seconds in (0, 70, 80, 131):  # off → mid → top
            await run_cycle(ports, now=T0 + timedelta(seconds=seconds), token=token)
        listener.wait_for(2)
        source.values["cohort"] = 300
        for seconds in (140, 150):
            await run_cycle(ports, now=T0 + timedelta(seconds=seconds), token=token)
    finally:
        await notifier.aclose()
    listener.wait_for(3)
    advance, rollback = listener.bodies()[1:]
    assert "Decided by:\n\u2022 L1 stale rate 0 %, \u2264 " in advance["plain_text"]
    assert rollback["severity"] == "critical" and rollback["to_stage"] == "mid"
    breach = ("L1 cohort error rate +29.7 pp, \u2265 +20.9 pp (99.95 %); margin \u2264 +1 pp "
              "vs control cohort (n=1 000 vs 1 000): fail")
    assert breach in rollback["plain_text"] and breach in rollback["text"]
    objective = "cost share 10 %, 7.03 % to 13.6 % (95 %); limit \u2264 20 % (n=1 000): met"
    assert objective in rollback["plain_text"]
    sections = [block["text"]["text"] for block in rollback["blocks"]
                if block["type"] == "section"]
    assert any(breach in text and objective in text for text in sections)
