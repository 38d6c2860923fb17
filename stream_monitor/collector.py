"""Python's cyclic garbage collector, set for a process that holds a large, long-lived state.

The monitor keeps every key's detectors and every pending join alive for hours, while each event
allocates a few short-lived containers. With the interpreter's defaults (700, 10, 10) a full
collection runs whenever the heap has grown by a quarter since the last one and scans all of
that state each time: on the throughput workload (benchmarks/pipeline_throughput.py) the
collector took about 45% of the processing time. Young generations are still collected often
(short-lived cycles are freed), full collections a hundred times more rarely. (Freezing a
restored state out of the collector's sight was left out: after a rebalance, a revoked
partition's frozen state could never be collected.)
"""

from __future__ import annotations

import gc

# Objects allocated between young collections; young collections per middle one; middle
# collections per full one (and a full one only once the heap grew by a quarter since the last).
# Measured alternatives are in docs/benchmarks.md.
THRESHOLDS = (10_000, 10, 1_000)


def tune_for_streaming() -> None:
    """Collect young objects every 10,000 allocations and the whole heap rarely."""
    gc.set_threshold(*THRESHOLDS)
