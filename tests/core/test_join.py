"""The label join: TTL in event time, bounds, out-of-order arrival, duplicates — all counted."""

from __future__ import annotations

from stream_monitor.core.join import LabelJoin, Pending, WaitingLabel, join_key, split_key

DAY = 86_400_000


def join(ttl: int | None = DAY, predictions: int = 100, labels: int = 100) -> LabelJoin:
    return LabelJoin(ttl_ms=ttl, max_pending_predictions=predictions, max_pending_labels=labels)


def test_label_after_prediction_matches() -> None:
    j = join()
    assert j.add_prediction("m", "a", Pending("m", 1, 0)) is None
    matched = j.add_label("m", "a", WaitingLabel(0, 1000))
    assert matched is not None and matched.prediction == 1
    assert j.counters.matched == 1 and not j.predictions


def test_label_before_prediction_waits_then_matches() -> None:
    j = join()
    assert j.add_label("m", "a", WaitingLabel("yes", 1000)) is None
    waiting = j.add_prediction("m", "a", Pending("m", "no", 900))
    assert waiting is not None and waiting.label == "yes"
    assert j.counters.matched == 1 and not j.labels and not j.predictions


def test_join_key_includes_the_model() -> None:
    j = join()
    j.add_prediction("m1", "a", Pending("m1", 1, 0))
    assert j.add_label("m2", "a", WaitingLabel(1, 0)) is None
    assert len(j.predictions) == 1 and len(j.labels) == 1


def test_label_later_than_ttl_is_counted_late_not_joined() -> None:
    j = join(ttl=DAY)
    j.add_prediction("m", "a", Pending("m", 1, 0))
    assert j.add_label("m", "a", WaitingLabel(1, DAY + 1)) is None
    assert j.counters.late_labels == 1 and j.counters.matched == 0


def test_expiry_by_watermark_counts_both_sides() -> None:
    j = join(ttl=1000)
    j.add_prediction("m", "old", Pending("m", 1, 0))
    j.add_prediction("m", "new", Pending("m", 1, 5000))
    j.add_label("m", "orphan", WaitingLabel(1, 100))
    j.expire(5000)
    assert j.pending_predictions() == [("m", "new")]
    assert not j.labels
    assert j.counters.expired_predictions == 1
    assert j.counters.expired_labels == 1


def test_without_event_time_nothing_expires() -> None:
    j = join(ttl=1000)
    j.add_prediction("m", "a", Pending("m", 1, None))
    j.expire(10**12)
    assert len(j.predictions) == 1


def test_bounds_evict_oldest_first() -> None:
    j = join(predictions=2, labels=1)
    for name in "abc":
        j.add_prediction("m", name, Pending("m", 1, 0))
    assert j.pending_predictions() == [("m", "b"), ("m", "c")]
    assert j.counters.evicted_predictions == 1
    j.add_label("m", "x", WaitingLabel(1, 0))
    j.add_label("m", "y", WaitingLabel(1, 0))
    assert j.waiting_labels() == [("m", "y")]
    assert j.counters.evicted_labels == 1


def test_duplicates_are_counted_and_first_one_kept() -> None:
    j = join()
    j.add_prediction("m", "a", Pending("m", "first", 0))
    j.add_prediction("m", "a", Pending("m", "second", 0))
    j.add_label("m", "b", WaitingLabel(1, 0))
    j.add_label("m", "b", WaitingLabel(2, 0))
    assert j.counters.duplicate_predictions == 1 and j.counters.duplicate_labels == 1
    assert j.predictions[join_key("m", "a")].prediction == "first"
    assert j.labels[join_key("m", "b")].label == 1


def test_out_of_order_pair_beyond_ttl_is_late() -> None:
    j = join(ttl=1000)
    j.add_label("m", "a", WaitingLabel(1, 0))
    assert j.add_prediction("m", "a", Pending("m", 1, 5000)) is None
    assert j.counters.late_labels == 1


def test_changes_track_every_added_and_removed_key() -> None:
    j = join()
    j.add_prediction("m", "a", Pending("m", 1, 0))
    assert j.take_changes() == [join_key("m", "a")]
    j.add_label("m", "a", WaitingLabel(1, 0))
    assert j.take_changes() == [join_key("m", "a")]
    assert j.dump_entry(join_key("m", "a")) is None


def test_a_join_key_splits_back_whatever_the_strings_hold() -> None:
    for model, prediction_id in [("m", "a"), ("12:m", ":3"), ("", "x"), ("é:ü", "7:"), ("m", "")]:
        assert split_key(join_key(model, prediction_id)) == (model, prediction_id)
    assert join_key("ab", "c") != join_key("a", "bc")


def test_an_entry_without_event_time_dumps_and_loads_as_none() -> None:
    j = join(ttl=1000)
    j.add_prediction("m", "a", Pending("k", 1, None))
    j.add_label("m", "b", WaitingLabel(0, None))
    entries = j.dump_entries(j.take_changes())
    assert entries == [["m", "a", ["p", "k", 1, None]], ["m", "b", ["l", 0, None]]]
    restored = join(ttl=1000)
    for model, prediction_id, entry in entries:
        restored.load_entry(model, prediction_id, entry)
    assert restored.dump_entries(list(restored.predictions) + list(restored.labels)) == entries
    restored.expire(10**12)  # no time: never expires
    assert restored.pending_predictions() == [("m", "a")]
