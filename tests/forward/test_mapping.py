"""What each sink sends, exactly: Alertmanager alerts and their life cycle, CloudEvents over HTTP
(parsed by the official CloudEvents SDK as a receiver would), Slack text; no secret in logs."""

from __future__ import annotations

import base64
import logging
import random
import time
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from cloudevents.v1.http import from_http

from stream_monitor.config import build_config
from stream_monitor.core.alerts import describe, describe_categories
from stream_monitor.core.events import PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.reference import FORMAT, parse
from stream_monitor.forward.alertmanager import AlertmanagerSink, annotations_of, labels_of
from stream_monitor.forward.http import HttpEndpoint
from stream_monitor.forward.records import AlertRecord, parse_event
from stream_monitor.forward.sinks import SinkError, SinkWorker
from stream_monitor.forward.webhook import WebhookSink, slack_text
from tests.forward.support import WebhookServer, drift_alert, resolved_alert
from tests.kafka.support import wait_for


def record(
    event: dict[str, Any], offset: int = 0, timestamp_ms: int | None = None, partition: int = 0
) -> AlertRecord:
    value = orjson.dumps(event)
    return AlertRecord(
        topic="alerts",
        partition=partition,
        offset=offset,
        key=b"k",
        value=value,
        timestamp_ms=timestamp_ms,
        event=parse_event(value),
    )


def test_alertmanager_labels_and_annotations() -> None:
    event = drift_alert(3)
    assert labels_of(event) == {
        "alertname": "ModelDrift",
        "model": "credit",
        "signal_kind": "performance",
        "signal": "error",
        "severity": "critical",
        "monitor_key": "credit|n=3",
        "alert_id": event["id"],
    }
    notes = annotations_of(event)
    assert notes["change"] == "0.1 → 0.3 (recent 0.31)"
    assert notes["summary"] == "credit|n=3 performance/error: 0.1 → 0.3 (recent 0.31)"
    assert notes["likely_causes"] == "income (+1.02σ, 50.1 → 60.3)"
    assert notes["detector"] == "adwin (rule adwin), 1003 observations"
    assert notes["description"].startswith("[CRITICAL] credit|n=3 performance/error")
    # No data.effect: the standardised shift the stats imply, |0.3 - 0.1| / 0.3.
    assert notes["effect"] == "0.67 sd (|0.3 − 0.1| / std 0.3)"
    del event["data"]["stats"]["std"]
    assert "effect" not in annotations_of(event)


@pytest.mark.parametrize(
    ("effect", "shown"),
    [
        (0.5, "+0.50 sd"),  # a number: a standardised shift
        (-1.25, "-1.25 sd"),
        (
            {"statistic": "mean", "before": 100.0, "after": 130.0, "shift": 1.5, "size": 1.5},
            "100 → 130 (+1.50 sd)",
        ),
        ({"shift": 0.8}, "+0.80 sd"),
        ({"statistic": "spread", "before": 20, "after": 40, "ratio": 2.0}, "sd 20 → 40 (x2)"),
        ({"statistic": "rate", "before": 0.1, "after": 0.3, "absolute": 0.2}, "0.1 → 0.3 (+0.2)"),
        ({"cohens_d": 0.6667, "direction": "up"}, "cohens_d=0.6667, direction=up"),
        ("large", "large"),
    ],
)
def test_the_effect_annotation_renders_data_effect_whatever_its_shape(
    effect: object, shown: str
) -> None:
    event = drift_alert(3)
    event["data"]["effect"] = effect
    assert annotations_of(event)["effect"] == shown


def categorical_alerts() -> list[dict[str, Any]]:
    """What the monitor publishes for a country mix that moves (fr 20% -> 60%) and a device
    type that appears, with a reference for both features (its own code, not a hand-made
    event)."""
    reference = {
        "format": FORMAT,
        "models": {
            "fraud": {
                "signals": {
                    "feature/country": {
                        "n": 10_000,
                        "categories": {"fr": 0.2, "de": 0.3, "es": 0.25, "it": 0.25},
                    },
                    "feature/device": {"n": 10_000, "categories": {"ios": 0.6, "web": 0.4}},
                }
            }
        },
    }
    settings = replace(build_config({}, environ={}).monitor_settings(), reference=parse(reference))
    rng = random.Random(3)
    events = [
        {
            "prediction_id": f"p{i}",
            "model": "fraud",
            "prediction": 1,
            "timestamp": 1_767_225_600_000 + 100 * i,
            "features": {
                "country": rng.choices(["fr", "de", "es", "it"], [0.6, 0.15, 0.125, 0.125])[0],
                "device": "foldable" if rng.random() < 0.3 else rng.choice(["ios", "web"]),
            },
        }
        for i in range(400)
    ]
    batch = [Record(PREDICTION, event, None, "p", 0, i) for i, event in enumerate(events)]
    return [alert.event for alert in Monitor(settings).process(batch).alerts]


