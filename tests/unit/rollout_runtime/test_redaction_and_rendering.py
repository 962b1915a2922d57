"""Controller hygiene (issue 11, point 9): credentials masked wherever the controller shows
or logs a URL, reasons printed as text (never as rich markup), Slack text escaped; and the
evidence of each verdict in the terminal and in Slack (issue 10)."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from datetime import timedelta

import pytest
from rich.console import Console

from rollout.adapters.prometheus import PrometheusSource, QueryError
from rollout.adapters.unleash_admin import UnleashAdmin
from rollout.adapters.webhook import slack_escape, slack_payload
from rollout.cli.errors import CliError
from rollout.cli.render import checks_table, render_dry_run, render_history, render_status
from rollout.composition import MaskingFormatter
from rollout.core.state import PauseInfo, RolloutState
from rollout.ports import Notification, PermanentFlagError, StoreError
from rollout.records import CheckRecord, CycleResult, CycleSummary, FlagsRecord, LogEntry
from rollout.redaction import MASK, masked, masked_model
from rollout.status import build_status
from tests.unit.rollout_runtime.evidence_fixtures import (
    GATE_INCONCLUSIVE,
    GATE_PASSES,
    GUARD_BREACH,
    GUARD_HEALTHY,
    OBJECTIVE_MET,
    OBJECTIVE_MISSED,
    OBJECTIVE_OPEN,
    record,
)
from tests.unit.rollout_runtime.evidence_fixtures import PLAN as EVIDENCE_PLAN
from tests.unit.rollout_runtime.fakes import T0, small_plan

SECRET = "hunter2-S3cret"
MARKUP = ("[/oops]", "[bold]x[/bold]")

# --- the masking function ----------------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    (f"http://admin:{SECRET}@prom:9090", "http://***@prom:9090"),
    (f"https://admin:{SECRET}@prom.example/prometheus/", "https://***@prom.example/prometheus/"),
    (f"http://{SECRET}@unleash:4242/api", "http://***@unleash:4242/api"),
    (f"redis://:{SECRET}@redis:6379/0", "redis://***@redis:6379/0"),
    (f"redis://default:{SECRET}@redis:6379/2", "redis://***@redis:6379/2"),
    (f"rediss://user:{SECRET}@cache.example:6380/1", "rediss://***@cache.example:6380/1"),
    # a password with an unencoded '@' still loses everything before the host
    (f"http://u:{SECRET}@x@prom:9090", "http://***@prom:9090"),
    (f"https://prom.example/api?token={SECRET}&timeout=3",
     "https://prom.example/api?token=***&timeout=3"),
    (f"https://prom.example/?access_token={SECRET}", "https://prom.example/?access_token=***"),
    (f"https://x.example/?api_key={SECRET}#top", "https://x.example/?api_key=***#top"),
    (f"https://x.example/?password={SECRET}", "https://x.example/?password=***"),
    (f"https://blob.example/f?sv=2024&sig={SECRET}", "https://blob.example/f?sv=2024&sig=***"),
    ("https://hooks.slack.com/services/T0AAAA1/B0BBBB2/AbCdEfGhIjKlMnOp12345678",
     "https://hooks.slack.com/services/T0AAAA1/B0BBBB2/***"),
])
def test_masked_hides_every_kind_of_url_credential(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert SECRET not in masked(url)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9090",
    "https://prom.example/prometheus/api/v1/query?query=up&timeout=3",
    "redis://127.0.0.1:6379/0",
    "rediss://cache.example:6380/1",
    "http://unleash:4242/api",
    "https://hooks.example/rollout",
    "http://[::1]:9090/",
])
def test_masked_leaves_urls_without_secrets_unchanged(url: str) -> None:
    assert masked(url) == url


def test_masked_finds_urls_inside_text_and_leaves_the_rest() -> None:
    text = (f"cannot reach Prometheus at http://a:{SECRET}@prom:9090: Connection refused; "
            f"flags -> unleash 'https://u:{SECRET}@unleash/api' (state in redis://:{SECRET}@r/0)")
    shown = masked(text)
    assert SECRET not in shown
    assert shown == ("cannot reach Prometheus at http://***@prom:9090: Connection refused; "
                     "flags -> unleash 'https://***@unleash/api' (state in redis://***@r/0)")
    assert masked("p95 212 ms > 180 ms: [/oops] a@b") == "p95 212 ms > 180 ms: [/oops] a@b"
    assert MASK == "***"


def test_masked_model_masks_every_string_of_a_record() -> None:
    entry = LogEntry(kind="cycle", at=T0, reason=f"see http://u:{SECRET}@prom:9090",
                     checks=(CheckRecord(check="p95", label="p95", verdict="error",
                                         error=f"cannot reach http://u:{SECRET}@h"),),
                     flags=FlagsRecord(error=f"PUT https://x/api?token={SECRET} failed"))
    shown = masked_model(entry)
    assert SECRET not in shown.model_dump_json()
    assert shown.flags is not None and shown.flags.result == "failed"
    clean = LogEntry(kind="cycle", at=T0, reason="all good")
    assert masked_model(clean) is clean


# --- where the controller says a URL -------------------------------------------------------------


def test_adapters_and_errors_never_carry_the_password() -> None:
    source = PrometheusSource(f"http://admin:{SECRET}@127.0.0.1:9")
    assert SECRET not in repr(source)
    assert SECRET not in str(QueryError(f"cannot reach Prometheus at {source.url}"))
    admin = UnleashAdmin(f"https://admin:{SECRET}@unleash.example/api", "token")
    assert SECRET not in admin.target and "unleash.example/api" in admin.target
    error = PermanentFlagError(f"Unleash answered 401 to PUT {admin.api_url}/x",
                               operation=f"PUT {admin.api_url}/x")
    assert SECRET not in error.message and SECRET not in str(error)
    assert SECRET not in error.operation
    assert SECRET not in str(StoreError(f"Error connecting to redis://:{SECRET}@r:6379"))
    cli = CliError(f"cannot read the flags from redis://:{SECRET}@r:6379/0")
    assert SECRET not in cli.message and "redis://***@r:6379/0" in cli.message


def test_the_log_formatter_masks_the_finished_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter(logging.Formatter("%(message)s")))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"boom at http://u:{SECRET}@prom:9090")
        except RuntimeError:
            logger.exception("failed talking to %s", f"redis://:{SECRET}@r:6379/0")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "failed talking to redis://***@r:6379/0" in text
    assert "boom at http://***@prom:9090" in text and SECRET not in text


def test_status_masks_a_stored_error_that_quotes_a_url() -> None:
    plan = small_plan()
    state = RolloutState.initial(plan.stages[0].name, T0)
    cycle = CycleSummary(kind="cycle", at=T0, action="hold", from_stage=state.stage_name,
                         to_stage=state.stage_name,
                         reason=f"checks errored: http://u:{SECRET}@prom:9090",
                         checks=(CheckRecord(check="p95", label="p95", verdict="error",
                                             message=f"cannot reach http://u:{SECRET}@prom",
                                             error=f"cannot reach http://u:{SECRET}@prom"),))
    status = build_status(plan, state, cycle, T0)
    assert SECRET not in status.model_dump_json()
    assert status.checks[0].error == "cannot reach http://***@prom"


# --- reasons are text, never markup ------------------------------------------------------------


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    # A console as rich makes it by default: markup on, so the renderers must not rely on
    # the CLI's own markup=False to print these literally.
    return Console(file=buffer, width=200, color_system=None, highlight=False), buffer


@pytest.mark.parametrize("markup", MARKUP)
def test_history_prints_a_reason_with_markup_literally(markup: str) -> None:
    out, buffer = _console()
    entries = [
        LogEntry(kind="command", at=T0, action="pause", from_stage="off", to_stage="off",
                 by=f"carol {markup}", reason=f"INC-1 {markup}"),
        LogEntry(kind="flags-set", at=T0, by="dave", note=f"note {markup}"),
    ]
    render_history(out, entries)
    text = buffer.getvalue()
    assert f"INC-1 {markup}" in text
    assert f"carol {markup}" in text
    assert f"note {markup}" in text


@pytest.mark.parametrize("markup", MARKUP)
def test_status_prints_reasons_who_why_and_checks_literally(markup: str) -> None:
    plan = small_plan()
    stage = plan.stages[0].name
    state = replace(RolloutState.initial(stage, T0),
                    pause_info=PauseInfo(by=f"erin {markup}", why=f"why {markup}", at=T0))
    cycle = CycleSummary(kind="cycle", at=T0, action="hold", from_stage=stage,
                         to_stage=stage, reason=f"because {markup}",
                         checks=(CheckRecord(check="p95", label=f"p95 {markup}",
                                             verdict="fail", value_text=f"212 {markup}",
                                             limit_text="180 ms", comparator="<="),))
    out, buffer = _console()
    render_status(out, build_status(plan, state, cycle, T0))
    text = buffer.getvalue()
    for expected in (f"because {markup}", f"erin {markup}", f"why {markup}",
                     f"p95 {markup}", f"212 {markup}"):
        assert expected in text, (expected, text)


def test_dry_run_prints_its_reason_literally() -> None:
    out, buffer = _console()
    render_dry_run(out, CycleResult(kind="dry-run", at=T0, action="hold", from_stage="off",
                                    to_stage="off", reason="hold: [/oops] [bold]x[/bold]"))
    assert "hold: [/oops] [bold]x[/bold]" in buffer.getvalue()


# --- Slack text is escaped ----------------------------------------------------------------------


def test_slack_escape_follows_slacks_rules() -> None:
    assert slack_escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert slack_escape("&lt;") == "&amp;lt;"  # an entity typed by someone stays literal
    assert slack_escape("plain: l1-50 \u2192 l1-10 *x*") == "plain: l1-50 \u2192 l1-10 *x*"


def test_slack_payload_escapes_every_mrkdwn_text_and_keeps_a_plain_copy() -> None:
    note = Notification(
        event="pause", title="Rollout paused by <!channel>", reason="<!channel> & <@U123> hi",
        stage="l1-10", at=T0, by="mallory <!here>", severity="warning",
        fields={"why": "<https://evil.example|click>"},
    )
    payload = slack_payload(note, source="ctl <!everyone>")
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [element["text"] for element in block.get("elements", [])]
    for text in texts:
        assert "<" not in text and ">" not in text, text
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt; hi" in payload["blocks"][1]["text"]["text"]
    assert "&lt;!here&gt;" in payload["blocks"][2]["elements"][0]["text"]
    assert payload["plain_text"].endswith("<!channel> & <@U123> hi")


# --- the evidence, in the terminal and in Slack ----------------------------------------------


def _evidence_state(stage: str, *, completed: bool = False) -> RolloutState:
    state = replace(RolloutState.initial("off", T0), stage_index=EVIDENCE_PLAN.index_of(stage),
                    stage_name=stage,
                    # judged: the service reported the flags an hour ago
                    flags_confirmed_at=T0 - timedelta(hours=1))
    return state.completed(T0) if completed else state


def test_status_prints_estimate_bound_limit_n_and_how_much_more() -> None:
    checks = tuple(record(o) for o in (GUARD_HEALTHY, GATE_INCONCLUSIVE, OBJECTIVE_OPEN))
    cycle = CycleSummary(kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
                         reason="holding", checks=checks)
    out, buffer = _console()
    render_status(out, build_status(EVIDENCE_PLAN, _evidence_state("mid"), cycle, T0))
    text = buffer.getvalue()
    for shown in ("bound", "inconclusive", "0.667 %", "\u2264 4.36 % (95 %)",
                  "limit \u2264 1 %", "~8 771 more", "\u2264 +0.327 pp (95 %)",
                  "margin \u2264 +1 pp vs control cohort", "5 000 vs 25 000",
                  "Objectives (reported, never blocking)", "8.11 % to 32 % (95 %)",
                  "~5 363 more"):
        assert shown in text, (shown, text)


def test_status_at_completion_prints_the_objectives_with_their_intervals() -> None:
    checks = tuple(record(o) for o in (GATE_PASSES, OBJECTIVE_MET))
    cycle = CycleSummary(kind="cycle", at=T0, action="complete", from_stage="top",
                         to_stage="top", reason="complete", checks=checks)
    out, buffer = _console()
    render_status(out, build_status(EVIDENCE_PLAN, _evidence_state("top", completed=True),
                                    cycle, T0))
    text = buffer.getvalue()
    assert "Rollout complete since" in text and "Objectives at completion" in text
    assert "8.5 % to 11.6 % (95 %)" in text and " met " in text


def test_a_check_without_evidence_prints_as_before() -> None:
    old = CheckRecord(check="p95", label="p95 latency", kind="gate", verdict="pass",
                      value_text="212 ms", limit_text="1 s", comparator="<=", sample=4120)
    table_text = _printed(checks_table([old], {}))
    assert "bound" not in table_text and "<= 1 s" in table_text and "4 120" in table_text


@pytest.mark.parametrize("markup", MARKUP)
def test_history_lists_a_transitions_evidence_literally(markup: str) -> None:
    breach = record(GUARD_BREACH).model_copy(update={"label": f"cohort {markup}"})
    entry = LogEntry(kind="cycle", at=T0, action="rollback", from_stage="top", to_stage="mid",
                     by="controller", reason="breach",
                     checks=(breach, record(GATE_PASSES), record(OBJECTIVE_MISSED)))
    out, buffer = _console()
    render_history(out, [entry])
    text = " ".join(buffer.getvalue().split())  # the table folds long lines
    assert "Decided by:" in text
    assert (f"cohort {markup} +2 pp, \u2265 +1.2 pp (99.95 %); margin \u2264 +1 pp vs control "
            "cohort (n=10 000 vs 50 000): fail") in text
    assert "L1 stale rate" not in text
    assert "cost share 40 %, 37.4 % to 42.7 % (95 %); limit \u2264 20 % (n=5 000): missed" in text


def test_dry_run_prints_the_evidence_and_the_objectives() -> None:
    out, buffer = _console()
    render_dry_run(out, CycleResult(
        kind="dry-run", at=T0, action="hold", from_stage="mid", to_stage="mid", reason="hold",
        checks=(record(GATE_INCONCLUSIVE), record(OBJECTIVE_OPEN))))
    text = buffer.getvalue()
    assert "~8 771 more" in text and "Objectives" in text and "8.11 % to 32 %" in text


def test_slack_details_are_escaped_and_the_plain_copy_is_not() -> None:
    note = Notification(
        event="transition", title="Rollout advanced: mid \u2192 top", reason="passed",
        stage="top", at=T0, details=("Decided by:",
                                     "\u2022 gate <!channel> 0 %, \u2264 0.1 % (95 %): pass",
                                     "\u2022 p95 & cost > 1: met"),
    )
    payload = slack_payload(note)
    sections = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]
    assert sections[2] == ("Decided by:\n\u2022 gate &lt;!channel&gt; 0 %, \u2264 0.1 % (95 %): "
                           "pass\n\u2022 p95 &amp; cost &gt; 1: met")
    assert payload["blocks"][-1]["type"] == "context"
    assert payload["text"].endswith(sections[2])
    assert "<" not in payload["text"] and ">" not in payload["text"]
    assert payload["plain_text"].endswith("\u2022 gate <!channel> 0 %, \u2264 0.1 % (95 %): pass"
                                          "\n\u2022 p95 & cost > 1: met")
    # many lines: packed into sections Slack accepts, none lost
    many = replace(note, details=tuple(f"\u2022 check {i} " + "x" * 200 for i in range(40)))
    blocks = [b["text"]["text"] for b in slack_payload(many)["blocks"] if b["type"] == "section"]
    assert all(len(text) <= 3000 for text in blocks) and len(blocks) > 3
    assert sum(text.count("\u2022 check") for text in blocks) == 40


def test_status_masks_what_a_check_says_and_keeps_its_evidence() -> None:
    check = record(GATE_INCONCLUSIVE).model_copy(
        update={"message": f"see http://u:{SECRET}@prom:9090"})
    cycle = CycleSummary(kind="cycle", at=T0, action="hold", from_stage="mid", to_stage="mid",
                         checks=(check,))
    status = build_status(EVIDENCE_PLAN, _evidence_state("mid"), cycle, T0)
    assert SECRET not in status.model_dump_json()
    assert status.checks[0].evidence == check.evidence


def _printed(table: object) -> str:
    out, buffer = _console()
    out.print(table)
    return buffer.getvalue()
