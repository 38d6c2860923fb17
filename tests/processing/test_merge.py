"""The two-stream merge: event time first, predictions on ties, and it waits for a stream that
is not read to its end."""

from __future__ import annotations

from typing import Any

from stream_monitor.core.events import LABEL, PREDICTION, Record, decode
from stream_monitor.processing.merge import LABELS, PREDICTIONS, StreamMerge
from tests.helpers import T0


def record(kind: str, offset: int, time: int | None, kafka_time: int | None = None) -> Record:
    event: dict[str, Any] = {"prediction_id": f"{kind[0]}{offset}", "model": "m"}
    event["prediction" if kind == PREDICTION else "label"] = 1
    if time is not None:
        event["timestamp"] = T0 + time
    return Record(kind, event, kafka_time, kind, 0, offset)


def feed(merge: StreamMerge, stream: int, *records: Record) -> None:
    for item in records:
        merge.add(stream, item, decode(item))


def order(merge: StreamMerge, idle: tuple[bool, bool]) -> list[str]:
    return [f"{'pl'[stream]}{r.offset}" for stream, r, _ in merge.drain(idle)]


def test_event_time_decides_and_predictions_go_first_on_ties() -> None:
    merge = StreamMerge()
    feed(merge, PREDICTIONS, record(PREDICTION, 0, 10), record(PREDICTION, 1, 30))
    feed(merge, LABELS, record(LABEL, 0, 10), record(LABEL, 1, 20), record(LABEL, 2, 40))
    assert order(merge, (True, True)) == ["p0", "l0", "l1", "p1", "l2"]


def test_a_stream_with_nothing_buffered_is_waited_for_unless_it_is_read_to_its_end() -> None:
    merge = StreamMerge()
    feed(merge, PREDICTIONS, record(PREDICTION, 0, 10), record(PREDICTION, 1, 30))
    assert order(merge, (False, False)) == []  # the labels may hold something earlier
    feed(merge, LABELS, record(LABEL, 0, 20))
    assert order(merge, (False, False)) == ["p0", "l0"]  # p1 waits for the next label
    assert merge.buffered(PREDICTIONS) == 1
    assert order(merge, (False, True)) == ["p1"]  # the labels are read to their end


def test_a_record_without_a_time_takes_its_streams_last_time_or_the_kafka_time() -> None:
    merge = StreamMerge()
    feed(merge, PREDICTIONS, record(PREDICTION, 0, 50), record(PREDICTION, 1, None))
    feed(merge, LABELS, record(LABEL, 0, None, kafka_time=T0 + 40), record(LABEL, 1, 60))
    # l0 has the Kafka record's time (40); p1 has p0's (50)
    assert order(merge, (True, True)) == ["l0", "p0", "p1", "l1"]
    assert merge.last_times == [T0 + 50, T0 + 60]


def test_last_times_carry_over_to_a_restored_merge() -> None:
    merge = StreamMerge((T0 + 100, T0))
    feed(merge, PREDICTIONS, record(PREDICTION, 7, None))  # takes 100 from the checkpoint
    feed(merge, LABELS, record(LABEL, 3, 90))
    assert order(merge, (True, True)) == ["l3", "p7"]


def test_invalid_records_are_merged_too_at_their_kafka_time() -> None:
    merge = StreamMerge()
    bad = Record(PREDICTION, b"{not json", T0 + 15, "p", 0, 1)
    feed(merge, PREDICTIONS, record(PREDICTION, 0, 10), bad)
    feed(merge, LABELS, record(LABEL, 0, 12), record(LABEL, 1, 20))
    assert order(merge, (True, True)) == ["p0", "l0", "p1", "l1"]


def test_clear_drops_the_buffers_back_to_the_last_records_handed_out() -> None:
    merge = StreamMerge()
    feed(merge, PREDICTIONS, record(PREDICTION, 0, 10))
    assert order(merge, (True, True)) == ["p0"]
    feed(merge, PREDICTIONS, record(PREDICTION, 1, 99), record(PREDICTION, 2, None))
    merge.clear()
    assert merge.buffered(PREDICTIONS) == 0
    feed(merge, PREDICTIONS, record(PREDICTION, 1, None))
    feed(merge, LABELS, record(LABEL, 0, 11))
    assert order(merge, (True, True)) == ["p1", "l0"]  # p1 took p0's time again (10)
