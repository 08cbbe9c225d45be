"""Fixtures of the streaming-source tests: a real Kafka-protocol server on loopback."""

from __future__ import annotations

import pytest

from tests.streaming.kafka_cluster import MockKafkaCluster


@pytest.fixture(scope="session")
def kafka_cluster():
    """librdkafka's mock cluster (3 brokers on 127.0.0.1), for the whole session."""
    with MockKafkaCluster(brokers=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_broker():
    """A real Apache Kafka 0.9.0.1 broker with ZooKeeper (Java), for the whole session."""
    from tests.streaming.kafka_broker import KafkaBroker

    with KafkaBroker() as broker:
        yield broker
