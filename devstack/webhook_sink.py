"""A real HTTP endpoint on 127.0.0.1 that records every JSON body POSTed to it.

Alertmanager's webhook receiver and the controller's notifier post to it in tests and in the
demo; what arrived is read back per path. It can also play a slow or failing receiver
(`status`, `delay`), for the notifier's own tests.

    with WebhookSink() as sink:
        notifier = WebhookNotifier(sink.url("/rollout"))
        ...
        sink.wait_for(1)
        [body] = sink.bodies("/rollout")
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    """One POST: when it arrived, to which path, its JSON body and its headers. A body that
    is not JSON is kept as {"unparsable": text}, so a broken sender shows up in the test."""

    at: float
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class WebhookSink:
    """Serves from construction until close(); also a context manager."""

    def __init__(self, *, status: int = 200, delay: float = 0.0) -> None:
        self.status = status  # what every POST is answered with
        self.delay = delay  # seconds before answering: a slow receiver
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A slow handler (see `delay`) must not hold up close().
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="webhook-sink")
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsable": raw.decode(errors="replace")}
                sink._record(Received(time.time(), self.path, body, dict(self.headers)))
                time.sleep(sink.delay)
                status = sink.status
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, format: str, *args: Any) -> None:
                return  # no access log on the terminal or in the test output

        return Handler

    def _record(self, item: Received) -> None:
        with self._lock:
            self._received.append(item)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        """Everything POSTed so far (to `path` only, if given), oldest first."""
        with self._lock:
            return [item for item in self._received if path is None or item.path == path]

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [item.body for item in self.received(path)]

    def wait_for(self, count: int, *, within: float = 5.0, path: str | None = None) -> None:
        """Until `count` POSTs (to `path`) have arrived; AssertionError at the deadline."""
        deadline = time.monotonic() + within
        while (got := len(self.received(path))) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} webhook calls expected, got {got}")
            time.sleep(0.01)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
