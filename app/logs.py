"""Structured logs: JSON lines in production, a compact readable line in a terminal.

Shared by the service and the controller (the one module of `app` besides the contract
that `rollout` may import), so both write the same shape of line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str = "console", level: str = "INFO", *,
                      quiet: tuple[str, ...] = ()) -> None:
    """Route every log line to stderr in `fmt`; `quiet` loggers speak only from WARNING."""
    # No line shows where it was logged from, nor thread or process ids: skip collecting
    # them (the logging HOWTO's "Optimization"; the audit line is written on every request).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                               "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that would drown the service's own lines at INFO.
    for noisy in ("apscheduler", "httpx", "httpcore", *quiet):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # The Unleash SDK logs every poll at INFO and every failed poll at WARNING (once a
    # second while Unleash is down); the flag source logs each change of state once instead.
    logging.getLogger("UnleashClient").setLevel(max(logging.ERROR, root.level))
