"""A partition's state as signed changelog records, and back.

Records of one checkpoint all carry, in the `stream_monitor-offsets` header, the input offsets
the state reflects (the tag); a restore accepts a record only when its tag is not beyond the
group's committed offsets. Every record is signed over its key, value, partition and tag
(`core.state.StateCodec`); deletions carry their signature in a header. Keys:

- `meta`: the monitor's clock; `processor`: the merge's stream times and the runtime's own data.
- `k:<monitor key>`: one monitor key (model [+ version] [+ segment]); a key whose state is larger
  than one record can hold is split into `k:<monitor key>#<n>` parts, the first naming the count.
- the label join as a log: `j:d:<seq>:<part>`, per checkpoint, the join entries that changed (in
  order); now and then a snapshot of every pending entry, `j:s:<generation>:<part>`, named by
  `j:head`, replaces the log so far (whose records are then deleted). A checkpoint writes a few
  records for the join, however many entries changed, and a restore reads the last snapshot and
  the log after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from stream_monitor.core.state import JoinEntry, StateChanges, StateCodec
from stream_monitor.errors import StateError

log = logging.getLogger(__name__)

OFFSETS_HEADER = "stream_monitor-offsets"
SIGNATURE_HEADER = "stream_monitor-signature"
META_KEY = b"meta"
PROCESSOR_KEY = b"processor"
KEY_PREFIX = "k:"
PART_SEPARATOR = "#"
JOIN_HEAD = b"j:head"
JOIN_DELTA = "j:d:"
JOIN_SNAPSHOT = "j:s:"
# A snapshot replaces the log once the log holds more entries than this many times the join
# (and at least COMPACT_MIN): writing the join costs O(changes), amortised.
COMPACT_RATIO = 2
COMPACT_MIN = 20_000
# What one record may hold, unless told otherwise: librdkafka's message.max.bytes (1,000,000)
# minus room for the key and headers.
DEFAULT_MAX_RECORD_BYTES = 1_000_000 - 65_536

Tag = tuple[int, ...]
Headers = list[tuple[str, bytes]]
ChangelogRecord = tuple[bytes, bytes | None, Headers]


def encode_tag(tag: Tag) -> bytes:
    return ",".join(str(value) for value in tag).encode()


def decode_tag(raw: bytes | None) -> Tag | None:
    if not raw:
        return None
    try:
        return tuple(int(part) for part in raw.decode().split(","))
    except (ValueError, UnicodeDecodeError):
        return None


def within(tag: Tag | None, limit: Tag) -> bool:
    """A state record counts only if the offsets it reflects were all committed."""
    return (
        tag is not None
        and len(tag) == len(limit)
        and all(t <= c for t, c in zip(tag, limit, strict=True))
    )


def signing_context(partition: int, tag: bytes) -> bytes:
    return b"%d|%s" % (partition, tag)


class InvalidRecords:
    """What to do with a changelog record that does not verify: stop, or leave it out.

    `stop` (the default) raises a StateError naming the record; `skip` logs it, counts it in
    `rejected`, and the restore goes on with what verifies.
    """

    def __init__(self, policy: str = "stop") -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.rejected = 0

    def reject(self, where: str, error: StateError) -> None:
        if self.policy == "stop":
            raise StateError(f"{error} ({where}; state.on_invalid_record=stop)") from error
        self.rejected += 1
        log.warning("left out a state record that does not verify: %s (%s)", error, where)


class RecordCheck:
    """Verifies changelog records as they are read, before any of them can replace another."""

    def __init__(self, codec: StateCodec, invalid: InvalidRecords) -> None:
        self.codec = codec
        self.invalid = invalid

    def tag_of(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        where: str,
    ) -> Tag | None:
        """The tag of a record that verifies; None (or StateError) for one that does not."""
        found = dict(headers or [])
        raw_tag = found.get(OFFSETS_HEADER)
        try:
            if key is None:
                raise StateError("state record without a key")
            tag = decode_tag(raw_tag)
            if tag is None or raw_tag is None:
                raise StateError("state record without the offsets it reflects (unsigned)")
            context = signing_context(partition, raw_tag)
            if value is None:
                self.codec.check_tombstone(key, found.get(SIGNATURE_HEADER), context)
            else:
                self.codec.verify(key, value, context)
            return tag
        except StateError as error:
            self.invalid.reject(f"{where} key={key!r}", error)
            return None


@dataclass
class Restored:
    """A partition's state read back: the changes that rebuild its monitor, in order."""

    changes: list[StateChanges]
    processor: dict[str, Any]
    writer: PartitionWriter


