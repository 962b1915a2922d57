"""The generated Prometheus config: a job of exporter scrape URLs (a Redis Cluster behind one
multi-target redis_exporter) becomes one job whose targets are the nodes, and promtool
accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack.errors import ServiceError
from devstack.services.prometheus_config import check_config, render_config
from devstack.services.redis_exporter import node_address, scrape_url

EXPORTER = "http://127.0.0.1:9121"
NODES = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]


def jobs(text: str) -> dict[str, dict[str, object]]:
    return {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}


def test_a_job_of_scrape_urls_scrapes_each_node_through_the_exporter(tmp_path: Path) -> None:
    text = render_config(targets={"redis": [scrape_url(EXPORTER, n) for n in NODES]})
    job = jobs(text)["redis"]
    assert job["metrics_path"] == "/scrape"
    assert job["static_configs"] == [{"targets": NODES}]
    assert job["relabel_configs"] == [
        {"source_labels": ["__address__"], "target_label": "__param_target",
         "replacement": "redis://$1"},
        {"source_labels": ["__address__"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": "127.0.0.1:9121"},
    ]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(text)
    check_config(config_file)  # promtool check config


def test_plain_targets_stay_a_static_job() -> None:
    job = jobs(render_config(targets={"redis": ["http://127.0.0.1:9121"]}))["redis"]
    assert job == {"job_name": "redis", "static_configs": [{"targets": ["127.0.0.1:9121"]}]}


def test_a_job_through_two_exporters_or_mixed_is_refused() -> None:
    with pytest.raises(ServiceError, match="several exporters"):
        render_config(targets={"redis": [scrape_url(EXPORTER, NODES[0]),
                                         scrape_url("http://127.0.0.1:9122", NODES[1])]})
    with pytest.raises(ServiceError, match="mixes"):
        render_config(targets={"redis": [scrape_url(EXPORTER, NODES[0]), "127.0.0.1:9121"]})


def test_node_addresses_never_carry_credentials() -> None:
    assert node_address("redis://127.0.0.1:7000") == "127.0.0.1:7000"
    assert node_address("127.0.0.1:7000") == "127.0.0.1:7000"
    with pytest.raises(ServiceError, match="credentials"):
        node_address("redis://:secret@127.0.0.1:7000")
