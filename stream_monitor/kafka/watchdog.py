"""A last resort against Kafka client calls that block past their own timeout.

librdkafka 2.16's `send_offsets_to_transaction()` can wait forever once the group coordinator
it cached has gone away (librdkafka issues #5456, #5511): seen here after a broker restart, the
call never returned and SIGTERM could not stop the process (signal handlers run between Python
bytecodes, never inside the C call). The runtime renews its producer after an outage, which
avoids it; if a guarded call still outlives its timeout by `grace`, the watchdog logs why and ends
the process with exit code 1. Nothing unfinished was committed (the open transaction is aborted
by the broker), so a restart, which an orchestrator does on exit, recovers exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, grace: float = 30.0, exit: Callable[[int], None] = os._exit) -> None:
        self.grace = grace
        self._exit = exit
        self._call: tuple[str, float] | None = None  # (what, deadline)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, what: str, timeout: float) -> Iterator[None]:
        """Around one blocking call that promises to return within `timeout` seconds."""
        with self._lock:
            self._call = (what, time.monotonic() + timeout + self.grace)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._call = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                call = self._call
            if call is not None and time.monotonic() > call[1]:
                log.error(
                    "stopping: %s blocked %.0fs past its timeout (librdkafka #5456/#5511: a "
                    "stale coordinator); exiting so that a restart recovers",
                    call[0],
                    self.grace,
                )
                logging.shutdown()
                self._exit(1)
                return
