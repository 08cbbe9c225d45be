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


# --- only beam_ml's own files are ever deleted --------------------------------------------------
_FOREIGN = {
    "mydata.bin": b"user data",
    "notes.txt": b"keep me",
    "state-1.bin": b"looks like ours, is not",
    "state-0123456789ab.bin": b"named like an old payload, but no manifest names it",
    "manifest.json.bak": b"{}",
}


def _plant_foreign(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in _FOREIGN.items():
        (directory / name).write_bytes(content)
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / "x.bin").write_bytes(b"nested")


def _assert_foreign_intact(directory):
    for name, content in _FOREIGN.items():
        assert (directory / name).read_bytes() == content, name
    assert (directory / "sub" / "x.bin").read_bytes() == b"nested"


def _payloads(directory):
    return sorted(p.name for p in directory.glob("*-*Z-*.bin"))


def test_foreign_files_survive_every_write_and_keep_pruning(tmp_path, rng):
    """Regression (issue: derive/train --output DIR deleted every *.bin the new manifest
    did not name, a user's mydata.bin included)."""
    directory = tmp_path / "out"
    _plant_foreign(directory)
    for n in (10, 20, 30):  # keep=1: each write replaces the last
        write_checkpoint(str(directory), _state(rng, n))
        _assert_foreign_intact(directory)
        assert len(_payloads(directory)) == 1
    for n in (40, 50, 60, 70, 80):  # keep=3: the oldest snapshots are pruned
        manifest = write_checkpoint(str(directory), _state(rng, n), keep=3)
        _assert_foreign_intact(directory)
    assert [e["n_seen"] for e in manifest["history"]] == [80, 70, 60]
    assert _payloads(directory) == sorted(e["payload"] for e in manifest["history"])
    write_checkpoint(str(directory), _state(rng, 90).derive())  # a model over a state
    _assert_foreign_intact(directory)
    assert len(_payloads(directory)) == 1
    # A manifest naming a user's file (edited, or hostile) cannot get it deleted.
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["history"].append(dict(manifest["history"][0], payload="mydata.bin"))
    (directory / "manifest.json").write_text(json.dumps(manifest))
    write_checkpoint(str(directory), _state(rng, 95))
    _assert_foreign_intact(directory)
    assert read_checkpoint(str(directory))[0].n_seen == 95


def test_next_write_removes_what_crashed_writes_left(tmp_path, rng, monkeypatch):
    """Regression (issue: kill -9 left orphan payloads and .manifest.json.*.tmp forever)."""
    from beam_ml.io import checkpoints

    directory = tmp_path / "out"
    _plant_foreign(directory)
    write_checkpoint(str(directory), _state(rng, 100))
    leftovers = [
        "state-20200101T000000Z-0123456789abcdef.bin",
        "model-20200101T000000Z-fedcba9876543210.bin",
        ".manifest.json.0123abcd.tmp",  # the naming of before 2026-12-04
        ".manifest.json.20200101T000000Z-0123abcd.tmp",
    ]
    for name in leftovers:
        (directory / name).write_bytes(b"half written")

    def crash(*args, **kwargs):  # the payload is written, the manifest never lands
        raise OSError("killed")

    monkeypatch.setattr(checkpoints.FileSystems, "rename", crash)
    with pytest.raises(OSError):
        write_checkpoint(str(directory), _state(rng, 999), keep=2)
    monkeypatch.undo()
    assert len(_payloads(directory)) == 4  # the committed one, the crash's, two planted
    assert read_checkpoint(str(directory))[0].n_seen == 100
    manifest = write_checkpoint(str(directory), _state(rng, 200), keep=2)
    # keep counts committed snapshots only: the crashed write's payload is not one.
    assert [e["n_seen"] for e in manifest["history"]] == [200, 100]
    assert _payloads(directory) == sorted(e["payload"] for e in manifest["history"])
    assert not list(directory.glob(".manifest.json.*"))
    _assert_foreign_intact(directory)


