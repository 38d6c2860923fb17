"""Per-sink workers: a failing sink retries and gives up on its own, the healthy one is not held
back, and each sink's pending offsets say what the group may commit."""

from __future__ import annotations

import threading
import time

from stream_monitor.forward.records import AlertRecord
from stream_monitor.forward.sinks import BaseSink, SinkError, SinkWorker
from tests.forward.fakes import alert_record
from tests.kafka.support import wait_for


def alert(offset: int) -> AlertRecord:
    return alert_record(offset, partition=offset % 2)


class Recording(BaseSink):
    def __init__(self, name: str, fail_until: float = 0.0) -> None:
        self.name = name
        self.fail_until = fail_until
        self.taken: list[int] = []
        self.attempts = 0

    def deliver(self, record: AlertRecord) -> None:
        self.attempts += 1
        if time.monotonic() < self.fail_until:
            raise SinkError("http_503", "busy")
        self.taken.append(record.offset)


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def accepted(self, sink: str, record: AlertRecord) -> None:
        with self.lock:
            self.events.append((sink, "accepted"))

    def failed(self, sink: str, reason: str) -> None:
        with self.lock:
            self.events.append((sink, reason))

    def dead_lettered(self, sink: str, reason: str) -> None:
        with self.lock:
            self.events.append((sink, "dead_lettered"))


def test_a_failing_sink_neither_blocks_the_healthy_one_nor_loses_its_alerts() -> None:
    healthy, flaky = Recording("healthy"), Recording("flaky", fail_until=time.monotonic() + 1.5)
    dead: list[tuple[int, str]] = []
    outcomes = Outcomes()
    workers = [
        SinkWorker(
            sink,
            dead_letter=lambda record, name, error: dead.append((record.offset, name)),
            outcomes=outcomes,
            give_up_after=30,
            backoff=0.05,
            backoff_max=0.2,
        ).start()
        for sink in (healthy, flaky)
    ]
    for offset in range(20):
        for worker in workers:
            worker.offer(alert(offset))
    wait_for(lambda: len(healthy.taken) == 20, 1.0, "the healthy sink takes all at once")
    assert flaky.taken == [] and workers[1].first_pending(0) == 0
    wait_for(lambda: len(flaky.taken) == 20, 10, "the flaky sink catches up")
    assert healthy.taken == flaky.taken == list(range(20)) and not dead
    assert flaky.attempts > 20
    assert all(worker.first_pending(p) is None for worker in workers for p in (0, 1))
    for worker in workers:
        worker.stop()


def test_what_a_sink_never_takes_is_dead_lettered_after_give_up_after() -> None:
    down = Recording("down", fail_until=time.monotonic() + 3600)
    dead: list[tuple[int, str, str]] = []
    worker = SinkWorker(
        down,
        dead_letter=lambda record, name, error: dead.append((record.offset, name, error.reason)),
        outcomes=Outcomes(),
        give_up_after=0.5,
        backoff=0.05,
        backoff_max=0.1,
    ).start()
    started = time.monotonic()
    for offset in range(5):
        worker.offer(alert(offset))
    wait_for(lambda: len(dead) == 5, 5, "all five dead-lettered")
    # The head waits give_up_after; those queued behind it had waited as long: one try each.
    assert time.monotonic() - started < 1.5
    assert dead == [(offset, "down", "http_503") for offset in range(5)]
    assert worker.first_pending(0) is None and worker.first_pending(1) is None
    worker.stop()


def test_stopping_mid_retry_leaves_the_alert_pending_and_remember_never_delivers() -> None:
    down = Recording("down", fail_until=time.monotonic() + 3600)
    worker = SinkWorker(
        down, dead_letter=lambda *a: None, outcomes=Outcomes(), give_up_after=60, backoff=0.05
    ).start()
    worker.offer(alert(1), deliver=False)
    worker.offer(alert(4))
    wait_for(lambda: down.attempts >= 2, 5, "retries")
    worker.stop()
    assert worker.first_pending(0) == 4 and down.taken == []


def test_a_sink_that_raises_an_unexpected_error_dead_letters_and_keeps_its_worker() -> None:
    class Broken(Recording):
        def deliver(self, record: AlertRecord) -> None:
            if record.offset == 1:
                raise KeyError("data")
            super().deliver(record)

    broken = Broken("broken")
    dead: list[tuple[int, str]] = []
    worker = SinkWorker(
        broken,
        dead_letter=lambda record, name, error: dead.append((record.offset, error.reason)),
        outcomes=Outcomes(),
        give_up_after=60,
    ).start()
    for offset in range(3):
        worker.offer(alert(offset))
    wait_for(lambda: broken.taken == [0, 2], 5, "the others delivered")
    assert dead == [(1, "sink_error")]
    worker.stop()


def test_an_error_outside_delivery_stops_the_worker_and_says_why() -> None:
    # /tmp/review/worker_dies.py: the dead-letter write raised, the thread ended in silence
    # and the partition's offset stayed pending forever.
    down = Recording("down", fail_until=time.monotonic() + 3600)

    def dead_letter(record: AlertRecord, name: str, error: SinkError) -> None:
        raise BufferError("Local: Queue full")

    worker = SinkWorker(down, dead_letter=dead_letter, outcomes=Outcomes(), give_up_after=0.1)
    worker.start()
    worker.offer(alert(0))
    wait_for(lambda: not worker.alive, 5, "the worker to stop")
    assert worker.failure == "BufferError: Local: Queue full"
    worker.stop()


def test_a_dropped_partition_is_forgotten_by_the_sink_on_its_own_thread() -> None:
    class Forgetting(Recording):
        def __init__(self) -> None:
            super().__init__("forgetting")
            self.forgot: list[tuple[set[int], str]] = []

        def forget(self, partitions: set[int]) -> None:
            self.forgot.append((partitions, threading.current_thread().name))

    sink = Forgetting()
    worker = SinkWorker(sink, dead_letter=lambda *a: None, outcomes=Outcomes(), give_up_after=60)
    worker.start()
    worker.drop({1})
    wait_for(lambda: bool(sink.forgot), 5, "the sink told")
    assert sink.forgot == [({1}, "sink-forgetting")]
    worker.stop()
