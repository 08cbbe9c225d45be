"""Kafka topics as training input: ReadKafka through kafka-python against librdkafka's
mock cluster (kafka_cluster.py) and a real Apache Kafka 4 broker (kafka_broker.py), both
on 127.0.0.1. The broker covers what the mock cannot: timestamp lookups, consumer groups."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import apache_beam as beam
import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from beam_ml.core.errors import BadInputError
from beam_ml.io.kafka import ReadKafka, parse_kafka_url
from tests.streaming.helpers import MULTI_PROCESS, beam_ml, run_source, stack
from tests.streaming.kafka_broker import API_VERSION as BROKER_API_VERSION
from tests.streaming.kafka_cluster import API_VERSION

pytestmark = pytest.mark.streaming


def _topic(cluster, partitions: int) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(name, partitions)
    return name


@pytest.fixture
def csv_topic(kafka_cluster, rng):
    """3 partitions x 200 CSV records (x0, x1, x2, label); two bad records in each."""
    topic = _topic(kafka_cluster, 3)
    rows = rng.normal(size=(3, 200, 4)).astype(np.float32).astype(np.float64)
    for p in range(3):
        values = [",".join(repr(v) for v in row).encode() for row in rows[p].tolist()]
        values[50] = b"1,2,three,4"
        values[120] = None  # a tombstone
        kafka_cluster.produce(topic, values, partition=p)
    good = np.ones(200, dtype=bool)
    good[[50, 120]] = False
    return topic, rows[:, good]


def test_bounded_read_of_all_partitions(kafka_cluster, csv_topic):
    topic, rows = csv_topic
    read = ReadKafka(
        kafka_cluster.bootstrap_servers,
        topic,
        "csv",
        label_column=-1,
        block_size=64,
        api_version=API_VERSION,
    )
    assert read.n_features == 3
    assert read.start_offsets == {(topic, p): 0 for p in range(3)}
    assert read.end_offsets == {(topic, p): 200 for p in range(3)}
    blocks, dead, positions = run_source(read.with_dead_letters().with_positions(), 3)
    assert max(b.n_rows for b in blocks) <= 64
    for p in range(3):
        features, labels = stack([b for b in blocks if b.origin[0] == f"kafka://{topic}/{p}"])
        np.testing.assert_array_equal(features, rows[p][:, :3])
        np.testing.assert_array_equal(labels, rows[p][:, 3])
    assert sorted((r["file"], r["offset"], r["reason"]) for r in dead) == sorted(
        (f"kafka://{topic}/{p}", offset, reason)
        for p in range(3)
        for offset, reason in [
            (50, "field 2 ('three') is not a number"),
            (120, "empty record value"),
        ]
    )
    last = {}
    for pos in positions:
        key = (pos["topic"], pos["partition"])
        last[key] = max(last.get(key, 0), pos["offset"])
    assert last == read.end_offsets


def test_start_positions(kafka_cluster, csv_topic):
    topic, rows = csv_topic
    servers = kafka_cluster.bootstrap_servers
    read = ReadKafka(servers, topic, "csv", partitions=[1], start={1: 150}, api_version=API_VERSION)
    assert read.n_features == 4 and read.end_offsets == {(topic, 1): 200}
    [blocks] = run_source(read)
    features, labels = stack(blocks)
    np.testing.assert_array_equal(features, rows[1][-50:])  # offsets 150..199, all good
    assert labels is None
    latest = ReadKafka(servers, topic, "csv", start="latest", api_version=API_VERSION)
    assert latest.n_features is None and latest.start_offsets == latest.end_offsets
    assert run_source(latest) == [[]]
    with pytest.raises(BadInputError, match="outside the log"):
        ReadKafka(servers, topic, "csv", start={0: 500, 1: 0, 2: 0}, api_version=API_VERSION)
    with pytest.raises(BadInputError, match="has no partition \\[7\\]"):
        ReadKafka(servers, topic, "csv", partitions=[7], api_version=API_VERSION)


def test_json_objects_with_labels(kafka_cluster, rng):
    topic = _topic(kafka_cluster, 1)
    rows = rng.normal(size=(100, 3)).astype(np.float32).astype(np.float64)
    values = [json.dumps({"features": r[:2], "label": r[2]}).encode() for r in rows.tolist()]
    values[10] = b'{"features": [1, 2, 3], "label": 0}'
    values[11] = b"not json"
    kafka_cluster.produce(topic, values)
    read = ReadKafka(
        kafka_cluster.bootstrap_servers, topic, "jsonl", api_version=API_VERSION
    ).with_dead_letters()
    assert read.n_features == 2
    blocks, dead = run_source(read, 2)
    features, labels = stack(blocks)
    keep = np.ones(100, dtype=bool)
    keep[[10, 11]] = False
    np.testing.assert_array_equal(features, rows[keep, :2])
    np.testing.assert_array_equal(labels, rows[keep, 2])
    assert [(r["offset"], r["reason"][:20]) for r in sorted(dead, key=lambda r: r["offset"])] == [
        (10, "expected 2 features,"),
        (11, "invalid JSON: Expect"),
    ]


def test_options_are_checked_at_construction(kafka_cluster):
    with pytest.raises(BadInputError, match="give feature_dim"):
        ReadKafka(kafka_cluster.bootstrap_servers, "x", "libsvm")
    with pytest.raises(BadInputError, match="no header"):
        ReadKafka(kafka_cluster.bootstrap_servers, "x", "csv", label_column="y")
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(BadInputError, match="did not answer within 2 s"):
        ReadKafka(f"127.0.0.1:{port}", "x", "csv", api_version=API_VERSION, connect_timeout=2)
    with pytest.raises(BadInputError, match="kafka://host:port/topic"):
        parse_kafka_url("kafka:///nohost")
    assert parse_kafka_url("kafka://h:1,h:2/a?start=timestamp:5&api_version=0.9") == {
        "bootstrap_servers": ["h:1", "h:2"],
        "topics": ["a"],
        "start_timestamp_ms": 5,
        "api_version": (0, 9),
    }


def test_cli_trains_on_a_topic_and_resumes_at_its_end_offsets(
    kafka_cluster, csv_topic, tmp_path, rng
):
    topic, rows = csv_topic
    url = f"kafka://{kafka_cluster.bootstrap_servers}/{topic}?api_version=2.3"
    out = beam_ml(
        "train",
        "pca",
        "--input",
        url,
        "--format",
        "csv",
        "--label_column",
        "3",
        "--output",
        tmp_path / "state",
        "--num_components",
        2,
        *MULTI_PROCESS,
    )
    summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 3 * 198 and summary["config"]["feature_dim"] == 3
    state, manifest = read_checkpoint(str(tmp_path / "state"))
    reference = PCAState(PCAConfig(num_components=2)).update(rows[:, :, :3].reshape(-1, 3))
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    assert manifest["extra"]["source_positions"] == {f"{topic}:{p}": 200 for p in range(3)}
    dead = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert len(dead) == 6

    # --resume continues at the stored end offsets: the new records only, each once.
    new = rng.normal(size=(3, 30, 4)).astype(np.float32).astype(np.float64)
    for p in range(3):
        kafka_cluster.produce(
            topic, [",".join(repr(v) for v in r).encode() for r in new[p].tolist()], partition=p
        )
    out = beam_ml(
        "train", "pca", "--input", url, "--format", "csv", "--label_column", "3",
        "--output", tmp_path / "state2", "--resume", tmp_path / "state",
    )  # fmt: skip
    assert json.loads(out.stdout.decode().strip().splitlines()[-1])["rows_read"] == 90
    state, manifest = read_checkpoint(str(tmp_path / "state2"))
    reference.update(new[:, :, :3].reshape(-1, 3))
    assert state.n_seen == 3 * 198 + 90
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    assert manifest["extra"]["source_positions"] == {f"{topic}:{p}": 230 for p in range(3)}


def test_real_kafka_4_broker_and_resuming_from_end_offsets(kafka_broker, rng):
    """Apache Kafka 4 itself (Java, KRaft): read, then resume from the stored end offsets
    and get exactly the records produced since."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    rows = rng.normal(size=(2, 300, 3)).astype(np.float32).astype(np.float64)
    values = [[",".join(repr(v) for v in row).encode() for row in part.tolist()] for part in rows]
    values[0][7] = b"1,2"
    for p in range(2):
        kafka_broker.produce(topic, values[p][:200], partition=p)
    options = {"api_version": BROKER_API_VERSION, "block_size": 50}
    first = ReadKafka(kafka_broker.bootstrap_servers, topic, "csv", **options)
    assert first.end_offsets == {(topic, 0): 200, (topic, 1): 200}
    blocks, dead = run_source(first.with_dead_letters(), 2)
    assert [(r["offset"], r["reason"]) for r in dead] == [(7, "expected 3 fields, found 2")]
    for p in range(2):
        kafka_broker.produce(topic, values[p][200:], partition=p)
    resumed = ReadKafka(
        kafka_broker.bootstrap_servers,
        topic,
        "csv",
        start={p: first.end_offsets[(topic, p)] for p in range(2)},
        **options,
    )
    more = run_source(resumed)[0]
    for p in range(2):
        source = f"kafka://{topic}/{p}"
        before = stack([b for b in blocks if b.origin[0] == source])[0]
        after = stack([b for b in more if b.origin[0] == source])[0]
        expected = np.delete(rows[p], [7], axis=0) if p == 0 else rows[p]
        np.testing.assert_array_equal(np.vstack([before, after]), expected)


