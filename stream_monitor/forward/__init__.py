"""Alert delivery: `stream-monitor forward` reads the alerts topic and delivers to sinks.

Alertmanager (API v2) and HTTP webhooks (CloudEvents or Slack-compatible text), at least once,
one failing sink isolated from the others until it holds `forward.max_pending` alerts; see
docs/forwarding.md.
"""

from stream_monitor.errors import StreamMonitorError


class ForwardError(StreamMonitorError):
    """The forwarder cannot go on (e.g. its dead-letter topic cannot be written)."""
