"""Sinks and the worker that drives each one: its own queue, thread, retries and give-up clock.

Why one worker per sink: a sink that fails (Alertmanager down, a webhook answering 503) retries
with backoff on its own thread, while the others keep delivering from their own queues. The
offsets committed are, per partition, the lowest offset any sink still has to take (at least
once: nothing is committed before every sink has it, accepted or dead-lettered). Each sink's own
position travels in the commit's metadata, so after a restart a sink is re-sent only what it had
not taken at the last commit, not everything the slowest sink still owed (see `ForwardService`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from stream_monitor.forward import ForwardError
from stream_monitor.forward.records import AlertRecord

log = logging.getLogger(__name__)


class SinkError(ForwardError):
    """A delivery that did not succeed. `reason` is a short code for metrics and dead letters
    (`unreachable`, `timeout`, `http_503`, ...); `retryable` False means retrying cannot help."""

    def __init__(self, reason: str, detail: str, *, retryable: bool = True) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


class Sink(Protocol):
    """A destination for alerts. All calls come from the sink's own worker thread."""

    name: str

    def deliver(self, record: AlertRecord) -> None:
        """Hand over one alert; raise `SinkError` when it was not taken."""

    def remember(self, record: AlertRecord) -> None:
        """Learn from an alert delivered before a restart, without sending it (state rebuild).
        Periodic work waits until the worker has no more of these queued."""

    def next_due(self) -> float | None:
        """Monotonic time of the sink's next periodic work (e.g. re-posting), None for none."""

    def run_due(self, now: float) -> None:
        """Do the periodic work; a `SinkError` is logged and the work tried again later, any
        other error stops the forwarder (a bug would fail the same way every time)."""

    def forget(self, partitions: set[int]) -> None:
        """Drop what was learnt from these partitions: another instance owns them now."""

    def close(self) -> None: ...


class BaseSink:
    """Defaults for sinks without state or periodic work."""

    name = "sink"

    def remember(self, record: AlertRecord) -> None:
        return None

    def next_due(self) -> float | None:
        return None

    def run_due(self, now: float) -> None:
        return None

    def forget(self, partitions: set[int]) -> None:
        return None

    def close(self) -> None:
        return None


class Outcomes(Protocol):
    """Where a worker reports (the forwarder's metrics)."""

    def accepted(self, sink: str, record: AlertRecord) -> None: ...

    def failed(self, sink: str, reason: str) -> None: ...

    def dead_lettered(self, sink: str, reason: str) -> None: ...


DeadLetter = Callable[[AlertRecord, str, SinkError], None]


