"""Data and checkpoints on ``s3://`` and ``gs://`` through Beam's filesystems, against
local servers on 127.0.0.1: moto's server mode (S3, reached by ``--s3_endpoint_url``)
and gcp-storage-emulator (GCS, reached by ``STORAGE_EMULATOR_HOST``).

Neither store renames: a checkpoint's manifest is its commit marker, written once the
payload is there. A writer killed during a payload's upload leaves the previous
checkpoint, whole, to every reader.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState
from beam_ml.io import checkpoints
from beam_ml.io.checkpoints import read_checkpoint, read_manifest, write_checkpoint
from tests.streaming.cloud_servers import GcsEmulator, MotoServer

BUCKET = "beam-ml-test"


@pytest.fixture(scope="module")
def stores():
    """Both servers, and Beam's filesystems pointed at them (options and environment
    restored afterwards)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    with MotoServer() as s3, GcsEmulator(BUCKET) as gcs:
        s3.client("s3").create_bucket(Bucket=BUCKET)
        env = {**s3.env(), **gcs.env()}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        FileSystems.set_options(PipelineOptions([*s3.beam_args(), "--project=test"]))
        try:
            yield {"s3": s3, "gs": gcs, "env": env}
        finally:
            FileSystems.set_options(None)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _state(n_rows: int, d: int = 5, seed: int = 0) -> PCAState:
    rows = np.random.default_rng(seed).normal(size=(n_rows, d))
    return PCAState(PCAConfig(num_components=2)).update(rows)


def _names(path: str) -> list[str]:
    return sorted(checkpoints._listing(path))


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_checkpoints_commit_keep_and_prune_on_the_store(stores, scheme):
    path = f"{scheme}://{BUCKET}/keep-test"
    for n in (10, 20, 30):
        write_checkpoint(path, _state(n), keep=2)
    manifest = read_manifest(path)
    assert [e["n_seen"] for e in manifest["history"]] == [30, 20]
    names = _names(path)
    # the manifest and the two kept payloads: no temporary, nothing pruned left behind
    assert names == sorted(["manifest.json", *(e["payload"] for e in manifest["history"])])
    state, _ = read_checkpoint(path, "state")
    assert state.n_seen == 30
    older, _ = read_checkpoint(path, "state", payload=manifest["history"][1]["payload"])
    assert older.n_seen == 20
    reference = _state(30)
    np.testing.assert_allclose(
        state.derive(num_components=2).components, reference.derive(num_components=2).components
    )


_WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from beam_ml import PCAConfig, PCAState
    from beam_ml.io.checkpoints import write_checkpoint

    # A slow link, so that the test can kill the writer in the middle of the payload's
    # upload: each S3 part (5 MiB) or GCS chunk takes a second more, and says so.
    from apache_beam.io.aws.clients.s3 import boto3_client
    from google.cloud.storage._media.requests import upload

    def slow(send, before):
        def sending(*args, **kwargs):
            if before:
                print("part", flush=True)
                time.sleep(1.0)
            result = send(*args, **kwargs)
            if not before:
                print("part", flush=True)
                time.sleep(1.0)
            return result
        return sending

    if sys.argv[2] == "slow":
        boto3_client.Client.upload_part = slow(boto3_client.Client.upload_part, before=False)
        for kind in (upload.ResumableUpload, upload.MultipartUpload):  # GCS: large, small
            name = "transmit_next_chunk" if hasattr(kind, "transmit_next_chunk") else "transmit"
            setattr(kind, name, slow(getattr(kind, name), before=True))
    FileSystems.set_options(PipelineOptions(sys.argv[3:]))
    rows = np.random.default_rng(1).normal(size=(20, 1200))  # an 11 MiB payload: 3 S3 parts
    state = PCAState(PCAConfig(num_components=2)).update(rows)
    write_checkpoint(sys.argv[1], state, keep=2)
    print("done", flush=True)
    """
)


def _start_writer(stores, path, speed="slow"):
    args = [*stores["s3"].beam_args(), "--project=test"]
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, path, speed, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **stores["env"], "OMP_NUM_THREADS": "1"},
    )


class _Reader(threading.Thread):
    """Reads the checkpoint over and over while a writer works: every read must give a
    whole checkpoint (never an error, never a half-written one)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.seen, self.errors = path, [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.seen.append(read_checkpoint(self.path, "state")[0].n_seen)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                self.errors.append(repr(exc))
            self.stop.wait(0.2)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(60)


def _uploads(stores, path):
    """The S3 multipart uploads under way below ``path``."""
    key = path.split(f"{BUCKET}/", 1)[1] + "/"
    found = stores["s3"].client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return [u for u in found if u["Key"].startswith(key)]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_writer_killed_mid_upload_leaves_the_previous_checkpoint(stores, scheme):
    path = f"{scheme}://{BUCKET}/kill-test"
    write_checkpoint(path, _state(7))
    before = _names(path)
    with _Reader(path) as reader:
        writer = _start_writer(stores, path)
        assert writer.stdout.readline().strip() == "part"  # the payload is on its way
        writer.send_signal(signal.SIGSTOP)  # frozen in the middle of the upload
        if scheme == "s3":
            assert [u["Key"].rsplit("/", 1)[1][:6] for u in _uploads(stores, path)] == ["state-"]
        assert _names(path) == before
        time.sleep(0.5)  # the reader reads meanwhile
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        time.sleep(0.5)
    assert reader.errors == [] and set(reader.seen) == {7}
    # nothing of the killed write is visible: no payload object, no manifest change
    assert _names(path) == before and read_checkpoint(path, "state")[0].n_seen == 7
    # a writer that finishes commits over whatever the killed one left
    writer = _start_writer(stores, path, "fast")
    assert writer.communicate(timeout=240)[0].splitlines()[-1] == "done"
    state, manifest = read_checkpoint(path, "state")
    assert state.n_seen == 20 and [e["n_seen"] for e in manifest["history"]] == [20, 7]


def _cli(stores, *args):
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli.main", "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **stores["env"], "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_reads_s3_data_and_writes_to_s3_and_gcs(stores):
    """train from CSV files on S3 into an S3 checkpoint, derive it into a model on GCS:
    the model is numpy's PCA of the same rows."""
    from apache_beam.io.filesystems import FileSystems

    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 4)) @ rng.normal(size=(4, 4))
    for i, part in enumerate(np.array_split(x, 3)):
        text = "\n".join(",".join(repr(float(v)) for v in row) for row in part) + "\n"
        with FileSystems.create(f"s3://{BUCKET}/data/part-{i}.csv") as f:
            f.write(text.encode())
    s3_args = stores["s3"].beam_args()
    out = _cli(
        stores,
        "train",
        "pca",
        "--input",
        f"s3://{BUCKET}/data/part-*.csv",
        "--output",
        f"s3://{BUCKET}/cli/state",
        "--num_components",
        2,
        "--header",
        "false",
        *s3_args,
    )
    assert out["n_seen"] == 600
    _cli(
        stores,
        "derive",
        f"s3://{BUCKET}/cli/state",
        "--output",
        f"gs://{BUCKET}/cli/model",
        "--num_components",
        2,
        *s3_args,
        "--project=test",
    )
    model, _ = read_checkpoint(f"gs://{BUCKET}/cli/model", "model")
    top = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:2]
    np.testing.assert_allclose(np.abs(model.components @ top.T), np.eye(2), atol=1e-6)
