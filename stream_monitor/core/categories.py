"""Categorical features: their known categories, reference shares and a distance per block.

Per key × categorical feature, `Categories` holds, bounded however many distinct values arrive:

- the known categories: at most `capacity` (`limits.max_categories`) values, from the reference
  or chosen by the warm-up; every other value is "other", and unseen;
- per value, the count of its category in the current block: a dict lookup and a list increment;
- per block of `BLOCK` values, how far the block is from the reference: the two-sample Pearson
  chi-square of the block's counts against the reference's, over cells that expect at least
  `MIN_EXPECTED` values per block (rarer categories are pooled), made approximately N(0, 1) by
  the Wilson–Hilferty transform. That value (`statistic`: 0 when the block matches the
  reference, more the further it is) is what the feature's detector watches. Its distribution
  without a change is known, so it needs no warm-up of its own: a reference from training data
  is compared from the first block. (Jensen–Shannon distance and PSI have no such null: each
  would need a warm-up of its own values, per key, to be calibrated.)
- the counts of the last `RING` blocks, which an alert's "after" shares are measured on;
- a Misra–Gries sketch of the unseen values of the current and the previous block, so that an
  alert can name the values that appeared.

The warm-up, without a reference: the first `SKETCH_VALUES` values feed a Misra–Gries sketch
of 2 × capacity counters, which chooses the candidates (the most frequent, ties in the order they
were first counted); the next `COUNT_VALUES` values count the candidates exactly: those seen are
the known categories, their counts the reference. A Misra–Gries sketch keeps every value more
frequent than 1 / (counters + 1) and needs no tie-breaks: it evicts by decrementing every counter
(O(counters), at most once per counters values: amortised O(1)), never by choosing one.

docs/detection-quality.md has the measurements behind the choices (block size, statistic,
detector).
"""

from __future__ import annotations

import math
from typing import Any

from stream_monitor.errors import StateError

BLOCK = 100  # values per block: the distance is computed once per block
MIN_EXPECTED = 5.0  # values a cell expects per block (Cochran's rule for the chi-square)
RING = 4  # blocks of counts kept for an alert's "after" shares
SKETCH_VALUES = 100  # warm-up: values that choose the candidate categories
COUNT_VALUES = 400  # warm-up: values that measure their shares (the reference)
UNSEEN_CAPACITY = 8  # counters of the sketch of unseen values, per block
MOVERS = 5  # categories an alert lists, the largest changes first
MIN_MOVE = 0.005  # a category whose share moved less is not listed
# A split of the ring whose newest blocks differ from the older ones by this many standard
# deviations of the distance is where the change is; else all the ring is after it.
SPLIT_Z = 3.0
# Distances an alert's level is measured on before its resolve test starts (`core.lifecycle`;
# 64 values elsewhere): each stands for a block, 16 of them for 1,600 values.
SETTLE_BLOCKS = 16
EFFECT_SCALE = 2.0  # effect size = 2 × Cohen's w: his "small" (0.1) is min_effect's 0.2

SKETCHING, COUNTING, READY = 0, 1, 2

CategoryReference = tuple[list[str], list[float], float, int]  # names, shares, other, n


