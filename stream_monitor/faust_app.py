"""`faust -A stream_monitor.faust_app worker`: the monitor as a standalone Faust app.

The config file is named by the STREAM_MONITOR_CONFIG environment variable. To add the monitor to
an app of your own instead, call `stream_monitor.faust_runtime.install` (see docs/faust.md).
"""

from stream_monitor.faust_runtime import app_from_environment

app = app_from_environment()