def test_categorical_alerts_say_which_categories_moved_in_alertmanager_and_slack() -> None:
    found = {event["data"]["signal"]: event for event in categorical_alerts()}
    country = found["country"]
    notes = annotations_of(country)
    moved = describe_categories(country["data"]["effect"]["categories"])
    assert moved.startswith("fr 0.20 → 0.6")
    assert notes["change"] == moved
    assert notes["summary"] == f"fraud feature/country: {moved}"
    assert notes["effect"] == f"{moved} (w {country['data']['effect']['distance']:.2f})"
    assert "σ" not in notes["effect"] and "sd" not in notes["effect"]
    assert "category" not in labels_of(country) and labels_of(country)["signal"] == "country"
    # a new device type: its unseen rate names it, and so does the device mix's alert
    unseen = annotations_of(found["unseen_rate:device"])
    assert unseen["effect"] == "0.0001 → 0.2222 (+22.21 sd) new: foldable 0.22"
    device = annotations_of(found["device"])["effect"]
    assert (
        device
        == "(other) 0.00 → 0.28, ios 0.60 → 0.35, web 0.40 → 0.37 (w 0.51) new: foldable 0.32"
    )
    text = slack_text(record(country))
    assert f"feature/country {moved}" in text and "effect: fr 0.20 → 0.6" in text


def test_a_categorical_likely_cause_shows_its_categories() -> None:
    event = drift_alert(4)
    event["data"]["likely_causes"] = [
        {
            "feature": "country",
            "shift": 1.9,
            "statistic": "categories",
            "categories": [
                {"category": "fr", "before": 0.2, "after": 0.58},
                {"category": None, "before": 0.0, "after": 0.1},
            ],
        },
        {"feature": "income", "shift": 1.02, "baseline_mean": 50.1, "recent_mean": 60.3},
    ]
    expected = "country (fr 0.20 → 0.58, (other) 0.00 → 0.10), income (+1.02σ, 50.1 → 60.3)"
    assert annotations_of(event)["likely_causes"] == expected
    assert describe(event).endswith(
        "likely causes: country (fr 0.20 → 0.58, (other) 0.00 → 0.10), income (+1.02σ)"
    )


class Quiet:
    """A worker's outcomes, not recorded."""

    def accepted(self, *args: object) -> None: ...

    def failed(self, *args: object) -> None: ...

    def dead_lettered(self, *args: object) -> None: ...


class FakeEndpoint:
    path = "/"

    def __init__(self) -> None:
        self.posts: list[tuple[str | None, list[dict[str, Any]]]] = []
        self.failing = False

    def post(self, body: bytes, headers: dict[str, str], path: str | None = None) -> bytes:
        if self.failing:
            raise SinkError("unreachable", "down")
        self.posts.append((path, orjson.loads(body)))
        return b""

    def close(self) -> None:
        return None


def alertmanager_sink(endpoint: FakeEndpoint, **options: Any) -> AlertmanagerSink:
    """Re-posting every 60 s, alerts active for an hour, unless `options` say otherwise."""
    return AlertmanagerSink(
        endpoint=endpoint,  # type: ignore[arg-type]
        **{"repeat_post": 60, "active_for": 3600, **options},
    )


