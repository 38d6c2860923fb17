"""Repartition mode: raw events keyed any way are re-keyed by model onto internal topics.

The monitor joins a model's predictions and labels within one partition, so producers must key
both by model. When they cannot, `kafka.partitioning: repartition` reads the raw topics, and
forwards each event, keyed by its `model`, to an internal topic per stream, inside the same
transaction as everything else. Each forwarded record names its origin; a forward that leaked
from a crashed transaction (on a broker that exposes one) is then recognised and not counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from stream_monitor.core.events import MissingField, WrongType, parse_json

ORIGIN_HEADER = "stream_monitor-origin"


def model_key(value: bytes, max_bytes: int) -> bytes:
    """The key to forward an event with: its model. Raises EventError for an unusable event."""
    event = parse_json(value, max_bytes)
    model = event.get("model")
    if model is None:
        raise MissingField("field 'model' is required", "model", event)
    if type(model) is not str or not model:
        raise WrongType("field 'model' must be a non-empty string", "model", event)
    return model.encode()


def origin(topic: str, partition: int, offset: int) -> tuple[str, bytes]:
    """The header a forwarded record carries: where it was read from."""
    return (ORIGIN_HEADER, f"{topic}/{partition}/{offset}".encode())


def seen_before(
    origins: MutableMapping[str, int], headers: Mapping[str, bytes | None] | None
) -> bool:
    """Whether a forwarded record's origin was already counted; else remember it.

    `origins`: raw topic/partition -> the last offset counted from it (part of the partition's
    checkpointed runtime data, so it survives restarts).
    """
    found = (headers or {}).get(ORIGIN_HEADER)
    if not found:
        return False
    source, _, offset_text = found.decode().rpartition("/")
    offset = int(offset_text)
    if offset <= origins.get(source, -1):
        return True
    origins[source] = offset
    return False
