"""The example pipelines in pipelines/ run and give the right answer."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from tests.conftest import REPO

pytestmark = pytest.mark.beam


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pca_pipeline_trains_resumes_and_evaluates(tmp_path, rng):
    first, second = (rng.normal(size=(n, 5)).astype(np.float32) for n in (400, 300))
    np.savetxt(tmp_path / "a.csv", first, delimiter=",", fmt="%.9g")
    np.savetxt(tmp_path / "b.csv", second, delimiter=",", fmt="%.9g")
    pipeline = _load("pca_pipeline")
    pipeline.run(
        [
            "--input",
            str(tmp_path / "a.csv"),
            "--output",
            str(tmp_path / "out"),
            "--num_components",
            "3",
        ]
    )
    pipeline.run(
        [
            "--input",
            str(tmp_path / "b.csv"),
            "--output",
            str(tmp_path / "out"),
            "--num_components",
            "3",
            "--resume",
            str(tmp_path / "out" / "state"),
        ]
    )
    state, _ = read_checkpoint(str(tmp_path / "out" / "state"))
    both = PCAState(PCAConfig(num_components=3, feature_dim=5)).update(np.vstack([first, second]))
    assert state.n_seen == 700
    np.testing.assert_allclose(state.scatter, both.scatter, rtol=1e-9, atol=1e-9)
    model, _ = read_checkpoint(str(tmp_path / "out" / "model"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_rows"] == 300  # evaluated on the new data of the second run
    assert metrics["explained_variance_ratio"] == pytest.approx(
        model.score("explained_variance_ratio", second), rel=1e-6
    )
