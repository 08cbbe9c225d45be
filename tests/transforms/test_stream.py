"""TrainStreaming: snapshots by rows, by time and at the end; checkpoints keep the last K."""

from __future__ import annotations

import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_stream import TestStream as _TestStream

from beam_ml import KMeansConfig, PCAConfig, PCAState, WriteCheckpoint, read_checkpoint
from beam_ml.transforms.stream import TrainStreaming
from tests.conftest import direct_options

pytestmark = [pytest.mark.beam, pytest.mark.streaming]


def record(path):
    """A Map that appends each snapshot's (key,) n_seen to a file: the final snapshot comes
    at the end of the global window, after assert_that's own window has fired."""

    def write(element):
        key, state = element if isinstance(element, tuple) else ("", element)
        with open(path, "a") as handle:
            handle.write(f"{key} {state.n_seen}\n")
        return element

    return beam.Map(write)


def recorded(path):
    return [line.split() for line in open(path).read().splitlines()]


def streaming_options():
    options = direct_options()
    options.view_as(StandardOptions).streaming = True
    return options


def test_snapshots_every_n_rows_and_at_the_end(rng, tmp_path):
    blocks = [rng.normal(size=(n, 3)) for n in (10, 7, 5, 20, 4)]
    stream = _TestStream()
    for block in blocks:
        stream = stream.add_elements([block])
    stream = stream.advance_watermark_to_infinity()
    with beam.Pipeline(options=streaming_options()) as p:
        snapshots = (
            p
            | stream
            | TrainStreaming(PCAConfig(2), snapshot_every_seconds=None, snapshot_every_rows=15)
        )
        _ = snapshots | record(tmp_path / "seen") | WriteCheckpoint(str(tmp_path / "snap"), keep=2)
    assert [int(line[-1]) for line in recorded(tmp_path / "seen")] == [17, 42, 46]
    state, manifest = read_checkpoint(str(tmp_path / "snap"))
    assert state.n_seen == 46 and [h["n_seen"] for h in manifest["history"]] == [46, 42]
    older, _ = read_checkpoint(str(tmp_path / "snap"), payload=manifest["history"][1]["payload"])
    assert older.n_seen == 42
    np.testing.assert_allclose(
        state.scatter, PCAState(PCAConfig(2)).update(np.vstack(blocks)).scatter, rtol=1e-10
    )
    assert len(list(tmp_path.joinpath("snap").glob("*.bin"))) == 2


def test_snapshots_follow_the_clock(rng, tmp_path):
    blocks = [rng.normal(size=(5, 2)) for _ in range(6)]
    stream = _TestStream()
    for block in blocks:
        stream = stream.add_elements([block])
    stream = stream.advance_watermark_to_infinity()
    with beam.Pipeline(options=streaming_options()) as p:
        slow = p | stream | beam.Map(lambda b: (time.sleep(0.4), b)[1])  # a block every 0.4 s
        _ = (
            slow
            | TrainStreaming(KMeansConfig(k=2), snapshot_every_seconds=1.0)
            | record(tmp_path / "seen")
        )
    seen = [int(line[-1]) for line in recorded(tmp_path / "seen")]
    # ~2.4 s of blocks with a 1 s interval: a snapshot at least every 1.2 s, then the last.
    assert seen == sorted(seen) and seen[-1] == 30 and 2 <= len(seen) <= 4, seen


def test_one_state_per_model_id(rng, tmp_path):
    pairs = [
        ("a", rng.normal(size=(4, 3))),
        ("b", rng.normal(size=(6, 3))),
        ("a", rng.normal(size=(3, 3))),
    ]
    stream = _TestStream().add_elements(pairs).advance_watermark_to_infinity()
    with beam.Pipeline(options=streaming_options()) as p:
        _ = (
            p
            | stream
            | TrainStreaming(PCAConfig(2), snapshot_every_rows=1000, keyed=True)
            | record(tmp_path / "seen")
        )
    assert sorted(recorded(tmp_path / "seen")) == [["a", "7"], ["b", "6"]]


def test_needs_a_schedule():
    with pytest.raises(ValueError, match="snapshot_every_seconds or snapshot_every_rows"):
        TrainStreaming(PCAConfig(2), snapshot_every_seconds=None)