class Categories:
    """The categories of one feature of one key; see the module's docstring."""

    __slots__ = (
        "capacity",
        "cell_of",
        "cell_reference",
        "cells",
        "counts",
        "distances",
        "filled",
        "index",
        "max_chars",
        "names",
        "other",
        "phase",
        "reference",
        "reference_n",
        "ring",
        "seen",
        "sketch",
        "truncated",
        "unseen",
        "unseen_before",
    )

    def __init__(
        self, capacity: int, max_chars: int, reference: CategoryReference | None = None
    ) -> None:
        self.capacity = capacity
        self.max_chars = max_chars
        self.phase = SKETCHING
        self.seen = 0  # values of the current warm-up phase
        self.sketch: dict[str, int] = {}
        self.truncated = False  # more distinct values than `capacity`: the rest is "other"
        self.unseen: dict[str, int] = {}
        self.unseen_before: dict[str, int] = {}
        self.ring: list[list[int]] = []
        self.distances: list[float] = []  # of the blocks in the ring (when there are cells)
        self._known([], [0.0], 0.0)
        if reference is not None:
            names, shares, other, n = reference
            ranked = sorted(range(len(names)), key=lambda slot: -shares[slot])
            kept = ranked[:capacity]
            other += sum(shares[slot] for slot in ranked[capacity:])
            # more categories than known ones: the reference's tail is pooled as other
            self.truncated = len(ranked) > capacity or (other > 0.0 and len(ranked) >= capacity)
            self._known(
                [names[slot] for slot in kept],
                [shares[slot] * n for slot in kept] + [other * n],
                float(n),
            )
            self.phase = READY

    def _known(self, names: list[str], reference: list[float], reference_n: float) -> None:
        """Set the known categories and their reference counts (the last one: other)."""
        self.names = names
        self.index = {name: slot for slot, name in enumerate(names)}
        self.other = len(names)
        self.reference = reference
        self.reference_n = reference_n
        self.counts = [0] * (self.other + 1)
        self.filled = 0
        self.ring = []
        self.distances = []
        self._cells()

    def _cells(self) -> None:
        """Cells of the chi-square: each category that expects MIN_EXPECTED values per block,
        the rest pooled (with other); a pool that still expects too few joins the smallest
        cell. Fewer than two cells: no distance (one category: the unseen rate watches it)."""
        n = self.reference_n
        shares = [count / n if n else 0.0 for count in self.reference]
        big = [slot for slot, share in enumerate(shares) if share * BLOCK >= MIN_EXPECTED]
        cell_of = [-1] * len(shares)
        for cell, slot in enumerate(big):
            cell_of[slot] = cell
        cells = len(big)
        rest = [slot for slot in range(len(shares)) if cell_of[slot] < 0]
        if rest:
            if sum(shares[slot] for slot in rest) * BLOCK >= MIN_EXPECTED:
                target = cells
                cells += 1
            elif big:
                target = cell_of[min(big, key=lambda slot: (shares[slot], slot))]
            else:
                target = 0
                cells = 1
            for slot in rest:
                cell_of[slot] = target
        self.cell_of = cell_of
        reference = [0.0] * cells
        for slot, count in enumerate(self.reference):
            reference[cell_of[slot]] += count
        self.cell_reference = reference
        self.cells = cells if cells >= 2 else 0

    @property
    def ready(self) -> bool:
        return self.phase == READY

    # --- per value ---------------------------------------------------------------------------
    def learn(self, value: str) -> bool:
        """One warm-up value; True when the warm-up ended (the categories are known)."""
        if len(value) > self.max_chars:
            value = ""  # never stored: it counts, as one more value that is not a category
        self.seen += 1
        if self.phase == SKETCHING:
            if value and misra_gries(self.sketch, value, 2 * self.capacity):
                self.truncated = True
            if self.seen < SKETCH_VALUES:
                return False
            ranked = sorted(self.sketch.items(), key=lambda item: -item[1])
            if len(ranked) > self.capacity:
                self.truncated = True
            self.sketch = {}
            self.names = [name for name, _ in ranked[: self.capacity]]
            self.index = {name: slot for slot, name in enumerate(self.names)}
            self.other = len(self.names)
            self.counts = [0] * (self.other + 1)
            self.reference = [0.0] * (self.other + 1)
            self.phase, self.seen = COUNTING, 0
            return False
        self.counts[self.index.get(value, self.other)] += 1
        if self.seen < COUNT_VALUES:
            return False
        counted = self.counts
        known = sorted(
            (slot for slot in range(self.other) if counted[slot]), key=lambda slot: -counted[slot]
        )
        names = [self.names[slot] for slot in known]
        reference = [float(counted[slot]) for slot in known]
        reference.append(float(self.seen - sum(reference)))
        self._known(names, reference, float(self.seen))
        self.phase, self.seen = READY, 0
        return True

    def add(self, value: str) -> int:
        """One value once ready, as flags: 1 unseen, 2 it completed a block, 4 it was too long
        to be a category (and unseen)."""
        slot = self.index.get(value, self.other)
        self.counts[slot] += 1
        flags = 0
        if slot == self.other:
            if len(value) <= self.max_chars:
                misra_gries(self.unseen, value, UNSEEN_CAPACITY)
                flags = 1
            else:
                flags = 5  # never stored: too long for a category
        self.filled += 1
        return flags | 2 if self.filled == BLOCK else flags

    def statistic(self) -> float | None:
        """End the block: its distance from the reference (None: no distance to compute)."""
        counts = self.counts
        self.ring.append(counts)
        del self.ring[:-RING]
        self.counts = [0] * (self.other + 1)
        self.filled = 0
        self.unseen_before, self.unseen = self.unseen, {}
        if not self.cells:
            return None
        found = distance(self._pool(counts), BLOCK, self.cell_reference, self.reference_n)
        self.distances.append(found)
        del self.distances[:-RING]
        return found

    def _pool(self, counts: list[int] | list[float]) -> list[float]:
        pooled = [0.0] * len(self.cell_reference)
        cell_of = self.cell_of
        for slot, count in enumerate(counts):
            if count:
                pooled[cell_of[slot]] += count
        return pooled

    # --- what a detection measured ----------------------------------------------------------
    def measure(self) -> dict[str, Any]:
        """The change of the newest blocks' shares from the reference: the effect an alert
        carries. Its `size` is 2 × Cohen's w over the cells; `categories` lists the categories
        whose share moved most (`category` null: every value outside the known ones), `new`
        the most frequent unseen values of the last two blocks."""
        after = self._after()
        window = sum(after)
        reference_n = self.reference_n or 1.0
        before = [count / reference_n for count in self.reference]
        shares = [count / window if window else 0.0 for count in after]
        moved = sorted(
            (
                (abs(shares[slot] - before[slot]), slot)
                for slot in range(len(before))
                if abs(shares[slot] - before[slot]) >= MIN_MOVE
            ),
            key=lambda item: -item[0],
        )
        w = cohen_w(self._pool(after), window, self.cell_reference, reference_n)
        effect: dict[str, Any] = {
            "statistic": "categories",
            "size": _round(EFFECT_SCALE * w),
            "distance": _round(w),
            "categories": [
                {
                    "category": self.names[slot] if slot < self.other else None,
                    "before": _round(before[slot]),
                    "after": _round(shares[slot]),
                }
                for _, slot in moved[:MOVERS]
            ],
            "window": int(window),
        }
        new = self.new_values()
        if new:
            effect["new"] = new
        return effect

    def _after(self) -> list[float]:
        """Counts per slot of the blocks after the change (`_split`)."""
        if not self.ring:
            return [float(count) for count in self.counts]
        return _sum(self.ring[-self._split() :])

    def _split(self) -> int:
        """How many of the ring's newest blocks differ from the older ones (all of them when
        no split stands out: the change is older than the ring)."""
        ring = self.ring
        best, best_z = len(ring), SPLIT_Z
        if self.cells:
            whole = self._pool(_sum(ring))
            for newest in range(1, len(ring)):
                after = self._pool(_sum(ring[-newest:]))
                older = [total - part for total, part in zip(whole, after, strict=True)]
                z = distance(after, newest * BLOCK, older, (len(ring) - newest) * BLOCK)
                if z > best_z:
                    best, best_z = newest, z
        return best

    def level(self) -> tuple[float, int]:
        """The mean distance of the blocks after the change, and how many: the level an alert's
        resolve test starts from (the detector's own window still holds blocks before it)."""
        count = min(self._split(), len(self.distances))
        if not count:
            return 0.0, 0
        return sum(self.distances[-count:]) / count, count

    def new_values(self) -> list[dict[str, Any]]:
        """The most frequent unseen values of the current and the previous block, with their
        share of those values (a lower bound: the sketch undercounts)."""
        merged = dict(self.unseen_before)
        for value, count in self.unseen.items():
            merged[value] = merged.get(value, 0) + count
        values = self.filled + (BLOCK if self.ring else 0)
        ranked = sorted(merged.items(), key=lambda item: -item[1])
        return [
            {"category": value, "after": _round(count / values)}
            for value, count in ranked[:MOVERS]
            if values
        ]

    def recent_effect(self) -> dict[str, Any] | None:
        """The effect of the last blocks against the reference (a likely cause of another
        signal's alert), or None before the first block."""
        if not self.ring or not self.cells:
            return None
        return self.measure()

    # --- state ---------------------------------------------------------------------------------
    def dump(self) -> list[Any]:
        return [
            self.phase,
            self.seen,
            [list(item) for item in self.sketch.items()],
            self.names,
            self.reference,
            self.reference_n,
            self.counts,
            self.filled,
            self.ring,
            self.distances,
            [list(item) for item in self.unseen.items()],
            [list(item) for item in self.unseen_before.items()],
            self.truncated,
        ]

    @classmethod
    def load(cls, capacity: int, max_chars: int, data: list[Any]) -> Categories:
        try:
            (
                phase,
                seen,
                sketch,
                names,
                reference,
                reference_n,
                counts,
                filled,
                ring,
                distances,
                unseen,
                unseen_before,
                truncated,
            ) = data
            made = cls(capacity, max_chars)
            made._known(
                [str(name) for name in names],
                [float(count) for count in reference],
                float(reference_n),
            )
            made.phase, made.seen = int(phase), int(seen)
            made.sketch = {str(value): int(count) for value, count in sketch}
            made.counts = [int(count) for count in counts]
            made.filled = int(filled)
            made.ring = [[int(count) for count in block] for block in ring]
            made.distances = [float(value) for value in distances]
            made.unseen = {str(value): int(count) for value, count in unseen}
            made.unseen_before = {str(value): int(count) for value, count in unseen_before}
            made.truncated = bool(truncated)
            width = made.other + 1
            if made.phase not in (SKETCHING, COUNTING, READY):
                raise ValueError(f"unknown phase {phase!r}")
            if (
                len(made.counts) != width
                or len(made.reference) != width
                or any(len(block) != width for block in made.ring)
            ):
                raise ValueError("counts do not match the categories")
        except (TypeError, ValueError) as exc:
            raise StateError(f"category state is not understood: {exc}") from exc
        return made


