"""Property-based tests of the service's published OpenAPI (issue 11): schemathesis (`st run`)
generates requests for every operation — valid bodies and, in negative mode, bodies the
schema forbids — and runs every check it has (`--checks all`: no 5xx, status codes, content
types, headers and bodies as documented, positive data accepted and negative data rejected,
`Allow` on 405s, missing or ignored auth, use after free, ...) against a real server process
(real Redis, SQLite).

Requests carry a token for one workspace and the path names that workspace (a parameter
override in the run's config), so operations reach their handlers instead of all being
refused; examples per operation are bounded and the seed fixed, so a run takes about a
minute and a failure reproduces.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devstack.network import free_port
from devstack.paths import REPO_ROOT
from devstack.readiness import wait_until
from devstack.services.common import Service
from tests.support.auth import SECRET, auth, token

pytestmark = pytest.mark.integration

WS = uuid.UUID("00000000-0000-4000-8000-0000000057a7")
EXAMPLES = 30  # per operation
SEED = 20261206


@pytest.fixture
def service_url(redis_service: Service, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_service.url, "AUTH_JWT_SECRET": SECRET,
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}",
           "AI_LATENCY_SCALE": "0", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200,
                   timeout=30, what="the service to be ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_every_operation_keeps_its_published_contract(service_url: str,
                                                      tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.workspace_id" = "{WS}"\n')
    bearer = token(WS, role="service", ttl_seconds=3600)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run",
         f"{service_url}/openapi.json", "--checks", "all", "--mode", "all",
         "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES),
         "--seed", str(SEED), "--generation-deterministic", "--workers", "1",
         "--header", f"Authorization: Bearer {bearer}", "--no-color",
         "--report", "junit", "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output or "passed" in output, output[-3000:]


# --- the findings it made, as plain regression tests (issue 11, point 10) ----------------


def test_405_lists_every_method_of_the_path(service_url: str) -> None:
    response = httpx.request("PUT", f"{service_url}/v1/workspaces/{WS}/sessions/{uuid.uuid4()}",
                             headers=auth(WS, role="service"), timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH"


def test_timestamps_carry_their_zone_on_sqlite(service_url: str) -> None:
    created = httpx.post(f"{service_url}/v1/workspaces/{WS}/sessions",
                         json={"client_id": str(uuid.uuid4()), "plan": "Follow up."},
                         headers=auth(WS, role="service"), timeout=10)
    assert created.status_code == 201, created.text
    for field in ("created_at", "updated_at"):
        stamp = datetime.fromisoformat(created.json()[field])
        assert stamp.utcoffset() == timedelta(0), created.json()[field]


@pytest.mark.parametrize(("path", "body"), [
    ("sessions", {"client_id": "e3e70682-c209-1cac-a29f-6fbed82c07cd"}),  # no SOAP field
    ("sessions", {"client_id": "e3e70682-c209-1cac-a29f-6fbed82c07cd", "plan": " \u3000"}),
    ("query", {"query": "\u2003 "}),
])
def test_the_schema_forbids_what_the_service_refuses(service_url: str, path: str,
                                                     body: dict[str, str]) -> None:
    """The published schema rejects these bodies too, as a client validating them would."""
    spec = httpx.get(f"{service_url}/openapi.json", timeout=10).json()
    operation = spec["paths"][f"/v1/workspaces/{{workspace_id}}/{path}"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    schema = {**schema, "components": spec.get("components", {})}
    assert not jsonschema_valid(schema, body)
    response = httpx.post(f"{service_url}/v1/workspaces/{WS}/{path}", json=body,
                          headers=auth(WS, role="service"), timeout=10)
    assert response.status_code == 422


def jsonschema_valid(schema: dict[str, object], body: object) -> bool:
    import jsonschema_rs  # schemathesis's own validator

    return bool(jsonschema_rs.validator_for(schema).is_valid(body))
