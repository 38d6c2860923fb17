"""The newcomer path: the demo in a short mode, and simulate + run + tail through the broker."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.scenarios import generate
from stream_monitor.simulate import SimulationPlan
from tests.helpers import required_tool, run_cli
from tests.kafka.support import (
    ROOT,
    ServiceThread,
    committed_total,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    produce_scenario,
    wait_for,
    wait_until_consumed,
)

pytestmark = pytest.mark.kafka


def tail(broker: LocalBroker, topic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`stream-monitor tail` over a whole topic, stopping at its end."""
    return run_cli(
        "tail",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic",
        topic,
        "--from-beginning",
        "--no-follow",
        *extra,
    )


def test_demo_short_mode_shows_the_expected_alerts_and_exits_0() -> None:
    result = run_cli(
        "demo", "--events", "1200", "--rate", "1500", "--label-delay", "1", timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "credit  performance/error" in out
    assert "fraud  feature/amount" in out
    assert "fraud  prediction/score" in out
    # the categorical feature that drifts, with the categories that moved (fr 20% -> 60%)
    country = next(line for line in out.splitlines() if "fraud  feature/country  " in line)
    assert "fraud  feature/country  fr 0.2" in country and " → 0.6" in country
    assert "feature/merchant" not in out and "new_customer  " not in out  # stable ones
    assert "eta  " not in out.split("Summary")[0]  # the healthy model raises nothing
    assert (
        "finished in" in out
        and "3,600 predictions and 3,600 labels published, 7,200 events processed" in out
    )
    assert "%3|" not in result.stderr


def test_simulate_run_tail_round_trip(each_broker: LocalBroker) -> None:
    broker = each_broker
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    plan = SimulationPlan(events=1500, rate=20000, label_delay=0.5, seed=3)
    simulated = run_cli(
        "simulate",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--events",
        "1500",
        "--rate",
        "20000",
        "--label-delay",
        "0.5",
        "--seed",
        "3",
        "--predictions-topic",
        names.predictions,
        "--labels-topic",
        names.labels,
    )
    assert simulated.returncode == 0, simulated.stderr
    assert "done: 4500 predictions, 4500 labels" in simulated.stderr
    with ServiceThread(config):
        wait_for(
            lambda: (
                committed_total(config, names.predictions) == 4500
                and committed_total(config, names.labels) == 4500
            ),
            90,
            "all simulated events committed",
        )
    tailed = tail(broker, names.alerts, "--json", "--timeout", "60")
    assert tailed.returncode == 0, tailed.stderr
    alerts = [orjson.loads(line) for line in tailed.stdout.splitlines()]
    assert sorted(a["id"] for a in alerts) == sorted(expected_alerts(config, plan.generate()))
    assert {(a["data"]["model"], a["data"]["signal"]) for a in alerts} >= {
        ("credit", "error"),
        ("fraud", "amount"),
    }

    readable = tail(broker, names.alerts, "--model", "credit")
    lines = readable.stdout.splitlines()
    assert lines and all(" credit " in line for line in lines)
    assert any("performance/error" in line for line in lines)


def readme_kcat_command() -> list[str]:
    """The kcat command the README gives for reading alerts, as its arguments."""
    found = re.search(r"`(kcat -b \S+ -C -t alerts [^`]*)`", (ROOT / "README.md").read_text())
    assert found, "the README no longer shows a kcat command for the alerts topic"
    return shlex.split(found.group(1))


def test_the_readme_kcat_command_shows_alerts_with_their_cloudevents_header(
    broker: LocalBroker,
) -> None:
    kcat = required_tool("kcat", hint="make test-tools, or apt-get install kcat")
    if not broker.aborts_dead_transactions:
        pytest.skip(
            "Debian's kcat 1.7.1 cannot connect to the embedded broker (docs/reliability.md)"
        )
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    scenario = generate("default", events=1500, seed=3)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    with ServiceThread(config):
        wait_until_consumed(config, names, scenario)
    command = readme_kcat_command()
    command[command.index("-b") + 1] = broker.bootstrap_servers
    command[command.index("-t") + 1] = names.alerts
    result = subprocess.run(
        [kcat, *command[1:]], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert records, result.stderr
    for record in records:
        assert record["headers"] == ["content-type", "application/cloudevents+json"]
        assert orjson.loads(record["payload"])["specversion"] == "1.0"
    ids = sorted(orjson.loads(record["payload"])["id"] for record in records)
    assert ids == sorted(expected_alerts(config, scenario))


def test_tail_shows_dead_letter_reasons(broker: LocalBroker) -> None:
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(
        names.predictions,
        key=b"m",
        value=orjson.dumps({"prediction_id": "x", "model": "m", "prediction": 1, "score": "high"}),
    )
    producer.flush(10)
    with ServiceThread(config):
        wait_for(
            lambda: committed_total(config, names.predictions) == 1, 60, "the bad event committed"
        )
    text = tail(broker, names.dead_letters)
    assert text.stdout.strip().endswith(
        "wrong_type (score): field 'score' must be a number, got string"
    )
    assert text.stdout.startswith(f"DEAD LETTER {names.predictions}/")
    raw = tail(broker, names.dead_letters, "--json")
    record = orjson.loads(raw.stdout)
    assert record["headers"]["stream_monitor-error-reason"] == "wrong_type"
    assert record["key"] == "m" and '"score":"high"' in record["value"]


def test_ctrl_c_stops_the_demo_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    output = tmp_path / "demo.log"
    with output.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor.cli", "demo"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            wait_for(
                lambda: "ready:" in output.read_text(errors="replace"),
                60,
                "the demo to start publishing",
            )
            time.sleep(2)
            process.send_signal(signal.SIGINT)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    text = output.read_text(errors="replace")
    assert "stopped early in" in text and "Summary" in text
    assert "Traceback" not in text
