"""`AsyncMonitorProducer`: the same SDK for asyncio services, awaiting each event's delivery.

A thin layer over `MonitorProducer` (same validation, partitioning and settings): a daemon
thread serves librdkafka's delivery reports and resolves each event's future on the event loop,
so `await log_prediction(...)` returns once the broker has the event (or raises
`DeliveryError`), and a full local queue is waited out with `asyncio.sleep`, not by blocking the
loop. Many concurrent sends (`asyncio.gather`) share librdkafka's batching.

A failed delivery is reported once: by the `await` of that event, and to `on_delivery_error`,
which runs on the event loop (not on the thread that serves delivery reports). `flush()` and
`close()` raise `DeliveryError` only for events still queued at their timeout.

The first event to a topic reads its partition count from the broker, which blocks the loop
for one metadata round trip; call `await start()` (or enter the context) to do it up front.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message

from stream_monitor.client.contract import LabelFields, PredictionFields
from stream_monitor.client.errors import DeliveryError, QueueFull, UndeliveredEvent
from stream_monitor.client.producer import MonitorProducer, report_failure

if TYPE_CHECKING:
    from typing_extensions import Unpack


class AsyncMonitorProducer:
    """`await log_prediction(...)` / `await log_label(...)`; keyword arguments as `MonitorProducer`."""

    def __init__(
        self,
        *,
        max_block: float = 5.0,
        on_delivery_error: Callable[[UndeliveredEvent], None] | None = None,
        **options: Any,
    ) -> None:
        self._max_block = max_block
        self._on_delivery_error = on_delivery_error
        # Each event's future needs its success report too.
        self.sync = MonitorProducer(**options, report_successes=True)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    async def start(self) -> AsyncMonitorProducer:
        """Start serving delivery reports and read both topics' partition counts."""
        if self._poller is None:
            self._poller = threading.Thread(
                target=self._serve, name="monitor-producer", daemon=True
            )
            self._poller.start()
        partitions = self.sync._partitions
        loop = asyncio.get_running_loop()
        for topic in (self.sync.predictions_topic, self.sync.labels_topic):
            await loop.run_in_executor(None, partitions.partition, topic, b"")
        return self

    async def log_prediction(self, **fields: Unpack[PredictionFields]) -> str:
        """`MonitorProducer.log_prediction`, returning once the broker has the event."""
        prediction_id, value = self.sync.encode_prediction(**fields)
        await self._send(self.sync.predictions_topic, fields["model"], value)
        return prediction_id

    async def log_label(self, **fields: Unpack[LabelFields]) -> None:
        """`MonitorProducer.log_label`, returning once the broker has the event."""
        value = self.sync.encode_label(**fields)
        await self._send(self.sync.labels_topic, fields["model"], value)

    async def flush(self, timeout: float = 30.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.sync.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        try:
            await self.flush(timeout)
        finally:
            await self._stop_serving()

    async def _stop_serving(self) -> None:
        self._stop.set()
        if self._poller is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._poller.join, 5)
            self._poller = None

    async def __aenter__(self) -> AsyncMonitorProducer:
        return await self.start()

    async def __aexit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            await self.close()
            return
        try:  # as the sync one: a short flush that does not mask the caller's exception
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.sync.__exit__, kind, error, traceback)
        finally:
            await self._stop_serving()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.sync.poll(0.1)

    async def _send(self, topic: str, model: str, value: bytes) -> None:
        if self._poller is None:
            await self.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:  # the poller thread
            failure = None if error is None else self.sync._undelivered(error, message)
            loop.call_soon_threadsafe(self._settle, done, failure)

        deadline = time.monotonic() + self._max_block
        while True:
            try:
                self.sync._send(topic, model, value, max_block=0.0, on_delivery=delivered)
                break
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.01)
        await done

    def _settle(self, future: asyncio.Future[None], failure: UndeliveredEvent | None) -> None:
        """On the event loop: the awaited send's outcome, and `on_delivery_error`."""
        if failure is not None:
            report_failure(self._on_delivery_error, failure)
        if future.done():  # the awaiting task was cancelled
            return
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(DeliveryError([failure], 1, 0))
