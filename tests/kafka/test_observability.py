"""Operations through the real broker: metrics equal what was produced, readiness follows assignment
and restore, JSON logs carry context, and no secret reaches a log line or a metric."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.health import HealthServer
from stream_monitor.publish import event_producer
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    ServiceProcess,
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
from tests.test_dashboard import exposed_metrics, queried_metrics

pytestmark = pytest.mark.kafka

PASSWORD = "hunter2-sasl-password"
SIGNING_KEY = "signing-key-that-is-secret"

# (topic kind, raw value, reason): bad input interleaved with the scenario.
BAD = [
    ("predictions", b"{not json", "malformed_json"),
    ("predictions", b"\xff\xfe\x00", "not_utf8"),
    ("predictions", b"[1, 2]", "not_an_object"),
    ("predictions", b'{"model": "credit", "prediction": 1}', "missing_field"),
    ("predictions", b'{"model": "credit", "prediction_id": 7, "prediction": 1}', "wrong_type"),
    ("labels", b'{"model": "fraud", "label": 1}', "missing_field"),
    ("labels", b"{nope", "malformed_json"),
]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"{url}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_label(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str
) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def test_a_real_run_is_counted_exactly_and_leaks_no_secret(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(broker.bootstrap_servers)
    # A SASL password the plaintext broker never asks for: librdkafka accepts and ignores it.
    data["kafka"]["client"] = {"sasl.username": "monitor", "sasl.password": PASSWORD}
    data["state"]["signing_key"] = SIGNING_KEY
    data["metrics"]["state_interval"] = "200ms"
    data["metrics"]["statistics_interval"] = "500ms"
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=500, label_delay_ms=45_000)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    producer = event_producer(broker.bootstrap_servers)
    topic_of = {"predictions": names.predictions, "labels": names.labels}
    for kind, value, _ in BAD:
        producer.produce(topic_of[kind], value=value, key=b"bad")
    producer.flush(10)

    service = ServiceProcess(
        data, tmp_path, options=("--log-format", "json", "--log-level", "DEBUG")
    ).start()
    try:
        url = service.metrics_url()
        predictions = len(scenario.predictions) + sum(k == "predictions" for k, _, _ in BAD)
        labels = len(scenario.labels) + sum(k == "labels" for k, _, _ in BAD)
        wait_for(
            lambda: (
                committed_total(config, names.predictions) == predictions
                and committed_total(config, names.labels) == labels
            ),
            90,
            "every input offset committed",
        )
        wait_for(lambda: get(f"{url}/readyz")[0] == 200, 30, "ready")
        # Key and detector gauges follow every metrics.state_interval (200 ms here).
        wait_for(
            lambda: scrape(url).get(("stream_monitor_monitored_keys", ())) == 3, 10, "key gauge"
        )
        samples = scrape(url)
        exposition = get(f"{url}/metrics")[1]
    finally:
        assert service.terminate() == 0, service.output()

    # The same input offline (bad events attributed to a model feed its invalid_rate signal).
    offline = Monitor(config.monitor_settings(), source=config.kafka.group_id)
    kinds = {"predictions": PREDICTION, "labels": LABEL}
    offline.process(
        [Record(PREDICTION, e, None, "p", 0, i) for i, e in enumerate(scenario.predictions)]
        + [Record(LABEL, e, None, "l", 0, i) for i, e in enumerate(scenario.labels)]
        + [
            Record(kinds[kind], value, None, kind, 0, -1 - i)
            for i, (kind, value, _) in enumerate(BAD)
        ]
    )
    consumed = by_label(samples, "stream_monitor_events_consumed_total", "topic")
    assert consumed == {names.predictions: predictions, names.labels: labels}
    invalid = by_label(samples, "stream_monitor_invalid_events_total", "reason")
    assert invalid == dict(Counter(reason for _, _, reason in BAD))
    assert samples[("stream_monitor_dead_letters_total", ())] == len(BAD)
    joins = by_label(samples, "stream_monitor_joins_total", "outcome")
    assert joins == {"matched": len(scenario.labels)}
    assert samples[("stream_monitor_label_delay_seconds_count", ())] == len(scenario.labels)
    assert samples[("stream_monitor_label_delay_seconds_sum", ())] == 45 * len(scenario.labels)
    delay = "stream_monitor_label_delay_seconds_bucket"
    assert samples[(delay, (("le", "30.0"),))] == 0
    assert samples[(delay, (("le", "60.0"),))] == len(scenario.labels)
    assert samples[("stream_monitor_detector_updates_total", ())] == (
        offline.counters.detector_updates
    )
    expected = Counter(
        (e["data"]["model"], e["data"]["signal_kind"], e["data"]["detector"])
        for e in expected_alerts(config, scenario).values()
    )
    alerts = {
        (dict(labels)["model"], dict(labels)["signal_kind"], dict(labels)["detector"]): value
        for (name, labels), value in samples.items()
        if name == "stream_monitor_alerts_total"
    }
    assert expected and alerts == expected
    assert len(offline.keys) == 3
    assert samples[("stream_monitor_ready", ())] == 1
    assert samples[("stream_monitor_assigned_partitions", ())] == config.kafka.partitions
    assert samples[("stream_monitor_state_restore_duration_seconds_count", ())] == 1
    assert samples[("stream_monitor_batch_duration_seconds_count", ())] >= 1
    assert samples[("stream_monitor_commit_duration_seconds_count", ())] >= 1
    widths = by_label(samples, "stream_monitor_adwin_window_width", "model")
    assert set(widths) == {"credit", "fraud", "eta"} and all(w > 0 for w in widths.values())
    lag = by_label(samples, "stream_monitor_consumer_lag", "partition")
    assert lag and all(value >= 0 for value in lag.values())

    # The dashboard queries only what a real instance exposes (the forwarder's own metrics come
    # from `stream-monitor forward`: tests/forward).
    monitor_queries = {m for m in queried_metrics() if not m.startswith("stream_monitor_forward_")}
    assert not monitor_queries - exposed_metrics(exposition)

    # JSON logs: one object per line, with the key=value context lifted into fields.
    lines = [orjson.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(service.output().splitlines())
    logged_alerts = [line for line in lines if line["message"].startswith("alert id=")]
    assert len(logged_alerts) == sum(expected.values())
    assert {"id", "model", "partition", "offset", "detector"} <= set(logged_alerts[0])
    assert any(line["message"].startswith("dead letters=") for line in lines)

    # No secret anywhere: not in DEBUG logs (librdkafka's included), not in /metrics.
    everything = service.output() + exposition
    assert PASSWORD not in everything and SIGNING_KEY not in everything
    assert "sasl.password=***" in service.output()


def test_readiness_flips_after_assignment_and_restore(broker: LocalBroker) -> None:
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    scenario = generate("stable", events=300)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    with ServiceThread(config):  # first life: builds the state the second one restores
        wait_until_consumed(config, names, scenario)

    second = ServiceThread(config)
    service = second.service
    seen: list[tuple[int, int]] = []
    with HealthServer(
        service.metrics.registry, liveness=service.liveness, readiness=service.readiness
    ) as server:
        seen.append((get(f"{server.url}/readyz")[0], get(f"{server.url}/healthz")[0]))
        with second:

            def ready() -> bool:
                status = get(f"{server.url}/readyz")[0], get(f"{server.url}/healthz")[0]
                if not seen or seen[-1] != status:
                    seen.append(status)
                return status[0] == 200

            wait_for(ready, 60, "/readyz 200")
            body = get(f"{server.url}/readyz")[1]
            detail: dict[str, Any] = orjson.loads(body)
            samples = scrape(server.url)
        after = get(f"{server.url}/readyz")[0]
    # Not ready while starting, ready once restored; alive throughout; not ready once stopped.
    assert seen[0] == (503, 200) and seen[-1] == (200, 200)
    assert all(health == 200 for _, health in seen)
    assert detail == {
        "status": "ok",
        "partitions": [0, 1, 2, 3],
        "restoring": False,
        "broker_reachable": True,
    }
    # Readiness came after the restore: the restored keys were already in memory.
    assert samples[("stream_monitor_state_restore_duration_seconds_count", ())] == 1
    assert samples[("stream_monitor_monitored_keys", ())] == 3
    assert after == 503