def test_alertmanager_life_cycle_post_repost_resolve_rebuild_and_bounds() -> None:
    now = [100.0]
    wall = [1_767_225_700_000]
    endpoint = FakeEndpoint()
    sink = alertmanager_sink(endpoint, max_active=2, clock=lambda: now[0], wall_ms=lambda: wall[0])
    first, second, third = drift_alert(1), drift_alert(2), drift_alert(3)
    sink.deliver(record(first, 0, wall[0]))
    path, [posted] = endpoint.posts[-1]
    assert path == "/api/v2/alerts"
    assert posted["startsAt"] == first["time"] and "endsAt" not in posted
    assert sink.next_due() == 160.0
    sink.deliver(record(second, 1, wall[0]))
    sink.deliver(record(third, 2, wall[0]))  # max_active 2: the oldest stops being re-posted
    assert sink.active == 2
    now[0] = 160.0
    sink.run_due(now[0])
    assert sorted(a["labels"]["alert_id"] for a in endpoint.posts[-1][1]) == sorted(
        [second["id"], third["id"]]
    )
    closing = resolved_alert(third, 1_767_225_650_000)
    sink.deliver(record(closing, 3, wall[0]))
    _, [closed] = endpoint.posts[-1]
    assert closed["labels"] == posted["labels"] | {
        "monitor_key": "credit|n=3",
        "alert_id": third["id"],
    }
    assert closed["endsAt"] == closing["time"] and sink.active == 1
    # An alert older than active_for is no longer re-posted (Alertmanager resolves it itself).
    wall[0] += 3_600_001
    sink.run_due(220.0)
    assert sink.active == 0 and sink.next_due() is None

    rebuilt = alertmanager_sink(
        FakeEndpoint(), clock=lambda: 500.0, wall_ms=lambda: 1_767_225_700_000
    )
    for offset, event in enumerate([first, second, resolved_alert(first, 1_767_225_650_000)]):
        rebuilt.remember(record(event, offset, 1_767_225_690_000))
    assert rebuilt.active == 1 and rebuilt.next_due() == 500.0  # re-posted as soon as rebuilt


def test_alertmanager_stops_reposting_the_alerts_of_revoked_partitions() -> None:
    # An instance that lost partition 1 kept re-posting its alerts (without endsAt) for up to
    # active_for, re-opening an alert the partition's new owner had resolved.
    wall = 1_767_225_700_000
    endpoint = FakeEndpoint()
    sink = alertmanager_sink(endpoint, clock=lambda: 100.0, wall_ms=lambda: wall)
    mine, theirs = drift_alert(1), drift_alert(2)
    sink.deliver(record(mine, 0, wall, partition=0))
    sink.deliver(record(theirs, 0, wall, partition=1))
    sink.forget({1})
    sink.run_due(160.0)
    assert [alert["labels"]["alert_id"] for alert in endpoint.posts[-1][1]] == [mine["id"]]
    assert sink.active == 1


class Counting(FakeEndpoint):
    def __init__(self) -> None:
        super().__init__()
        self.alerts = 0

    def post(self, body: bytes, headers: dict[str, str], path: str | None = None) -> bytes:
        self.alerts += len(orjson.loads(body))
        return super().post(body, headers, path)


def test_a_rebuild_reposts_what_it_rebuilt_once_when_drained() -> None:
    # /tmp/review/rebuild_posts.py: every remembered alert made the worker re-post the whole
    # active set, 1,500 POSTs carrying 500,500 alerts for 1,000 alerts rebuilt.
    endpoint = Counting()
    sink = alertmanager_sink(endpoint, repeat_post=150, active_for=86400)
    worker = SinkWorker(sink, dead_letter=lambda *a: None, outcomes=Quiet(), give_up_after=60)
    wall = int(time.time() * 1000)
    for offset in range(1000):
        worker.offer(
            record(drift_alert(offset, model=f"m{offset % 50}"), offset, wall), deliver=False
        )
    worker.start()
    wait_for(lambda: endpoint.alerts >= 1000, 10, "the rebuilt alerts re-posted")
    time.sleep(0.2)
    assert (len(endpoint.posts), endpoint.alerts) == (2, 1000)  # two batches of 500
    assert sink.active == 1000
    # A second partition's rebuild, after a delivery: only what it adds is posted, once.
    worker.offer(record(drift_alert(5000), 5000, wall))
    for offset in range(1000, 1010):
        worker.offer(record(drift_alert(offset), offset, wall, partition=1), deliver=False)
    wait_for(lambda: endpoint.alerts >= 1011, 10, "the second rebuild posted")
    time.sleep(0.2)
    worker.stop()
    assert [len(alerts) for _, alerts in endpoint.posts] == [500, 500, 1, 10]


@pytest.fixture
def server() -> Any:
    with WebhookServer() as running:
        yield running


