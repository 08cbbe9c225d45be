"""The deploy pipelines run on beam_ml's LocalRunner: what they write is what an
independent computation gives (numpy's PCA of the same rows)."""

from __future__ import annotations

import numpy as np
import pytest

import beam_ml
from tests.deploy.conftest import pipeline


def test_train_job_writes_the_state_and_its_model(tmp_path, rng):
    rows = rng.normal(size=(1200, 5)) @ rng.normal(size=(5, 5))
    for i, part in enumerate(np.array_split(rows, 3)):
        np.savetxt(tmp_path / f"part-{i}.csv", part, delimiter=",")
    out = tmp_path / "out"
    pipeline("train_job").run(
        [
            "--algorithm=pca",
            '--hyperparameters={"num_components": 2}',
            f"--input={tmp_path}/part-*.csv",
            "--format=csv",
            f"--output={out}",
            "--block_size=250",
        ]
    )
    state, _ = beam_ml.read_checkpoint(str(out / "state"))
    model, _ = beam_ml.read_checkpoint(str(out / "model"))
    assert state.n_seen == len(rows)
    centered = rows - rows.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(model.mean, rows.mean(axis=0), atol=1e-9)
    # The same top-2 subspace (components are unique up to sign).
    np.testing.assert_allclose(np.abs(model.components @ vt[:2].T), np.eye(2), atol=1e-6)


def test_bad_arguments_are_one_clear_line():
    with pytest.raises(SystemExit, match="must be a JSON object"):
        job = pipeline("train_job")
        args, _ = job.parse(["--algorithm=pca", "--hyperparameters=[1]", "--input=x", "--output=y"])
        pipeline("job_args").config(args, 3)
    with pytest.raises(SystemExit, match="--input must be pubsub://... or kafka://"):
        job = pipeline("continuous_job")
        args, _ = job.parse(["--algorithm=pca", "--input=/data", "--format=csv", "--output=y"])
        job.reader(args)
