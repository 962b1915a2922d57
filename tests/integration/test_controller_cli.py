"""`rollout …` end to end: main(argv) in process and `python -m rollout` in subprocesses, on a
private Redis (state and the local flag store). Prometheus is deliberately absent: every check
is `error`, so the controller holds, which is all these tests need from it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from app.contract import LOCAL_FLAGS_KEY
from devstack.auth import mint
from devstack.environment import is_ours, scrubbed
from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.services.common import Service
from devstack.services.redis import start_private_redis
from devstack.services.redis import stop as stop_redis
from rollout.adapters.redis_state import RolloutKeys
from rollout.cli.main import main
from rollout.plans import default_plan_path
from rollout.records import CheckRecord, CycleSummary, LogEntry
from rollout.settings import RolloutSettings

pytestmark = pytest.mark.integration

TOKEN = "cli-test-token"


@pytest.fixture(scope="module")
def cli_redis() -> Iterator[Service]:
    service = start_private_redis(name="redis-rollout-cli-tests")
    try:
        yield service
    finally:
        stop_redis(service)


@pytest.fixture
def redis(cli_redis: Service) -> Iterator[Redis]:
    client = Redis.from_url(cli_redis.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def env(cli_redis: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment of one test's controller: its own key namespace, no Prometheus."""
    for name in list(os.environ):
        if is_ours(name):
            monkeypatch.delenv(name)
    values = {
        "REDIS_URL": cli_redis.url,
        "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "ROLLOUT_NAME": f"cli-{uuid.uuid4().hex[:8]}",
        "ROLLOUT_API_TOKEN": TOKEN,
        "USER": "tester",
        "COLUMNS": "200",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return values


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_env(values: dict[str, str]) -> dict[str, str]:
    return scrubbed() | values


# --- plan validate ---------------------------------------------------------------------------


def test_plan_validate_accepts_the_default_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plan", "validate", str(default_plan_path()))
    assert code == 0
    assert "valid plan" in out and "off \u2192 dark-launch" in out


def test_plan_validate_lists_every_problem_with_its_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "settings: {time_scale: 0, passes_to_advance: -1}\n"
        "stages:\n  - name: off\n    flags: {l1_percent: 150}\n    bake: soon\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "rollout", "plan", "validate", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env=subprocess_env({"COLUMNS": "200"}), check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for field in ("settings.time_scale", "settings.passes_to_advance",
                  "stages[0].flags.l1_percent", "stages[0].bake"):
        assert field in result.stderr, result.stderr


def test_plan_validate_json_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: []\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "plan", "validate", "--json", str(bad))
    assert code == 2
    report = json.loads(out)
    assert report["valid"] is False and report["problems"]
    code, _, err = run_cli(capsys, "plan", "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read the file" in err


# --- flags -----------------------------------------------------------------------------------


def test_flags_set_and_show_on_the_local_flag_store(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "flags", "set", "shadow=on", "l1_percent=10%")
    assert code == 0, err
    assert redis.hgetall(LOCAL_FLAGS_KEY) == {"shadow": "1", "l2": "0", "l1_percent": "10"}
    assert "Wrote 3 change(s)" in out

    code, out, _ = run_cli(capsys, "flags", "show", "--json")
    assert code == 0
    assert json.loads(out)["flags"] == {"shadow": True, "l2": False, "l1_percent": 10}

    code, out, _ = run_cli(capsys, "flags", "set", "shadow=1")
    assert code == 0 and "Nothing to change" in out

    # The hand edit is in the decision log, with who did it.
    log = RolloutKeys(env["ROLLOUT_NAME"]).log
    [(_, fields)] = redis.xrange(log)
    entry = json.loads(fields["entry"])
    assert entry["kind"] == "flags-set" and entry["by"] == "tester"


@pytest.mark.parametrize(("assignment", "message"), [
    ("l1_percent=150", "l1_percent: must be a whole number from 0 to 100, got '150'"),
    ("l1_percent=ten", "l1_percent: must be a whole number from 0 to 100"),
    ("l3=1", "l3: unknown flag key (did you mean l2?)"),
    ("shadow=maybe", "shadow: must be on or off"),
    ("shadow", "expected KEY=VALUE"),
])
def test_flags_set_rejects_bad_input_naming_the_field(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str],
    assignment: str, message: str,
) -> None:
    code, _, err = run_cli(capsys, "flags", "set", assignment)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert redis.exists(LOCAL_FLAGS_KEY) == 0


