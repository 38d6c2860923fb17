"""ForwardService's commits and dead letters, driven through fake Kafka clients: what the group
commits is always what every sink took, never past a dead letter that is not on its topic, and
never past a record that was not handed to the sinks."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_monitor.forward import ForwardError
from stream_monitor.forward.deadletters import DeadLetters
from stream_monitor.forward.records import AlertRecord
from stream_monitor.forward.sinks import SinkError
from tests.forward.fakes import (
    FakeConsumer,
    FakeProducer,
    Harness,
    Refusing,
    Taking,
    alert_message,
    alert_record,
)
from tests.kafka.support import wait_for

REFUSED = SinkError("http_400", "bad request", retryable=False)


def test_a_dead_letter_that_was_not_written_is_never_committed_past() -> None:
    # /tmp/review/dl_commit.py: the first commit refused, then run()'s last commit and the
    # revoke that consumer.close() triggers committed past the lost dead letter.
    consumer = FakeConsumer([0])
    consumer.add(alert_message(0, 0))
    harness = Harness([Refusing()], consumer, FakeProducer(fail_with=KafkaError._MSG_TIMED_OUT))
    harness.__enter__()
    error = harness.ended()
    assert consumer.commits == [] and consumer.closed
    assert isinstance(error, ForwardError)
    assert "cannot write to alert-dead-letters: Local: Message timed out" in str(error)


def test_every_commit_after_a_lost_dead_letter_is_refused() -> None:
    producer = FakeProducer(fail_with=KafkaError._MSG_TIMED_OUT)
    letters = DeadLetters(producer, "dlq")  # type: ignore[arg-type]
    letters.write(alert_record(0), "hook", REFUSED)
    with pytest.raises(ForwardError):
        letters.settle()
    producer.fail_with = None  # the broker is back: the lost letter is still lost
    for _ in range(2):
        with pytest.raises(ForwardError, match="Message timed out"):
            letters.settle()
    with pytest.raises(ForwardError):
        letters.write(alert_record(1), "hook", REFUSED)


def test_a_letter_queued_while_a_commit_settles_is_flushed_by_the_next_one() -> None:
    # A sink worker queues a letter while the loop settles for a commit: the loop must not take
    # it for flushed (the flag used to be set before produce() and cleared by that settle).
    class Racing(FakeProducer):
        def produce(self, topic: str, value: bytes, key: bytes | None, **extra: Any) -> None:
            letters.settle()  # the loop's commit, between the flag and the send
            super().produce(topic, value, key, **extra)

    producer = Racing()
    letters = DeadLetters(producer, "dlq")  # type: ignore[arg-type]
    letters.write(alert_record(0), "hook", REFUSED)
    letters.settle()
    assert producer.delivered == [b"{}"]


def test_a_full_local_queue_is_waited_out_then_stops_for_good() -> None:
    class Full(FakeProducer):
        def produce(self, topic: str, value: bytes, key: bytes | None, **extra: Any) -> None:
            raise BufferError("Local: Queue full")

    letters = DeadLetters(Full(), "dlq", queue_wait=0.2)  # type: ignore[arg-type]
    with pytest.raises(ForwardError, match=r"queue stayed full for 0\.2s"):
        letters.write(alert_record(0), "hook", REFUSED)
    with pytest.raises(ForwardError):
        letters.settle()

    class Broken(FakeProducer):
        def produce(self, topic: str, value: bytes, key: bytes | None, **extra: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))

    letters = DeadLetters(Broken(), "dlq")  # type: ignore[arg-type]
    with pytest.raises(ForwardError, match="Unknown topic"):
        letters.write(alert_record(0), "hook", REFUSED)


def test_a_revoke_inside_consume_commits_only_what_the_sinks_were_handed() -> None:
    consumer = FakeConsumer([0, 1])
    consumer.add(alert_message(0, 0), alert_message(0, 1), alert_message(1, 0))
    sink = Taking()
    with Harness([sink], consumer) as harness:
        wait_for(lambda: len(sink.taken) == 3, 5, "three alerts taken")
        wait_for(lambda: consumer.highest_commit(0) == 2, 5, "the regular commit")

        def rebalance(consumer: FakeConsumer) -> None:
            # librdkafka has handed over offsets 2..4 for the batch being built, then revokes.
            consumer.positions[0] = 5
            consumer.revoke_now([0])

        consumer.on_consume.append(rebalance)
        wait_for(lambda: 0 not in harness.service.readiness()[1]["partitions"], 5, "revoked")
    assert consumer.highest_commit(0) == 2
    assert harness.error is None


class BrokenPeriodic(Taking):
    """Periodic work with a bug (not a SinkError): retrying cannot help."""

    def next_due(self) -> float | None:
        return 0.0

    def run_due(self, now: float) -> None:
        raise KeyError("labels")


def test_a_sink_worker_that_dies_stops_the_forwarder() -> None:
    consumer = FakeConsumer([0])
    harness = Harness([Taking("healthy"), BrokenPeriodic("broken")], consumer)
    harness.__enter__()
    error = harness.ended()
    assert isinstance(error, ForwardError)
    assert str(error) == "sink=broken: its worker stopped: KeyError: 'labels'"


def test_liveness_fails_while_a_sink_worker_is_dead() -> None:
    harness = Harness([Taking("healthy"), BrokenPeriodic("broken")], FakeConsumer([0]))
    service = harness.service
    service.looping = True  # as inside run(), before the loop notices
    for worker in service.workers:
        worker.start()
    wait_for(lambda: not service.workers[1].alive, 5, "the broken worker to stop")
    ok, details = service.liveness()
    assert not ok and details["dead_sinks"] == ["broken"]
    for worker in service.workers:
        worker.stop()


def test_every_sinks_delivery_series_exists_at_zero_from_the_start() -> None:
    # A counter first seen at 1 has no increase(): StreamMonitorForwardDeadLetters never fired
    # for a sink's first dead letters.
    harness = Harness([Taking("alertmanager"), Refusing()], FakeConsumer([0]))
    for sink in ("alertmanager", "refusing"):
        for outcome in ("accepted", "dead_lettered"):
            value = harness.metrics.registry.get_sample_value(
                "stream_monitor_forward_deliveries_total", {"sink": sink, "outcome": outcome}
            )
            assert value == 0.0, (sink, outcome)


@pytest.mark.parametrize(
    ("committed", "sent"),
    [
        ({}, [(0, 1)]),  # no committed offset: the group's first read of partition 0
        ({0: 0}, [(0, 0), (0, 1)]),  # it has committed: everything after it, however old
    ],
)
def test_a_new_group_sends_no_alert_older_than_first_start_max_age(
    committed: dict[int, int], sent: list[tuple[int, int]]
) -> None:
    now = int(time.time() * 1000)
    consumer = FakeConsumer([0], committed=committed)
    consumer.add(
        alert_message(0, 0, timestamp_ms=now - 2 * 3_600_000),
        alert_message(0, 1, timestamp_ms=now - 60_000),
    )
    sink = Taking()
    with Harness([sink], consumer, first_start_max_age="1h"):
        wait_for(lambda: consumer.highest_commit(0) == 2, 5, "both committed")
    assert sink.taken == sent


def test_reading_pauses_at_max_pending_and_resumes_when_half_drained() -> None:
    class Gate(Taking):
        def __init__(self) -> None:
            super().__init__("gate")
            self.open = threading.Event()

        def deliver(self, record: AlertRecord) -> None:
            self.open.wait(10)
            super().deliver(record)

    consumer = FakeConsumer([0])
    consumer.add(alert_message(0, 0), alert_message(0, 1))
    gate = Gate()
    paused = "stream_monitor_forward_reading_paused"
    with Harness([gate, Taking()], consumer, max_pending=1) as harness:
        # The first alert is in flight, the second queued: one held, max_pending reached.
        wait_for(lambda: consumer.paused == {0}, 5, "reading paused")
        assert harness.metrics.registry.get_sample_value(paused) == 1.0
        gate.open.set()
        wait_for(lambda: consumer.paused == set(), 5, "reading resumed")  # max_pending 1 too
        assert harness.metrics.registry.get_sample_value(paused) == 0.0
    assert gate.taken == [(0, 0), (0, 1)]
