"""The streaming pipelines on Beam's Prism runner (a portable runner, run locally; see
prism.py): TestStream-driven snapshots, and the unbounded Kafka source into the stateful
TrainStreaming with processing-time snapshots, against the real Kafka 4 broker.

Prism, unlike the DirectRunner, does not keep the order of a TestStream's elements
within a step, so the snapshot tests assert what any order gives."""

from __future__ import annotations

import threading
import time
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_stream import TestStream as _TestStream

from beam_ml import PCAConfig, PCAState, WriteCheckpoint, read_checkpoint
from beam_ml.io.kafka import ReadKafka
from beam_ml.transforms.stream import TrainStreaming
from tests.streaming.kafka_broker import API_VERSION
from tests.streaming.prism import prism_options, stop_prism
from tests.transforms.test_stream import record, recorded

pytestmark = [pytest.mark.beam, pytest.mark.streaming]


def _snapshots(path) -> list[int]:
    return [int(line[-1]) for line in recorded(path)]


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module", autouse=True)
def _one_prism():
    """Beam starts one Prism for the test process; stop it with this module."""
    yield
    stop_prism()


def test_snapshots_every_n_rows_and_at_the_end(rng, tmp_path):
    blocks = [rng.normal(size=(n, 3)) for n in (10, 7, 5, 20, 4)]
    stream = _TestStream().add_elements(blocks).advance_watermark_to_infinity()
    with beam.Pipeline(options=prism_options()) as p:
        _ = (
            p
            | stream
            | TrainStreaming(PCAConfig(2), snapshot_every_seconds=None, snapshot_every_rows=15)
            | record(tmp_path / "seen")
            | WriteCheckpoint(str(tmp_path / "snap"), keep=2)
        )
    seen = _snapshots(tmp_path / "seen")
    # each snapshot but the last after 15 rows or more; the last at the end, with all 46
    assert seen[-1] == 46 and len(seen) >= 2, seen
    assert all(b - a >= 15 for a, b in zip([0, *seen[:-2]], seen[:-1], strict=True)), seen
    state, manifest = read_checkpoint(str(tmp_path / "snap"))
    assert state.n_seen == 46 and manifest["history"][0]["n_seen"] == 46
    reference = PCAState(PCAConfig(2)).update(np.vstack(blocks))
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-10)


def test_one_state_per_model_id(rng, tmp_path):
    pairs = [
        ("a", rng.normal(size=(4, 3))),
        ("b", rng.normal(size=(6, 3))),
        ("a", rng.normal(size=(3, 3))),
    ]
    stream = _TestStream().add_elements(pairs).advance_watermark_to_infinity()
    with beam.Pipeline(options=prism_options()) as p:
        _ = (
            p
            | stream
            # Prism 2.77 panics ("zero length key") when a TestStream feeds a stateful
            # step directly: its elements reach the step unkeyed. One step between fixes it.
            | "Relay" >> beam.Map(lambda pair: pair)
            | TrainStreaming(PCAConfig(2), snapshot_every_rows=1000, keyed=True)
            | record(tmp_path / "seen")
        )
    assert sorted(recorded(tmp_path / "seen")) == [["a", "7"], ["b", "6"]]


def test_kafka_unbounded_into_train_streaming_snapshots_by_the_clock(kafka_broker, rng, tmp_path):
    """ReadKafka(unbounded=True) -> TrainStreaming(snapshot_every_seconds=1) ->
    WriteCheckpoint on Prism: records produced while the pipeline runs are trained on;
    snapshots come during the stream (processing time) and at its end, the last with
    every row once."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    rows = rng.normal(size=(2, 3, 50, 3)).astype(np.float32).astype(np.float64)

    def produce(wave: int) -> None:
        for p in range(2):
            values = [",".join(repr(v) for v in row).encode() for row in rows[p, wave].tolist()]
            kafka_broker.produce(topic, values, partition=p)

    def produce_after_snapshots() -> None:
        """Wave k once k snapshots are out (or 8 s passed): the stream has quiet gaps
        that only the processing-time timer can fill, whatever the machine's speed."""
        for wave in (1, 2):
            deadline = time.monotonic() + 8
            while len(_lines(tmp_path / "seen")) < wave and time.monotonic() < deadline:
                time.sleep(0.1)
            produce(wave)

    produce(0)
    read = ReadKafka(
        kafka_broker.bootstrap_servers, topic, "csv", api_version=API_VERSION,
        unbounded=True, stop_after_seconds=20, max_block_seconds=0.5,
    )  # fmt: skip
    producer = threading.Thread(target=produce_after_snapshots, daemon=True)
    producer.start()
    try:
        with beam.Pipeline(options=prism_options()) as p:
            _ = (
                p
                | read
                | TrainStreaming(PCAConfig(2), snapshot_every_seconds=1.0)
                | record(tmp_path / "seen")
                | WriteCheckpoint(str(tmp_path / "snap"), keep=100)
            )
    finally:
        producer.join(timeout=60)
    seen = _snapshots(tmp_path / "seen")
    assert seen == sorted(set(seen)) and seen[-1] == rows[..., 0].size, seen
    assert len(seen) >= 3, seen  # snapshots in the quiet gaps (by the clock), then the end
    state, manifest = read_checkpoint(str(tmp_path / "snap"))
    assert state.n_seen == rows[..., 0].size
    assert [h["n_seen"] for h in manifest["history"]][0] == state.n_seen
    reference = PCAState(PCAConfig(2)).update(rows.reshape(-1, 3))
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)


def test_the_combine_fn_merges_an_empty_bag():
    """Beam's combining state on portable runners merges its bag of accumulators, empty
    before the first add, at random: that merge is the empty state."""
    from beam_ml.core.combine import StateCombineFn

    assert StateCombineFn(PCAConfig(2)).merge_accumulators([]).n_seen == 0