class SinkWorker:
    """Delivers queued alerts to one sink in offset order, retrying with exponential backoff.

    An alert this sink has not taken `give_up_after` seconds after it was read (or that the sink
    rejects for good) goes to `dead_letter` and counts as done for this sink only. Alerts queued
    behind it are each tried at least once more, so a sink that recovers loses nothing more.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        dead_letter: DeadLetter,
        outcomes: Outcomes,
        give_up_after: float,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self._dead_letter = dead_letter
        self._outcomes = outcomes
        self._give_up_after = give_up_after
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._clock = clock
        self._queue: deque[tuple[bool, AlertRecord]] = deque()
        self._pending: dict[int, deque[int]] = {}  # partition -> offsets offered, not yet done
        self._dropped: set[int] = set()  # partitions revoked while an alert was in flight
        self._to_forget: set[int] = set()  # revoked partitions the sink has not been told of
        self._wake = threading.Condition()
        self._stopping = False
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    # --- called by the consume loop ----------------------------------------------------------
    def start(self) -> SinkWorker:
        self._thread.start()
        return self

    def offer(self, record: AlertRecord, *, deliver: bool = True) -> None:
        """Queue an alert to deliver, or (deliver=False) only to `remember`."""
        with self._wake:
            self._queue.append((deliver, record))
            if deliver:
                self._pending.setdefault(record.partition, deque()).append(record.offset)
                self._dropped.discard(record.partition)
            self._wake.notify()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    @property
    def failure(self) -> str | None:
        """Why the worker thread stopped on its own (the forwarder must stop too), or None."""
        return self._failure

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def first_pending(self, partition: int) -> int | None:
        """The lowest offset of `partition` this sink has not taken yet, None when none."""
        with self._wake:
            pending = self._pending.get(partition)
            return pending[0] if pending else None

    def drop(self, partitions: set[int]) -> None:
        """Forget revoked partitions: their alerts are another instance's now. The sink forgets
        them too (on its own thread, before the next queued alert), or it would keep acting on
        them: re-posting an alert its new owner has since resolved."""
        with self._wake:
            self._queue = deque(item for item in self._queue if item[1].partition not in partitions)
            for partition in partitions:
                self._pending.pop(partition, None)
            self._dropped |= partitions
            self._to_forget |= partitions
            self._wake.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current attempt, then stop; what is not taken stays uncommitted."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sink.close()

    # --- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        """Any error that escapes is fatal: its alerts would stay pending forever (and reading
        pause at `max_pending`), so it is recorded for the consume loop to stop on."""
        try:
            self._work()
        except BaseException as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            log.critical("sink=%s worker stopped", self.name, exc_info=True)

    def _work(self) -> None:
        while True:
            forget, item = self._next()
            if forget:
                self.sink.forget(forget)
            if self._stopping:
                return
            if item is None or item[0]:
                # Not between two `remember` items: a rebuild (thousands of them in a row) is
                # drained first, then the sink's periodic work (re-posting) runs once.
                self._periodic()
            if item is None:
                continue
            deliver, record = item
            if not deliver:
                try:
                    self.sink.remember(record)
                except Exception:  # a sink's bug must not stop its worker
                    log.exception("sink=%s cannot rebuild from alert=%s", self.name, record.id)
            elif self._deliver(record):
                self._done(record)

    def _next(self) -> tuple[set[int], tuple[bool, AlertRecord] | None]:
        """Partitions to forget, and the next queued item (None: periodic work is due)."""
        with self._wake:
            while not self._queue and not self._stopping and not self._to_forget:
                due = self.sink.next_due()
                wait = None if due is None else due - self._clock()
                if wait is not None and wait <= 0:
                    break
                self._wake.wait(wait)
            forget, self._to_forget = self._to_forget, set()
            item = self._queue.popleft() if self._queue and not self._stopping else None
            return forget, item

    def _periodic(self) -> None:
        due = self.sink.next_due()
        if due is None or due > self._clock():
            return
        try:
            self.sink.run_due(self._clock())
        except SinkError as exc:
            log.warning("sink=%s periodic work failed reason=%s: %s", self.name, exc.reason, exc)

    def _deliver(self, record: AlertRecord) -> bool:
        """True once the alert is taken or dead-lettered; False when stopping or revoked."""
        delay, attempt = self._backoff, 0
        while True:
            attempt += 1
            try:
                self._attempt(record)
            except SinkError as exc:
                self._outcomes.failed(self.name, exc.reason)
                waited = self._clock() - record.read_at
                if not exc.retryable or waited >= self._give_up_after:
                    self._give_up(record, exc, attempt, waited)
                    return True
                pause = min(delay, max(self._give_up_after - waited, 0.0))
                log.warning(
                    "sink=%s alert=%s attempt=%d reason=%s: %s; retrying in %.1fs",
                    self.name,
                    record.id,
                    attempt,
                    exc.reason,
                    exc.detail,
                    pause,
                )
                with self._wake:
                    self._wake.wait_for(
                        lambda: self._stopping or record.partition in self._dropped, pause
                    )
                    if self._stopping or record.partition in self._dropped:
                        return False
                delay = min(delay * 2, self._backoff_max)
                continue
            self._outcomes.accepted(self.name, record)
            return True

    def _attempt(self, record: AlertRecord) -> None:
        try:
            self.sink.deliver(record)
        except SinkError:
            raise
        except Exception as exc:
            # A sink that cannot render this alert (a bug, an alert it does not understand)
            # would fail the same way forever: dead-letter it rather than lose the worker.
            log.exception("sink=%s failed on alert=%s", self.name, record.id)
            raise SinkError("sink_error", f"{type(exc).__name__}: {exc}", retryable=False) from exc

    def _give_up(self, record: AlertRecord, error: SinkError, attempts: int, waited: float) -> None:
        log.error(
            "sink=%s alert=%s dead-lettered reason=%s after attempts=%d seconds=%.1f: %s",
            self.name,
            record.id,
            error.reason,
            attempts,
            waited,
            error.detail,
        )
        self._dead_letter(record, self.name, error)
        self._outcomes.dead_lettered(self.name, error.reason)

    def _done(self, record: AlertRecord) -> None:
        with self._wake:
            pending = self._pending.get(record.partition)
            if pending and pending[0] == record.offset:
                pending.popleft()
