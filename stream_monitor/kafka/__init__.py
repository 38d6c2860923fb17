"""The confluent-kafka runtime around the pure core: topics, clients, changelog, the service loop."""

from stream_monitor.errors import StreamMonitorError


class KafkaRuntimeError(StreamMonitorError):
    """A Kafka-side failure the service cannot work around."""


class FencedError(KafkaRuntimeError):
    """Another instance took over this instance's transactional.id."""


class StillUnavailable(KafkaRuntimeError):
    """The brokers kept answering "ask again" (a coordinator or leader moving, an open
    transaction) past the timeout: worth trying again later, not a reason to stop."""
