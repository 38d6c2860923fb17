"""One small HTTP server per instance: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes.

It runs on a daemon thread beside the consume loop and only reads what the loop publishes
(gauges, flags, timestamps), so a slow scrape never stalls processing. The two probes answer
different questions, as orchestrators expect:

- `/healthz` (liveness): is the process alive and its loop turning? 503 means "restart me".
- `/readyz` (readiness): are assigned partitions restored, and is the broker reachable? 503 means
  "do not count on me yet" (starting, restoring, rebalancing or cut off from Kafka).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream_monitor.errors import StreamMonitorError

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serves the registry and the two probes; `port=0` binds any free port (see `.port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        liveness: Probe,
        readiness: Probe,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        handler = _handler(registry, {"/healthz": liveness, "/readyz": readiness})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise StreamMonitorError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror} "
                f"(set metrics.port, --metrics-port, or metrics.enabled: false)"
            ) from exc
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and probes on %s/metrics %s/healthz %s/readyz", *[self.url] * 3)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(registry: CollectorRegistry, probes: dict[str, Probe]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                return
            probe = probes.get(path)
            if probe is None:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")
                return
            ok, detail = probe()
            body = orjson.dumps({"status": "ok" if ok else "unavailable", **detail})
            self._reply(200 if ok else 503, body + b"\n", "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the service's own lines.
            log.debug("http %s", format % args)

    return Handler