def test_unbounded_read_follows_new_records_until_stopped(kafka_cluster, rng):
    """Records produced after the pipeline started are read, in blocks closed by time;
    the read ends at stop_after_seconds."""
    topic = _topic(kafka_cluster, 2)
    rows = rng.normal(size=(2, 3, 40, 2)).astype(np.float32).astype(np.float64)

    def produce(wave: int) -> None:
        for p in range(2):
            kafka_cluster.produce(
                topic, [f"{a!r},{b!r}".encode() for a, b in rows[p, wave].tolist()], partition=p
            )

    produce(0)
    read = ReadKafka(
        kafka_cluster.bootstrap_servers,
        topic,
        "csv",
        api_version=API_VERSION,
        unbounded=True,
        stop_after_seconds=6,
        max_block_seconds=0.5,
    )
    assert read.n_features == 2 and read.end_offsets == {(topic, 0): 40, (topic, 1): 40}
    later = [threading.Timer(1.5, produce, (1,)), threading.Timer(3.0, produce, (2,))]
    for timer in later:
        timer.start()
    started = time.monotonic()
    try:
        [blocks] = run_source(read)
    finally:
        for timer in later:
            timer.join(timeout=30)
    assert 5 < time.monotonic() - started < 30
    for p in range(2):
        features, _ = stack([b for b in blocks if b.origin[0] == f"kafka://{topic}/{p}"])
        np.testing.assert_array_equal(features, rows[p].reshape(-1, 2))
    assert len(blocks) >= 6  # at least one block per partition and wave


