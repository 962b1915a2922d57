"""The status page in a real browser (issue 13): Debian's headless Chromium driven by
Playwright, against the real controller app served by uvicorn on a free port, its state in
a real Redis (as test_controller_api.py builds it). The page shows the stage, what happens
next and the timeline; pause with a reason containing HTML through the page's button shows
the reason as text; resume; the page redraws without a reload; a screenshot is a PNG.

`WRITE_DOCS_SCREENSHOT=1` also saves the screenshot to docs/status-page.png (the README's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.services.common import Service
from tests.integration.test_controller_api import TOKEN, _cleanup, make_api
from tests.unit.rollout_runtime.evidence_fixtures import evidence_plan
from tests.unit.rollout_runtime.fakes import T0

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="window.pwned=1"><b>stop</b> & check'


@dataclass
class Served:
    url: str
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failure: list[BaseException] = field(default_factory=list)


class _Server(uvicorn.Server):
    """uvicorn that says when it listens."""

    def __init__(self, config: uvicorn.Config, listening: threading.Event) -> None:
        super().__init__(config)
        self._listening = listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._listening.set()


def _serve(redis_service: Service, served: Served, port: int) -> None:
    """The controller app on its own event loop (its Redis clients belong to that loop):
    six cycles of the evidence plan (off → mid, flags confirmed, the gate judged), then
    uvicorn until the test says stop."""

    async def main() -> None:
        now = [T0]
        made, cleanup = await make_api(
            redis_service, plan=evidence_plan(), clock=lambda: now[0],
            values={"stale": 5, "cohort": 3, "control": 3, "cost": 100})
        try:
            for seconds in (0, 70, 80, 91, 101, 111):
                now[0] = T0 + timedelta(seconds=seconds)
                await made.controller.tick()
            app = made.http._transport.app  # type: ignore[attr-defined]
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                    lifespan="off")
            served.server = _Server(config, served.ready)
            await served.server.serve()
        finally:
            await _cleanup(cleanup)

    try:
        asyncio.run(main())
    except BaseException as exc:  # reported to the test thread
        served.failure.append(exc)
        served.ready.set()


@pytest.fixture
def served(redis_service: Service) -> Iterator[Served]:
    port = free_port()
    served = Served(url=f"http://127.0.0.1:{port}/")
    served.thread = threading.Thread(target=_serve, args=(redis_service, served, port),
                                     daemon=True)
    served.thread.start()
    assert served.ready.wait(timeout=60), "the controller app did not start"
    if served.failure:
        raise served.failure[0]
    yield served
    if served.server is not None:
        served.server.should_exit = True
    served.thread.join(timeout=20)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: scripts/bootstrap installs it")
    with sync_playwright() as playwright:
        # Debian's chromium: Playwright's own browser download does not work here.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_the_page_in_a_browser_shows_next_step_timeline_and_steers(
    served: Served, browser: Any, tmp_path: Path,
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    response = page.goto(served.url)
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'nonce-" in csp and "default-src 'none'" in csp

    # where, what next, and the timeline
    assert page.locator("header .state").inner_text() == "mid"
    next_step = page.locator("#next").inner_text()
    assert "advances to top" in next_step and "blocked by L1 stale rate" in next_step
    assert "inconclusive" in next_step and "more" in next_step
    assert page.locator("#stage-chart").is_visible()
    assert page.locator('svg.check-chart[data-check="stale"]').is_visible()
    assert page.locator('svg.check-chart[data-check="stale"] circle.estimate').count() >= 2

    # pause through the button, with a reason that is HTML: shown as text, never run
    page.evaluate("window.marker = 'same page'")
    page.fill("#token", TOKEN)
    page.fill("#who", "console tester")
    page.fill("#why", HOSTILE)
    page.click("#do-pause")
    banner = page.locator("#paused")
    banner.wait_for(state="visible", timeout=15_000)
    assert HOSTILE in banner.inner_text()
    assert banner.locator("img").count() == 0 and banner.locator("b").count() == 0
    assert page.evaluate("window.pwned") is None
    assert "pause: " in page.locator("#steer-result").inner_text()
    assert page.locator("header").inner_text().count("paused") >= 1
    assert "nothing changes until someone runs" in page.locator("#next").inner_text()

    # resume: the banner goes, and the page was redrawn in place, never reloaded
    page.fill("#why", "incident over")
    page.click("#do-resume")
    banner.wait_for(state="detached", timeout=15_000)
    assert page.evaluate("window.marker") == "same page"
    assert "resume: " in page.locator("#steer-result").inner_text()

    # a command without a token is refused by the page, not sent
    page.fill("#token", "")
    page.click("#do-promote")
    assert "a token, who and a reason are needed" in page.locator("#steer-result").inner_text()
    assert page.locator("header .state").inner_text() == "mid"  # nothing was promoted

    assert not problems, problems  # no CSP violation, no failed load, no script error

    shot = tmp_path / "status-page.png"
    # caret="initial": hiding the caret would inject a style the page's CSP rightly blocks
    page.screenshot(path=str(shot), full_page=True, caret="initial")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    if os.environ.get("WRITE_DOCS_SCREENSHOT"):
        shutil.copyfile(shot, REPO_ROOT / "docs" / "status-page.png")
