"""Static checks of deploy/: the compose stack (it cannot run here), Prometheus scraping and
rule loading, Alertmanager routing. Nothing here starts a service."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.queries import REPO_ROOT, iter_alert_rules, rule_files

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager.yml"
REQUIRED_SERVICES = {
    "redis",
    "postgres",
    "unleash",
    "prometheus",
    "alertmanager",
    "grafana",
    "redis-exporter",
    "rollout-controller",
}
# DESIGN §9 and the alert rules agree on these job names.
REQUIRED_JOBS = {"ai-cache-service", "rollout-controller", "redis"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))


def bind_mounts() -> list[tuple[str, str, Path]]:
    """(service, container path, repository path) for every bind mount."""
    mounts = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((name, target, (COMPOSE.parent / source).resolve()))
    return mounts


def config_file_in_container(service: str) -> str:
    command = " ".join(services()[service]["command"])
    match = re.search(r"--config.file=(\S+)", command)
    assert match, f"{service} has no --config.file"
    return match.group(1)


def test_compose_has_the_whole_stack() -> None:
    names = set(services())
    assert names >= REQUIRED_SERVICES, f"missing services: {REQUIRED_SERVICES - names}"
    app = [n for n, s in services().items() if "app" in s.get("command", [])]
    assert app, "no service runs `python -m app`"
    controllers = [
        n for n, s in services().items() if s.get("command", [])[:2] == ["rollout", "run"]
    ]
    assert controllers == ["rollout-controller"]


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert service.get("image") or service.get("build"), name
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build["dockerfile"]).is_file(), f"{name}: Dockerfile missing"


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = service.get("image", "")
        if service.get("build"):
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image!r}"


def test_published_ports_are_unique() -> None:
    published = []
    for name, service in services().items():
        for port in service.get("ports", []):
            host = str(port).rsplit(":", 1)[0].split(":")[-1]
            published.append((host, name))
    counts = Counter(host for host, _ in published)
    duplicates = {
        host: [n for h, n in published if h == host] for host, c in counts.items() if c > 1
    }
    assert not duplicates, f"host ports published twice: {duplicates}"


def test_published_ports_listen_on_loopback_unless_the_operator_says_otherwise() -> None:
    # Compose publishes "HOST:CONTAINER" on every interface; "ADDRESS:HOST:CONTAINER" on one.
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)


def test_the_service_replicas_get_the_authorization_settings() -> None:
    for name, service in services().items():
        if "app" not in service.get("command", []):
            continue
        env = service["environment"]
        assert {"AUTH_JWKS_URL", "AUTH_JWT_SECRET", "AUTH_AUDIENCE", "AUTH_ISSUER"} <= set(env)
        assert "SERVICE_API_TOKEN" not in env, f"{name}: the static token is for local runs"


def test_depends_on_and_named_volumes_exist() -> None:
    document = compose()
    names = set(document["services"])
    volumes = set(document.get("volumes", {}))
    configs = set(document.get("configs", {}))
    for name, service in document["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in names, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in configs, f"{name}: undeclared config {config['source']}"


def test_every_mounted_path_exists_in_the_repo() -> None:
    mounts = bind_mounts()
    assert mounts, "no bind mounts found"
    for name, _, source in mounts:
        assert source.exists(), f"{name}: mounted path {source} does not exist"
        assert REPO_ROOT in source.parents, f"{name}: mounts {source} from outside the repository"


def test_secrets_have_no_defaults() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for secret in (
        "POSTGRES_PASSWORD",
        "CACHE_KEY_SECRET",
        "UNLEASH_ADMIN_TOKEN",
        "UNLEASH_CLIENT_TOKEN",
        "ROLLOUT_API_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        uses = re.findall(r"\$\{" + secret + r"(:?[-?][^}]*)?\}", text)
        assert uses, f"{secret} is not used"
        assert all(use.startswith(":?") for use in uses), (
            f"{secret} must be required, not defaulted"
        )


def test_prometheus_scrapes_the_jobs_the_rules_expect() -> None:
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert set(jobs) >= REQUIRED_JOBS, f"missing scrape jobs: {REQUIRED_JOBS - set(jobs)}"
    rule_text = " ".join(rule.expr for rule in iter_alert_rules())
    for job in re.findall(r'job="([^"]+)"', rule_text):
        assert job in jobs, f"rules select job {job!r} that Prometheus does not scrape"


def test_scrape_targets_are_compose_services_on_their_ports() -> None:
    names = set(services())
    for job in prometheus_config()["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    continue
                assert host in names, f"{job['job_name']}: target {host} is no compose service"
                service = services()[host]
                exposed = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
                command = " ".join(service.get("command", []))
                env = service.get("environment", {})
                known = exposed | {str(v) for v in env.values()} | set(re.findall(r"\d+", command))
                # Defaults: the exporter listens on 9121, Redis on 6379 (the `redis` job's
                # targets are Redis nodes, scraped through the exporter).
                if (host, port) not in {("redis-exporter", "9121"), ("redis", "6379")}:
                    assert port in known, f"{target}: port {port} not published or configured"


def test_redis_nodes_are_scraped_through_the_exporter_as_themselves() -> None:
    """The `redis` job is redis_exporter's multi-target form: every target a Redis node
    (one for the compose Redis, every node for a cluster), `instance` the node itself."""
    job = {j["job_name"]: j for j in prometheus_config()["scrape_configs"]}["redis"]
    assert job["metrics_path"] == "/scrape"
    relabel = job["relabel_configs"]
    assert {"source_labels": ["__address__"], "target_label": "__param_target",
            "replacement": "redis://$1"} in relabel
    assert {"source_labels": ["__address__"], "target_label": "instance"} in relabel
    exporter = [r["replacement"] for r in relabel if r.get("target_label") == "__address__"]
    assert exporter == ["redis-exporter:9121"] and "redis-exporter" in services()


def test_prometheus_loads_every_rule_file() -> None:
    patterns = prometheus_config()["rule_files"]
    loaded = {path.resolve() for pattern in patterns for path in PROMETHEUS.parent.glob(pattern)}
    missing = [p.name for p in rule_files() if p.resolve() not in loaded]
    assert not missing, f"prometheus.yml does not load {missing}"
    # ... and in the container the same relative path resolves through the compose mounts.
    mounts = {target: source for _, target, source in bind_mounts()}
    config_in_container = config_file_in_container("prometheus")
    assert mounts[config_in_container] == PROMETHEUS.resolve()
    for pattern in patterns:
        container_dir = str(Path(config_in_container).parent.joinpath(pattern).parent.resolve())
        assert mounts.get(container_dir) == (PROMETHEUS.parent / pattern).parent.resolve(), pattern


def test_promtool_check_config() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool not found: run scripts/bootstrap (Debian package `prometheus`)")
    proc = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool:
        proc = subprocess.run(
            [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        assert route.get("receiver", config["route"]["receiver"]) in receivers
    assert any(r.get("webhook_configs") for r in config["receivers"]), "no webhook receiver"
    alert_names = {rule.name for rule in iter_alert_rules()}
    for inhibit in config.get("inhibit_rules", []):
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            names = re.search(r'alertname=~?"([^"]+)"', matcher)
            assert names, matcher
            for name in names.group(1).split("|"):
                assert name in alert_names, f"inhibit rule names unknown alert {name}"


def test_alertmanager_is_mounted_where_it_is_read() -> None:
    config_in_container = config_file_in_container("alertmanager")
    mounts = {target: source for _, target, source in bind_mounts()}
    assert mounts[config_in_container] == ALERTMANAGER.resolve()
