"""One log shape for the service and the controller: JSON lines with the record's extras."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from app.api.auth import AUDIT_FIELDS
from app.logs import JsonFormatter, LineHandler, configure_logging
from rollout.composition import configure_logging as configure_controller_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level
              for name in ("httpx", "urllib3", "uvicorn.access", "UnleashClient")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_a_json_line_carries_level_logger_message_and_extras() -> None:
    record = logging.makeLogRecord({"name": "rollout", "levelno": logging.WARNING,
                                    "levelname": "WARNING", "msg": "held %s",
                                    "args": ("l1-10",), "stage": "l1-10", "cycle": 7})
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "rollout"
    assert line["msg"] == "held l1-10"
    assert (line["stage"], line["cycle"]) == ("l1-10", 7)
    assert line["ts"].endswith("+00:00")


def test_an_exception_is_one_json_field_not_extra_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("app").makeRecord(
            "app", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]


def test_json_format_and_quiet_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO", quiet=("urllib3",))
    logging.getLogger("app.query").info("answered", extra={"l1": "hit"})
    logging.getLogger("urllib3").info("connection pool chatter")
    logging.getLogger("UnleashClient").warning("poll failed")
    lines = [json.loads(raw) for raw in capsys.readouterr().err.splitlines()]
    assert [(x["logger"], x["msg"], x.get("l1")) for x in lines] == [
        ("app.query", "answered", "hit")]


def test_the_controller_writes_the_same_shape(capsys: pytest.CaptureFixture[str]) -> None:
    configure_controller_logging("json", "INFO")
    logging.getLogger("rollout").info("advanced", extra={"to_stage": "l2"})
    logging.getLogger("uvicorn.access").info("GET /healthz 200")
    (line,) = [json.loads(raw) for raw in capsys.readouterr().err.splitlines()]
    assert (line["logger"], line["msg"], line["to_stage"]) == ("rollout", "advanced", "l2")


def test_console_format_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "DEBUG")
    logging.getLogger("app").debug("cache %s", "miss")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DEBUG" in err and "app: cache miss" in err


def _audit_record() -> logging.LogRecord:
    record = logging.LogRecord("app.audit", logging.INFO, __file__, 0,
                               "audit %s %s %s who=%s workspace=%s",
                               ("query", 200, "ok", "dr-a", "ws-1"), None)
    record.__dict__.update({"audit": True, "who": "dr-a", "workspace": "ws-1",
                            "action": "query", "status": 200, "sources": ["s1", "s2"]})
    return record


def test_a_line_handler_writes_what_the_json_formatter_would() -> None:
    stream = io.StringIO()
    record = _audit_record()
    LineHandler("json", AUDIT_FIELDS, stream).handle(record)
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    assert json.loads(stream.getvalue()) == json.loads(JsonFormatter().format(record))


def test_a_line_handler_writes_what_the_terminal_formatter_would() -> None:
    stream = io.StringIO()
    record = _audit_record()
    LineHandler("console", AUDIT_FIELDS, stream).handle(record)
    expected = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                 "%H:%M:%S").format(record)
    assert stream.getvalue() == expected + "\n"
