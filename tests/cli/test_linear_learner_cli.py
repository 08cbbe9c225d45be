"""``beam-ml`` with the linear learner, end to end (a real subprocess each time).

LIBSVM: a9a's train file with two epochs and a threshold chosen for a target recall, then
predict and evaluate on a9a.t. CSV: a regressor whose regularization is chosen at derive
time from the exact statistics.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet

from tests.cli.test_cli import beam_ml, write_csv
from tests.conftest import data_path

pytestmark = pytest.mark.beam


def _last_json(done) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_binary_classifier_on_libsvm_files(tmp_path):
    train, test = data_path("a9a", "a9a"), data_path("a9a", "a9a.t")
    state, model = tmp_path / "state", tmp_path / "model"
    trained = _last_json(
        beam_ml(
            "train",
            "linear_learner",
            "--input",
            train,
            "--format",
            "libsvm",
            "--output",
            state,
            "--predictor_type",
            "binary_classifier",
            "--feature_dim",
            123,
            "--num_models",
            16,
            "--epochs",
            2,
            "--mini_batch_size",
            200,
            "--binary_classifier_model_selection_criteria",
            "precision_at_target_recall",
            "--target_recall",
            0.9,
        )
    )
    assert trained["n_seen"] == 32_561 and trained["config"]["epochs"] == 2
    assert trained["config"]["mini_batch_size"] == 200  # one flag: blocks and SGD steps

    derived = _last_json(beam_ml("derive", state, "--output", model))
    assert derived["params"]["binary_classifier_model_selection_criteria"] == (
        "precision_at_target_recall"
    )
    assert derived["solver"] == "packed" and derived["epoch"] == 2
    assert 0.0 < derived["threshold_probability"] < 0.5  # a high recall needs a low threshold

    out = tmp_path / "predictions.csv"
    beam_ml("predict", model, "--input", test, "--format", "libsvm", "--output", out)
    predictions = np.loadtxt(out, delimiter=",", skiprows=1)  # the header line
    labels = np.array([float(line.split()[0]) > 0 for line in open(test)])
    assert predictions.shape == (16_281, 2)  # probability, predicted label; input order
    assert predictions[labels, 1].mean() == pytest.approx(0.9, abs=0.02)  # held-out recall

    metrics = _last_json(beam_ml("evaluate", model, "--input", test, "--format", "libsvm"))
    assert metrics["n_rows"] == 16_281
    assert metrics["recall"] == pytest.approx(predictions[labels, 1].mean())
    assert 0.89 < metrics["roc_auc_score"] < 0.92
    assert metrics["binary_classification_cross_entropy"] < 0.34


def test_regressor_regularized_at_derive_time(tmp_path):
    frame = pd.read_csv(data_path("california-housing", "housing.csv")).dropna()
    values = frame.drop(columns="ocean_proximity").to_numpy(np.float64)[:3000]
    values = values.astype(np.float32).astype(np.float64)  # what the CSV reader will see
    write_csv(tmp_path / "housing.csv", values)
    state, model = tmp_path / "state", tmp_path / "model"
    beam_ml(
        "train",
        "linear_learner",
        "--input",
        tmp_path / "housing.csv",
        "--label_column",
        8,
        "--output",
        state,
        "--predictor_type",
        "regressor",
        "--num_models",
        4,
    )
    derived = _last_json(beam_ml("derive", state, "--output", model, "--wd", 0.01, "--l1", 0.02))
    assert derived["solver"] == "exact" and derived["method"].startswith("elastic net")
    x, y = values[:, :8], values[:, 8]
    mean, std = x.mean(axis=0), x.std(axis=0)
    reference = ElasticNet(alpha=0.03, l1_ratio=2 / 3, tol=1e-12, max_iter=100_000).fit(
        (x - mean) / std, (y - y.mean()) / y.std()
    )
    metrics = _last_json(
        beam_ml("evaluate", model, "--input", tmp_path / "housing.csv", "--label_column", 8)
    )
    expected = reference.predict((x - mean) / std) * y.std() + y.mean()
    assert metrics["mse"] == pytest.approx(np.mean((expected - y) ** 2), rel=1e-4)
    assert set(metrics) >= {"mse", "rmse", "absolute_loss", "r2", "objective_loss"}


def test_epochs_report_validation_and_early_stopping(tmp_path):
    """Issue 24: several epochs hold out validation rows, rank on them, stop early, and
    the train output and the manifest (``inspect``) give the per-epoch metrics."""
    state, model = tmp_path / "state", tmp_path / "model"
    args = ["--predictor_type", "binary_classifier", "--feature_dim", 123, "--num_models", 8]
    trained = _last_json(
        beam_ml(
            "train", "linear_learner", "--input", data_path("a9a", "a9a"), "--format", "libsvm",
            "--output", state, *args, "--epochs", 4, "--mini_batch_size", 500,
            "--validation_fraction", 0.2, "--early_stopping_patience", 1,
            "--early_stopping_tolerance", 0.05,
        )
    )
    assert trained["config"]["validation_fraction"] == 0.2
    epochs = trained["epoch_metrics"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert all(e["rows"] == 32_561 and e["validation_rows"] > 6000 for e in epochs)
    # a9a is learnt in one epoch: no 5% improvement after it, so epochs 3 and 4 are skipped.
    assert epochs[1]["stopping"] and [e["rows_trained"] == 0 for e in epochs] == [
        False, False, True, True,
    ]
    manifest = json.loads(beam_ml("inspect", state).stdout)
    assert manifest["meta"]["epoch_metrics"] == epochs and manifest["meta"]["stopped_epoch"] == 2
    derived = _last_json(
        beam_ml("derive", state, "--output", model,
                "--binary_classifier_model_selection_criteria", "loss_function")
    )
    assert derived["selected_on"] == "validation" and derived["parameters_of_epoch"] in (1, 2)
    assert derived["validation_loss"] == pytest.approx(
        min(e["validation_loss"] for e in epochs), rel=1e-9
    )
