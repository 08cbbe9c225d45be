"""An example of a user's own pipeline tests, written with beam_ml.testing only.

It tests pipelines/pca_pipeline.py (a user's PCA job) as a user would test theirs:
on data whose answer is known (pca_data), resuming from a checkpoint (the
fake_checkpoint_dir fixture), and a streaming variant's snapshots (a TestStream).
Run with ``pytest pipelines/test_example_pipeline.py`` (``make test`` runs it too).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import beam_ml
from beam_ml.testing import assert_state_close, pca_data, streamed_snapshots

pytest_plugins = ["beam_ml.testing"]  # fixtures: fake_checkpoint_dir


def _pipeline():
    """The job under test (a file beside this one, as a user's job module would be)."""
    path = Path(__file__).with_name("pca_pipeline.py")
    spec = importlib.util.spec_from_file_location("pca_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_csv(path: Path, rows: np.ndarray) -> str:
    np.savetxt(path, rows, delimiter=",", fmt="%.17g")
    return str(path)


def test_the_job_finds_the_known_components(tmp_path):
    data = pca_data(n=3000, n_features=12, variances=(25.0, 9.0, 4.0, 1.0), seed=3)
    source = _write_csv(tmp_path / "rows.csv", data.rows)
    _pipeline().run(["--input", source, "--output", str(tmp_path / "out"), "--num_components", "4"])
    model, _ = beam_ml.read_checkpoint(str(tmp_path / "out" / "model"))
    # Known answers, not yesterday's output: the planted directions and their variances.
    alignment = np.abs((model.components * data.components).sum(axis=1))
    np.testing.assert_allclose(alignment, 1.0, atol=0.01)
    np.testing.assert_allclose(model.explained_variance, data.variances, rtol=0.1)


def test_the_job_resumes_a_checkpoint(tmp_path, fake_checkpoint_dir):
    # The fixture: a 2-component PCA state over the first 300 rows of pca_data(n=300).
    before, _ = beam_ml.read_checkpoint(fake_checkpoint_dir)
    new_rows = pca_data(n=200, seed=4).rows.astype(np.float32)  # as readers give rows
    source = _write_csv(tmp_path / "new.csv", new_rows)
    output = str(tmp_path / "out")
    args = ["--input", source, "--output", output, "--num_components", "2"]
    _pipeline().run([*args, "--resume", fake_checkpoint_dir])
    after, _ = beam_ml.read_checkpoint(f"{output}/state")
    # Yesterday's state plus today's rows equals one pass over both.
    both = np.vstack([pca_data(n=300).rows, new_rows])
    assert_state_close(after, beam_ml.PCAState(before.config).update(both))


def test_streaming_snapshots(tmp_path):
    rows = pca_data(n=60, seed=5).rows
    blocks = np.split(rows, [25, 30, 50])  # 25, 5, 20 and 10 rows, one element each
    config = beam_ml.PCAConfig(num_components=2)
    snapshots = streamed_snapshots(config, blocks, tmp_path, snapshot_every_rows=20)
    assert [s.n_seen for s in snapshots] == [25, 50, 60]  # every 20 rows, then the end
    assert_state_close(snapshots[1], beam_ml.PCAState(config).update(rows[:50]))
