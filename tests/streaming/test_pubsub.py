"""Pub/Sub through the real google-cloud-pubsub client, against an in-process gRPC
server (``pubsub_server``): the server's semantics, ``PubSubPuller``, ``publish``,
record decoding and a streaming Beam pipeline reading with ``ReadPubSub``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_ml import PCAConfig
from beam_ml.core.errors import BadInputError
from beam_ml.core.runner import pipeline_options
from beam_ml.io.pubsub import PubSubPuller, ReadPubSub, parse_pubsub_url, publish
from beam_ml.io.records import DecodeRecords, decode_records, record_spec
from beam_ml.transforms import TrainStreaming
from tests.conftest import REPO

pytestmark = pytest.mark.streaming


@pytest.fixture
def topic_and_sub(pubsub_server):
    """A fresh topic and subscription (ack deadline 10 s); their paths."""
    name = uuid.uuid4().hex[:8]
    topic = pubsub_server.create_topic(f"t-{name}")
    return topic, pubsub_server.create_subscription(f"s-{name}", topic)


@pytest.fixture
def clients(pubsub_server):
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    publisher.stop()
    subscriber.close()


def _pull(subscriber, sub, n=10):
    return subscriber.pull(
        request={"subscription": sub, "max_messages": n}, timeout=5, retry=None
    ).received_messages


# ------------------------------------------------------------- the server, real client


def test_publish_pull_ack(pubsub_server, clients, topic_and_sub):
    publisher, subscriber = clients
    topic, sub = topic_and_sub
    ids = [publisher.publish(topic, b"row %d" % i, kind="csv").result(5) for i in range(3)]
    assert len(set(ids)) == 3

    got = _pull(subscriber, sub)
    assert [m.message.data for m in got] == [b"row 0", b"row 1", b"row 2"]
    assert [m.message.message_id for m in got] == ids
    assert all(m.message.attributes["kind"] == "csv" for m in got)
    assert all(abs(m.message.publish_time.timestamp() - time.time()) < 30 for m in got)
    assert [m.delivery_attempt for m in got] == [1, 1, 1]
    subscriber.acknowledge(request={"subscription": sub, "ack_ids": [m.ack_id for m in got]})

    started = time.monotonic()
    assert list(_pull(subscriber, sub)) == []  # nothing left: returns after a short wait
    assert time.monotonic() - started < 3
    assert pubsub_server.backlog(sub) == 0


def test_unknown_resources_are_not_found(clients, pubsub_server):
    from google.api_core import exceptions

    publisher, subscriber = clients
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=pubsub_server.subscription_path("nope"))
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=pubsub_server.topic_path("nope"))
    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=pubsub_server.create_topic("dup"))


def test_unacked_messages_are_redelivered_after_the_deadline_and_after_a_nack(
    pubsub_server, clients
):
    publisher, subscriber = clients
    topic = publisher.create_topic(name=pubsub_server.topic_path("redeliver")).name
    sub = subscriber.create_subscription(
        name=pubsub_server.subscription_path("redeliver"), topic=topic, ack_deadline_seconds=1
    ).name
    assert subscriber.get_subscription(subscription=sub).ack_deadline_seconds == 1
    publisher.publish(topic, b"again").result(5)

    (first,) = _pull(subscriber, sub)
    assert list(_pull(subscriber, sub)) == []  # leased
    time.sleep(1.2)  # the 1 s ack deadline passes
    (second,) = _pull(subscriber, sub)
    assert second.message.message_id == first.message.message_id
    assert second.ack_id != first.ack_id
    assert second.delivery_attempt == 2

    subscriber.modify_ack_deadline(
        request={"subscription": sub, "ack_ids": [second.ack_id], "ack_deadline_seconds": 0}
    )
    (third,) = _pull(subscriber, sub)  # a nack: back at once
    assert third.delivery_attempt == 3
    subscriber.acknowledge(request={"subscription": sub, "ack_ids": [first.ack_id]})  # stale
    assert pubsub_server.backlog(sub) == 1
    subscriber.acknowledge(request={"subscription": sub, "ack_ids": [third.ack_id]})
    assert pubsub_server.backlog(sub) == 0


def test_streaming_pull_receives_acks_and_redelivers_nacks(pubsub_server, clients, topic_and_sub):
    publisher, subscriber = clients
    topic, sub = topic_and_sub
    received: list[tuple[bytes, int | None]] = []
    done = threading.Event()

    def callback(message):
        received.append((message.data, message.delivery_attempt))
        if message.data == b"m3" and message.delivery_attempt == 1:
            message.nack()  # comes back through the stream
        else:
            message.ack()
        if len(received) == 21:
            done.set()

    future = subscriber.subscribe(sub, callback)
    try:
        for i in range(20):
            publisher.publish(topic, b"m%d" % i)
        assert done.wait(20), f"received {len(received)} of 21 deliveries"
    finally:
        future.cancel()
        future.result(10)
    assert sorted(data for data, _ in received) == sorted([b"m%d" % i for i in range(20)] + [b"m3"])
    assert (b"m3", 2) in received
    deadline = time.monotonic() + 5
    while pubsub_server.backlog(sub) and time.monotonic() < deadline:
        time.sleep(0.05)  # acks travel asynchronously
    assert pubsub_server.backlog(sub) == 0


# ----------------------------------------------------------- PubSubPuller and publish


def test_puller_round_trip(pubsub_server, clients, topic_and_sub):
    topic, sub = topic_and_sub
    futures = [clients[0].publish(topic, b"%d" % i, source="test") for i in range(1_205)]
    ids = [f.result(10) for f in futures]
    assert publish("pubsub://" + topic, b"last") not in ids

    with PubSubPuller("pubsub://" + sub) as puller:
        got = []
        while len(got) < 1_206:
            batch = puller.pull(1_000, timeout=5)
            assert batch, "the messages stopped coming"
            got += batch
        assert len(got) == 1_206
        # batches of an unordered publisher may arrive in any order
        assert sorted(m.message_id for m in got) == sorted([*ids, got[-1].message_id])
        assert got[-1].data == b"last" and got[0].attributes == {"source": "test"}
        assert abs(got[0].publish_time - time.time()) < 60
        assert puller.pull(10, timeout=1) == []  # all leased: empty, no exception

        puller.nack([got[0].ack_id])
        (again,) = puller.pull(10, timeout=5)
        assert again.message_id == got[0].message_id
        puller.extend([again.ack_id], 1)
        time.sleep(1.2)
        (late,) = puller.pull(10, timeout=5)  # the extension ran out
        assert late.message_id == got[0].message_id

        puller.ack([m.ack_id for m in got[1:]] + [late.ack_id])  # two requests of ≤ 1000
        assert pubsub_server.backlog(sub) == 0
        with pytest.raises(BadInputError, match=r"'seconds' parameter .* \[0, 600\]"):
            puller.extend([late.ack_id], 601)
        with pytest.raises(BadInputError, match="'max_messages'"):
            puller.pull(0)

    with PubSubPuller(pubsub_server.subscription_path("missing")) as puller:
        with pytest.raises(BadInputError, match="does not exist"):
            puller.pull(1, timeout=2)


def test_parse_pubsub_url():
    assert parse_pubsub_url("pubsub://projects/p/subscriptions/s") == "projects/p/subscriptions/s"
    assert parse_pubsub_url("pubsub://projects/p/topics/t", expect="topic") == "projects/p/topics/t"
    with pytest.raises(BadInputError, match="is a topic"):
        parse_pubsub_url("pubsub://projects/p/topics/t", expect="subscription")
    for bad in ("projects/p/topics/t", "pubsub://p/s", "pubsub://projects/p/queues/q"):
        with pytest.raises(BadInputError, match="pubsub://projects/P/subscriptions/S"):
            parse_pubsub_url(bad)
    with pytest.raises(BadInputError, match="pubsub://projects/P/topics/T"):
        publish("projects/p/subscriptions/s", b"x")


# ------------------------------------------------------------------ decoding records


def test_record_spec_infers_and_checks():
    spec = record_spec("csv", b"1,2,3,0\n", label_column=-1)
    assert (spec.n_columns, spec.n_features, spec.label_column) == (4, 3, 3)
    spec = record_spec("jsonl", b'{"features": [1, 2], "label": 1}')
    assert (spec.n_features, spec.label_column) == (2, "label")
    assert record_spec("jsonl", b"[1, 2, 3]", label_column=0).n_features == 2
    assert record_spec("libsvm", None, feature_dim=9).n_features == 9
    spec = record_spec("csv", None, label_column=0, feature_dim=3)
    assert (spec.n_columns, spec.n_features, spec.label_column) == (4, 3, 0)
    assert record_spec("csv", None).n_features is None

    with pytest.raises(BadInputError, match="'format' parameter"):
        record_spec("parquet", b"1")
    with pytest.raises(BadInputError, match="give feature_dim"):
        record_spec("libsvm", b"1 1:2")
    with pytest.raises(BadInputError, match="no header"):
        record_spec("csv", b"1,2", label_column="y")
    with pytest.raises(BadInputError, match=r"label_column must be in \[-2, 2\)"):
        record_spec("csv", b"1,2", label_column=2)
    with pytest.raises(BadInputError, match="feature_dim=5 was given, but the first record has 2"):
        record_spec("csv", b"1,2", feature_dim=5)
    with pytest.raises(BadInputError, match="not JSON"):
        record_spec("jsonl", b"1,2")
    with pytest.raises(BadInputError, match="neither a JSON array nor an object"):
        record_spec("jsonl", b'{"x": [1]}')


def test_decode_records_good_and_bad():
    spec = record_spec("csv", b"1,2,0", label_column=2)
    ids = ["11", "12", "13", "14", "15", "16"]
    values = [b"1,2,1\n", b"3,x,0", b"", b"5,6,1", b"7,8", b"1,2,3\n4,5,6"]
    block, bad = decode_records(spec, "pubsub://projects/p/subscriptions/s", ids, values)
    np.testing.assert_array_equal(block.features, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(block.labels, [1, 1])
    assert block.origin == ("pubsub://projects/p/subscriptions/s", "11")
    assert [(r["offset"], r["reason"]) for r in bad] == [
        ("12", "field 1 ('x') is not a number"),
        ("13", "empty record value"),
        ("15", "expected 3 fields, found 2"),
        ("16", "a record holds several lines"),
    ]
    assert all(r["file"] == "pubsub://projects/p/subscriptions/s" for r in bad)
    assert bad[0]["record"] == "3,x,0"

    jspec = record_spec("jsonl", b'{"features": [1, 2], "label": 0}')
    block, bad = decode_records(
        jspec, "s", [1, 2, 3], [b'{"features": [1, 2],\n "label": 1}', b"[1", b'{"label": 1}']
    )
    np.testing.assert_array_equal(block.features, [[1, 2]])
    assert [r["offset"] for r in bad] == [2, 3]
    assert bad[0]["reason"].startswith("invalid JSON")

    lspec = record_spec("libsvm", None, feature_dim=3)
    block, bad = decode_records(lspec, "s", [5, 6], [b"1 1:0.5 3:2", b"0 9:1"])
    np.testing.assert_array_equal(np.asarray(block.features.todense()), [[0.5, 0, 2]])
    assert [r["offset"] for r in bad] == [6]

    assert decode_records(spec, "s", [1], [None]) == (
        None,
        [{"file": "s", "offset": 1, "line": None, "record": "", "reason": "empty record value"}],
    )
    with pytest.raises(BadInputError, match="knows no feature count"):
        decode_records(record_spec("csv", None), "s", [1], [b"1,2"])


@pytest.mark.beam
def test_decode_records_transform_batches_within_bundles():
    spec = record_spec("csv", b"1,2", block_size=3)
    records = [(i, b"%d,%d" % (i, i)) for i in range(8)] + [(8, b"bad")]
    with beam.Pipeline(options=pipeline_options()) as p:
        blocks, dead = (
            p
            | beam.Create(records, reshuffle=False)
            | DecodeRecords(spec, "kafka://t/0").with_dead_letters()
        )
        sizes = blocks | "Rows" >> beam.Map(lambda b: b.n_rows)
        assert_that(
            sizes | beam.combiners.ToList() | beam.Map(lambda s: (max(s) <= 3, sum(s))),
            equal_to([(True, 8)]),
            label="AtMost3RowsPerBlock",
        )
        assert_that(
            dead | beam.Map(lambda r: (r["offset"], r["reason"])),
            equal_to([(8, "expected 2 fields, found 1")]),
            label="DeadLetters",
        )
    with pytest.raises(BadInputError, match="no dead letters"):
        DecodeRecords(record_spec("csv", b"1", strict=True), "s").with_dead_letters()
    with pytest.raises(BadInputError, match="feature count"):
        DecodeRecords(record_spec("csv", None), "s")


# ----------------------------------------------------------------- ReadPubSub, Beam


def test_read_pubsub_peeks_without_consuming(pubsub_server, topic_and_sub):
    topic, sub = topic_and_sub
    publish(topic, b"")  # blank: skipped by the peek, still delivered
    publish(topic, b"1,2,3,0")
    read = ReadPubSub(sub, "csv", label_column=-1)
    assert read.n_features == 3 and read.spec.label_column == 3
    with PubSubPuller(sub) as puller:
        got = puller.pull(10, timeout=5)
        assert [m.data for m in got] == [b"", b"1,2,3,0"]  # nacked by the peek: redelivered
        puller.ack([m.ack_id for m in got])

    assert ReadPubSub(sub, "csv", feature_dim=4).n_features == 4  # no peek
    assert ReadPubSub(sub, "jsonl", first_value=b"[1, 2]").n_features == 2
    with pytest.raises(BadInputError, match="no message with data arrived .* give feature_dim"):
        ReadPubSub(sub, "csv", peek_timeout=1)
    with pytest.raises(BadInputError, match="give feature_dim"):
        ReadPubSub(sub, "libsvm")


class _AppendLine(beam.DoFn):
    """Appends each element, as JSON, to a file (survives the runner's threads)."""

    def __init__(self, path: str, field: str | None = None):
        self._path, self._field = path, field

    def process(self, element):
        value = getattr(element, self._field) if self._field else element
        with open(self._path, "a") as f:
            f.write(json.dumps(value) + "\n")


def _lines(path) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


@pytest.mark.beam
@pytest.mark.slow
def test_streaming_pipeline_trains_on_every_message(pubsub_server, topic_and_sub, tmp_path, rng):
    """ReadPubSub -> TrainStreaming on the DirectRunner in streaming mode: every row
    counted once, malformed messages in the dead letters."""
    topic, sub = topic_and_sub
    n = 45
    rows = [",".join(f"{v:.6f}" for v in row).encode() for row in rng.normal(size=(n, 4))]
    for row in rows[:20]:
        publish(topic, row)
    bad_ids = [publish(topic, b"1,2,x,4"), publish(topic, b"1,2")]
    read = ReadPubSub(sub, "csv", block_size=8).with_dead_letters()  # peeks at rows[0]
    snapshots, dead_letters = tmp_path / "n_seen.jsonl", tmp_path / "dead.jsonl"

    p = beam.Pipeline(options=pipeline_options(streaming=True))
    blocks, dead = p | "Read" >> read
    (
        blocks
        | TrainStreaming(
            PCAConfig(num_components=2), snapshot_every_seconds=1.0, snapshot_every_rows=20
        )
        | "Snapshots" >> beam.ParDo(_AppendLine(str(snapshots), "n_seen"))
    )
    dead | "DeadLetters" >> beam.ParDo(_AppendLine(str(dead_letters)))
    # The BundleBasedDirectRunner (forced by ReadFromPubSub) runs in background threads:
    # run() returns at once, and wait_until_finish(duration=...) is not implemented.
    result = p.run()
    try:
        for row in rows[20:]:  # while the pipeline runs
            publish(topic, row)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            seen = _lines(snapshots)
            if seen and seen[-1] >= n and len(_lines(dead_letters)) >= 2:
                break
            time.sleep(0.2)
    finally:
        result.cancel()
    seen = _lines(snapshots)
    assert seen and seen[-1] == n, seen
    assert seen == sorted(seen) and max(seen) == n  # no row counted twice
    dead = _lines(dead_letters)
    assert sorted((r["offset"], r["reason"]) for r in dead) == sorted(
        [(bad_ids[0], "field 2 ('x') is not a number"), (bad_ids[1], "expected 4 fields, found 2")]
    )
    assert all(r["file"] == "pubsub://" + sub for r in dead)
    assert pubsub_server.backlog(sub) == 0  # the runner acknowledged everything


def test_importing_the_module_does_not_need_the_google_client():
    """``apache_beam`` itself imports google.cloud.pubsub when installed, so the check
    hides the package: beam_ml.io.pubsub must import, and fail clearly on first use."""
    code = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith(("google.cloud.pubsub", "google.pubsub")):
            raise ImportError(f"hidden: {name}")
sys.meta_path.insert(0, Hide())
import beam_ml.io.pubsub as m
assert not any(k.startswith(("google.cloud.pubsub", "google.pubsub")) for k in sys.modules)
try:
    m.PubSubPuller("projects/p/subscriptions/s")
except ImportError as exc:
    print("ERROR", exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (
        "ERROR reading or publishing Pub/Sub needs the google-cloud-pubsub package" in done.stdout
    )