def _sum(blocks: list[list[int]]) -> list[float]:
    return [float(sum(column)) for column in zip(*blocks, strict=True)]


def misra_gries(sketch: dict[str, int], value: str, capacity: int) -> bool:
    """Count `value` in a Misra–Gries sketch of `capacity` counters; True when it evicted."""
    count = sketch.get(value)
    if count is not None:
        sketch[value] = count + 1
        return False
    if len(sketch) < capacity:
        sketch[value] = 1
        return False
    for key, count in list(sketch.items()):  # every counter down by one: no choice to make
        if count > 1:
            sketch[key] = count - 1
        else:
            del sketch[key]
    return True


def distance(counts: list[float], n: float, reference: list[float], reference_n: float) -> float:
    """How far `counts` (n values) are from `reference` (reference_n values), cell by cell:
    the two-sample Pearson chi-square, N1·N2 Σ (a/N1 - b/N2)² / (a + b), with one degree of
    freedom fewer than cells, through the Wilson–Hilferty transform: about N(0, 1) when both
    come from one distribution."""
    x2 = 0.0
    for a, b in zip(counts, reference, strict=True):
        pooled = a + b
        if pooled > 0.0:
            gap = a / n - b / reference_n
            x2 += gap * gap / pooled
    x2 *= n * reference_n
    df = len(counts) - 1
    spread = 2.0 / (9.0 * df)
    return (math.pow(x2 / df, 1.0 / 3.0) - (1.0 - spread)) / math.sqrt(spread)


def cohen_w(counts: list[float], n: float, reference: list[float], reference_n: float) -> float:
    """Cohen's w of shares `counts` / n against `reference` / reference_n (cells that the
    reference never saw are left out: their change is in the other cells' shares)."""
    if not n or not reference_n:
        return 0.0
    total = 0.0
    for a, b in zip(counts, reference, strict=True):
        expected = b / reference_n
        if expected > 0.0:
            gap = a / n - expected
            total += gap * gap / expected
    return math.sqrt(total)


def _round(value: float) -> float:
    return round(value, 6)
