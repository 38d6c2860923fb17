"""The metadata a confluent-kafka producer answers `list_topics` with, for SDK tests without a
broker."""

from __future__ import annotations


class Topic:
    def __init__(self, partitions: int) -> None:
        self.partitions = dict.fromkeys(range(partitions))
        self.error = None


class Metadata:
    def __init__(self, partitions: int) -> None:
        self.topics = {"predictions": Topic(partitions), "labels": Topic(partitions)}
