"""Structured logs: JSON lines in production, a compact readable line in a terminal.

Shared by the service and the controller (the one module of `app` besides the contract
that `rollout` may import), so both write the same shape of line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

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


class LineHandler(logging.Handler):
    """One logger's records as lines of the same shape as `configure_logging`'s, written
    with one `write` each and no formatter machinery: for a logger that writes on every
    request (the service's audit log), where that machinery costs more than the rest of a
    cached answer. JSON lines carry `fields` (the record attributes that make the line);
    terminal lines are "HH:MM:SS LEVEL   name: message". The time text is made once a
    second."""

    def __init__(self, fmt: str, fields: Sequence[str], stream: TextIO | None = None) -> None:
        super().__init__()
        self._json = fmt == "json"
        self._fields = tuple(fields)
        self._stream = stream if stream is not None else sys.stderr
        self._second = -1
        self._time_text = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._stream.write(self._line(record))
            self._stream.flush()
        except Exception:
            self.handleError(record)

    def _line(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._time_text = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
                               if self._json else time.strftime("%H:%M:%S",
                                                                time.localtime(second)))
        if not self._json:
            return f"{self._time_text} {record.levelname:<7} {record.name}: " \
                   f"{record.getMessage()}\n"
        attributes = record.__dict__
        entry: dict[str, object] = {
            "ts": f"{self._time_text}.{int(record.msecs):03d}+00:00",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in self._fields:
            if name in attributes:
                entry[name] = attributes[name]
        return json.dumps(entry, default=str) + "\n"


def route_lines(logger_name: str, fmt: str, fields: Sequence[str]) -> None:
    """Write `logger_name`'s records through their own `LineHandler` instead of the root's
    (after `configure_logging`)."""
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [LineHandler(fmt, fields)]
    logger.propagate = False
