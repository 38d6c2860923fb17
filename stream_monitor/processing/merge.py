"""The two input streams of a partition, merged in an order that depends only on their contents.

Predictions and labels of one partition arrive on two topics, and a consumer interleaves them as
its fetches happen to land. The order matters: a joined pair is scored when its second half
arrives, so the sequence of performance values (and the ids of the alerts on it) would follow the
interleaving. The merge takes, of the two streams' next records, the one with the smaller event
time (predictions first on ties), like a merge of two sorted runs, and waits for a stream with
nothing buffered unless that stream is idle: read to its end (Kafka Streams does the same with
`max.task.idle.ms` = 0). While data is already in both topics (a catch-up, a restart, a
rebalance, a replay), the result is therefore the same however the consumer interleaves them.

A record without an event time takes the time of the record before it in its stream (so records
of a stream without any times keep their stream's order, as in replay).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from stream_monitor.core.events import Decoded, Label, Prediction, Record, record_time

PREDICTIONS = 0
LABELS = 1
STREAMS = (PREDICTIONS, LABELS)
# The merge time of a stream's records before its first timed one.
START = 0

Item = tuple[int, Record, Decoded]  # (merge time, record, event or error)


class StreamMerge:
    """Buffers both streams' decoded records and hands them out in merged order.

    `last_times` are the merge times of the last record handed out from each stream: part of a
    partition's checkpoint, since the next untimed record takes its time from them.
    """

    __slots__ = ("_buffers", "_intake", "last_times")

    def __init__(self, last_times: tuple[int, int] = (START, START)) -> None:
        self.last_times = list(last_times)
        self._intake = list(last_times)  # time of the last record added, per stream
        self._buffers: tuple[deque[Item], deque[Item]] = (deque(), deque())

    def add(self, stream: int, record: Record, event: Decoded) -> None:
        if type(event) is Prediction or type(event) is Label:
            time_ms = event.time_ms
        else:
            time_ms = record_time(record.timestamp_ms)
        if time_ms is None:
            time_ms = self._intake[stream]
        else:
            self._intake[stream] = time_ms
        self._buffers[stream].append((time_ms, record, event))

    def buffered(self, stream: int) -> int:
        return len(self._buffers[stream])

    def drain(self, idle: tuple[bool, bool]) -> Iterator[tuple[int, Record, Decoded]]:
        """(stream, record, event) in merged order, as far as the buffers decide it.

        `idle[s]`: stream s has been read to its end, so the other stream need not wait for it.
        """
        predictions, labels = self._buffers
        last = self.last_times
        while True:
            if predictions and labels:
                stream = PREDICTIONS if predictions[0][0] <= labels[0][0] else LABELS
            elif predictions and idle[LABELS]:
                stream = PREDICTIONS
            elif labels and idle[PREDICTIONS]:
                stream = LABELS
            else:
                return
            time_ms, record, event = (labels if stream else predictions).popleft()
            last[stream] = time_ms
            yield stream, record, event

    def clear(self) -> None:
        """Drop what is buffered (a rewind re-reads it), back to the last records handed out."""
        for buffer in self._buffers:
            buffer.clear()
        self._intake = list(self.last_times)
