"""Notifications to a webhook that speaks Slack's incoming-webhook JSON.

The body is `{"text": ..., "blocks": [...]}`: `text` alone is a complete message (for
Mattermost, Rocket.Chat, Teams connectors or a plain log sink), `blocks` make it readable in
Slack. The reason line is the decision's own, e.g.
`p95 212 ms > 180 ms (n=4 120): l1-50 → l1-10`; a transition's evidence and objectives
(`details`, one line each) follow it in sections of their own.

Every text in the payload that Slack parses (the top-level `text` as much as the mrkdwn
blocks: mobile notifications show `text`, and Slack reads `<!channel>`, `<@U…>` and links
in it) has `&`, `<` and `>` escaped as `&amp;`, `&lt;`, `&gt;` (Slack's "escaping text"
rules), so a reason or a note that contains `<!channel>` shows those characters instead of
pinging everyone; Slack displays the escaped text exactly as written. The same message,
unescaped, is in `plain_text` for receivers that do not speak Slack's format.

Delivery is best effort: one POST with a short timeout, no retries (the next event comes
soon enough, and the decision log has everything). Failures are logged, never raised.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import httpx

from rollout.ports import Notification
from rollout.redaction import masked

log = logging.getLogger("rollout.webhook")

DEFAULT_TIMEOUT: Final = httpx.Timeout(3.0, connect=2.0)
# Slack rejects a section whose text exceeds 3000 characters.
_SECTION_LIMIT: Final = 2900
_ICONS: Final = {"info": ":large_blue_circle:", "warning": ":warning:",
                 "critical": ":rotating_light:"}


def slack_escape(text: str) -> str:
    """`text` as Slack must receive it to show it literally: `&`, `<`, `>` as entities (and
    nothing else: Slack un-escapes exactly these three)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notification: Notification, *, source: str = "") -> dict[str, Any]:
    icon = _ICONS.get(notification.severity, "")
    title = slack_escape(notification.title)
    headline = f"{icon} {title}".strip()
    reason = _clip(slack_escape(notification.reason))
    context = [
        f"stage *{slack_escape(notification.stage)}*",
        f"by {slack_escape(notification.by)}",
        notification.at.isoformat(timespec="seconds"),
    ]
    if source:
        context.append(slack_escape(source))
    context += [f"{slack_escape(key)}: {slack_escape(value)}"
                for key, value in notification.fields.items()]
    plain_headline = f"{icon} {notification.title}".strip()
    details = "\n".join(notification.details)
    escaped_details = slack_escape(details)
    return {
        "text": f"{headline}\n{reason}" + (f"\n{escaped_details}" if details else ""),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_clip(headline)}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": reason}},
            *({"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
              for chunk in _sections(notification.details)),
            {"type": "context",
             "elements": [{"type": "mrkdwn", "text": _clip(" \u00b7 ".join(context))}]},
        ],
        # Not Slack's: the same message unescaped, for a receiver that shows text as it is.
        "plain_text": f"{plain_headline}\n{_clip(notification.reason)}"
                      + (f"\n{details}" if details else ""),
        # Not Slack's; lets a generic receiver route without parsing text.
        "event": notification.event,
        "severity": notification.severity,
        "stage": notification.stage,
        "from_stage": notification.from_stage,
        "to_stage": notification.to_stage,
    }


def _sections(lines: tuple[str, ...]) -> list[str]:
    """Escaped lines packed into as few sections as Slack's size limit allows (a long line
    is clipped, never split)."""
    sections: list[str] = []
    current = ""
    for line in (_clip(slack_escape(line)) for line in lines):
        if current and len(current) + 1 + len(line) > _SECTION_LIMIT:
            sections.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        sections.append(current)
    return sections


def _clip(text: str) -> str:
    return text if len(text) <= _SECTION_LIMIT else text[: _SECTION_LIMIT - 1] + "\u2026"


class WebhookNotifier:
    """rollout.cycle.Notifier that POSTs Slack-compatible JSON to one URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        source: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._source = source
        self._http = httpx.AsyncClient(
            timeout=timeout, transport=transport, follow_redirects=False,
            headers={"User-Agent": "ai-cache-rollout-controller"},
        )
        self.sent = 0
        self.failed = 0

    async def notify(self, notification: Notification) -> None:
        payload = slack_payload(notification, source=self._source)
        try:
            response = await self._http.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            self.failed += 1
            # httpx may quote the URL, and a webhook URL is a secret: masked.
            log.warning("webhook delivery failed (%s: %s): %s", type(exc).__name__,
                        masked(str(exc)), notification.title,
                        extra={"event": notification.event})
            return
        if response.is_success:
            self.sent += 1
            return
        self.failed += 1
        log.warning("webhook answered %s %s: %s", response.status_code,
                    response.text[:200], notification.title, extra={"event": notification.event})

    async def aclose(self) -> None:
        await self._http.aclose()
