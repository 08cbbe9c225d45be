"""A real Kafka-protocol server for tests: librdkafka's mock cluster, via ctypes.

The ``confluent-kafka`` wheel bundles librdkafka, whose mock cluster
(``rd_kafka_mock_cluster_new``) is a TCP server speaking the Kafka protocol on
127.0.0.1, in this process, without Java. The code under test talks to it through
kafka-python over real sockets (``api_version=(2, 3)``), exactly as to a broker.
Known gaps of the mock: no timestamp lookups (``offsets_for_times``), and a group
coordinator that mishandles two consumers in one group.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

API_VERSION = (2, 3)


def _library() -> ctypes.CDLL:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise RuntimeError(
            "the Kafka tests need the confluent-kafka wheel (its bundled librdkafka runs a "
            "mock Kafka cluster): pip install -e '.[test]'"
        ) from exc
    site = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    found = glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*"))
    found += glob.glob(os.path.join(site, "confluent_kafka", ".dylibs", "librdkafka*.dylib"))
    if not found:
        raise RuntimeError(f"librdkafka not found beside confluent_kafka in {site}")
    lib = ctypes.CDLL(found[0])
    p, c, i, s = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    for name, restype, argtypes in [
        ("rd_kafka_conf_new", p, []),
        ("rd_kafka_conf_set", i, [p, c, c, c, s]),
        ("rd_kafka_new", p, [i, p, c, s]),
        ("rd_kafka_destroy", None, [p]),
        ("rd_kafka_mock_cluster_new", p, [p, i]),
        ("rd_kafka_mock_cluster_bootstraps", c, [p]),
        ("rd_kafka_mock_cluster_destroy", None, [p]),
        ("rd_kafka_mock_topic_create", i, [p, c, i, i]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class MockKafkaCluster:
    """``with MockKafkaCluster(brokers=1) as cluster: cluster.bootstrap_servers``."""

    def __init__(self, brokers: int = 1):
        self._lib = _library()
        error = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"0", error, len(error))
        self._handle = self._lib.rd_kafka_new(0, conf, error, len(error))  # a producer handle
        if not self._handle:
            raise RuntimeError(f"rd_kafka_new failed: {error.value.decode()}")
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._handle, brokers)
        if not self._cluster:
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()
        if not all(b.startswith("127.0.0.1:") for b in self.bootstrap_servers.split(",")):
            raise RuntimeError(f"the mock cluster is not on loopback: {self.bootstrap_servers}")

    def create_topic(self, name: str, partitions: int = 1) -> None:
        code = self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, 1)
        if code != 0:
            raise RuntimeError(f"creating topic {name!r} failed with error {code}")

    def produce(
        self,
        topic: str,
        values: list[Any],
        partition: int | None = None,
        timestamps_ms: list[int] | None = None,
    ) -> None:
        produce(self.bootstrap_servers, API_VERSION, topic, values, partition, timestamps_ms)

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = None
        if self._handle:
            self._lib.rd_kafka_destroy(self._handle)
            self._handle = None

    def __enter__(self) -> MockKafkaCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def produce(
    servers: str,
    api_version: tuple[int, ...] | None,
    topic: str,
    values: list[Any],
    partition: int | None = None,
    timestamps_ms: list[int] | None = None,
) -> None:
    """Send ``values`` (bytes or None), in order (with these record timestamps, if
    given), and wait for the acks."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=servers, api_version=api_version, linger_ms=5)
    try:
        for i, value in enumerate(values):
            key = b"k" if value is None else None  # a null value (a tombstone) needs a key
            stamp = None if timestamps_ms is None else timestamps_ms[i]
            producer.send(topic, value, key=key, partition=partition, timestamp_ms=stamp)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
