"""Checkpoints: atomic, human-readable, verified on read, and resumable."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest

from beam_ml import (
    PCAConfig,
    PCAState,
    ReadCheckpoint,
    Train,
    WriteCheckpoint,
    read_checkpoint,
    write_checkpoint,
)
from beam_ml.core.errors import CorruptStateError, IncompatibleStateError
from beam_ml.io.checkpoints import CheckpointNotFoundError, read_manifest
from tests.conftest import direct_options


def _state(rng, n=500, d=6):
    return PCAState(PCAConfig(num_components=2)).update(rng.normal(size=(n, d)))


def test_manifest_is_readable_json(tmp_path, rng):
    state = _state(rng)
    write_checkpoint(str(tmp_path), state, {"note": "hello"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["algorithm"] == "pca" and manifest["kind"] == "state"
    assert manifest["n_seen"] == 500 and manifest["config"]["num_components"] == 2
    assert manifest["extra"] == {"note": "hello"} and "created" in manifest
    assert (tmp_path / manifest["payload"]).stat().st_size == manifest["payload_bytes"]
    again, _ = read_checkpoint(str(tmp_path))
    assert again.to_bytes() == state.to_bytes()


def test_rewrite_replaces_payload_and_leaves_no_temporaries(tmp_path, rng):
    write_checkpoint(str(tmp_path), _state(rng, 100))
    write_checkpoint(str(tmp_path), _state(rng, 300))
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and "manifest.json" in names, names
    assert read_checkpoint(str(tmp_path))[0].n_seen == 300


def test_crash_before_manifest_keeps_previous_checkpoint(tmp_path, rng, monkeypatch):
    write_checkpoint(str(tmp_path), _state(rng, 100))
    from beam_ml.io import checkpoints

    def crash(*args, **kwargs):
        raise OSError("disk died")

    monkeypatch.setattr(checkpoints.FileSystems, "rename", crash)
    with pytest.raises(OSError):
        write_checkpoint(str(tmp_path), _state(rng, 999))
    monkeypatch.undo()
    assert read_checkpoint(str(tmp_path))[0].n_seen == 100


def test_corrupted_checkpoints_raise_clear_errors(tmp_path, rng):
    with pytest.raises(CheckpointNotFoundError, match="No beam_ml checkpoint"):
        read_checkpoint(str(tmp_path / "nothing"))
    manifest = write_checkpoint(str(tmp_path), _state(rng))
    payload = tmp_path / manifest["payload"]
    blob = payload.read_bytes()
    payload.write_bytes(blob[:-10])
    with pytest.raises(CorruptStateError, match="does not match its manifest"):
        read_checkpoint(str(tmp_path))
    payload.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CorruptStateError, match="does not match its manifest"):
        read_checkpoint(str(tmp_path))
    payload.unlink()
    with pytest.raises(CorruptStateError, match="missing its payload"):
        read_checkpoint(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptStateError, match="not valid JSON"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(IncompatibleStateError, match="not a beam_ml checkpoint"):
        read_manifest(str(tmp_path))


def test_model_checkpoint_is_not_a_state(tmp_path, rng):
    write_checkpoint(str(tmp_path), _state(rng).derive())
    with pytest.raises(IncompatibleStateError, match="holds a model checkpoint; a state is needed"):
        read_checkpoint(str(tmp_path), "state")


@pytest.mark.beam
def test_resume_with_more_data_equals_training_on_all(tmp_path, rng):
    day1, day2 = rng.normal(size=(1500, 8)), rng.normal(size=(900, 8)) + 1.0
    config = PCAConfig(num_components=3)
    path = str(tmp_path / "state")
    with beam.Pipeline(options=direct_options()) as p:
        _ = p | beam.Create(np.array_split(day1, 3)) | Train(config) | WriteCheckpoint(path)
    with beam.Pipeline(options=direct_options()) as p:
        resumed = p | ReadCheckpoint(path)
        _ = (
            p
            | "Day2" >> beam.Create(np.array_split(day2, 2))
            | Train(config, resume_from=resumed)
            | WriteCheckpoint(path)
        )
    state, manifest = read_checkpoint(path)
    assert manifest["n_seen"] == 2400
    everything = PCAState(config).update(np.vstack([day1, day2]))
    np.testing.assert_allclose(state.scatter, everything.scatter, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(state.mean, everything.mean, rtol=1e-12)


def test_read_checkpoint_transform_fails_at_construction(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        ReadCheckpoint(str(tmp_path / "missing"))
