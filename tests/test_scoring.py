"""Truth scoring on a hand-made case: every count and delay is known in advance."""

from __future__ import annotations

from stream_monitor.scoring import Detection, score


def test_hand_made_case_scores_exactly() -> None:
    changes = [("a", 100), ("a", 500), ("b", 1000), ("c", 50)]
    detections = [
        Detection("a", 40, "early: before any change"),  # false positive
        Detection("a", 130, "first after 100"),  # true positive, delay 30
        Detection("a", 180, "again"),  # duplicate of the change at 100
        Detection("a", 520, "first after 500"),  # true positive, delay 20
        Detection("b", 1400, "too late"),  # past max_delay 300: false positive; b is missed
        Detection("d", 7, "stable stream"),  # d has no change points: false positive
    ]
    result = score(changes, detections, max_delay=300)
    assert (result.true_positives, len(result.false_positives), result.misses) == (2, 3, 2)
    assert result.duplicates == 1
    assert result.delays == [30, 20]
    assert result.mean_delay == 25.0
    assert [d.label for d in result.false_positives] == [
        "early: before any change",
        "too late",
        "stable stream",
    ]
    summary = result.summary()
    assert [
        (c["stream"], c["index"], c["detected_at"], c["delay"]) for c in summary["changes"]
    ] == [
        ("a", 100, 130, 30),
        ("a", 500, 520, 20),
        ("b", 1000, None, None),
        ("c", 50, None, None),
    ]


def test_next_change_point_ends_the_window_without_max_delay() -> None:
    result = score([("a", 10), ("a", 20)], [Detection("a", 19), Detection("a", 10_000)])
    assert [c.delay for c in result.changes] == [9, 9980]
    assert result.false_positives == [] and result.misses == 0
