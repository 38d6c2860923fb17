"""UUIDv7 prediction ids: version and variant bits, creation time, strict order within a process."""

from __future__ import annotations

import os
import uuid

from stream_monitor.client.ids import Uuid7, uuid7_time_ms


def test_ids_are_rfc_9562_version_7_with_the_creation_time() -> None:
    generator = Uuid7(clock_ns=lambda: 1_767_225_600_123_456_789)
    value = generator()
    parsed = uuid.UUID(value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert str(parsed) == value
    assert uuid7_time_ms(value) == 1_767_225_600_123


def test_ids_increase_strictly_within_one_millisecond_and_across_a_clock_step_back() -> None:
    times = iter([5_000_000] * 5000 + [4_000_000] * 10 + [6_000_000] * 3)
    generator = Uuid7(clock_ns=lambda: next(times))
    ids = [generator() for _ in range(5013)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # 4,096 counter values per millisecond: past them the id borrows the next millisecond.
    assert uuid7_time_ms(ids[0]) == 5 and uuid7_time_ms(ids[4999]) == 6


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    generator = Uuid7(clock_ns=lambda: 7_000_000)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: same clock, same counter state, reseeded random bits
        os.write(write, generator().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    parent = generator()
    assert uuid7_time_ms(child) == uuid7_time_ms(parent) == 7  # same millisecond...
    assert child != parent  # ...different random bits
