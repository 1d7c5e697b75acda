"""Deployment files, checked as far as a machine without a Docker engine can:
compose and Prometheus configs through their own validators, the dashboard's
metrics against a running app's /metrics, and the Dockerfiles' COPY sources."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from model_store.store import ModelStore
from tests.conftest import REPO
from tests.service.conftest import KEY, Api

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"
PROMETHEUS = REPO / "docker/prometheus/prometheus.yml"
DASHBOARD = REPO / "docker/grafana/dashboards/cmr.json"
ENV = os.environ | {"CMR_API_KEY": "k", "GRAFANA_ADMIN_PASSWORD": "p"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_file_is_valid_and_has_the_stack() -> None:
    if shutil.which("docker-compose"):  # scripts/test.sh installs it
        for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(COMPOSE_GPU)]):
            done = subprocess.run(
                ["docker-compose", *files, "config", "-q"], env=ENV, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
        missing = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
        )
        assert missing.returncode != 0 and "CMR_API_KEY" in missing.stderr
    services = _yaml(COMPOSE)["services"]
    assert set(services) == {"redis", "service", "prometheus", "grafana", "train"}
    redis = services["redis"]
    assert (
        "--appendonly yes" in redis["command"]
        and "--appendfsync ${REDIS_APPENDFSYNC" in (redis["command"])
    )
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["service"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "model-store:/models:ro" in services["service"]["volumes"]
    assert services["train"]["profiles"] == ["train"]
    assert "model-store:/models" in services["train"]["volumes"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    gpu = _yaml(COMPOSE_GPU)["services"]["service"]["deploy"]["resources"]["reservations"]
    assert gpu["devices"][0]["driver"] == "nvidia"
    assert "deploy" not in services["service"]  # the stack starts without a GPU


def test_prometheus_scrapes_the_service() -> None:
    if shutil.which("promtool"):  # scripts/test.sh installs it
        done = subprocess.run(
            ["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    (job,) = _yaml(PROMETHEUS)["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["service:8000"]


def test_grafana_is_provisioned_from_the_mounted_folders() -> None:
    provisioning = REPO / "docker/grafana/provisioning"
    (source,) = _yaml(provisioning / "datasources/prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    (provider,) = _yaml(provisioning / "dashboards/cmr.yml")["providers"]
    volumes = _yaml(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./docker/grafana/dashboards:{provider['options']['path']}:ro" in volumes
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {"prometheus"}


@pytest.mark.parametrize("dockerfile", ["service.Dockerfile", "train.Dockerfile"])
def test_every_file_a_dockerfile_copies_exists(dockerfile: str) -> None:
    lines = (REPO / "docker" / dockerfile).read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            if not source.startswith("--"):
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source}"
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    if dockerfile == "service.Dockerfile":
        assert any(line.startswith("HEALTHCHECK") for line in lines)
        assert any("/livez" in line for line in lines)


def test_the_service_holds_no_training_code() -> None:
    """The serving half never imports the training half, and its image copies none of it."""
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "training" for n in names), path
    lines = (REPO / "docker/service.Dockerfile").read_text().splitlines()
    copied = {source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert "training" not in copied and "service" in copied
    assert 'CMD ["python", "-m", "service"' in "\n".join(lines)


@pytest.mark.anyio
async def test_every_metric_the_dashboard_queries_is_exposed(
    redis_api: Api, store: ModelStore
) -> None:
    version = store.open()
    items = json.loads(version.file("items.json").read_text())["items"]
    events = [
        {"market": "aa", "user_id": "u", "item_id": items[0], "event_id": "e1"},
        {"market": "aa", "user_id": "u", "item_id": "unknown-item"},
    ]
    assert (await redis_api.http.post("/events", json={"events": events}, headers=KEY)).is_success
    await redis_api.http.post("/markets/aa/recommend", json={"user_id": "u"})
    text = (await redis_api.http.get("/metrics")).text
    exposed = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bcmr_[a-z_]+", expr)}
    assert len(queried) >= 10
    assert queried <= exposed, sorted(queried - exposed)
