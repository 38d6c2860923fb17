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

from stream_monitor.core.state import MAGIC, StateCodec
from stream_monitor.embedded import EmbeddedBroker
from stream_monitor.kafka.changelog import OFFSETS_HEADER, encode_tag
from stream_monitor.kafka.settings import (
    admin_settings,
    consumer_settings,
    producer_settings,
    reader_settings,
)
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


@pytest.mark.kafka
@pytest.mark.parametrize("forgery", ["pickle", "flipped byte", "other key"])
def test_forged_changelog_records_stop_the_monitor_with_a_clear_error(
    broker: EmbeddedBroker, tmp_path: Path, forgery: str
) -> None:
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    marker = tmp_path / "executed"
    genuine = StateCodec(KEY.encode()).encode({"seen": 1})
    if forgery == "pickle":
        value = MAGIC + b"\0" * 32 + pickle.dumps(_Payload(marker))
    elif forgery == "flipped byte":
        value = genuine[:-2] + bytes([genuine[-2] ^ 0x01]) + genuine[-1:]
    else:
        value = StateCodec(b"an-attackers-own-signing-key").encode({"seen": 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    # Tagged with offsets the group has "committed" (none yet: 0, 0), so restore must read it.
    producer.produce(
        names.state,
        key=b"m",
        value=value,
        partition=0,
        headers=[(OFFSETS_HEADER, encode_tag((0, 0)))],
    )
    assert producer.flush(10) == 0

    service = ServiceProcess(data, tmp_path).start()
    assert service.process is not None
    code = service.process.wait(90)
    log = service.output()
    assert code == 1, log
    assert (
        "stopping: state record signature does not match: the record was tampered with or "
        "signed with another key (check state.signing_key)"
    ) in log, log
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
def test_secrets_stay_out_of_debug_logs(broker: EmbeddedBroker, tmp_path: Path) -> None:
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
