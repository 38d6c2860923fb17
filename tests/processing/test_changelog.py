"""Changelog records: a partition's state, signed per record, bounded in size, read back exactly."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_monitor.core.events import LABEL, PREDICTION
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.errors import StateError
from stream_monitor.processing import changelog, partition
from stream_monitor.processing.changelog import (
    JOIN_HEAD,
    OFFSETS_HEADER,
    SIGNATURE_HEADER,
    InvalidRecords,
    PartitionWriter,
    RecordCheck,
    encode_tag,
    restore,
)
from stream_monitor.processing.partition import PartitionProcessor
from tests.helpers import STATE_KEY, config, prediction, records

CODEC = StateCodec(STATE_KEY)


class Log:
    """A compacted changelog partition: every record written, and the latest per key."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.written: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]] = []

    def append(self, written: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
        self.written.extend(written)

    def latest(self, check: RecordCheck | None = None) -> dict[bytes, tuple[bytes | None, bytes]]:
        check = check or RecordCheck(CODEC, InvalidRecords("stop"))
        found: dict[bytes, tuple[bytes | None, bytes]] = {}
        for key, value, headers in self.written:
            if check.tag_of(self.partition, key, value, headers, "test") is not None:
                found[key] = (value, dict(headers)[OFFSETS_HEADER])
        return found

    def live_keys(self) -> set[bytes]:
        return {key for key, (value, _) in self.latest().items() if value is not None}


def processor(settings: Any, partition: int = 0, max_bytes: int = 900_000) -> PartitionProcessor:
    writer = PartitionWriter(CODEC, partition, max_bytes)
    return PartitionProcessor(partition, Monitor(settings), writer)


def restored(settings: Any, log: Log, max_bytes: int = 900_000) -> Monitor:
    monitor = Monitor(settings)
    for changes in restore(CODEC, log.partition, log.latest(), max_bytes).changes:
        monitor.restore(changes)
    return monitor


def run(proc: PartitionProcessor, kind: str, events: list[dict[str, Any]], start: int) -> None:
    batch = [r._replace(offset=start + r.offset) for r in records(kind, events)]
    proc.add(0 if kind == PREDICTION else 1, batch)
    proc.process((True, True))


def test_a_key_larger_than_a_record_is_split_into_parts_and_read_back_whole() -> None:
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=20_000)
    features = {f"feature_{i:03d}": float(i) for i in range(120)}
    run(proc, PREDICTION, [prediction(i, features=features) for i in range(40)], 0)
    log = Log()
    log.append(list(proc.checkpoint()))
    parts = sorted(key for key in log.live_keys() if key.startswith(b"k:m"))
    assert len(parts) > 3 and parts[0] == b"k:m" and parts[1] == b"k:m#1"
    assert all(len(value or b"") <= 20_000 for _, value, _ in log.written)
    assert restored(settings, log, 20_000).snapshot() == proc.monitor.snapshot()


def test_a_key_with_the_most_categorical_features_is_split_and_read_back_whole() -> None:
    """500 features of 32 categories each (about 400 kB of categories): they travel with the
    signals, in parts that each fit a record, not in the key's head record."""
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=150_000)
    rng = random.Random(2)
    events = [
        prediction(i, features={f"f{j:03d}": f"value-{rng.randrange(32)}" for j in range(500)})
        for i in range(700)
    ]
    run(proc, PREDICTION, events, 0)
    state = proc.monitor.keys["m"]
    known = [len(slot.categories.names) for slot in state.features.values()]  # type: ignore[union-attr]
    assert len(known) == 500 and min(known) >= 25  # (a value its first 100 missed is other)
    log = Log()
    log.append(list(proc.checkpoint()))
    assert len([key for key in log.live_keys() if key.startswith(b"k:m")]) >= 2
    assert all(len(value or b"") <= 150_000 for _, value, _ in log.written)
    assert restored(settings, log, 150_000).snapshot() == proc.monitor.snapshot()


def test_a_key_that_shrinks_deletes_its_spare_parts() -> None:
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=20_000)
    features = {f"feature_{i:03d}": float(i) for i in range(120)}
    run(proc, PREDICTION, [prediction(0, features=features)], 0)
    log = Log()
    log.append(list(proc.checkpoint()))
    before = len([k for k in log.live_keys() if k.startswith(b"k:m#")])
    proc.writer.max_record_bytes = 900_000  # now it fits in one record
    run(proc, PREDICTION, [prediction(1, features=features)], 1)
    log.append(list(proc.checkpoint()))
    assert before >= 2
    assert [k for k in log.live_keys() if k.startswith(b"k:m")] == [b"k:m"]
    assert restored(settings, log).snapshot() == proc.monitor.snapshot()


