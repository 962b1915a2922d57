"""`python -m app` as a real process over real HTTP: start, serve, export, stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from app import contract
from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.readiness import wait_until
from devstack.services.common import Service
from devstack.sockets import child_pids, connections_by_pid, listeners_by_pid
from tests.support.auth import SECRET, auth


def _env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "AUTH_JWT_SECRET": SECRET,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}",
            "AI_LATENCY_SCALE": "0", "LOG_FORMAT": "json", **extra}


def test_the_service_process_serves_exports_and_stops_cleanly(
    redis_service: Service, redis: object, tmp_path: Path
) -> None:
    # `redis` flushes the shared test Redis: no flags left over from other tests.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)], cwd=REPO_ROOT,
        env=_env(redis_service.url, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                   timeout=30, what="the service to be ready")
        ws, client_id = uuid.uuid4(), uuid.uuid4()
        headers = auth(ws, sub="dr-process")
        created = httpx.post(f"{base}/v1/workspaces/{ws}/sessions", headers=headers, json={
            "client_id": str(client_id), "subjective": "Sleeping poorly; anxious."})
        assert created.status_code == 201
        answer = httpx.post(f"{base}/v1/workspaces/{ws}/query", headers=headers,
                            json={"query": "How is the client sleeping?",
                                  "client_id": str(client_id)})
        assert answer.status_code == 200 and "Cache-Status" in answer.headers
        metrics = httpx.get(f"{base}/metrics").text
        for name in (contract.METRIC_QUERIES, contract.METRIC_UPSTREAM_COST,
                     contract.METRIC_FLAG_STATE, f"{contract.METRIC_QUERY_DURATION}_bucket"):
            assert name in metrics
        assert 'ai_agent_queries_total{l1="off",outcome="ok"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    # Structured JSON logs, and no clinical text in them.
    assert '"level": "warning"' in output and "CACHE_KEY_SECRET" in output
    assert "anxious" not in output.lower() and "sleeping" not in output.lower()
    # One audit line per clinical request, JSON, naming who and where, at the default level.
    audit = [json.loads(line) for line in output.splitlines()
             if line.startswith("{") and '"logger": "app.audit"' in line]
    assert [(a["action"], a["status"], a["who"], a["workspace"]) for a in audit] == [
        ("session.create", 201, "dr-process", str(ws)), ("query", 200, "dr-process", str(ws))]


def test_bad_configuration_exits_2_naming_the_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=_env("redis://127.0.0.1:1/0", tmp_path, AI_LATENCY_SCALE="-1"), timeout=60,
    )
    assert result.returncode == 2
    assert "ai_latency_scale" in result.stderr and "Traceback" not in result.stderr

    bad_key = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=_env("redis://127.0.0.1:1/0", tmp_path, CACHE_ENCRYPTION_KEY="not base64!"),
        timeout=60,
    )
    assert bad_key.returncode == 2 and "CACHE_ENCRYPTION_KEY" in bad_key.stderr


def test_two_workers_share_the_port_and_the_metrics_and_stop_together(
    redis_service: Service, redis: object, tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port), "--workers", "2"], cwd=REPO_ROOT,
        env=_env(redis_service.url, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    clients: list[httpx.Client] = []
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                   timeout=60, what="the workers to be ready")
        # /readyz answered as soon as one worker listened; the kernel gives a worker
        # connections only once its socket listens (its app has started).
        wait_until(lambda: len(_listening_workers(proc.pid, port)) == 2, timeout=60,
                   what="both workers to listen")
        workers = _listening_workers(proc.pid, port)
        ws = uuid.uuid4()
        headers = auth(ws, sub="dr-workers")
        # 16 connections, each kept open: the kernel spreads them over both workers.
        clients = [httpx.Client(base_url=base, headers=headers) for _ in range(16)]
        for client in clients:
            answer = client.post(f"/v1/workspaces/{ws}/query",
                                 json={"query": "How is the client sleeping?"})
            assert answer.status_code == 200
        split = connections_by_pid(port, workers)
        assert sum(split.values()) == 16 and min(split.values()) > 0, split
        # Whichever worker answers /metrics, it reports what both served.
        for _ in range(6):
            metrics = httpx.get(f"{base}/metrics").text
            assert 'ai_agent_queries_total{l1="off",outcome="ok"} 16.0' in metrics, metrics
            assert f'ai_agent_flag_state{{flag="{contract.FLAG_L1_QUERY_RESULTS}"}} 0.0' in metrics
    finally:
        for client in clients:
            client.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert output.count("Application shutdown complete") == 2, output
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def _listening_workers(parent: int, port: int) -> list[int]:
    workers = [pid for pid in child_pids(parent) if "spawn_main" in _cmdline(pid)]
    return [pid for pid, n in listeners_by_pid(port, workers).items() if n]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
