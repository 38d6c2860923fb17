"""docker-compose.yml is valid (checked offline with Debian's docker-compose, when present)."""

from __future__ import annotations

import subprocess

import yaml

from stream_monitor.apache_kafka import kafka_version
from stream_monitor.config import build_config
from tests.helpers import ROOT, required_tool


def test_compose_file_is_valid() -> None:
    tool = required_tool(
        "docker-compose", hint="make test-tools installs Debian's, which validates offline"
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


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_compose_alerting_profile_runs_the_forwarder_and_alertmanager() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    forwarder, manager = services["forwarder"], services["alertmanager"]
    assert forwarder["profiles"] == manager["profiles"] == ["alerting"]
    assert forwarder["command"] == ["forward", "--config", "/app/configs/docker.yaml"]
    assert forwarder["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "--cluster.listen-address=" in manager["command"]
    forward = yaml.safe_load((ROOT / "configs" / "docker.yaml").read_text())["forward"]
    assert forward["alertmanager"]["url"] == "http://alertmanager:9093"
    assert forward["metrics_port"] == 9651
    build_config(yaml.safe_load((ROOT / "configs" / "docker.yaml").read_text()), environ={})
    assert (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").exists()


def test_the_compose_alertmanager_config_is_valid() -> None:
    tool = required_tool("amtool", hint="make test-tools installs prometheus-alertmanager")
    result = subprocess.run(
        [tool, "check-config", str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
