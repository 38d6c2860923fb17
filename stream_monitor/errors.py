"""One root exception for the project, so callers can catch everything we raise in one place."""


class StreamMonitorError(Exception):
    """Base class of every error stream-monitor raises on purpose."""


class ConfigError(StreamMonitorError):
    """The configuration is invalid; the message names the offending key."""


class StateError(StreamMonitorError):
    """State bytes could not be trusted or understood (bad signature, unknown format)."""
