"""`PartitionProcessor`: one input partition's merged streams, its `Monitor`, its checkpoints.

Runtimes hand it the records they read (`add`), say which stream has been read to its end, and
take back the outputs of what the merge could decide (`process`). `positions` are the next
offsets to process per stream: exactly what a checkpoint may commit, never more. Records still
buffered are not part of the state; after a restart they are read again.

A processor restored from a checkpoint older than the committed offsets (state is written less
often than outputs are committed) first re-processes the records between the two; their outputs
were published before, so `process` leaves out every output of a record before `replay_until`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from stream_monitor.core.events import LABEL, PREDICTION, Record, decode
from stream_monitor.core.join import LabelJoin
from stream_monitor.core.monitor import Monitor, Output
from stream_monitor.core.state import JoinEntry
from stream_monitor.processing.changelog import (
    SNAPSHOT_ROWS,
    ChangelogRecord,
    PartitionWriter,
    Restored,
)
from stream_monitor.processing.merge import LABELS, PREDICTIONS, START, StreamMerge

STREAM_OF = {PREDICTION: PREDICTIONS, LABEL: LABELS}


class PartitionProcessor:
    """The monitor of one input partition and where its two input streams stand."""

    def __init__(
        self,
        partition: int,
        monitor: Monitor,
        writer: PartitionWriter,
        *,
        positions: tuple[int, int] = (0, 0),
        merge_times: tuple[int, int] = (START, START),
        replay_until: tuple[int, int] | None = None,
        runtime: dict[str, Any] | None = None,
    ) -> None:
        self.partition = partition
        self.monitor = monitor
        self.writer = writer
        self.positions = list(positions)
        self.merge = StreamMerge(merge_times)
        # Per stream, the offset after the last record added (buffered or processed): a consumer
        # that delivers a partition again from `positions` (it was revoked and came back, or
        # sought back) must not buffer a record twice, or the monitor would count it twice.
        self._added = list(positions)
        self.replay_until: list[int] | None = None
        if replay_until is not None and any(
            until > at for until, at in zip(replay_until, positions, strict=True)
        ):
            self.replay_until = list(replay_until)
        # The runtime's own data (where its outputs stood, ...), checkpointed with the state.
        self.runtime: dict[str, Any] = dict(runtime or {})
        self.replayed = 0  # outputs left out because a predecessor published them
        self.applied = 0  # records applied to the monitor
        self._max_bytes = monitor.settings.max_event_bytes

    @classmethod
    def restored(
        cls,
        partition: int,
        monitor: Monitor,
        state: Restored,
        positions: tuple[int, int],
        replay_until: tuple[int, int] | None = None,
    ) -> PartitionProcessor:
        """A processor for state read back from a changelog (`processing.changelog.restore`)."""
        for changes in state.changes:
            monitor.restore(changes)
        merge = state.processor.get("merge") or (START, START)
        return cls(
            partition,
            monitor,
            state.writer,
            positions=positions,
            merge_times=(int(merge[0]), int(merge[1])),
            replay_until=replay_until,
            runtime=state.processor.get("runtime"),
        )

    # --- records in, outputs out ------------------------------------------------------------
    def add(self, stream: int, records: Iterable[Record]) -> None:
        """Records of one stream, in offset order (those already added are skipped)."""
        merge, max_bytes = self.merge, self._max_bytes
        after = self._added[stream]
        for record in records:
            if record.offset >= after:
                merge.add(stream, record, decode(record, max_bytes))
                after = record.offset + 1
        self._added[stream] = after

    def drop_buffered(self) -> None:
        """Forget the records added but not processed (the consumer delivers them again from
        `positions`): what a processor kept while its partition is elsewhere should not hold."""
        self.merge.clear()
        self._added = list(self.positions)

    def buffered(self, stream: int) -> int:
        return self.merge.buffered(stream)

    def process(self, idle: tuple[bool, bool]) -> Output:
        """Apply what the merge can decide; `idle[s]`: stream s is read to its end for now."""
        monitor, positions = self.monitor, self.positions
        monitor.begin()
        applied = 0
        for stream, record, event in self.merge.drain(idle):
            monitor.apply(record, event)
            positions[stream] = record.offset + 1
            applied += 1
        self.applied += applied
        output = monitor.end()
        if self.replay_until is not None:
            self._leave_out_replayed(output)
        return output

    def _leave_out_replayed(self, output: Output) -> None:
        until = self.replay_until
        assert until is not None

        def published(record: Record | None) -> bool:
            return record is not None and record.offset < until[STREAM_OF[record.kind]]

        alerts = [alert for alert in output.alerts if not published(alert.record)]
        dead = [letter for letter in output.dead_letters if not published(letter.record)]
        self.replayed += len(output.alerts) - len(alerts) + len(output.dead_letters) - len(dead)
        output.alerts, output.dead_letters = alerts, dead
        if all(at >= end for at, end in zip(self.positions, until, strict=True)):
            self.replay_until = None

    @property
    def replaying(self) -> bool:
        return self.replay_until is not None

    # --- checkpoints -----------------------------------------------------------------------
    def checkpoint(self) -> Iterator[ChangelogRecord]:
        """The changelog records of what changed since the last checkpoint, tagged with the
        positions they reflect (commit exactly these positions with them). Made as they are
        read: read them all before processing anything more."""
        join = self.monitor.join
        return self.writer.records(
            self.monitor.take_changes(lazy=True),
            {"merge": list(self.merge.last_times), "runtime": self.runtime},
            tuple(self.positions),
            lambda: _live_entries(join),
            len(join.predictions) + len(join.labels),
        )


def _live_entries(join: LabelJoin) -> Iterator[JoinEntry]:
    """Every pending entry, dumped SNAPSHOT_ROWS at a time."""
    keys = [*join.predictions, *join.labels]
    for start in range(0, len(keys), SNAPSHOT_ROWS):
        yield from join.dump_entries(keys[start : start + SNAPSHOT_ROWS])
