"""Time-ordered prediction ids: UUID version 7 (RFC 9562), which Python 3.10 lacks.

48 bits of Unix time in milliseconds, then a 12-bit counter, then 62 random bits. Ids sort by
creation time, so a topic dump or a database index on `prediction_id` keeps the order in which a
service made its predictions; the counter keeps ids of one process strictly increasing within a
millisecond (RFC 9562 section 6.2, method 1), and the random bits make clashes between
processes negligible.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable

_COUNTER_MAX = 0xFFF


class Uuid7:
    """A callable that returns a new UUIDv7 string each call; thread-safe, monotonic per instance."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._last_ms = -1
        self._counter = 0
        self._lock = threading.Lock()
        # Uniqueness, not secrecy, is what ids need: a seeded generator is 7x cheaper than
        # os.urandom per id. A forked child reseeds, or it would repeat its parent's bits.
        self._random = random.Random(os.urandom(16))
        os.register_at_fork(after_in_child=_reseeder(weakref.ref(self)))

    def __call__(self) -> str:
        with self._lock:
            bits = self._random.getrandbits(64)
            now = self._clock_ns() // 1_000_000
            if now > self._last_ms:
                self._last_ms = now
                # A random start leaves room to count up (RFC 9562: leftmost counter bit zero).
                self._counter = bits >> 53  # 11 bits
            else:  # same millisecond, or the clock stepped back: keep counting from the last id
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = 0
            millis, counter = self._last_ms, self._counter
        value = (
            (millis & 0xFFFF_FFFF_FFFF) << 80
            | 0x7 << 76
            | counter << 64
            | 0b10 << 62
            | bits & 0x3FFF_FFFF_FFFF_FFFF
        )
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def uuid7_time_ms(value: str) -> int:
    """The creation time (Unix ms) an id carries."""
    return int(value.replace("-", "")[:12], 16)


def _reseeder(generator: weakref.ref[Uuid7]) -> Callable[[], None]:
    def reseed() -> None:
        alive = generator()
        if alive is not None:
            alive._random.seed(os.urandom(16))

    return reseed


uuid7 = Uuid7()
"""The process-wide generator."""
