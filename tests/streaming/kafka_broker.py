"""A real Apache Kafka 4 broker for tests: KRaft mode, one process that is both broker
and controller, on 127.0.0.1 only.

The jars come from Maven Central (``kafka-broker.pom.xml`` beside this file), copied
into ``tests/streaming/.kafka4/libs`` (git-ignored) by ``make test`` through
``python -m tests.streaming.kafka_broker``, or here on first use if Maven is present.
Each ``KafkaBroker`` formats a fresh log folder with a random cluster id and starts
Java 17 on two free loopback ports (clients, controller); nothing listens elsewhere.
Clients use kafka-python with the protocol version probed (``API_VERSION`` = None):
Kafka 4.0 removed the oldest request versions (KIP-896), which kafka-python 2.0.2 to
3.0.12 do not send.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

API_VERSION = None  # probed: the broker tells its versions
HERE = Path(__file__).resolve().parent
POM = HERE / "kafka-broker.pom.xml"
LIBS = HERE / ".kafka4" / "libs"
_JAVA_OPTIONS = ["-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
_START_SECONDS = 180.0  # two cores shared with other test runs: the JVM can start slowly
_LOG4J = """\
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka.clients
logger.kafka.level = WARN
"""


def fetch_jars() -> None:
    """Copy the broker's jars from Maven Central into ``LIBS`` (once)."""
    if LIBS.is_dir() and any(LIBS.glob("kafka_2.13-*.jar")):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            f"the Kafka broker's jars are missing ({LIBS}) and Maven is not installed; "
            "run `make test`, or install Maven and run: python -m tests.streaming.kafka_broker"
        )
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={LIBS}", "-DincludeScope=runtime"],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(LIBS, ignore_errors=True)
        raise RuntimeError(f"fetching the Kafka broker's jars failed:\n{done.stdout[-3000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class KafkaBroker:
    """``with KafkaBroker() as broker: broker.bootstrap_servers`` (a fresh cluster)."""

    def __init__(self) -> None:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("the Kafka broker tests need Java 17 or later: java is not on PATH")
        fetch_jars()
        self._dir = Path(tempfile.mkdtemp(prefix="beam_ml_kafka_"))
        self._process: subprocess.Popen | None = None
        self._admin = None
        port, controller = _free_port(), _free_port()
        config = self._dir / "server.properties"
        config.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{controller}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n"
            "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            f"log.dirs={self._dir / 'data'}\nnum.partitions=1\n"
            "num.network.threads=2\nnum.io.threads=2\n"
            # one broker: internal topics have one replica; groups start without waiting
            "offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n"
            "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
        )
        (self._dir / "log4j2.properties").write_text(_LOG4J)
        self._log = self._dir / "kafka.log"
        command = [java, *_JAVA_OPTIONS, f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
                   "-cp", f"{LIBS}/*"]  # fmt: skip
        # An id that starts with "-" reads as an option to StorageTool (1 in 64): Kafka's own
        # Uuid.randomUuid draws again in that case, and so do we.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        try:
            subprocess.run(
                [*command, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id,
                 "--config", str(config)],
                check=True, capture_output=True, timeout=_START_SECONDS,
            )  # fmt: skip
            self._process = subprocess.Popen(
                [*command, "kafka.Kafka", str(config)],
                stdout=self._log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
            self.bootstrap_servers = f"127.0.0.1:{port}"
            self._admin = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _failure(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what}:\n{self._log.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self):
        """An admin client, once the broker answers metadata requests."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._failure(f"the Kafka broker exited ({self._process.returncode})")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, api_version=API_VERSION,
                    request_timeout_ms=10_000,
                )  # fmt: skip
                admin.list_topics()
                return admin
            except KafkaError:
                time.sleep(0.5)  # polling for readiness, not a timing assumption
        raise self._failure(f"the Kafka broker did not answer within {_START_SECONDS:.0f} s")

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` and wait until every partition has a leader."""
        from kafka import KafkaConsumer
        from kafka.admin import NewTopic

        self._admin.create_topics([NewTopic(name, partitions, 1)])
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, api_version=API_VERSION)
        try:
            deadline = time.monotonic() + 60
            while len(consumer.partitions_for_topic(name) or ()) < partitions:
                if time.monotonic() > deadline:
                    raise self._failure(f"topic {name!r} has no leaders after 60 s")
                time.sleep(0.1)
                consumer._client.cluster.request_update()
        finally:
            consumer.close()

    def produce(
        self,
        topic: str,
        values: list[bytes],
        partition: int | None = None,
        timestamps_ms: list[int] | None = None,
    ) -> None:
        """Send ``values`` in order (with these record timestamps, if given); wait for acks."""
        from tests.streaming.kafka_cluster import produce

        produce(self.bootstrap_servers, API_VERSION, topic, values, partition, timestamps_ms)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":  # `make test` fetches the jars before the tests run
    try:
        fetch_jars()
    except RuntimeError as exc:
        sys.exit(str(exc))
