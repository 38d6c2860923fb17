"""Whether the brokers answer: librdkafka says when they stop, a probe says when they are back.

librdkafka reconnects by itself, so an outage is not an error to handle but a state to report:
one log line at a growing interval while it lasts (never one per failed connection), `/readyz`
false meanwhile, and, with `kafka.on_broker_down: exit`, a clean stop once it lasted too long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

from stream_monitor.kafka import KafkaRuntimeError

log = logging.getLogger(__name__)

DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE})
PROBE_EVERY = 2.0  # seconds between probes while the brokers are down
MAX_REPORT_INTERVAL = 30.0


class BrokerReachability:
    """`give_up_after`: seconds of outage after which `check` raises (None: never)."""

    def __init__(self, bootstrap_servers: str, give_up_after: float | None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.give_up_after = give_up_after
        self.down_since: float | None = None
        self._next_report = 0.0
        self._next_probe = 0.0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def on_client_error(self, error: KafkaError) -> None:
        """librdkafka's error_cb (any client): report outages at a growing interval."""
        if error.code() in DOWN:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = self._next_report = now
            if now >= self._next_report:
                down = now - self.down_since
                log.warning(
                    "kafka unreachable bootstrap_servers=%s for %.0fs: %s; retrying",
                    self.bootstrap_servers,
                    down,
                    error.str(),
                )
                self._next_report = now + min(max(down, 1.0), MAX_REPORT_INTERVAL)
        elif error.fatal():
            log.error("fatal kafka error: %s", error.str())
        else:
            log.warning("kafka error: %s", error.str())

    def reached(self) -> None:
        """Records arrived: the brokers answer."""
        self.down_since = None

    def check(self, probe: Callable[[], None]) -> None:
        """While down: probe now and then (`probe` raises KafkaException when it fails), and
        raise KafkaRuntimeError once the outage has lasted longer than `give_up_after`."""
        since = self.down_since
        if since is None:
            return
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_EVERY
            try:
                probe()
                log.info("kafka reachable again after %.0fs", now - since)
                self.down_since = None
                return
            except KafkaException:
                pass
        if self.give_up_after is not None and now - since > self.give_up_after:
            raise KafkaRuntimeError(
                f"kafka unreachable for more than {self.give_up_after:.0f}s "
                f"(kafka.on_broker_down=exit)"
            )