@pytest.mark.parametrize("server", ["kafka_cluster", "kafka_broker"])
def test_start_at_a_timestamp(server, request, monkeypatch):
    """start=timestamp:MS begins each partition at its first record at or after MS. The
    real broker answers from its time index (ListOffsets by time), and leaves only a time
    after every record (no offset) to the fallback; the mock cluster does not answer
    timestamp lookups, so there the fallback runs: a binary search over the records'
    own timestamps."""
    import beam_ml.io.kafka as kafka_io

    kafka = request.getfixturevalue(server)
    searched = []
    search = kafka_io._first_at_or_after
    monkeypatch.setattr(
        kafka_io, "_first_at_or_after", lambda *a: searched.append(a[1]) or search(*a)
    )
    topic = _topic(kafka, 2)
    base = 1_700_000_000_000
    for p in range(2):  # partition p gets rows i = p, p + 2, ...; timestamp base + 10 i
        rows = range(p, 100, 2)
        kafka.produce(
            topic, [f"{i},{-i}".encode() for i in rows], partition=p,
            timestamps_ms=[base + 10 * i for i in rows],
        )  # fmt: skip
    version = "api_version=2.3&" if server == "kafka_cluster" else ""  # the broker's: probed
    url = f"kafka://{kafka.bootstrap_servers}/{topic}?{version}start=timestamp:"
    read = ReadKafka.from_url(f"{url}{base + 10 * 60 + 5}", "csv")
    assert read.start_offsets == {(topic, 0): 31, (topic, 1): 30}  # rows 62 and 61 on
    [blocks] = run_source(read)
    features, _ = stack(blocks)
    assert sorted(features[:, 0].astype(int).tolist()) == list(range(61, 100))
    exact = ReadKafka.from_url(f"{url}{base + 10 * 61}", "csv")
    assert exact.start_offsets == {(topic, 0): 31, (topic, 1): 30}
    assert (searched == []) == (server == "kafka_broker")
    after_all = ReadKafka.from_url(f"{url}{base + 10_000}", "csv")
    assert after_all.start_offsets == after_all.end_offsets  # nothing that late: nothing read


