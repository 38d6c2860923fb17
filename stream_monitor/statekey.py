"""Where the state signing key comes from: config, environment, or a local key file."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from stream_monitor.config import Config

log = logging.getLogger(__name__)


def local_key_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stream-monitor" / "state.key"


def resolve_signing_key(config: Config) -> bytes:
    """The configured key; else a per-machine key file, created on first use.

    A per-machine key is fine for one host. Instances on several hosts must share
    `state.signing_key` (or STREAM_MONITOR_STATE_KEY), or they cannot read each other's state.
    """
    configured = config.signing_key()
    if configured is not None:
        return configured
    path = local_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        log.warning(
            "no state.signing_key configured: created a local key in %s. Set the same "
            "STREAM_MONITOR_STATE_KEY on every instance when running on several hosts.",
            path,
        )
    return path.read_text().strip().encode()
