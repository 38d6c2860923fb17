"""Operations: topic creation, the broker command, secrets in logs, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.brokers import LocalBroker
from stream_monitor.embedded import BrokerError, EmbeddedBroker, free_port
from stream_monitor.kafka.topics import TopicMismatch, ensure_topics
from tests.helpers import run_cli
from tests.kafka.support import ROOT, ServiceProcess, config_data, make_config, wait_for

pytestmark = pytest.mark.kafka


def test_topics_create_is_idempotent_and_compacts_state(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(broker.bootstrap_servers)
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    first = run_cli(
        "topics", "create", "--config", str(path), "--bootstrap-servers", broker.bootstrap_servers
    )
    assert first.returncode == 0, first.stderr
    group = data["kafka"]["group_id"]
    assert f"created  {group}-state-changelog" in first.stdout
    assert first.stdout.count("created") == 5
    second = run_cli(
        "topics", "create", "--config", str(path), "--bootstrap-servers", broker.bootstrap_servers
    )
    assert second.returncode == 0 and second.stdout.count("exists") == 5
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource("topic", f"{group}-state-changelog")
    described = admin.describe_configs([resource])[resource].result()
    assert described["cleanup.policy"].value == "compact"


def test_topics_create_reports_a_partition_mismatch(broker: LocalBroker) -> None:
    config = make_config(config_data(broker.bootstrap_servers))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(config.kafka.topics.labels, 2, 1)])[
        config.kafka.topics.labels
    ].result()
    with pytest.raises(TopicMismatch) as caught:
        ensure_topics(admin, config)
    assert f"{config.kafka.topics.labels}: has 2 partitions, config expects 4" in str(caught.value)


def test_broker_command_runs_until_sigterm_and_exits_0() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, 20, "the broker to listen")
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        assert admin.list_topics(timeout=5) is not None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_missing_broker_binary_is_a_clear_error() -> None:
    result = run_cli(
        "broker", "--port", str(free_port()), env={"CALF_TANSU_BIN": "/nonexistent/tansu"}
    )
    assert result.returncode == 1
    assert "CALF_TANSU_BIN=/nonexistent/tansu is not an executable file" in result.stderr
    os.environ.pop("CALF_TANSU_BIN", None)
    with pytest.raises(BrokerError, match="not an executable"):
        os.environ["CALF_TANSU_BIN"] = "/nonexistent/tansu"
        try:
            EmbeddedBroker().start()
        finally:
            del os.environ["CALF_TANSU_BIN"]


def test_secrets_never_reach_the_logs_and_sigterm_exits_0(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(broker.bootstrap_servers)
    # A SASL password the plaintext broker never asks for: librdkafka accepts and ignores it.
    data["kafka"]["client"] = {"sasl.username": "monitor", "sasl.password": "hunter2-very-secret"}
    data["state"]["signing_key"] = "signing-key-that-is-secret"
    service = ServiceProcess(data, tmp_path).start()
    try:
        wait_for(lambda: "assigned partitions" in service.output(), 60, "partition assignment")
        time.sleep(0.5)
    finally:
        assert service.terminate() == 0, service.output()
    log = service.output()
    assert "sasl.password=***" in log
    assert "hunter2-very-secret" not in log
    assert "signing-key-that-is-secret" not in log
    assert "signal SIGTERM received" in log and "stopped cleanly" in log

    printed = ServiceProcess(data, tmp_path)  # reuse its config file for check-config
    result = run_cli("check-config", str(printed.path))
    assert result.returncode == 0
    assert "hunter2-very-secret" not in result.stdout and '"sasl.password": "***"' in result.stdout
    assert "signing-key-that-is-secret" not in result.stdout


def test_unreachable_broker_is_retried_with_one_line_per_attempt_then_exits_when_configured(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = config_data(f"127.0.0.1:{port}", on_broker_down="exit", broker_down_timeout="8s")
    service = ServiceProcess(data, tmp_path).start()
    assert service.process is not None
    code = service.process.wait(60)
    log = service.output()
    assert code == 1, log
    attempts = [
        line
        for line in log.splitlines()
        if "cannot reach kafka at" in line and "retrying in" in line
    ]
    assert attempts and "(attempt 1," in attempts[0]
    assert "stopping: cannot reach kafka at" in log and "kafka unreachable for" in log
    assert "%3|" not in log and "Traceback" not in log  # librdkafka's repeats stay quiet
