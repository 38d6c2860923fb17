"""Effect size: how large a detected change is, measured on the data after its change point.

Every track keeps a small ring of block sums of its recent values (`RING` blocks of `block_size`
values: raw values for a mean or a rate, |x[2i+1] - x[2i]| for a spread). At a detection the
change point is estimated on block boundaries, as the split of the ring with the most evidence
of a change (`split`), and the effect is measured on the values after it; when the ring shows no
change inside it, the change is older than the ring and all of it is post-change.
Detector windows are no substitute: ADWIN keeps many pre-change values after its cut (a 1 sd
shift measured on its kept window read as 0.3 sd in simulation).

The effect's `size` is what severity and `alerts.min_effect` read, on one scale for every kind of
signal: |shift| in reference standard deviations for a mean; |log2(after / before)| of the rarer
outcome's rate for a 0/1 rate (1: it doubled or halved); |log2(sd after / sd before)| for a spread.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any, Final

from stream_monitor.core.calibration import MIN_RATE, MIN_SCALE

RING: Final = 32  # blocks
RING_MASK: Final = RING - 1
BLOCK: Final = (
    8  # values per block for continuous series (a 0/1 series' blocks hold ~2 rarer events)
)
MAX_BLOCK: Final = 4096
MIN_AFTER: Final = 8  # values an effect is measured on, at least
# The two-sample statistic (in sd², a chi-square with one degree of freedom for one split) a split
# inside the ring needs: the greatest of its 32 candidate splits on noise is rarely above 12.
SPLIT_EVIDENCE: Final = 12.0
RECENT: Final = 100  # values behind `mean_recent`

WARNING_SIZE: Final = 0.5
CRITICAL_SIZE: Final = 1.0

MEAN: Final = "mean"
RATE: Final = "rate"
SPREAD: Final = "spread"
CATEGORIES: Final = "categories"  # a categorical feature's shares (`core.categories`)
TINY: Final = 1e-12
_ZERO_RING: Final = bytes(8 * RING)


def empty_ring() -> array[float]:
    """A ring of RING zero sums: unboxed doubles, 8 bytes a block (a list of floats took up to
    32 bytes a block, and a key holds about twenty rings)."""
    return array("d", _ZERO_RING)


def rate_block_size(rate: float) -> int:
    """Values per block for a 0/1 series: about two of its rarer outcome per block."""
    rarer = max(min(rate, 1.0 - rate), MIN_RATE)
    return min(max(BLOCK, math.ceil(2.0 / rarer)), MAX_BLOCK)


class Ring:
    """A view of a track's ring: (count, sum) of its newest values, block by block."""

    __slots__ = ("block", "block_size", "blocks", "fill", "slot", "sums")

    def __init__(
        self,
        sums: Sequence[float],
        slot: int,
        blocks: int,
        block: float,
        fill: int,
        block_size: int,
    ) -> None:
        self.sums, self.slot, self.blocks = sums, slot, blocks
        self.block, self.fill, self.block_size = block, fill, block_size

    def segments(self) -> list[tuple[int, float]]:
        """Cumulative (count, sum) of the newest values: the partial block, then one more
        full block at a time, newest first."""
        count, total = self.fill, self.block
        found = [(count, total)] if count else []
        slot = self.slot
        for _ in range(self.blocks):
            slot = (slot - 1) & RING_MASK
            count += self.block_size
            total += self.sums[slot]
            found.append((count, total))
        return found

    def recent(self) -> tuple[int, float]:
        """About the newest RECENT values (whole blocks)."""
        best = (0, 0.0)
        for segment in self.segments():
            best = segment
            if segment[0] >= RECENT:
                break
        return best


def split(ring: Ring, sd: float) -> tuple[int, float, bool]:
    """(count, sum) of the values after the change point, and whether it was found in the ring.

    The ring's values are split in two where they differ most (the two-sample statistic
    Nb·Na / N · (mean after - mean before)² / sd², over block boundaries). Only when that is
    strong evidence of a change inside the ring (`SPLIT_EVIDENCE`) are the newest values the
    post-change ones; else the change is older than the ring (or it is noise), and the whole
    ring is "after". Taking the greatest split regardless picked short, extreme stretches of
    noise: a detection of a 0.03 sd shift (or of nothing) read as a 0.5 to 0.9 sd effect.
    """
    segments = ring.segments()
    if not segments:
        return 0, 0.0, False
    total_n, total_sum = segments[-1]
    best: tuple[int, float, bool] = (total_n, total_sum, False)
    best_score = SPLIT_EVIDENCE
    scale = 1.0 / max(sd * sd, MIN_SCALE * MIN_SCALE)
    for count, total in segments[:-1]:
        if count < MIN_AFTER:
            continue
        before = total_n - count
        gap = total / count - (total_sum - total) / before
        score = count * before / total_n * gap * gap * scale
        if score > best_score:
            best, best_score = (count, total, True), score
    return best


def measure(statistic: str, before: float, sd: float, after: float, window: int) -> dict[str, Any]:
    """The effect of a change from `before` to `after` (measured on `window` values).

    `sd` is the reference standard deviation in the signal's units. For a spread, `before` and
    `after` are the mean of the pair statistic |x[2i+1] - x[2i]| (the same units), and the
    effect is reported as standard deviations: sd before `sd`, after `sd` × their ratio.
    """
    sd = max(sd, MIN_SCALE)
    if statistic == SPREAD:
        # A series that was constant (or became so) has a ratio of 0 or "infinity": floored so
        # that the alert stays plain JSON.
        ratio = min(max(after, TINY) / max(before, TINY), 1.0 / TINY)
        size = abs(math.log2(ratio))
        return {
            "statistic": SPREAD,
            "size": _round(size),
            "ratio": _round(ratio),
            "before": _round(sd),
            "after": _round(sd * ratio),
            "window": window,
        }
    shift = (after - before) / sd
    effect: dict[str, Any] = {"statistic": statistic, "size": _round(abs(shift))}
    if statistic == RATE:
        rarer_before = min(before, 1.0 - before)
        rarer_after = after if before <= 0.5 else 1.0 - after
        # smoothed as the warm-up's rate is: a rate measured at 0 is not infinitely far
        rarer_after = (rarer_after * window + 0.5) / (window + 1.0)
        size = abs(math.log2(max(rarer_after, MIN_RATE) / max(rarer_before, MIN_RATE)))
        effect["size"] = _round(size)
        effect["absolute"] = _round(after - before)
        effect["relative"] = _round((after - before) / before) if before > 0 else None
    effect.update(
        {
            "shift": _round(shift),
            "before": _round(before),
            "after": _round(after),
            "sd": _round(sd),
            "window": window,
        }
    )
    return effect


def severity(effect: dict[str, Any], signal_kind: str) -> str:
    """info / warning / critical from the effect's size (≥ 0.5 warning, ≥ 1 critical). A
    performance signal that improved (error or its estimate went down) is info: worth knowing,
    not worth waking anyone."""
    if signal_kind == "performance" and effect["after"] < effect["before"]:
        return "info"
    size = effect["size"]
    if size >= CRITICAL_SIZE:
        return "critical"
    if size >= WARNING_SIZE:
        return "warning"
    return "info"


def _round(value: float) -> float:
    return round(value, 6)
