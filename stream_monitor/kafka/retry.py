"""Retrying while the broker is unreachable: backoff, one clear log line per attempt, a limit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaException

from stream_monitor.kafka import KafkaRuntimeError

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_retry(
    what: str,
    action: Callable[[], T],
    *,
    stop: threading.Event,
    give_up_after: float | None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> T:
    """Run `action` until it succeeds. `give_up_after` seconds (None: never) ends it with an error."""
    attempt, delay = 0, first_delay
    started = time.monotonic()
    while True:
        attempt += 1
        try:
            return action()
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise KafkaRuntimeError(f"cannot {what}: {error.str()}") from exc
            reason = error.str()
        elapsed = time.monotonic() - started
        if give_up_after is not None and elapsed >= give_up_after:
            raise KafkaRuntimeError(
                f"cannot {what}: kafka unreachable for {elapsed:.0f}s ({reason})"
            )
        log.warning(
            "cannot %s (attempt %d, %.0fs so far): %s; retrying in %.0fs",
            what,
            attempt,
            elapsed,
            reason,
            delay,
        )
        if stop.wait(delay):
            raise KafkaRuntimeError(f"stopped while trying to {what}")
        delay = min(delay * 2, max_delay)


def give_up_after(on_broker_down: str, timeout_ms: int | None) -> float | None:
    if on_broker_down != "exit" or timeout_ms is None:
        return None
    return timeout_ms / 1000