def test_join_entries_are_a_few_records_per_checkpoint_and_snapshots_replace_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(changelog, "COMPACT_MIN", 300)
    settings = config().monitor_settings()
    proc = processor(settings)
    log = Log()
    offset = label_offset = 0
    for checkpoint in range(12):
        events = [prediction(offset + i) for i in range(200)]
        run(proc, PREDICTION, events, offset)
        offset += 200
        labels = [
            {"prediction_id": f"p{i}", "model": "m", "label": 1}
            for i in range(checkpoint * 150, checkpoint * 150 + 150)
        ]
        proc.add(1, [r._replace(offset=label_offset + r.offset) for r in records(LABEL, labels)])
        proc.process((True, True))
        label_offset += 150
        written = list(proc.checkpoint())
        join_records = [key for key, _, _ in written if key.startswith(b"j:")]
        # one delta record (200 added + 150 matched), or a snapshot plus deletions of the log
        assert len(join_records) == 1 or JOIN_HEAD in join_records
        log.append(written)
        assert restored(settings, log).snapshot() == proc.monitor.snapshot(), checkpoint
    live_join = [k for k in log.live_keys() if k.startswith(b"j:")]
    assert JOIN_HEAD in live_join and len(live_join) < 8  # old deltas were deleted
    assert proc.monitor.join.pending_predictions() == [("m", f"p{i}") for i in range(1800, 2400)]