def _stamped(read):
    """``read`` followed by (block, its event timestamp in seconds)."""
    return read | "Stamp" >> beam.Map(lambda b, t=beam.DoFn.TimestampParam: (b, float(t)))


def test_unbounded_blocks_carry_their_records_timestamps(kafka_broker, rng):
    """On a real broker each record keeps the timestamp its producer gave (CreateTime);
    an unbounded read stamps each block with its first record's, in seconds."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    base = 1_700_000_000_000
    for p in range(2):
        kafka_broker.produce(
            topic,
            [f"{i},{p}".encode() for i in range(60)],
            partition=p,
            timestamps_ms=[base + 1000 * p + 7 * i for i in range(60)],
        )
    read = ReadKafka(
        kafka_broker.bootstrap_servers, topic, "csv", api_version=BROKER_API_VERSION,
        unbounded=True, stop_after_seconds=10, block_size=25,
    )  # fmt: skip
    [stamped] = run_source(_stamped(read))
    for p in range(2):
        mine = sorted(
            (s for s in stamped if s[0].origin[0] == f"kafka://{topic}/{p}"),
            key=lambda s: s[0].origin,
        )
        features, _ = stack([b for b, _ in mine])
        assert features[:, 0].astype(int).tolist() == list(range(60))
        for block, stamp in mine:
            first = int(block.features[0, 0])  # the row number i of the block's first record
            assert stamp == (base + 1000 * p + 7 * first) / 1000


def test_consumer_group_commits_and_a_restart_resumes_from_them(kafka_broker, rng):
    """start='committed' begins where the group's committed offsets are (the earliest
    before any commit); commit() after a run stores the read's end offsets, seen by
    the group's other clients, and the next run reads only what arrived since."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    rows = rng.normal(size=(2, 150, 2)).astype(np.float32).astype(np.float64)
    values = [[f"{a!r},{b!r}".encode() for a, b in part.tolist()] for part in rows]
    group = {"group_id": f"g-{uuid.uuid4().hex[:8]}"}

    def read_from_group() -> ReadKafka:
        return ReadKafka(
            kafka_broker.bootstrap_servers, topic, "csv", start="committed",
            consumer_config=group, api_version=BROKER_API_VERSION,
        )  # fmt: skip

    with pytest.raises(BadInputError, match="needs a consumer group"):
        ReadKafka(kafka_broker.bootstrap_servers, topic, "csv", start="committed")
    got = []
    for wave in (slice(0, 100), slice(100, 130), slice(130, 150)):
        for p in range(2):
            kafka_broker.produce(topic, values[p][wave], partition=p)
        read = read_from_group()
        assert read.start_offsets == {(topic, p): wave.start for p in range(2)}
        got.append(run_source(read)[0])
        read.commit()
    other = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, **group)
    try:  # another client of the group sees the offsets
        assert [other.committed(TopicPartition(topic, p)) for p in range(2)] == [150, 150]
    finally:
        other.close()
    for p in range(2):
        source = f"kafka://{topic}/{p}"
        features = [stack([b for b in blocks if b.origin[0] == source])[0] for blocks in got]
        np.testing.assert_array_equal(np.vstack(features), rows[p])  # each row once, in order
