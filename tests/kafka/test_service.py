"""`stream-monitor run` end to end through the embedded broker: alerts, dead letters, scaling."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from confluent_kafka import Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.processing import deadletters
from stream_monitor.scenarios import generate
from tests.helpers import alert_schema
from tests.kafka.support import (
    ServiceThread,
    alert_events,
    committed_total,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    produce_scenario,
    read_topic,
    restored_monitors,
    wait_for,
    wait_until_consumed,
    without_position,
)

pytestmark = pytest.mark.kafka
EVENTS = 3000  # per model; drift injected at 1500


def test_end_to_end_alerts_follow_the_contract_and_match_the_core(broker: LocalBroker) -> None:
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    with ServiceThread(config) as running:
        wait_until_consumed(config, names, scenario)
        assert running.service.ready.is_set()

    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    expected = expected_alerts(config, scenario)
    assert sorted(a["id"] for a in alerts) == sorted(expected)
    assert {(a["data"]["model"], a["data"]["signal"]) for a in alerts} >= {
        ("credit", "error"),
        ("fraud", "amount"),
        ("fraud", "score"),
    }
    schema = alert_schema()
    for alert in alerts:
        jsonschema.validate(alert, schema)
        assert without_position(alert) == without_position(expected[alert["id"]])
        assert alert["source"] == f"stream-monitor/{config.kafka.group_id}"
        position = alert["data"]["source_position"]
        assert position["topic"] in (names.predictions, names.labels)
    # Detector observation counts equal the events produced, per model.
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS
        performance = "performance/absolute_error" if model == "eta" else "performance/error"
        assert counts[(model, performance)] == EVENTS


def test_bad_input_goes_to_the_dead_letter_topic_with_headers(broker: LocalBroker) -> None:
    data = config_data(broker.bootstrap_servers)
    data["events"] = {"max_bytes": 2048}
    config = make_config(data)
    names = create_topics(config)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    good = {"prediction_id": "g", "model": "m", "prediction": 0.5, "features": {"x": 1.0}}
    bad = [
        (b"{not json", "malformed_json", "", "stream_monitor.core.events.MalformedJson"),
        (
            orjson.dumps({**good, "score": "high"}),
            "wrong_type",
            "score",
            "stream_monitor.core.events.WrongType",
        ),
        (
            orjson.dumps({"model": "m", "prediction": 1}),
            "missing_field",
            "prediction_id",
            "stream_monitor.core.events.MissingField",
        ),
        (
            orjson.dumps({**good, "pad": "x" * 5000}),
            "oversized",
            "",
            "stream_monitor.core.events.OversizedEvent",
        ),
        (
            b'{"model": "m", "prediction_id": "\xff"}',
            "not_utf8",
            "",
            "stream_monitor.core.events.NotUtf8",
        ),
    ]
    sent = []
    for index, (value, *_rest) in enumerate(bad):
        producer.produce(
            names.predictions,
            key=b"m",
            value=orjson.dumps({**good, "prediction_id": f"before-{index}"}),
        )
        producer.produce(
            names.predictions, key=b"m", value=value, timestamp=1_700_000_000_000 + index
        )
        sent.append(value)
    producer.produce(
        names.predictions, key=b"m", value=orjson.dumps({**good, "prediction_id": "last"})
    )
    producer.produce(
        names.labels,
        key=b"m",
        value=orjson.dumps({"prediction_id": "g", "model": "m", "label": [1]}),
    )
    producer.flush(10)

    with ServiceThread(config):
        wait_for(
            lambda: (
                committed_total(config, names.predictions) == 11
                and committed_total(config, names.labels) == 1
            ),
            60,
            "all input committed",
        )
    letters = read_topic(broker.bootstrap_servers, names.dead_letters)
    assert len(letters) == 6

    def origin(message) -> str:  # type: ignore[no-untyped-def]
        return deadletters.header_dict(message.headers())[deadletters.ORIGINAL_TOPIC]

    by_reason = {
        deadletters.header_dict(m.headers())[deadletters.REASON]: m
        for m in letters
        if origin(m) == names.predictions
    }
    for value, reason, field, fqcn in bad:
        message = by_reason[reason]
        headers = deadletters.header_dict(message.headers())
        assert headers[deadletters.ORIGINAL_TOPIC] == names.predictions
        partition, offset = (
            int(headers[deadletters.ORIGINAL_PARTITION]),
            int(headers[deadletters.ORIGINAL_OFFSET]),
        )
        assert offset == 2 * bad.index((value, reason, field, fqcn)) + 1
        assert headers[deadletters.ORIGINAL_TIMESTAMP] == str(1_700_000_000_000 + offset // 2)
        assert headers[deadletters.EXCEPTION_CLASS] == fqcn
        assert headers[deadletters.FIELD] == field
        assert headers[deadletters.DEAD_LETTER_ID] == f"{names.predictions}/{partition}/{offset}"
        assert headers[deadletters.EXCEPTION_MESSAGE]
        assert message.key() == b"m"
        if reason == "oversized":
            assert headers[deadletters.TRUNCATED] == "true" and len(message.value()) == 2048
        else:
            assert message.value() == value
    (label_letter,) = [m for m in letters if origin(m) == names.labels]
    assert (
        "field 'label' must be a number, boolean or string, got array"
        in deadletters.header_dict(label_letter.headers())[deadletters.EXCEPTION_MESSAGE]
    )
    # The good events around the bad ones were all processed.
    counts = observation_counts(restored_monitors(config))
    assert counts[("m", "feature/x")] == 6
    # Only the wrong-type and missing-field events name their model; the other three never parse.
    assert counts[("m", "data_quality/invalid_rate")] == 6 + 2


def test_two_instances_in_one_group_give_the_same_alert_ids_as_one(broker: LocalBroker) -> None:
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=8)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    second = make_config({**data, "kafka": {**data["kafka"], "instance_id": "b"}})
    with ServiceThread(config) as one, ServiceThread(second) as two:
        wait_for(
            lambda: len(one.service.processors) == 2 and len(two.service.processors) == 2,
            60,
            "a 2/2 split",
        )
        wait_until_consumed(config, names, scenario)
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    assert sorted(a["id"] for a in alerts) == sorted(expected_alerts(config, scenario))


def test_repartition_mode_with_unkeyed_input_finds_the_same_alerts(broker: LocalBroker) -> None:
    config = make_config(config_data(broker.bootstrap_servers, partitioning="repartition"))
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    produce_scenario(broker.bootstrap_servers, names, scenario, keyed=False)
    with ServiceThread(config) as running:
        total = len(scenario.predictions) + len(scenario.labels)
        # (Repartition topics are written in transactions: their offsets include commit markers.)
        wait_for(
            lambda: running.service.counters.processed == total,
            90,
            "every repartitioned event processed",
        )
        wait_until_consumed(config, names, scenario, 30, "raw input committed")
        assert running.service.counters.forwarded == total
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    found = {(a["data"]["model"], a["data"]["signal_kind"], a["data"]["signal"]) for a in alerts}
    expected = {
        (e["data"]["model"], e["data"]["signal_kind"], e["data"]["signal"])
        for e in expected_alerts(config, scenario).values()
    }
    assert found == expected
    assert len(alerts) == len({a["id"] for a in alerts})
    counts = observation_counts(restored_monitors(config))
    assert counts[("credit", "performance/error")] == EVENTS


def test_an_alert_is_committed_at_once_not_at_the_next_commit_interval(
    broker: LocalBroker,
) -> None:
    """Exactly once, alerts are visible only after a commit: a long interval must not hold them."""
    config = make_config(
        config_data(broker.bootstrap_servers, commit_interval="10m", commit_max_events=10**9)
    )
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    expected = expected_alerts(config, scenario)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    with ServiceThread(config) as running:
        wait_for(
            lambda: len(alert_events(broker.bootstrap_servers, names.alerts, idle=0.3)) >= 3,
            60,
            "read_committed alerts while the service runs",
        )
        visible = alert_events(broker.bootstrap_servers, names.alerts, idle=0.3)
        assert running.service.counters.commits >= 1  # the timer cannot have fired yet
    assert {alert["id"] for alert in visible} <= set(expected)


def test_a_stream_at_its_end_without_an_end_of_partition_event_does_not_hold_the_other(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge waits for a stream with nothing buffered unless it is read to its end. When no
    end-of-partition event says so (here librdkafka is told never to send one), the loop asks
    the broker's high watermark instead: every prediction is processed and committed, with
    the alerts the files give, though no label ever arrives."""
    from stream_monitor.kafka import service as service_module

    settings = service_module.consumer_settings
    monkeypatch.setattr(
        service_module,
        "consumer_settings",
        lambda *args, **kwargs: {**settings(*args, **kwargs), "enable.partition.eof": False},
    )
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    scenario.labels.clear()
    produce_scenario(broker.bootstrap_servers, names, scenario)
    with ServiceThread(config):
        wait_for(
            lambda: committed_total(config, names.predictions) == len(scenario.predictions),
            60,
            "every prediction committed",
        )
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    assert sorted(a["id"] for a in alerts) == sorted(expected_alerts(config, scenario))
    assert alerts  # the feature drift of the default scenario