def test_structured_and_binary_cloudevents_parse_with_the_cloudevents_sdk(server: Any) -> None:
    event = drift_alert(5)
    event["subject"] = "modèle/error rate"
    secret = "Bearer s3cret-token-123"
    structured = WebhookSink(
        name="hook",
        endpoint=HttpEndpoint(server.url + "/ce?token=abc"),
        headers={"Authorization": secret, "X-Team": "ml"},
    )
    structured.deliver(record(event))
    binary = WebhookSink(name="bin", endpoint=HttpEndpoint(server.url + "/bin"), mode="binary")
    binary.deliver(record(event))
    first, second = server.received
    assert first.path == "/ce?token=abc"
    assert first.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert first.headers["Authorization"] == secret and first.headers["X-Team"] == "ml"
    assert first.body == orjson.dumps(event)  # the record's bytes, unchanged
    parsed = from_http(first.headers, first.body)
    assert (parsed["id"], parsed["type"], parsed.data) == (
        event["id"],
        event["type"],
        event["data"],
    )
    assert second.headers["Content-Type"] == "application/json"
    assert {k: v for k, v in second.headers.items() if k.startswith("ce-")} == {
        "ce-specversion": "1.0",
        "ce-id": event["id"],
        "ce-source": "stream-monitor/forward-test",
        "ce-type": "stream_monitor.drift_detected",
        "ce-subject": "mod%C3%A8le/error%20rate",  # percent-encoded, as the HTTP binding says
        "ce-time": event["time"],
    }
    parsed = from_http(second.headers, second.body)
    assert parsed["id"] == event["id"] and parsed.data == event["data"]
    assert unquote(parsed["subject"]) == event["subject"]


def test_slack_text(server: Any) -> None:
    event = drift_alert(6)
    sink = WebhookSink(name="slack", endpoint=HttpEndpoint(server.url), format="slack")
    sink.deliver(record(event))
    sink.deliver(record(resolved_alert(event, 1_767_225_650_000)))
    detected, resolved = (item.json() for item in server.received)
    assert detected == {
        "text": ":rotating_light: *Model drift* [CRITICAL] credit|n=6 performance/error 0.1 -&gt; 0.3 "
        "(recent 0.31) (adwin after 1006 obs, 2026-01-01T00:00:06.000Z) likely causes: income "
        f"(+1.02σ) effect: 0.67 sd (|0.3 − 0.1| / std 0.3) (alert `{event['id']}`)"
    }
    assert resolved == {
        "text": f":white_check_mark: *Resolved* credit|n=6 performance/error (alert `{event['id']}`)"
    }
    assert slack_text(record(event)) == detected["text"]


def test_http_outcomes_and_no_secret_in_errors_or_logs(server: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = "ops:p%40ss-w0rd"
    url = server.url.replace("http://", f"http://{credentials}@") + "/services/T0/B0/secret-path"
    endpoint = HttpEndpoint(url + "?token=abc", timeout=2)
    server.failing(1, status=503)
    with pytest.raises(SinkError) as caught:
        endpoint.post(b"{}", {})
    assert (caught.value.reason, caught.value.retryable) == ("http_503", True)
    server.failing(1, status=400)
    with pytest.raises(SinkError) as caught:
        endpoint.post(b"{}", {})
    assert (caught.value.reason, caught.value.retryable) == ("http_400", False)
    server.failing(1, status=429)
    with pytest.raises(SinkError) as caught:
        endpoint.post(b"{}", {})
    assert caught.value.retryable
    endpoint.post(b"{}", {})  # the kept-alive connection still works after errors
    assert "secret-path" not in str(caught.value)
    # User info in the URL is sent as Basic authentication, as curl does.
    basic = "Basic " + base64.b64encode(b"ops:p@ss-w0rd").decode()
    assert server.received[-1].headers["Authorization"] == basic
    assert server.received[-1].path == "/services/T0/B0/secret-path?token=abc"
    closed = HttpEndpoint("http://127.0.0.1:9/hooks/secret-path", timeout=1)
    with pytest.raises(SinkError) as caught:
        closed.post(b"{}", {})
    assert caught.value.reason == "unreachable" and "secret-path" not in caught.value.detail
    assert "http://127.0.0.1:9/..." in caught.value.detail
    # What the forwarder logs about a failing sink (each retry, the give-up, the dead letter):
    # there are such lines, and none holds a secret.
    server.fail_for(60)
    dead: list[SinkError] = []
    worker = SinkWorker(
        WebhookSink(name="hook", endpoint=endpoint),
        dead_letter=lambda record_, sink, error: dead.append(error),
        outcomes=Quiet(),
        give_up_after=0.3,
        backoff=0.05,
    ).start()
    worker.offer(record(drift_alert(7)))
    wait_for(lambda: bool(dead), 5, "the alert dead-lettered")
    worker.stop()
    assert "sink=hook alert=" in caplog.text and "reason=http_503" in caplog.text
    assert "dead-lettered" in caplog.text and dead[0].detail.startswith("http://127.0.0.1:")
    for secret in ("secret-path", "token=abc", "p%40ss-w0rd", "p@ss-w0rd", basic.split()[1]):
        assert secret not in caplog.text and secret not in dead[0].detail, secret