def test_flags_set_warns_that_an_unpaused_controller_will_restore_the_stage(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run_cli(capsys, "evaluate", "--dry-run")
    assert code == 0
    state = {"stage_index": 0, "stage_name": "off", "entered_at": "2025-01-01T00:00:00+00:00"}
    redis.set(RolloutKeys(env["ROLLOUT_NAME"]).state, json.dumps(state))
    code, out, _ = run_cli(capsys, "flags", "set", "l2=on")
    assert code == 0
    assert "restores off's flags" in out


# --- reading the state directly -----------------------------------------------------------


def test_status_and_history_read_redis_when_no_controller_url(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rollout that exists (a hand edit logged) but was never evaluated.
    redis.xadd(RolloutKeys(env["ROLLOUT_NAME"]).log, {"entry": LogEntry(
        kind="flags-set", at=datetime.now(UTC), by="tester", note="by hand").model_dump_json()})
    code, out, _ = run_cli(capsys, "status")
    assert code == 0 and "has not run yet" in out
    code, out, _ = run_cli(capsys, "status", "--json")
    assert json.loads(out)["initialised"] is False
    code, out, _ = run_cli(capsys, "history", "--json", "--limit", "3")
    assert [e["kind"] for e in json.loads(out)] == ["flags-set"]


def test_history_transitions_folds_the_holds(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    log = RolloutKeys(env["ROLLOUT_NAME"]).log

    def add(action: str, stage: str, to: str, kind: str = "cycle") -> None:
        redis.xadd(log, {"entry": LogEntry(
            kind=kind, at=datetime.now(UTC), action=action, from_stage=stage, to_stage=to,
            reason=f"{action} at {stage}", by="tester").model_dump_json()})

    add("advance", "off", "dark-launch")
    for _ in range(11):
        add("hold", "dark-launch", "dark-launch")
    add("pause", "dark-launch", "dark-launch", kind="command")
    code, out, _ = run_cli(capsys, "history", "--transitions")
    assert code == 0
    assert "held 11\u00d7" in out and "for: hold at dark-launch" in out
    assert "pause" in out and "advance" in out and out.count("hold at dark-launch") == 1
    code, out, _ = run_cli(capsys, "history", "--transitions", "--json", "--limit", "2")
    rows = json.loads(out)
    assert [r.get("action") or f"held {r['count']}" for r in rows] == ["pause", "held 11"]
    code, out, _ = run_cli(capsys, "history", "--limit", "5")  # every entry, unfolded
    assert out.count("hold at dark-launch") == 4


def test_status_watch_redraws_until_ctrl_c(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal (a pty), `status --watch` draws, redraws when the state changes, and
    Ctrl-C ends it with exit 0."""
    key = RolloutKeys(env["ROLLOUT_NAME"]).state
    state = {"stage_index": 0, "stage_name": "off", "entered_at": "2025-01-01T00:00:00+00:00"}
    redis.set(key, json.dumps(state))
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rollout", "status", "--watch", "0.2"], cwd=REPO_ROOT,
        env=subprocess_env(env | {"TERM": "xterm"}), stdin=follower, stdout=follower,
        stderr=subprocess.PIPE, text=True,
    )
    os.close(follower)
    seen: list[str] = []

    def shows(text: str) -> bool:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            seen.append(os.read(leader, 65536).decode(errors="replace"))
        return text in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(seen))

    try:
        until(lambda: shows("Rollout stage off"), within=30, what=f"first draw: {seen}")
        redis.set(key, json.dumps(state | {"stage_index": 1, "stage_name": "dark-launch"}))
        until(lambda: shows("Rollout stage dark-launch"),
              within=30, what=f"redraw: {seen[-1:]}")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        os.close(leader)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "Next: " in "".join(seen)
    code, out, _ = run_cli(capsys, "status", "--watch", "--json")
    assert code == 2 and "--watch" in json.loads(out)["error"]


def test_a_wrong_rollout_name_lists_the_names_found(
    env: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = {"stage_index": 0, "stage_name": "off", "entered_at": "2025-01-01T00:00:00+00:00"}
    for name in ("beta", "alpha"):
        redis.set(RolloutKeys(name).state, json.dumps(state))
    redis.set("ai-cache:unrelated", "1")
    monkeypatch.setenv("ROLLOUT_NAME", "gamma")
    for command in ("status", "history"):
        code, out, err = run_cli(capsys, command)
        assert code == 1 and out == "", command
        assert "no rollout named gamma here" in err and "found: alpha, beta" in err
        assert "has not run yet" not in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "status", "--json")
    assert code == 1 and "found: alpha, beta" in json.loads(out)["error"]
    redis.flushall()
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "found: no rollout at all" in err
    monkeypatch.setenv("ROLLOUT_NAME", "alpha")
    redis.set(RolloutKeys("alpha").state, json.dumps(state))
    code, out, _ = run_cli(capsys, "status")
    assert code == 0 and "Rollout stage off" in out


def test_evaluate_dry_run_applies_and_records_nothing(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "evaluate")
    assert code == 2 and "--dry-run" in err
    code, out, err = run_cli(capsys, "evaluate", "--dry-run", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "dry-run" and report["action"] == "hold"
    assert {c["verdict"] for c in report["checks"]} == {"error"}  # no Prometheus here
    assert report["committed"] is False
    assert redis.keys("*") == []  # not a flag, not a log line
    code, out, _ = run_cli(capsys, "evaluate", "--dry-run")
    assert code == 0 and "nothing applied or recorded" in out


def test_steering_needs_a_token_and_a_reason(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "pause")
    assert code == 2 and "--why" in err
    monkeypatch.delenv("ROLLOUT_API_TOKEN")
    code, _, err = run_cli(capsys, "pause", "--why", "x")
    assert code == 2 and "ROLLOUT_API_TOKEN" in err


def test_unreachable_controller_is_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLOUT_URL", f"http://127.0.0.1:{free_port()}")
    code, _, err = run_cli(capsys, "pause", "--why", "x")
    assert code == 1 and "cannot reach the controller" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "cannot reach the controller" in err


def test_bad_settings_are_reported_without_a_traceback(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLOUT_PORT", "eighty")
    code, _, err = run_cli(capsys, "status")
    assert code == 2 and "ROLLOUT_PORT" in err and "Traceback" not in err


@pytest.mark.parametrize(("variable", "value"), [
    ("REDIS_URL", "notaurl"), ("ROLLOUT_REDIS_URL", "http://x"),
    ("PROMETHEUS_URL", "localhost:9090"), ("ROLLOUT_URL", "ftp://x"),
])
def test_a_bad_url_is_one_line_naming_the_variable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variable: str, value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    for argv in (["status"], ["history"], ["run"], ["flags", "show"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and variable in err and value in err, err
        assert out == ""


def test_a_bad_redis_url_in_a_real_process_is_one_line(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rollout", "status"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, check=False, env=subprocess_env(env | {"REDIS_URL": "notaurl"}),
    )
    assert result.returncode == 2
    assert result.stderr == ("invalid settings: REDIS_URL: must be a redis://, rediss:// or "
                             "unix:// URL, got 'notaurl'\n")


def test_json_output_stays_json_on_errors(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLOUT_URL", f"http://127.0.0.1:{free_port()}")
    for argv in (["status", "--json"], ["history", "--json"], ["pause", "--why", "x", "--json"]):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 1
        assert "cannot reach the controller" in json.loads(out)["error"], argv
    monkeypatch.setenv("REDIS_URL", "notaurl")
    code, out, _ = run_cli(capsys, "status", "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2
    assert "REDIS_URL" in json.loads(out)["error"]


def test_run_refuses_to_guess_where_things_are(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REDIS_URL", "PROMETHEUS_URL", "ROLLOUT_API_TOKEN"):
        monkeypatch.delenv(name)
    code, out, err = run_cli(capsys, "run")
    assert code == 2 and out == ""
    for name in ("REDIS_URL (or ROLLOUT_REDIS_URL)", "PROMETHEUS_URL", "ROLLOUT_API_TOKEN",
                 "--insecure-local"):
        assert name in err
    monkeypatch.setenv("ROLLOUT_REDIS_URL", env["REDIS_URL"])
    monkeypatch.setenv("PROMETHEUS_URL", env["PROMETHEUS_URL"])
    code, _, err = run_cli(capsys, "run")
    assert code == 2 and "ROLLOUT_API_TOKEN" in err and "PROMETHEUS_URL" not in err


def test_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        for name in RolloutSettings.model_fields:
            assert name.upper() in out, (argv, name)
    assert "--insecure-local" in out


# --- rollout run ---------------------------------------------------------------------------


class Daemon:
    def __init__(self, values: dict[str, str], instance: str, log_dir: Path,
                 *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = instance
        env = subprocess_env(values | {
            "ROLLOUT_PORT": str(self.port), "ROLLOUT_INSTANCE_ID": instance,
            "ROLLOUT_INTERVAL_SECONDS": "0.5", "ROLLOUT_LEASE_SECONDS": "2",
            "ROLLOUT_TIME_SCALE": "0.0001",
        })
        self.log = log_dir / f"rollout-run-{instance}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rollout", "run", *options], cwd=REPO_ROOT, env=env,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )

    def health(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=1.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def until(condition: Callable[[], Any], *, within: float = 20.0, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {within}s")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)


def test_run_serves_the_cli_and_a_standby_takes_over(
    env: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], daemons: list[Daemon], tmp_path: Path,
) -> None:
    first = Daemon(env, "first", tmp_path)
    daemons.append(first)
    until(lambda: (first.health() or {}).get("leader"), what="first controller leads")
    keys = RolloutKeys(env["ROLLOUT_NAME"])
    until(lambda: redis.exists(keys.state), what="first cycle recorded")

    monkeypatch.setenv("ROLLOUT_URL", first.url)
    code, out, err = run_cli(capsys, "pause", "--who", "carol", "--why", "INC-1")
    assert code == 0, err
    assert "paused by carol: INC-1" in out
    code, _, err = run_cli(capsys, "pause", "--why", "again")
    assert code == 1 and "refused: already paused by carol" in err
    code, out, _ = run_cli(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["paused"] is True
    code, out, _ = run_cli(capsys, "status")
    assert code == 0 and "PAUSED by carol" in out
    code, out, _ = run_cli(capsys, "history", "--json", "--limit", "50")
    assert any((e.get("command") or {}).get("who") == "carol" for e in json.loads(out))

    monkeypatch.setenv("ROLLOUT_API_TOKEN", "wrong")
    code, _, err = run_cli(capsys, "resume", "--why", "x")
    assert code == 1 and "unauthorized" in err
    monkeypatch.setenv("ROLLOUT_API_TOKEN", TOKEN)

    code, _, err = run_cli(capsys, "promote", "--full", "--why", "skip ahead")
    assert code == 0, err
    assert redis.hgetall(LOCAL_FLAGS_KEY) == {"shadow": "0", "l2": "1", "l1_percent": "100"}
    code, _, err = run_cli(capsys, "rollback", "--to", "nowhere", "--why", "x")
    assert code == 1 and "unknown stage 'nowhere'" in err

    second = Daemon(env, "second", tmp_path)
    daemons.append(second)
    until(lambda: second.health() is not None, what="second controller up")
    assert second.health() == {"ok": True, "leader": False, "instance": "second"}
    token_before = int(redis.get(keys.fence) or 0)

    assert first.stop() == 0
    assert "controller first stopped" in first.log.read_text()
    until(lambda: (second.health() or {}).get("leader"), within=10, what="standby takes over")
    assert int(redis.get(keys.fence) or 0) == token_before + 1
    monkeypatch.setenv("ROLLOUT_URL", second.url)
    code, _, err = run_cli(capsys, "resume", "--why", "handover done")
    assert code == 0, err
    assert second.stop() == 0
    assert redis.exists(keys.lease) == 0  # released on the way out


JWT_SECRET = "cli-tests-hs256-secret-0123456789abcdef"


def test_run_takes_operator_jwts_and_refuses_viewers(
    env: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], daemons: list[Daemon], tmp_path: Path,
) -> None:
    """ROLLOUT_AUTH_JWT_SECRET on the controller; the CLI sends its ROLLOUT_API_TOKEN, which
    may hold a JWT: an operator's pauses (and the log names the token's sub), a viewer's is
    refused with 403 and changes nothing."""
    env = env | {"ROLLOUT_AUTH_JWT_SECRET": JWT_SECRET}
    env.pop("ROLLOUT_API_TOKEN")
    daemon = Daemon(env, "jwt", tmp_path)
    daemons.append(daemon)
    until(lambda: (daemon.health() or {}).get("leader"), what="the controller leads")
    keys = RolloutKeys(env["ROLLOUT_NAME"])
    until(lambda: redis.exists(keys.state), what="first cycle recorded")
    monkeypatch.setenv("ROLLOUT_URL", daemon.url)

    def as_role(role: str) -> None:
        monkeypatch.setenv("ROLLOUT_API_TOKEN", mint(
            JWT_SECRET, workspaces=[], role=role, sub=f"{role}@clinic",
            audience="ai-cache-rollout"))

    as_role("viewer")
    code, _, err = run_cli(capsys, "pause", "--why", "looks odd")
    assert code == 1 and "forbidden: role 'viewer' may read the rollout" in err
    code, out, _ = run_cli(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["paused"] is False
    as_role("operator")
    code, out, err = run_cli(capsys, "pause", "--why", "INC-7")
    assert code == 0, err
    assert "paused by operator@clinic: INC-7" in out
    assert daemon.stop() == 0


def test_run_insecure_local_starts_and_says_what_it_uses(
    env: dict[str, str], redis: Redis, daemons: list[Daemon], tmp_path: Path,
) -> None:
    """--insecure-local on a laptop: no Prometheus URL and no token given, it starts anyway,
    prints every setting it resolved (the Redis password masked) and warns."""
    values = {k: v for k, v in env.items() if k not in ("PROMETHEUS_URL", "ROLLOUT_API_TOKEN")}
    values["REDIS_URL"] = env["REDIS_URL"].replace("redis://", "redis://:hunter2secret@")
    redis.config_set("requirepass", "hunter2secret")
    try:
        daemon = Daemon(values, "laptop", tmp_path, "--insecure-local")
        daemons.append(daemon)
        until(daemon.health, within=30, what=f"health: {daemon.log}")
        printed = daemon.log.read_text()
        assert "* REDIS_URL=redis://***@127.0.0.1" in printed
        assert "  PROMETHEUS_URL=http://127.0.0.1:9090" in printed  # a default, not starred
        assert "--insecure-local: some of these are defaults" in printed
        assert "hunter2secret" not in printed
        assert daemon.stop() == 0
    finally:
        redis.config_set("requirepass", "")


def test_run_refuses_to_start_with_an_unusable_jwks_file(
    env: dict[str, str], tmp_path: Path,
) -> None:
    broken = tmp_path / "jwks.json"
    broken.write_text('{"keys": "not a list"}')
    result = subprocess.run(
        [sys.executable, "-m", "rollout", "run"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, check=False,
        env=subprocess_env(env | {"ROLLOUT_AUTH_JWKS_FILE": str(broken),
                                  "ROLLOUT_PORT": str(free_port())}),
    )
    assert result.returncode == 2, result.stderr
    assert "ROLLOUT_AUTH_JWKS_FILE" in result.stderr and "keys" in result.stderr
    assert "Traceback" not in result.stderr


# --- hygiene: markup in reasons, credentials in URLs (issue 11, point 9) --------------------

MARKUP_REASONS = ("[/oops]", "[bold]x[/bold]")


def test_status_and_history_print_markup_in_reasons_literally(
    env: dict[str, str], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reason, a note, who/why and check text are data: `[/oops]` once crashed `rollout
    history` with rich's MarkupError, `[bold]x[/bold]` was swallowed into a style."""
    keys = RolloutKeys(env["ROLLOUT_NAME"])
    odd = " ".join(MARKUP_REASONS)
    at = "2025-01-01T00:00:00+00:00"
    redis.set(keys.state, json.dumps({
        "stage_index": 0, "stage_name": "off", "entered_at": at,
        "pause": {"by": f"carol {odd}", "why": f"INC-7 {odd}", "at": at},
    }))
    redis.set(keys.last_cycle, CycleSummary(
        kind="cycle", at=datetime.fromisoformat(at), action="hold", from_stage="off",
        to_stage="off", reason=f"held: {odd}",
        checks=(CheckRecord(check="p95", label=f"p95 {odd}", verdict="error",
                            message=f"bad {odd}"),),
    ).model_dump_json())
    for entry in (
        LogEntry(kind="command", at=datetime.fromisoformat(at), action="pause",
                 from_stage="off", to_stage="off", by=f"carol {odd}", reason=f"INC-7 {odd}"),
        LogEntry(kind="flags-set", at=datetime.fromisoformat(at), by="dave",
                 note=f"by hand {odd}"),
    ):
        redis.xadd(keys.log, {"entry": entry.to_json()})

    code, out, err = run_cli(capsys, "history")
    assert code == 0, err
    assert "MarkupError" not in err and "Traceback" not in err
    assert f"INC-7 {odd}" in out and f"carol {odd}" in out and f"by hand {odd}" in out

    code, out, err = run_cli(capsys, "status")
    assert code == 0, err
    for expected in (f"held: {odd}", f"carol {odd}", f"INC-7 {odd}", f"p95 {odd}"):
        assert expected in out, (expected, out)


def test_a_password_in_prometheus_url_is_never_shown(
    env: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], daemons: list[Daemon], tmp_path: Path,
) -> None:
    """`rollout run` with credentials in PROMETHEUS_URL (nobody listens there, so every
    check errors with a message that names the URL): the log, /api/status, /api/history,
    the unauthenticated page and the CLI show the URL with `***@`, never the password."""
    secret = "Pr0m-S3cret-pw"
    port = free_port()
    values = env | {"PROMETHEUS_URL": f"http://admin:{secret}@127.0.0.1:{port}"}
    daemon = Daemon(values, "masked", tmp_path)
    daemons.append(daemon)
    until(lambda: (daemon.health() or {}).get("leader"), what="controller leads")

    def checks_errored() -> dict[str, Any] | None:
        status = httpx.get(f"{daemon.url}/api/status", timeout=2.0)
        body: dict[str, Any] = status.json()
        return body if body.get("checks") else None

    status = until(checks_errored, what="a cycle with its checks")
    shown_url = f"http://***@127.0.0.1:{port}"
    assert any(shown_url in (check.get("error") or "") for check in status["checks"]), status
    answers = {
        "/api/status": json.dumps(status),
        "/api/history": httpx.get(f"{daemon.url}/api/history", timeout=2.0).text,
        "/": httpx.get(f"{daemon.url}/", timeout=2.0).text,
    }
    monkeypatch.setenv("ROLLOUT_URL", daemon.url)
    monkeypatch.setenv("PROMETHEUS_URL", values["PROMETHEUS_URL"])
    for command in ("status", "history"):
        code, out, err = run_cli(capsys, command)
        assert code == 0, err
        answers[f"rollout {command}"] = out + err
    code, out, err = run_cli(capsys, "evaluate", "--dry-run", "--json")
    assert code == 0, err
    assert shown_url in out  # the check errors quote the URL, masked
    answers["rollout evaluate --dry-run"] = out + err
    assert daemon.stop() == 0
    answers["log"] = daemon.log.read_text()
    assert f"metrics from {shown_url}" in answers["log"]
    for where, text in answers.items():
        assert secret not in text, where
        assert f"admin:{secret}" not in text, where
