"""Smoke test of `make bench-quick`'s code path on a tiny size: it runs and reports every figure.

Nothing about speed is asserted: these machines are shared and noisy, and a benchmark's numbers
belong in its report, not in a pass/fail gate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.suite import Sizes, markdown, run_suite
from stream_monitor.brokers import LocalBroker

pytestmark = pytest.mark.kafka

# Faust is left out: its worker takes over the process's signal handlers, not something to do
# inside pytest. Its row is covered by tests/kafka/test_faust.py and benchmarks/faust_throughput.py.
# The Quix Streams peer runs in processes of its own, under both guarantees (its virtualenv is
# created from PyPI on first use, ~30 s).
TINY = Sizes(
    predictions=2000,
    latency_seconds=1.5,
    latency_keys=3,
    memory_keys=50,
    memory_pending=1000,
    memory_growth=2,
    recovery_keys=50,
    core_events=1000,
    faust=False,
    quix_runs=("exactly-once/state", "at-least-once/state"),
    session_timeout="1500ms",
    settle_seconds=0.8,
    latency_capacity=2000,
)


def test_suite_reports_every_figure(broker: LocalBroker, tmp_path: Path) -> None:
    figures = run_suite(TINY, tmp_path, [broker.kind], broker.bootstrap_servers)

    assert set(figures) >= {"sizes", "brokers", "core", "machine", "rows", "phase_seconds"}
    measured = figures["brokers"][broker.kind]
    recoveries = {"recovery", "recovery_static"}
    if broker.kind == "kafka":
        recoveries |= {"recovery_kip848"}
    phases = {
        "throughput",
        "quix",
        "latency_capacity",
        "latency",
        "latency_tuned",
        "memory",
        "faust",
    }
    assert set(measured) == phases | recoveries
    assert set(measured["throughput"]) >= {"limit", "exactly_once", "at_least_once", "events"}
    assert set(measured["quix"]) == {"limit_peer_client", *TINY.quix_runs}
    assert all(
        measured["quix"][run]["events"] == measured["throughput"]["events"]
        for run in TINY.quix_runs
    )
    assert set(measured["latency"]) >= {"p50_ms", "p99_ms", "alerts", "achieved_rate"}
    assert set(measured["memory"]["first"]) >= {"rss_bytes", "keys", "pending_joins"}
    assert measured["memory"]["after_growth"]["events"] == 3000
    for phase in recoveries:
        assert set(measured[phase]) >= {"ready_seconds", "consuming_seconds", "keys_in_state"}
    assert all(
        set(row) == {"figure", "unit", "values", "ratios", "baseline", "target", "met"}
        for row in figures["rows"]
    )
    assert all(broker.kind in row["values"] or "core" in row["values"] for row in figures["rows"])
    table = markdown(figures)
    assert table.startswith("| figure | ")
    assert ("Apache Kafka" if broker.kind == "kafka" else "Tansu (embedded)") in table.splitlines()[
        0
    ]
