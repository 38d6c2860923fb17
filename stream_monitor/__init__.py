"""stream-monitor: Kafka-native drift and performance monitoring for ML models in production."""

__version__ = "0.2.0"
