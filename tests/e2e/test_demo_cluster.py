"""End to end on a Redis Cluster (issue 14): `python -m scripts.demo --quick --cluster` — the
same demo as test_demo.py, with the service replicas' caches and the local flag store on a
Redis Cluster of 3 masters + 3 replicas that the demo starts (REDIS_CLUSTER=true for the
replicas and the controller's flag writer) and the controller's state on its own Redis.

One healthy run (the quick profile, as test_demo.py): the rollout climbs the whole plan to
`completed` on its gates' evidence; the demo's census, read from each node before anything
was stopped, puts the flag hash on the master serving its slot (with l1-100's flags), L1 and
L2 entries on the masters and their copies on the replicas, and every `rollout:*` key in the
controller's Redis, none on the cluster; Prometheus scraped every node (through the one
multi-target redis_exporter); every node the demo started is gone afterwards — also when a
second run is interrupted with SIGINT once its controller runs.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from app.contract import LOCAL_FLAGS_KEY
from devstack.demo.cli import parse_args
from devstack.demo.outcome import chart_path_for
from devstack.demo.profiles import DEMO_DIR
from tests.e2e.test_demo import DEMO, REPO, RUN_TIMEOUT, STAGES, alive, descendants

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo-cluster")
    result_file = out / "result.json"
    proc = subprocess.run(
        [*DEMO, "--cluster", "--result-json", str(result_file), "--chart", str(out / "c.png")],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["_stdout"] = proc.stdout
    return result


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_the_rollout_completes_on_the_cluster(run: dict[str, Any]) -> None:
    assert run["ok"], run["error"]
    assert run["redis"]["cluster"] is True
    advances = [(t["from_stage"], t["to_stage"]) for t in run["transitions"]
                if t["transition"] == "advance"]
    assert advances == list(itertools.pairwise(STAGES)), advances
    completes = [t["from_stage"] for t in run["transitions"] if t["transition"] == "complete"]
    assert completes == ["l1-100"]
    assert not [t for t in run["transitions"] if t["transition"] == "rollback"]
    assert run["final_status"]["completed_at"] is not None
    # L1 served answers from the cluster at l1-100.
    rows = {r["stage"]: r for r in run["impact"]}
    assert rows["l1-100"]["l1_served"] > 0.3 and rows["l2"]["l2_served"] > 0.9


def test_the_keys_landed_on_the_cluster_and_the_state_in_its_own_redis(
    run: dict[str, Any],
) -> None:
    redis = run["redis"]
    placement = redis["placement"]
    nodes = {n["port"]: n for n in placement["nodes"]}
    assert set(nodes) == set(redis["nodes"]) and len(nodes) == 6
    masters = [n for n in nodes.values() if n["role"] == "master"]
    replicas = [n for n in nodes.values() if n["role"] == "replica"]
    assert len(masters) == 3 and len(replicas) == 3
    # The flag hash: one key, on the master serving its slot, with the last stage's flags
    # as the controller wrote them through the cluster client.
    assert placement["flags_slot"] == key_slot(LOCAL_FLAGS_KEY.encode())
    assert nodes[placement["flags_master"]]["role"] == "master"
    assert nodes[placement["flags_master"]]["keys"].get("flags") == 1
    assert sum(n["keys"].get("flags", 0) for n in masters) == 1
    assert placement["flags"] == {"shadow": "0", "l2": "1", "l1_percent": "100"}
    # Cache entries spread over the masters (20 workspaces, each its own hash tag), copied
    # to the replicas.
    assert sum(1 for n in masters if n["keys"].get("l1", 0) > 0) >= 2, masters
    assert sum(n["keys"].get("l1", 0) for n in replicas) > 0, replicas
    assert all(n["keys"].get("l2", 0) > 0 for n in masters), masters
    # The controller's state (DESIGN.md §8): in its own Redis, none of it on the cluster.
    assert not [n for n in nodes.values() if n["keys"].get("rollout")]
    name = f"demo-{run['replay']['run_id']}"  # the demo's ROLLOUT_NAME
    assert f"rollout:{{{name}}}:state" in placement["state_keys"]  # redis_state.py's keys
    assert f"rollout:{{{name}}}:log" in placement["state_keys"]
    assert placement["state_url"] == redis["state_url"] != redis["url"]

    # Prometheus scraped every node, masters and replicas, as an instance of its own.
    assert placement["scraped"] == sorted(f"127.0.0.1:{port}" for port in nodes)


def test_the_summary_says_it_ran_on_a_cluster(run: dict[str, Any]) -> None:
    printed = " ".join(run["_stdout"].split())  # the console wraps long lines
    ports = sorted(run["redis"]["nodes"])
    assert "on a Redis Cluster" in printed
    assert "3 masters (ports" in printed and "+ 3 replicas (ports" in printed
    assert all(str(port) in printed for port in ports)
    assert "where the keys were at the end of the run" in printed
    assert "controller state:" in printed and ", 0 on the cluster" in printed


def test_every_node_the_demo_started_is_gone(run: dict[str, Any]) -> None:
    pids = run["pids"]
    nodes = {f"redis-cluster-{port}" for port in run["redis"]["nodes"]}
    assert nodes | {"redis-exporter", "redis-state", "prometheus", "controller"} <= set(pids)
    assert "redis-cache" not in pids
    assert not [name for name, pid in pids.items() if alive(pid)]


# --- the options -----------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "expected"), [
    (["--cluster"], DEMO_DIR / "rollout-demo-cluster.png"),
    (["--cluster", "--fault"], DEMO_DIR / "rollout-demo-cluster-fault.png"),
    (["--cluster", "--chart", "/tmp/x.png"], Path("/tmp/x.png")),
])
def test_a_cluster_run_has_a_chart_of_its_own(argv: list[str], expected: Path) -> None:
    args, _ = parse_args(argv)
    assert chart_path_for(args) == expected


def test_write_docs_is_refused_on_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--cluster", "--write-docs"])
    assert exit_.value.code == 2
    assert "--write-docs cannot be combined with --cluster" in capsys.readouterr().err


# --- Ctrl-C -------------------------------------------------------------------------------
@pytest.fixture
def interrupted_cluster_demo(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*DEMO, "--cluster", "--chart", str(tmp_path / "c.png")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:  # the test failed before its SIGINT: do not leak the demo
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.timeout(150)
def test_ctrl_c_stops_every_cluster_node_the_demo_started(
    interrupted_cluster_demo: subprocess.Popen[str],
) -> None:
    proc = interrupted_cluster_demo
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    lines = []
    for line in proc.stdout:  # one line per step: read until the rollout runs
        lines.append(line)
        if "controller started" in line or time.monotonic() > deadline:
            break
    assert any("controller started" in line for line in lines), "".join(lines)
    started = descendants(proc.pid)
    # 6 cluster nodes + the controller's Redis, the exporter, Alertmanager, Prometheus, two
    # replicas, the controller
    assert [_command(pid) for pid in started].count("redis-server") == 7, started
    assert len(started) >= 13, started

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after Ctrl-C: {left}"
