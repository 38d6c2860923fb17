"""docker-compose.yml is valid (checked offline with Debian's docker-compose, when present)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT


def test_compose_file_is_valid() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip(
            "docker-compose is not installed (apt-get install docker-compose validates offline)"
        )
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_wires_kafka_topics_monitor_and_the_demo_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert "healthcheck" in kafka
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["monitor"]["command"] == ["run", "--config", "/app/configs/docker.yaml"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert (ROOT / "Dockerfile").exists() and (ROOT / "configs" / "docker.yaml").exists()
