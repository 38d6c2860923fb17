"""Security: forged state is refused before it is parsed; client security settings pass through.

(tests/core/test_state.py checks the codec alone and tests/kafka/test_operations.py the secrets in
INFO logs; here forged records arrive through the changelog topic, and logs run at DEBUG.)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.state import MAGIC, StateCodec
from stream_monitor.kafka.settings import (
    admin_settings,
    consumer_settings,
    producer_settings,
    reader_settings,
)
from stream_monitor.processing.changelog import OFFSETS_HEADER, encode_tag, signing_context
from tests.kafka.support import (
    KEY,
    ServiceProcess,
    config_data,
    create_topics,
    make_config,
    wait_for,
)

pytestmark = pytest.mark.faults


class _Payload:
    """Unpickling this creates a file: proof of execution if anything ever unpickles state."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


FORGERIES = {
    "pickle": "state record signature does not match",  # behind our header: checked first
    "flipped byte": "state record signature does not match",
    "other key": "state record signature does not match",
    "moved from another partition": "state record signature does not match",
    "unsigned tombstone": "state deletion (tombstone) is not signed",
}


@pytest.mark.kafka
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_changelog_records_stop_the_monitor_with_a_clear_error(
    broker: LocalBroker, tmp_path: Path, forgery: str
) -> None:
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    marker = tmp_path / "executed"
    # Tagged with offsets the group has "committed" (none yet: 0, 0), so restore must read it.
    tag = encode_tag((0, 0))
    codec = StateCodec(KEY.encode())
    genuine = codec.encode(b"k:m", {"seen": 1}, signing_context(0, tag))
    headers = [(OFFSETS_HEADER, tag)]
    value: bytes | None
    if forgery == "pickle":
        value = MAGIC + b"\0" * 32 + pickle.dumps(_Payload(marker))
    elif forgery == "flipped byte":
        value = genuine[:-2] + bytes([genuine[-2] ^ 0x01]) + genuine[-1:]
    elif forgery == "other key":
        value = StateCodec(b"an-attackers-own-signing-key").encode(
            b"k:m", {"seen": 1}, signing_context(0, tag)
        )
    elif forgery == "moved from another partition":
        value = codec.encode(b"k:m", {"seen": 1}, signing_context(3, tag))
    else:
        value = None
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(names.state, key=b"k:m", value=value, partition=0, headers=headers)
    assert producer.flush(10) == 0

    service = ServiceProcess(data, tmp_path).start()
    assert service.process is not None
    code = service.process.wait(90)
    log = service.output()
    assert code == 1, log
    assert f"stopping: {FORGERIES[forgery]}" in log, log
    assert f"({names.state}/0@0 key=b'k:m'; state.on_invalid_record=stop)" in log, log
    assert "Traceback" not in log
    assert not marker.exists()


def test_sasl_and_ssl_settings_reach_every_client(tmp_path: Path) -> None:
    security = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "monitor",
        "sasl.password": "pass-through-secret",
        "ssl.ca.location": str(tmp_path / "no-such-ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
    }
    config = make_config(config_data("127.0.0.1:1", client=security))
    clients = {
        "consumer": consumer_settings(config),
        "producer": producer_settings(config),
        "reader": reader_settings(config, "restore"),
        "admin": admin_settings(config),
    }
    for name, settings in clients.items():
        assert {key: settings[key] for key in security} == security, name
    # librdkafka itself receives them: it loads the (missing) CA file at construction.
    for factory, name in ((Producer, "producer"), (Consumer, "consumer"), (AdminClient, "admin")):
        with pytest.raises(KafkaException, match=r"ssl\.ca\.location failed"):
            factory(clients[name])


@pytest.mark.kafka
def test_secrets_stay_out_of_debug_logs(broker: LocalBroker, tmp_path: Path) -> None:
    data = config_data(broker.bootstrap_servers)
    # Plaintext broker: librdkafka accepts SASL credentials it never needs, so the service starts
    # and logs its settings, at DEBUG (librdkafka's log lines then pass through too).
    data["kafka"]["client"] = {
        "sasl.username": "monitor",
        "sasl.password": "debug-level-secret",
    }
    data["state"]["signing_key"] = "debug-level-signing-key"
    service = ServiceProcess(data, tmp_path, options=("--log-level", "DEBUG")).start()
    try:
        wait_for(
            lambda: "assigned partitions" in service.output(),
            60,
            "partition assignment",
        )
    finally:
        assert service.terminate() == 0, service.output()
    log = service.output()
    assert "sasl.password=***" in log and "DEBUG" in log
    assert "debug-level-secret" not in log
    assert "debug-level-signing-key" not in log
