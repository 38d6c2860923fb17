"""Apache Kafka on loopback, from Maven Central's jars: the reference broker of tests and benchmarks.

`resolve()` copies the broker's runtime jars (`tools/kafka/pom.xml`) into a cache outside the
repository, once; Maven's own repository (~/.m2) keeps the downloads. `ApacheKafka` starts one
combined broker+controller node (KRaft) on free loopback ports; `KafkaCluster` starts several, for
broker faults (kill -9 a partition leader or the transaction coordinator, then restart it). Both
format their storage in a temporary directory and remove it when stopped.

Needs Java 17+ (JAVA_HOME or `java` on PATH) and Maven (`mvn`) for the first resolve.
`python -m stream_monitor.apache_kafka` runs one for a person until Ctrl-C (`make kafka`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from stream_monitor.embedded import BrokerError, dies_with_us, free_port

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parents[1] / "tools" / "kafka" / "pom.xml"
READY_MARKER = b"Kafka Server started"
# From kafka-run-class.sh, with a heap small enough for three nodes and a test run on 2 cores.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaUnavailable(BrokerError):
    """Apache Kafka cannot be resolved or started here (no JDK 17, no Maven, no repository)."""


def kafka_version(pom: Path = POM) -> str:
    """The broker version the pom pins (`kafka.version`)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    element = ElementTree.parse(pom).getroot().find("m:properties/m:kafka.version", namespace)
    if element is None or not element.text:
        raise KafkaUnavailable(f"{pom} does not set kafka.version")
    return element.text.strip()