def test_a_snapshot_dumps_the_join_a_batch_at_a_time_and_reads_back_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot of a join larger than SNAPSHOT_ROWS is dumped and encoded in batches (the
    last one partial), in queue order: the restored join is the same, queue order included."""
    monkeypatch.setattr(changelog, "COMPACT_MIN", 300)
    monkeypatch.setattr(changelog, "COMPACT_RATIO", 0)  # a snapshot once 300 entries changed
    monkeypatch.setattr(changelog, "SNAPSHOT_ROWS", 70)
    monkeypatch.setattr(partition, "SNAPSHOT_ROWS", 70)
    settings = config().monitor_settings()
    proc = processor(settings)
    log = Log()
    run(proc, PREDICTION, [prediction(i) for i in range(250)], 0)
    log.append(list(proc.checkpoint()))
    run(proc, PREDICTION, [prediction(i) for i in range(250, 420)], 250)
    written = list(proc.checkpoint())  # 420 entries logged: more than COMPACT_MIN, a snapshot
    snapshot = [key for key, _, _ in written if key.startswith(b"j:s:")]
    assert len(snapshot) == 6  # 420 rows, 70 at a time: one record per batch
    log.append(written)
    monitor = restored(settings, log)
    assert monitor.join.pending_predictions() == [("m", f"p{i}") for i in range(420)]
    assert monitor.snapshot() == proc.monitor.snapshot()


def test_lazy_changes_are_the_changes() -> None:
    """`take_changes(lazy=True)` dumps each key when it is read, and reads the same."""
    settings = config().monitor_settings()
    eager, lazy = Monitor(settings), Monitor(settings)
    for start in (0, 300):
        events = [prediction(i, model=f"m{i % 3}") for i in range(start, start + 300)]
        eager.process(records(PREDICTION, events))
        lazy.process(records(PREDICTION, events))
        expected, changes = eager.take_changes(), lazy.take_changes(lazy=True)
        assert list(changes.keys) == ["m0", "m1", "m2"] and len(changes.keys) == 3
        assert dict(changes.keys.items()) == expected.keys
        assert (changes.meta, changes.join) == (expected.meta, expected.join)


def test_join_entries_beyond_a_record_are_cut_into_records_that_fit_and_read_back() -> None:
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=2_000)
    log = Log()
    events = [{**prediction(i), "prediction": "x" * (i % 97)} for i in range(400)]
    run(proc, PREDICTION, events, 0)
    written = list(proc.checkpoint())
    join_values = [value for key, value, _ in written if key.startswith(b"j:")]
    assert len(join_values) > 10  # ~40 bytes per entry, with uneven predictions
    assert all(value is not None and len(value) <= 2_000 for value in join_values)
    log.append(written)
    monitor = restored(settings, log, max_bytes=2_000)
    assert monitor.join.pending_predictions() == [("m", f"p{i}") for i in range(400)]
    assert monitor.snapshot() == proc.monitor.snapshot()


def test_many_join_entries_larger_than_their_sample_still_fit_and_read_back() -> None:
    """A long list is cut by the size of its first rows; rows larger than those (here three
    times) make slices overflow, and those are halved until they fit."""
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=20_000)
    log = Log()
    events = [
        {**prediction(i), "prediction": "x" * (i % 40 if i < 600 else 120)} for i in range(3_000)
    ]
    run(proc, PREDICTION, events, 0)
    written = list(proc.checkpoint())
    join_values = [value for key, value, _ in written if key.startswith(b"j:")]
    assert len(join_values) > 20
    assert all(value is not None and len(value) <= 20_000 for value in join_values)
    log.append(written)
    monitor = restored(settings, log, max_bytes=20_000)
    assert monitor.join.pending_predictions() == [("m", f"p{i}") for i in range(3_000)]
    assert monitor.snapshot() == proc.monitor.snapshot()


def test_restore_keeps_the_order_of_both_join_queues() -> None:
    settings = config().monitor_settings()
    proc = processor(settings)
    log = Log()
    run(proc, PREDICTION, [prediction(i) for i in range(5)], 0)
    log.append(list(proc.checkpoint()))
    run(proc, PREDICTION, [prediction(i) for i in (2, 6)], 5)  # p2 is a duplicate: no change
    label = {"prediction_id": "p1", "model": "m", "label": 1}
    early = {"prediction_id": "q9", "model": "m", "label": 1}
    proc.add(1, records(LABEL, [label, early]))
    proc.process((True, True))
    log.append(list(proc.checkpoint()))
    monitor = restored(settings, log)
    assert monitor.join.pending_predictions() == [("m", f"p{i}") for i in (0, 2, 3, 4, 6)]
    assert monitor.join.waiting_labels() == [("m", "q9")]


def test_a_missing_part_or_delta_is_an_error_not_a_silent_loss() -> None:
    settings = config().monitor_settings()
    proc = processor(settings, max_bytes=20_000)
    features = {f"feature_{i:03d}": float(i) for i in range(120)}
    run(proc, PREDICTION, [prediction(0, features=features)], 0)
    log = Log()
    log.append(list(proc.checkpoint()))
    run(proc, PREDICTION, [prediction(1, features=features)], 1)
    log.append(list(proc.checkpoint()))
    latest = log.latest()
    without_part = {k: v for k, v in latest.items() if k != b"k:m#1"}
    with pytest.raises(StateError, match="missing part 1"):
        restore(CODEC, 0, without_part, 20_000)
    deltas = sorted(k for k in latest if k.startswith(b"j:d:"))
    without_delta = {k: v for k, v in latest.items() if k != deltas[0]}
    with pytest.raises(StateError, match="missing delta 0"):
        restore(CODEC, 0, without_delta, 20_000)


def test_forged_unsigned_moved_and_old_records_are_rejected_or_skipped() -> None:
    settings = config().monitor_settings()
    proc = processor(settings)
    run(proc, PREDICTION, [prediction(0)], 0)
    genuine = list(proc.checkpoint())
    key, value, headers = next(r for r in genuine if r[0] == b"k:m")
    tag = dict(headers)[OFFSETS_HEADER]
    assert value is not None
    forgeries = {
        "unsigned tombstone": (key, None, [(OFFSETS_HEADER, tag)]),
        "tombstone signed for another key": (
            key,
            None,
            [
                (OFFSETS_HEADER, tag),
                (SIGNATURE_HEADER, CODEC.tombstone_signature(b"k:x", b"0|" + tag)),
            ],
        ),
        "moved to another key": (b"k:other", value, headers),
        "offsets header changed": (key, value, [(OFFSETS_HEADER, encode_tag((0, 0)))]),
        "no offsets header": (key, value, []),
        "another signing key": (
            key,
            StateCodec(b"an-attackers-own-key!").encode(key, {"model": "m"}, b"0|" + tag),
            headers,
        ),
        "no key": (None, value, headers),
    }
    for name, (forged_key, forged_value, forged_headers) in forgeries.items():
        strict = RecordCheck(CODEC, InvalidRecords("stop"))
        with pytest.raises(StateError, match="on_invalid_record=stop"):
            strict.tag_of(0, forged_key, forged_value, forged_headers, "t/0@9")
        lenient = RecordCheck(CODEC, InvalidRecords("skip"))
        assert lenient.tag_of(0, forged_key, forged_value, forged_headers, "t/0@9") is None, name
        assert lenient.invalid.rejected == 1
    # a genuine record moved to another partition does not verify either
    with pytest.raises(StateError, match="signature does not match"):
        RecordCheck(CODEC, InvalidRecords("stop")).tag_of(1, key, value, headers, "t/1@0")


def test_skipped_forgeries_leave_the_genuine_state_in_place() -> None:
    """An unsigned tombstone per key (copying the original headers) used to wipe the state."""
    settings = config().monitor_settings()
    proc = processor(settings)
    run(proc, PREDICTION, [prediction(i, features={"x": float(i)}) for i in range(50)], 0)
    log = Log()
    log.append(list(proc.checkpoint()))
    genuine = list(log.written)
    log.written += [(key, None, headers) for key, _, headers in genuine]  # unsigned deletions
    check = RecordCheck(CODEC, InvalidRecords("skip"))
    latest = log.latest(check)
    assert check.invalid.rejected == len(genuine)
    monitor = Monitor(settings)
    for changes in restore(CODEC, 0, latest).changes:
        monitor.restore(changes)
    assert monitor.snapshot() == proc.monitor.snapshot()
