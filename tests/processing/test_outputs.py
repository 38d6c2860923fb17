"""Outputs a predecessor made visible are not published again, and forgotten once passed."""

from __future__ import annotations

from stream_monitor.processing.outputs import OutputGuard


def test_ids_are_suppressed_until_processing_passes_their_trigger() -> None:
    guard = OutputGuard()
    guard.remember("a1", "predictions", 0, 10)
    guard.remember("a2", "labels", 0, 20)
    guard.remember("d1", "predictions", 1, 5)
    assert guard.visible("a1") and not guard.visible("other")
    assert guard.suppressed == 1
    guard.forget_before({("predictions", 0): 11, ("labels", 0): 20, ("predictions", 1): 3})
    assert not guard.visible("a1")  # its trigger (offset 10) was processed again: forgotten
    assert guard.visible("a2") and guard.visible("d1")
    guard.forget_partition("labels", 0)
    assert not guard.visible("a2") and len(guard) == 1