@dataclass
class _JoinLog:
    """Where the join's log stands: the next delta, the live snapshot, what the log holds."""

    seq: int = 0
    generation: int = 0
    parts: int = 0
    start: int = 0  # the first delta after the snapshot
    entries: int = 0  # entries in the log since the snapshot
    delta_keys: list[bytes] = field(default_factory=list)


class PartitionWriter:
    """Turns one partition's state changes into changelog records.

    It remembers what it wrote (parts per key, where the join's log stands), so a key that
    shrinks gets its spare parts deleted and the log knows when to take a snapshot. Build it with
    `PartitionWriter(codec, partition)` for a partition with no state, or from `restore()`.
    """

    def __init__(
        self,
        codec: StateCodec,
        partition: int,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.codec = codec
        self.partition = partition
        self.max_record_bytes = max_record_bytes
        self.key_parts: dict[str, int] = {}
        self.join = _JoinLog()

    def records(
        self,
        changes: StateChanges,
        processor: dict[str, Any],
        tag: Tag,
        live_join: Callable[[], Iterable[JoinEntry]],
        live_count: int,
    ) -> Iterator[ChangelogRecord]:
        """The records of one checkpoint: every change, plus the processor record.

        Made as they are read, so that a checkpoint of many keys or a snapshot of a large join
        holds a record at a time, not all of them: read them all, before anything else
        changes the state."""
        raw_tag = encode_tag(tag)
        context = signing_context(self.partition, raw_tag)
        header = (OFFSETS_HEADER, raw_tag)
        encode = self.codec.encode

        def deletion(key: bytes) -> ChangelogRecord:
            signature = self.codec.tombstone_signature(key, context)
            return (key, None, [header, (SIGNATURE_HEADER, signature)])

        yield (PROCESSOR_KEY, encode(PROCESSOR_KEY, processor, context), [header])
        if changes.meta is not None:
            yield (META_KEY, encode(META_KEY, changes.meta, context), [header])
        for key_id, data in changes.keys.items():
            yield from self._key_records(key_id, data, context, header, deletion)
        if changes.join:
            for key, payload in self._join_records(changes.join, live_join, live_count):
                if payload is None:
                    yield deletion(key)
                else:
                    yield (key, self.codec.encode_json(key, payload, context), [header])

    # --- monitor keys ------------------------------------------------------------------------
    def _key_records(
        self,
        key_id: str,
        data: dict[str, Any] | None,
        context: bytes,
        header: tuple[str, bytes],
        deletion: Callable[[bytes], ChangelogRecord],
    ) -> Iterator[ChangelogRecord]:
        name = KEY_PREFIX + key_id
        head_key = name.encode()
        before = self.key_parts.get(key_id, 1)
        parts = 1
        if data is None:
            yield deletion(head_key)
        else:
            encoded = self.codec.encode(head_key, data, context)
            if len(encoded) + len(head_key) <= self.max_record_bytes:
                yield (head_key, encoded, [header])
            else:
                groups = self._split(data["signals"], head_key, context)
                parts = len(groups)
                head = {**data, "signals": groups[0], "parts": parts}
                yield (head_key, self.codec.encode(head_key, head, context), [header])
                for index, group in enumerate(groups[1:], start=1):
                    part_key = f"{name}{PART_SEPARATOR}{index}".encode()
                    value = self.codec.encode(part_key, {"signals": group}, context)
                    yield (part_key, value, [header])
        for index in range(parts, before):  # parts the key no longer has
            yield deletion(f"{name}{PART_SEPARATOR}{index}".encode())
        self.key_parts[key_id] = parts

    def _split(self, signals: list[Any], key: bytes, context: bytes) -> list[list[Any]]:
        """Groups of signals whose records each fit (a group may hold one signal at least)."""
        if len(signals) <= 1:
            size = len(self.codec.encode(key, {"signals": signals}, context))
            if size > self.max_record_bytes:
                raise StateError(
                    f"one signal of {key.decode(errors='replace')} needs {size} bytes, more than "
                    f"a state record can hold ({self.max_record_bytes})"
                )
            return [signals]
        if len(self.codec.encode(key, {"signals": signals}, context)) <= self.max_record_bytes:
            return [signals]
        middle = len(signals) // 2
        return self._split(signals[:middle], key, context) + self._split(
            signals[middle:], key, context
        )

    # --- the join's log ----------------------------------------------------------------------
    def _join_records(
        self,
        entries: list[JoinEntry],
        live_join: Callable[[], Iterable[JoinEntry]],
        live_count: int,
    ) -> Iterator[tuple[bytes, bytes | None]]:
        journal = self.join
        journal.entries += len(entries)
        if journal.entries > max(COMPACT_RATIO * live_count, COMPACT_MIN):
            yield from self._snapshot(live_join())
            return
        seq = journal.seq
        journal.seq += 1
        for part, payload in enumerate(self._chunks(entries)):
            key = f"{JOIN_DELTA}{seq:012d}:{part:06d}".encode()
            journal.delta_keys.append(key)
            yield (key, payload)

    def _snapshot(self, live: Iterable[JoinEntry]) -> Iterator[tuple[bytes, bytes | None]]:
        """Every pending entry, SNAPSHOT_ROWS at a time (1M entries as rows are ~250 MB of
        Python objects), then the head that names the snapshot, then the deletions."""
        journal = self.join
        old_generation, old_parts = journal.generation, journal.parts
        generation = old_generation + 1
        parts = 0
        rows = iter(live)
        while batch := list(islice(rows, SNAPSHOT_ROWS)):
            for payload in self._chunks(batch):
                yield (f"{JOIN_SNAPSHOT}{generation:08d}:{parts:06d}".encode(), payload)
                parts += 1
        head = orjson.dumps({"generation": generation, "parts": parts, "start": journal.seq})
        yield (JOIN_HEAD, head)
        for key in journal.delta_keys:
            yield (key, None)
        for part in range(old_parts):
            yield (f"{JOIN_SNAPSHOT}{old_generation:08d}:{part:06d}".encode(), None)
        journal.generation, journal.parts, journal.start = generation, parts, journal.seq
        journal.entries = 0
        journal.delta_keys = []

    def _chunks(self, entries: list[JoinEntry]) -> Iterable[bytes]:
        """JSON arrays of [model, prediction_id, entry] rows that each fit in a record.

        One `orjson.dumps` per chunk, not per entry (25x cheaper per entry): a list whose
        sample says it needs several records is cut into even slices of about 80% of one;
        otherwise the whole list is encoded, and cut if it does not fit after all. A slice
        that overflows (entries of uneven size) is halved again."""
        if entries:
            yield from _fitting(entries, self.max_record_bytes - 128)


SAMPLE_ROWS = 256  # rows encoded to estimate a list's size
SNAPSHOT_ROWS = 20_000  # join entries dumped and encoded at a time in a snapshot


def _fitting(rows: list[list[Any]], limit: int) -> Iterable[bytes]:
    if len(rows) > 2 * SAMPLE_ROWS:
        estimate = len(orjson.dumps(rows[:SAMPLE_ROWS])) * len(rows) / SAMPLE_ROWS
        if estimate > 2 * limit:  # not encoded whole only to be cut and encoded again
            step = -(-len(rows) // (int(estimate / (0.8 * limit)) + 1))
            for start in range(0, len(rows), step):
                yield from _fitting(rows[start : start + step], limit)
            return
    payload = orjson.dumps(rows)
    if len(payload) <= limit or len(rows) == 1:
        yield payload
        return
    slices = min(len(rows), len(payload) // limit + 1)
    step = -(-len(rows) // slices)
    if step == len(rows):
        step = -(-len(rows) // 2)
    for start in range(0, len(rows), step):
        yield from _fitting(rows[start : start + step], limit)


def restore(
    codec: StateCodec,
    partition: int,
    latest: Mapping[bytes, tuple[bytes | None, bytes]],
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Restored:
    """Rebuild a partition's state from the latest accepted record of each key.

    `latest`: key -> (value, raw tag) of records already verified (`RecordCheck`); deleted keys
    have a None value. Raises StateError when the records do not fit together (a part or a
    delta missing).
    """
    writer = PartitionWriter(codec, partition, max_record_bytes)

    def data(key: bytes) -> Any:
        value, _ = latest[key]
        return None if value is None else codec.parse(value)

    processor: dict[str, Any] = {}
    restored_keys: dict[str, dict[str, Any] | None] = {}
    first = StateChanges(keys=restored_keys)
    heads: dict[str, tuple[dict[str, Any], bytes]] = {}
    parts: dict[str, dict[int, tuple[list[Any], bytes]]] = {}
    deltas: list[tuple[int, int, bytes]] = []
    head: dict[str, Any] | None = None
    for key, (value, raw_tag) in latest.items():
        if value is None:
            continue
        text = key.decode()
        if key == PROCESSOR_KEY:
            processor = data(key)
        elif key == META_KEY:
            first.meta = data(key)
        elif key == JOIN_HEAD:
            head = data(key)
        elif text.startswith(KEY_PREFIX):
            name, _, number = text[len(KEY_PREFIX) :].partition(PART_SEPARATOR)
            if number:
                parts.setdefault(name, {})[int(number)] = (data(key)["signals"], raw_tag)
            else:
                heads[name] = (data(key), raw_tag)
        elif text.startswith(JOIN_DELTA):
            seq_text, _, part_text = text[len(JOIN_DELTA) :].partition(":")
            deltas.append((int(seq_text), int(part_text), key))
        elif not text.startswith(JOIN_SNAPSHOT):
            raise StateError(f"unknown state key {text!r} in partition {partition}")
    for name, (key_data, tag) in heads.items():
        count = key_data.pop("parts", 1)
        found = parts.get(name, {})
        signals = list(key_data["signals"])
        for index in range(1, count):
            if index not in found or found[index][1] != tag:
                raise StateError(f"state of key {name!r} is missing part {index} of {count}")
            signals.extend(found[index][0])
        key_data["signals"] = signals
        restored_keys[name] = key_data
        writer.key_parts[name] = count
    changes = [first]
    journal = writer.join
    if head is not None:
        journal.generation, journal.parts = head["generation"], head["parts"]
        journal.start = journal.seq = head["start"]
        snapshot: list[JoinEntry] = []
        for index in range(journal.parts):
            key = f"{JOIN_SNAPSHOT}{journal.generation:08d}:{index:06d}".encode()
            if key not in latest or latest[key][0] is None:
                raise StateError(f"join snapshot part {index} is missing in partition {partition}")
            snapshot.extend(data(key))
        changes.append(StateChanges(join=snapshot))
    deltas.sort()
    expected = journal.start
    for seq, _part, key in deltas:
        journal.delta_keys.append(key)  # even stale ones: the next snapshot deletes them
        if seq < journal.start:
            continue
        if seq > expected:
            raise StateError(f"the join log of partition {partition} is missing delta {expected}")
        entries = data(key)
        journal.entries += len(entries)
        changes.append(StateChanges(join=entries))
        expected = seq + 1
    journal.seq = max(expected, journal.seq)
    return Restored(changes=changes, processor=processor, writer=writer)