def cache_root() -> Path:
    override = os.environ.get("STREAM_MONITOR_KAFKA_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-monitor" / "kafka"


def resolve(pom: Path = POM) -> Path:
    """The directory of the broker's jars, resolved from Maven Central on first use.

    Keyed by the pom's content, so editing the pom resolves again; a lock keeps two test
    sessions from resolving into the same directory at once.
    """
    if not pom.is_file():
        raise KafkaUnavailable(f"{pom} is missing (run from a checkout of stream-monitor)")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    home = cache_root() / f"{kafka_version(pom)}-{digest}"
    libs, done = home / "libs", home / "resolved"
    if done.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return libs
        maven = shutil.which("mvn")
        if maven is None:
            raise KafkaUnavailable(
                "Apache Kafka's jars are not resolved yet and Maven (mvn) is not on PATH: "
                "install Maven, or run the tests on the embedded broker (--broker=tansu)"
            )
        shutil.rmtree(libs, ignore_errors=True)
        log.info("resolving Apache Kafka %s from Maven Central into %s", kafka_version(pom), libs)
        command = [
            maven,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(libs, ignore_errors=True)
            raise KafkaUnavailable(
                f"mvn could not resolve Apache Kafka (exit {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        done.write_text(" ".join(sorted(path.name for path in libs.glob("*.jar"))))
    return libs


def java_binary() -> str:
    """Java 17 or newer, from JAVA_HOME or PATH (Kafka 4 brokers need 17)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaUnavailable(
            "Apache Kafka needs Java 17+ (set JAVA_HOME or put java on PATH), "
            "or run the tests on the embedded broker (--broker=tansu)"
        )
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', output.stderr + output.stdout)
    if match is None or int(match.group(1)) < 17:
        raise KafkaUnavailable(f"{java} is not Java 17 or newer: {output.stderr.strip()[:200]}")
    return java


def random_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` makes it: 16 random bytes, base64url.

    Kafka never hands out ids that start with '-' (they read as command-line options).
    """
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _properties(settings: Mapping[str, Any]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaNode:
    """One Kafka process (broker and controller) with its own ports, storage and log file."""

    def __init__(self, node_id: int, host: str, directory: Path, heap: str = "512m") -> None:
        self.node_id = node_id
        self.host = host
        self.port = free_port(host)
        self.controller_port = free_port(host)
        self.directory = directory
        self.heap = heap
        self.log_path = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@{self.host}:{self.controller_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def configure(self, voters: str, settings: Mapping[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "log4j2.properties").write_text(LOG4J2)
        server = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.address},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.address}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.directory / "data"),
            **settings,
        }
        path = self.directory / "server.properties"
        path.write_text(_properties(server))
        return path

    def _java(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *JVM_OPTIONS,
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def format(
        self,
        java: str,
        libs: Path,
        voters: str,
        settings: Mapping[str, Any],
        cluster_id: str,
    ) -> subprocess.Popen[str]:
        """Write the node's config and start formatting its storage (`formatted` waits)."""
        config = self.configure(voters, settings)
        command = self._java(java, libs, "kafka.tools.StorageTool", "format", "-t", cluster_id)
        command += ["-c", str(config)]
        # The storage tool needs no big heap; the node's own would only slow it down.
        command[1:3] = ["-Xmx256m", "-Xms64m"]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    @staticmethod
    def formatted(process: subprocess.Popen[str]) -> None:
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            raise KafkaUnavailable(f"formatting Kafka storage failed: {output[-2000:]}")

    def start(self, java: str, libs: Path) -> None:
        if self.running:
            return
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                dies_with_us(
                    self._java(java, libs, "kafka.Kafka", str(self.directory / "server.properties"))
                ),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the JVM
            )

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise KafkaUnavailable(
                    f"Kafka node {self.node_id} exited (code {code}) while starting; "
                    f"last log lines:\n{self.tail()}"
                )
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_start)
                if READY_MARKER in handle.read():
                    return
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"Kafka node {self.node_id} did not start in time; last log lines:\n"
                    f"{self.tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the crash of a broker, with no controlled shutdown."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def rss_bytes(self) -> int:
        """Resident memory of the running JVM (0 when stopped)."""
        if not self.running or self.process is None:
            return 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def local_settings(size: int) -> dict[str, Any]:
    """Broker settings for tests: production defaults, except what only slows a test down.

    With three nodes: replication factor 3 and min.insync.replicas 2 everywhere, so any one node
    can die without losing a committed record or stopping transactions.
    """
    replicas = min(size, 3)
    in_sync = 2 if replicas >= 3 else 1
    return {
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        # The first group would otherwise wait 3 s for more members to join.
        "group.initial.rebalance.delay.ms": 0,
        # Tests use session timeouts of a few seconds (classic and KIP-848 groups).
        "group.min.session.timeout.ms": 1000,
        "group.consumer.min.session.timeout.ms": 1000,
        "group.consumer.min.heartbeat.interval.ms": 500,
        # KIP-848 groups take these from the broker (defaults 45 s and 5 s): the classic groups'
        # 6 s session of the tests, so that both protocols are tested at the same timing.
        "group.consumer.session.timeout.ms": 6000,
        "group.consumer.heartbeat.interval.ms": 1000,
        # The default dedupe buffer takes 128 MiB of the heap.
        "log.cleaner.dedupe.buffer.size": 8_388_608,
        # A killed node is fenced after this (default 9 s); tests wait for it.
        "broker.session.timeout.ms": 6000,
        "broker.heartbeat.interval.ms": 1000,
    }


class KafkaCluster:
    """`size` combined broker+controller nodes forming one KRaft quorum on loopback.

    Node ids are 1..size. Killing one of three keeps the quorum; killing two loses it.
    `durable`: unlike the embedded broker, a stopped and restarted cluster keeps its data.
    """

    kind = "kafka"
    durable = True
    aborts_dead_transactions = True

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        directory: Path | None = None,
        settings: Mapping[str, Any] | None = None,
        heap: str = "512m",
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = size
        self.host = host
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="stream-monitor-kafka-"))
        self.settings = {**local_settings(size), **(settings or {})}
        self.nodes = [
            KafkaNode(node_id, host, self.directory / f"node-{node_id}", heap)
            for node_id in range(1, size + 1)
        ]
        self.started_in: float | None = None  # seconds, from the first start
        self._java: str | None = None
        self._libs: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Format storage on the first start; later starts bring the nodes back with their data."""
        started = time.monotonic()
        if self._java is None or self._libs is None:
            self._java, self._libs = java_binary(), resolve()
            voters = ",".join(node.voter for node in self.nodes)
            cluster_id = random_cluster_id()
            formatting = [
                node.format(self._java, self._libs, voters, self.settings, cluster_id)
                for node in self.nodes
            ]
            for process in formatting:
                KafkaNode.formatted(process)
        for node in self.nodes:
            node.start(self._java, self._libs)
        try:
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        seconds = time.monotonic() - started
        if self.started_in is None:
            self.started_in = seconds
        log.info(
            "apache kafka %s nodes=%d bootstrap_servers=%s started in %.1fs",
            kafka_version(),
            self.size,
            self.bootstrap_servers,
            seconds,
        )
        return self

    def kill(self, node_id: int) -> None:
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again, on its ports and with its data."""
        assert self._java is not None and self._libs is not None, "start the cluster first"
        node = self.node(node_id)
        node.start(self._java, self._libs)
        node.wait_ready(time.monotonic() + timeout)

    def heal(self, timeout: float = 90.0) -> list[int]:
        """Restart every node that is not running (one a failed test killed and never brought
        back), so that what runs next finds the whole cluster. Returns their ids."""
        down = [node.node_id for node in self.nodes if not node.running]
        for node_id in down:
            self.restart(node_id, timeout)
        return down

    def rss_bytes(self) -> int:
        return sum(node.rss_bytes() for node in self.nodes)

    def stop(self) -> None:
        """Stop every node (controlled shutdown), keeping the data: `start` brings it back."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop, and remove the storage when this object made it."""
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ApacheKafka(KafkaCluster):
    """One node: the reference broker of `make test` and `make bench`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        directory: Path | None = None,
        settings: Mapping[str, Any] | None = None,
        heap: str = "512m",
    ) -> None:
        super().__init__(1, host=host, directory=directory, settings=settings, heap=heap)


def transaction_coordinator_partition(transactional_id: str, partitions: int = 50) -> int:
    """The `__transaction_state` partition whose leader coordinates this transactional.id.

    Kafka's `TransactionStateManager.partitionFor`: abs(Java String.hashCode) modulo the
    partition count (`transaction.state.log.num.partitions`, 50 by default).
    """
    data = transactional_id.encode("utf-16-be")  # Java strings hash their UTF-16 code units
    code = 0
    for index in range(0, len(data), 2):
        code = (31 * code + (data[index] << 8 | data[index + 1])) & 0xFFFFFFFF
    if code >= 1 << 31:
        code -= 1 << 32
    return (abs(code) if code != -(1 << 31) else 0) % partitions


@contextlib.contextmanager
def running_kafka(size: int = 1, **kwargs: Any) -> Iterator[KafkaCluster]:
    cluster = ApacheKafka(**kwargs) if size == 1 else KafkaCluster(size, **kwargs)
    with cluster:
        yield cluster


def main() -> None:  # pragma: no cover - for people (`make kafka`)
    import argparse

    parser = argparse.ArgumentParser(description="Run Apache Kafka on loopback until Ctrl-C.")
    parser.add_argument("--nodes", type=int, default=1, help="1 (default) or 3 for a cluster")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with running_kafka(args.nodes) as cluster:
        rss = cluster.rss_bytes() / 2**20
        print(
            f"Apache Kafka {kafka_version()} ready in {cluster.started_in:.1f}s, "
            f"RSS {rss:.0f} MiB\nbootstrap servers: {cluster.bootstrap_servers}\n"
            f"data and logs: {cluster.directory} (removed at exit)\nCtrl-C stops it.",
            flush=True,
        )
        while not stop and all(node.running for node in cluster.nodes):
            time.sleep(0.2)


if __name__ == "__main__":  # pragma: no cover
    main()
