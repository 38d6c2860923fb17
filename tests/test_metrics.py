"""Metrics without a broker: per-batch deltas, bounded labels, the label-delay histogram, detector
gauges, and the HTTP probes."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from river.drift import PageHinkley

from stream_monitor.core.events import LABEL, PREDICTION
from stream_monitor.core.join import LabelJoin, Pending, WaitingLabel
from stream_monitor.health import HealthServer
from stream_monitor.metrics import OTHER, LabelCap, Metrics, MonitorTally, page_hinkley_statistic
from tests.helpers import golden_stream, monitor, prediction, records


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as a scrape would see them."""
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_label_cap_admits_the_first_values_then_reports_other() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_label_delays_fall_in_prometheus_le_buckets() -> None:
    join = LabelJoin(ttl_ms=None, max_pending_predictions=10, max_pending_labels=10)
    # delays: exactly 1 s (le=1.0), 1.001 s (le=5.0), 2 days (le=7d), 8 days (+Inf); one label
    # arrives first and is still a 30 s delay once its prediction comes.
    for index, delay in enumerate((1000, 1001, 2 * 86_400_000, 8 * 86_400_000)):
        join.add_prediction("m", str(index), Pending("m", 1, 0))
        join.add_label("m", str(index), WaitingLabel(1, delay))
    join.add_label("m", "early", WaitingLabel(1, 30_000))
    join.add_prediction("m", "early", Pending("m", 1, 0))
    metrics = Metrics()
    tally = MonitorTally()
    metrics._report_join(join.counters, tally)
    got = samples(metrics)
    bucket = "stream_monitor_label_delay_seconds_bucket"
    cumulative = {le: got[(bucket, (("le", le),))] for le in ("1.0", "5.0", "30.0", "604800.0")}
    assert cumulative == {"1.0": 1, "5.0": 2, "30.0": 3, "604800.0": 4}
    assert got[(bucket, (("le", "+Inf"),))] == 5
    assert got[("stream_monitor_label_delay_seconds_count", ())] == 5
    assert got[("stream_monitor_label_delay_seconds_sum", ())] == (1 + 1.001 + 30 + 10 * 86_400)
    assert got[("stream_monitor_joins_total", (("outcome", "matched"),))] == 5
    # Reporting again without new joins adds nothing.
    metrics._report_join(join.counters, tally)
    assert samples(metrics)[("stream_monitor_label_delay_seconds_count", ())] == 5


def test_monitor_counters_reach_prometheus_once_per_batch_as_deltas() -> None:
    m = monitor()
    metrics, tally = Metrics(), MonitorTally()
    m.process(records(PREDICTION, [prediction(0, score=0.5), b"{not json", {"model": "m"}]))
    metrics.report_monitor(m, tally)
    updates_after_first = m.counters.detector_updates
    m.process(records(LABEL, [{"prediction_id": "p0", "model": "m", "label": 1}, b"\xff\xfe"], "l"))
    metrics.report_monitor(m, tally)
    metrics.report_monitor(m, tally)  # nothing new: no double counting
    got = samples(metrics)
    invalid = "stream_monitor_invalid_events_total"
    assert got[(invalid, (("reason", "malformed_json"),))] == 1
    assert got[(invalid, (("reason", "missing_field"),))] == 1
    assert got[(invalid, (("reason", "not_utf8"),))] == 1
    assert got[("stream_monitor_joins_total", (("outcome", "matched"),))] == 1
    assert updates_after_first > 0
    assert got[("stream_monitor_detector_updates_total", ())] == m.counters.detector_updates


def test_page_hinkley_statistic_crosses_the_threshold_exactly_at_the_detection() -> None:
    detector = PageHinkley()
    crossed = None
    for index, x in enumerate(golden_stream()):
        detector.update(x)
        statistic = page_hinkley_statistic(detector)
        assert statistic is not None and statistic >= 0.0
        if crossed is None and statistic > detector.threshold:
            crossed = index
        if detector.drift_detected:
            break
    assert crossed == index == 1006
    assert page_hinkley_statistic(object()) is None


def test_detector_gauges_take_the_largest_value_over_keys_and_cap_models() -> None:
    config: dict[str, Any] = {
        "detectors": {"ph": {"type": "page_hinkley"}, "adwin": {"type": "adwin"}},
        "signals": {
            "performance": ["adwin"],
            "prediction": ["adwin", "ph"],
            "feature": [],
            "data_quality": [],
        },
        "key_by": {"segment": ["region"]},
    }
    m = monitor(**config)
    events = [
        prediction(1000 * j + i, model=model, score=0.1 * (i % 7), segment={"region": region})
        for i in range(200)
        for j, (model, region) in enumerate((("a", "eu"), ("a", "us"), ("b", "eu")))
    ]
    m.process(records(PREDICTION, events))
    metrics = Metrics(max_models=1)
    metrics.report_state([m])
    got = samples(metrics)
    labels = (("model", "a"), ("rule", "adwin"), ("signal", "score"), ("signal_kind", "prediction"))
    widths = [
        s.tracks[0].detector.width
        for key, state in m.keys.items()
        if state.model == "a"
        for s in state.signals()
        if s.name == "score"
    ]
    assert got[("stream_monitor_adwin_window_width", labels)] == max(widths)
    other = (("model", OTHER), ("rule", "ph"), ("signal", "score"), ("signal_kind", "prediction"))
    assert got[("stream_monitor_page_hinkley_threshold", other)] == 50.0
    assert ("stream_monitor_page_hinkley_statistic", other) in got
    assert got[("stream_monitor_monitored_keys", ())] == 3
    assert got[("stream_monitor_pending_joins", (("side", "prediction"),))] == 600