def test_keep_counts_only_snapshots_still_there(tmp_path, rng):
    directory = tmp_path / "out"
    for n in (1, 2, 3):
        manifest = write_checkpoint(str(directory), _state(rng, 100 * n), keep=3)
    (directory / manifest["history"][1]["payload"]).unlink()  # lost by hand
    manifest = write_checkpoint(str(directory), _state(rng, 400), keep=3)
    assert [e["n_seen"] for e in manifest["history"]] == [400, 300, 100]
    for entry in manifest["history"]:
        assert read_checkpoint(str(directory), payload=entry["payload"])[0].n_seen == entry["n_seen"]


# --- two writers on one output -------------------------------------------------------------------
_PAUSED_WRITER = """
import pathlib, sys, time
import numpy as np
from beam_ml import PCAConfig, PCAState
from beam_ml.io import checkpoints

path, paused, release = sys.argv[1:4]
write_bytes = checkpoints._write_bytes

def write_then_pause(location, data):
    write_bytes(location, data)
    if location.endswith(".tmp"):  # payload written, manifest not renamed yet
        pathlib.Path(paused).write_text("paused")
        while not pathlib.Path(release).exists():
            time.sleep(0.02)

checkpoints._write_bytes = write_then_pause
rows = np.random.default_rng(1).normal(size=(77, 6))
checkpoints.write_checkpoint(path, PCAState(PCAConfig(num_components=2)).update(rows))
"""


def _start_paused_writer(tmp_path, directory):
    import subprocess
    import sys
    import time

    paused, release = tmp_path / "paused", tmp_path / "release"
    for flag in (paused, release):
        flag.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, str(directory), str(paused), str(release)],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    deadline = time.monotonic() + 120
    while not paused.exists():
        assert child.poll() is None, "the writer exited before its pause"
        assert time.monotonic() < deadline, "the writer never paused"
        time.sleep(0.05)
    return child, release


def test_second_writer_waits_or_fails_clearly_and_checkpoint_stays_whole(tmp_path, rng):
    """Regression (issue: two trainers on one --output deleted each other's payload and,
    with a pause between payload write and rename, left a manifest naming a missing
    payload). The child pauses between its payload write and its manifest rename."""
    import threading

    from beam_ml.io.checkpoints import CheckpointLockedError

    directory = tmp_path / "out"
    _plant_foreign(directory)
    write_checkpoint(str(directory), _state(rng, 100))
    child, release = _start_paused_writer(tmp_path, directory)
    try:
        with pytest.raises(CheckpointLockedError, match=f"pid {child.pid} on ") as info:
            write_checkpoint(str(directory), _state(rng, 200), lock_timeout=0.3)
        assert str(directory) in str(info.value) and "\n" not in str(info.value)
        assert read_checkpoint(str(directory))[0].n_seen == 100  # readers are not blocked
        done = []
        waiting = threading.Thread(
            target=lambda: done.append(write_checkpoint(str(directory), _state(rng, 300)))
        )
        waiting.start()
        release.write_text("go")
        assert child.wait(timeout=60) == 0
        waiting.join(timeout=60)
    finally:
        release.write_text("go")
        child.kill()
    assert done, "the waiting writer did not finish"
    state, manifest = read_checkpoint(str(directory))
    assert state.n_seen == 300 and _payloads(directory) == [manifest["payload"]]
    assert not (directory / ".beam_ml.lock").exists()
    _assert_foreign_intact(directory)


def test_lock_of_a_killed_writer_is_taken_over_and_its_leftovers_removed(tmp_path, rng):
    import signal

    directory = tmp_path / "out"
    _plant_foreign(directory)
    write_checkpoint(str(directory), _state(rng, 100))
    child, _ = _start_paused_writer(tmp_path, directory)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert f"pid {child.pid}" in (directory / ".beam_ml.lock").read_text()
    assert len(_payloads(directory)) == 2 and list(directory.glob(".manifest.json.*.tmp"))
    assert read_checkpoint(str(directory))[0].n_seen == 100  # kill -9: still loadable
    write_checkpoint(str(directory), _state(rng, 200), lock_timeout=1)
    state, manifest = read_checkpoint(str(directory))
    assert state.n_seen == 200 and _payloads(directory) == [manifest["payload"]]
    assert not list(directory.glob(".manifest.json.*")) and not (directory / ".beam_ml.lock").exists()
    _assert_foreign_intact(directory)
