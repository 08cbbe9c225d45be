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
    """A real Apache Kafka 4 broker (KRaft, Java) on 127.0.0.1, for the whole session."""
    from tests.streaming.kafka_broker import KafkaBroker

    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def pubsub_server():
    """An in-process Pub/Sub gRPC server on 127.0.0.1, for the whole session.

    ``PUBSUB_EMULATOR_HOST`` points every google-cloud-pubsub client created meanwhile
    (Beam's DirectRunner included) at it, and is restored afterwards.
    """
    import os

    from tests.streaming.pubsub_server import PubSubServer

    with PubSubServer() as server:
        before = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = server.host
        try:
            yield server
        finally:
            if before is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = before
