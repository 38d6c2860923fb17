"""deploy/prometheus/alerts.yml passes its promtool unit tests (alerts_test.yml), every rule has
one, and the forwarder's metrics pass `promtool check metrics` (skipped without promtool)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from stream_monitor.forward.metrics import ForwardMetrics
from stream_monitor.forward.records import AlertRecord
from tests.helpers import ROOT, required_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    return required_tool("promtool", hint="make test-tools installs Debian's prometheus")


def test_alerting_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(PROMETHEUS / "alerts_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_unit_test_that_sees_it_fire() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert names == fired


def test_rules_file_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_forwarder_metrics_have_no_naming_problems() -> None:
    metrics = ForwardMetrics()
    record = AlertRecord(
        topic="alerts",
        partition=0,
        offset=0,
        key=None,
        value=b"{}",
        timestamp_ms=0,
        event={"id": "x", "type": "stream_monitor.drift_detected"},
    )
    metrics.count_read(record)
    metrics.accepted("alertmanager", record)
    metrics.failed("webhook-0", "http_503")
    metrics.dead_lettered("webhook-0", "http_503")
    metrics.pending.labels("alertmanager").set(0)
    metrics.commits.inc()
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=generate_latest(metrics.registry),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_prometheus_sends_the_rules_alerts_to_the_compose_alertmanager(tmp_path: Path) -> None:
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [manager] = scrape["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "9093:9093" in services["alertmanager"]["ports"]
    # promtool reads the file as Prometheus would, with the rules where compose mounts them.
    scrape["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(scrape))
    result = subprocess.run(
        [promtool(), "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
