"""Producer SDK for model services: send predictions and labels the way the monitor reads them.

    from stream_monitor.client import MonitorProducer, InvalidEvent

    with MonitorProducer(bootstrap_servers="broker:9092") as monitor:
        prediction_id = monitor.log_prediction(model="credit", prediction=1, score=0.91)
        monitor.log_label(model="credit", prediction_id=prediction_id, label=0)

Events are validated by the monitor's own contract code (`InvalidEvent` carries the dead-letter
`reason` and `field`), keyed by model and partitioned as the Java client does, whatever the
producer's settings. Everything the SDK raises is a `ClientError`.
"""

from stream_monitor.client.aio import AsyncMonitorProducer
from stream_monitor.client.errors import (
    ClientError,
    DeliveryError,
    InvalidEvent,
    QueueFull,
    UndeliveredEvent,
    UnknownTopic,
)
from stream_monitor.client.ids import uuid7
from stream_monitor.client.partitioning import murmur2, partition_for
from stream_monitor.client.producer import MonitorProducer

__all__ = [
    "AsyncMonitorProducer",
    "ClientError",
    "DeliveryError",
    "InvalidEvent",
    "MonitorProducer",
    "QueueFull",
    "UndeliveredEvent",
    "UnknownTopic",
    "murmur2",
    "partition_for",
    "uuid7",
]
