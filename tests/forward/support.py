"""Real receivers for forwarder tests: a local Alertmanager and a recording webhook server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from stream_monitor.core.alerts import build_alert
from tests.helpers import required_tool
from tests.kafka.support import ServiceProcess, config_data, unique, wait_for

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alertmanager_binary() -> str:
    return required_tool(
        *ALERTMANAGER_BINARIES, hint="make test-tools installs Debian's prometheus-alertmanager"
    )


class Alertmanager:
    """`prometheus-alertmanager` on a free loopback port, cluster listener off, state in `folder`."""

    def __init__(self, folder: Path, resolve_timeout: str = "5m") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "alertmanager.yml"
        config.write_text(
            f"global: {{resolve_timeout: {resolve_timeout}}}\n"
            "route: {receiver: nowhere}\n"
            "receivers: [{name: nowhere}]\n"
        )
        self.log = folder / "alertmanager.log"
        self._command = [
            alertmanager_binary(),
            f"--config.file={config}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        self.process = subprocess.Popen(
            self._command, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        wait_for(self._ready, 30, f"Alertmanager ready on {self.url} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Alertmanager exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def by_id(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for alert in self.alerts():
            found.setdefault(alert["labels"]["alert_id"], alert)
        return found

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Received:
    __slots__ = ("at", "body", "headers", "path")

    def __init__(self, path: str, headers: dict[str, str], body: bytes, at: float) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.at = at

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookServer:
    """Records every POST. `failing(n)` answers 503 to the next n; `fail_for(seconds)` for a time.
    With `upstream` it is a recording proxy: each POST goes on to `upstream` (same path), whose
    status it answers, and is recorded when that was a 2xx."""

    def __init__(self, delay: float = 0.0, upstream: str | None = None) -> None:
        self.delay = delay  # seconds per answered request: a slow receiver
        self.upstream = upstream
        self.received: list[Received] = []
        self.refused = 0
        self._fail_left = 0
        self._fail_until = 0.0
        self._status_when_failing = 503
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = server._answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            if self._fail_left > 0 or time.monotonic() < self._fail_until:
                self._fail_left = max(self._fail_left - 1, 0)
                self.refused += 1
                return self._status_when_failing
        status = 200 if self.upstream is None else self._pass_on(path, headers, body)
        if 200 <= status < 300:
            with self._lock:
                self.received.append(Received(path, headers, body, time.time()))
        return status

    def _pass_on(self, path: str, headers: dict[str, str], body: bytes) -> int:
        request = urllib.request.Request(
            f"{self.upstream}{path}",
            data=body,
            headers={"Content-Type": headers.get("Content-Type", "application/json")},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def failing(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._fail_left, self._status_when_failing = count, status

    def fail_for(self, seconds: float, status: int = 503) -> None:
        with self._lock:
            self._fail_until, self._status_when_failing = time.monotonic() + seconds, status

    def ids(self, pick: Callable[[Received], str] | None = None) -> list[str]:
        with self._lock:
            items = list(self.received)
        return [pick(item) if pick else item.json()["id"] for item in items]

    def alerts_posted(self) -> list[dict[str, Any]]:
        """As a proxy of Alertmanager: every alert in every POST it took, in order."""
        with self._lock:
            items = list(self.received)
        return [alert for item in items for alert in item.json()]

    def posts_per_id(self) -> Counter[str]:
        return Counter(alert["labels"]["alert_id"] for alert in self.alerts_posted())

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def drift_alert(index: int, *, model: str = "credit", time_ms: int | None = None) -> dict[str, Any]:
    """A drift_detected CloudEvent as the monitor builds it (its own builder), one per index."""
    return build_alert(
        source="forward-test",
        key_id=f"{model}|n={index % 7}",
        model=model,
        model_version=None,
        segment={},
        signal_kind="performance",
        signal="error",
        rule="adwin",
        detector="adwin",
        detector_params={"delta": 0.002},
        observations=1000 + index,
        time_ms=time_ms if time_ms is not None else 1_767_225_600_000 + index * 1000,
        stats={
            "mean_before": 0.1,
            "mean_after": 0.3,
            "window_before": 500,
            "window_after": 200,
            "mean_recent": 0.31,
            "std": 0.3,
        },
        likely_causes=[
            {"feature": "income", "shift": 1.02, "baseline_mean": 50.1, "recent_mean": 60.3}
        ],
        position=("labels", 0, index),
    )


def resolved_alert(detected: dict[str, Any], time_ms: int) -> dict[str, Any]:
    """Issue 12's drift_resolved event for `detected` (same key fields, `data.resolves`)."""
    data = detected["data"]
    return {
        "specversion": "1.0",
        "id": f"{detected['id'][:-4]}ffff",
        "source": detected["source"],
        "type": "stream_monitor.drift_resolved",
        "subject": detected["subject"],
        "datacontenttype": "application/json",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time_ms / 1000)) + ".000Z",
        "data": {
            key: data[key] for key in ("model", "monitor_key", "signal_kind", "signal", "rule")
        }
        | {"resolves": detected["id"]},
    }


def forward_data(bootstrap: str, sinks: dict[str, Any], **forward: Any) -> dict[str, Any]:
    """A monitor config with unique topics, plus a forward section with unique names, fast timers."""
    data = config_data(bootstrap)
    data["forward"] = {
        "group_id": unique("forward"),
        "dead_letter_topic": unique("alert-dead-letters"),
        "commit_interval": "200ms",
        "retry_backoff": "100ms",
        "retry_backoff_max": "500ms",
        "metrics_port": 0,
        **sinks,
        **forward,
    }
    return data


def publish_alerts(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Alerts as the monitor publishes them: keyed by monitor key, CloudEvents content type."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for event in events:
        producer.produce(
            topic,
            orjson.dumps(event),
            event["data"]["monitor_key"].encode(),
            headers=[("content-type", b"application/cloudevents+json")],
        )
    assert producer.flush(30) == 0


class ForwarderProcess(ServiceProcess):
    """`stream-monitor forward` as a real process, so it can be killed with SIGKILL."""

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "stream_monitor.cli", *self.options),
            *("forward", "--config", str(self.path)),
        ]
