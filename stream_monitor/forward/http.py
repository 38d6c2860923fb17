"""A small HTTP/1.1 client over the standard library: one kept-alive connection per sink.

`http.client` is enough for posting JSON to a few endpoints, keeps the forwarder free of a
dependency, and lets every outcome map onto a delivery decision: 2xx accepted; 408, 425, 429
and 5xx retried (the receiver may take it later); any other status rejected for good (the same
request cannot succeed); connection errors and timeouts retried.

Credentials in the URL (`https://user:pass@host/...`) are sent as HTTP Basic authentication, as
curl and browsers do; errors and logs show the URL as `scheme://host:port/...` only.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from urllib.parse import unquote, urlsplit

from stream_monitor.forward.sinks import SinkError
from stream_monitor.secrets import display_url

RETRIED_STATUS = frozenset({408, 425, 429})


def basic_authorization(url: str) -> str | None:
    """The `Authorization` header value for the user info of `url`, None when it has none."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class HttpEndpoint:
    """POSTs to one URL. Not thread-safe: each sink has its own, used by its own worker."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.url = url
        self.shown = display_url(url)  # what logs and errors may show
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self.path = parts.path or "/"
        self._target = self.path + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        authorization = basic_authorization(url)
        self._auth = {} if authorization is None else {"Authorization": authorization}
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str], path: str | None = None) -> bytes:
        """POST and return the response body for a 2xx; raise `SinkError` otherwise."""
        target = self._target if path is None else path
        headers = {**headers, **self._auth}
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request("POST", target, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if attempt == 1:  # a kept-alive connection the server had closed: once more
                    continue
                raise SinkError("unreachable", f"{self.shown}: {exc.__class__.__name__}") from exc
            except TimeoutError as exc:
                self.close()
                raise SinkError("timeout", f"{self.shown}: no answer in {self._timeout}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise SinkError("unreachable", f"{self.shown}: {_reason(exc)}") from exc
            if response.will_close:
                self.close()
            status = response.status
            if 200 <= status < 300:
                return payload
            detail = f"{self.shown} answered {status}: {payload[:200].decode('utf-8', 'replace')}"
            retry = status >= 500 or status in RETRIED_STATUS
            raise SinkError(f"http_{status}", detail, retryable=retry)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._connection


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return str(text)