def test_consumer_lag_comes_from_librdkafka_statistics() -> None:
    metrics = Metrics()
    active = {"fetch_state": "active", "lo_offset": 0, "committed_offset": -1001}
    partitions: dict[str, Any] = {
        # consumed up to 900 of 1,000 readable: transactional commits leave committed unknown
        "0": {**active, "app_offset": 900, "ls_offset": 1000, "hi_offset": 1002},
        # nothing consumed yet: all of it is lag
        "1": {**active, "app_offset": -1001, "ls_offset": 40, "hi_offset": 40, "lo_offset": 10},
        # not assigned to us
        "2": {"fetch_state": "none", "app_offset": -1001, "ls_offset": -1001},
        # restored and sought to 1,500, nothing new since: no lag (not 1,500 from the log start)
        "3": {
            **active,
            "app_offset": -1001,
            "next_offset": 1500,
            "fetchq_cnt": 0,
            "ls_offset": 1500,
        },
        # fetched up to 1,600 with 100 waiting in the local queue, 1,700 readable
        "4": {
            **active,
            "app_offset": -1001,
            "next_offset": 1600,
            "fetchq_cnt": 100,
            "ls_offset": 1700,
        },
        "-1": {**active, "app_offset": 0, "ls_offset": 0},  # librdkafka's internal UA partition
    }
    stats = {"topics": {"predictions": {"partitions": partitions}}}
    metrics.on_statistics(orjson.dumps(stats).decode())
    lag = "stream_monitor_consumer_lag"

    def lags() -> dict[str, float]:
        return {dict(k[1])["partition"]: v for k, v in samples(metrics).items() if k[0] == lag}

    assert lags() == {"0": 100, "1": 30, "3": 0, "4": 200}
    del (
        partitions["0"],
        partitions["3"],
        partitions["4"],
    )  # revoked in a rebalance: its series goes away
    metrics.on_statistics(orjson.dumps(stats).decode())
    metrics.on_statistics("not json")  # ignored
    assert lags() == {"1": 30}


def test_probes_answer_with_status_codes_and_a_json_body() -> None:
    metrics = Metrics()
    state = {"alive": True, "ready": False}
    server = HealthServer(
        metrics.registry,
        liveness=lambda: (state["alive"], {}),
        readiness=lambda: (state["ready"], {"partitions": []}),
    )

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    with server:
        assert get("/healthz") == (200, b'{"status":"ok"}\n')
        assert get("/readyz") == (503, b'{"status":"unavailable","partitions":[]}\n')
        state["ready"], state["alive"] = True, False
        assert get("/readyz")[0] == 200 and get("/healthz")[0] == 503
        status, body = get("/metrics")
        assert status == 200 and b"stream_monitor_build_info{" in body
        assert get("/nope")[0] == 404


def test_negligible_detections_and_resolved_events_are_counted() -> None:
    """Detections dropped by alerts.min_effect flow like cooldowns: counted by the core, diffed
    once per batch. Published drift_resolved events have their own counter."""
    import random

    rng = random.Random(4)
    values = [rng.gauss(0.0, 1.0) for _ in range(20_000)] + [
        rng.gauss(0.15, 1.0) for _ in range(40_000)
    ]
    m = monitor(
        signals={"feature": ["adwin"], "prediction": [], "performance": [], "data_quality": []}
    )
    metrics, tally = Metrics(), MonitorTally()
    events = [prediction(i, features={"x": v}) for i, v in enumerate(values)]
    assert m.process(records(PREDICTION, events[:30_000])).alerts == []
    metrics.report_monitor(m, tally)
    m.process(records(PREDICTION, events[30_000:]))
    metrics.report_monitor(m, tally)
    metrics.report_monitor(m, tally)
    assert m.counters.negligible == 1
    assert samples(metrics)[("stream_monitor_detections_negligible_total", ())] == 1

    from stream_monitor.core.alerts import build_resolved
    from tests.forward.support import drift_alert

    detected = drift_alert(1)
    data = detected["data"]
    metrics.count_alert(detected)
    metrics.count_alert(
        build_resolved(
            source="s",
            resolves=detected["id"],
            key_id=data["monitor_key"],
            model=data["model"],
            model_version=None,
            segment={},
            signal_kind=data["signal_kind"],
            signal=data["signal"],
            rule=data["rule"],
            detector=data["detector"],
            observations=2000,
            opened_at=data["observations"],
            time_ms=None,
            level={"statistic": "rate", "before": 0.1, "alerted": 0.3, "now": 0.1},
            position=None,
        )
    )
    labels = (("detector", "adwin"), ("model", "credit"), ("signal_kind", "performance"))
    got = samples(metrics)
    assert got[("stream_monitor_alerts_total", labels)] == 1
    assert got[("stream_monitor_alerts_resolved_total", labels)] == 1
