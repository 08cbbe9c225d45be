"""The command line's friction points of issue 24: defaults in --help, escaped CSV
delimiters, predict output aligned with its input, honest feature_dim, a quiet
multi-process run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.cli.test_cli import beam_ml
from tests.conftest import REPO

pytestmark = pytest.mark.beam


def _flat(text: str) -> str:
    """argparse's help as one line (it wraps words at the terminal width)."""
    return re.sub(r"\s+", " ", text)


def _option_help(help_text: str, option: str) -> str:
    """The help of one option: from its flag to the next option's."""
    flat = _flat(help_text)
    start = flat.index(f" {option} ")
    following = re.search(r" --\w+ [A-Z{]", flat[start + len(option) + 2 :])
    end = start + len(option) + 2 + following.start() if following else len(flat)
    return flat[start:end]


# ------------------------------------------------------------------ 1. --help defaults


def test_train_help_shows_every_hyperparameter_default():
    from beam_ml import KMeansConfig, LinearLearnerConfig

    kmeans = beam_ml("train", "kmeans", "--help").stdout
    assert "(default: 0)" in _option_help(kmeans, "--half_life_time_size")
    assert "(default: kmeans++)" in _option_help(kmeans, "--init_method")
    assert f"(default: {KMeansConfig(k=2).seed})" in _option_help(kmeans, "--seed")
    assert "(default: 300)" in _option_help(kmeans, "--local_lloyd_max_iter")
    learner = beam_ml("train", "linear_learner", "--help").stdout
    config = LinearLearnerConfig(predictor_type="regressor")
    assert f"(default: {config.num_models})" in _option_help(learner, "--num_models")
    assert f"(default: {config.beta_1})" in _option_help(learner, "--beta_1")
    assert "(default: true)" in _option_help(learner, "--use_bias")
    assert "(required)" in _option_help(learner, "--predictor_type")
    assert "largest index" in _option_help(learner, "--feature_dim")


def test_derive_help_labels_each_parameter_with_its_algorithms_and_defaults():
    import inspect

    from beam_ml.algorithms.factorization_machines import FactorizationMachinesState
    from beam_ml.algorithms.linear_learner import LinearLearnerState

    def default(cls):
        parameters = inspect.signature(cls.derive).parameters
        return parameters["binary_classifier_model_selection_criteria"].default

    fm, ll = default(FactorizationMachinesState), default(LinearLearnerState)
    assert fm != ll  # the point of the label: they differ
    text = beam_ml("derive", "--help").stdout
    criteria = _option_help(text, "--binary_classifier_model_selection_criteria")
    assert f"[factorization_machines] " in criteria and f"[linear_learner] " in criteria
    assert re.search(rf"\[factorization_machines\][^\[]*\(default: {fm}\)", criteria)
    assert re.search(rf"\[linear_learner\][^\[]*\(default: {ll}\)", criteria)
    recall = _option_help(text, "--target_recall")
    assert "[factorization_machines, linear_learner]" in recall and "(default: 0.8)" in recall
    assert "[kmeans]" in _option_help(text, "--local_lloyd_tol")
    assert "(default: true)" in _option_help(text, "--subtract_mean")
    assert "[pca]" in _option_help(text, "--num_components")
    # every choice of either algorithm is accepted by the parser
    assert "precision_at_target_recall" in criteria and "loss_function" in criteria


# ------------------------------------------------------------- 2. escaped delimiters


@pytest.mark.parametrize("spelling", ["\\t", "\\\\t", "tab", "\t", "\\x09"])
def test_tab_delimiter_in_any_spelling(tmp_path, rng, spelling):
    rows = rng.normal(size=(60, 3)).astype(np.float32)
    lines = ["a\tb\tc"] + ["\t".join(repr(float(v)) for v in row) for row in rows]
    (tmp_path / "x.tsv").write_text("\n".join(lines) + "\n")
    out = beam_ml(
        "train", "pca", "--input", tmp_path / "x.tsv", "--format", "csv",
        "--delimiter", spelling, "--output", tmp_path / "s", "--num_components", 2,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["rows_read"] == 60 and summary["config"]["feature_dim"] == 3


def test_unusable_delimiter_says_what_is_accepted(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    done = beam_ml(
        "train", "pca", "--input", tmp_path / "x.csv", "--delimiter", "\\q",
        "--output", tmp_path / "s", "--num_components", 1, check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--delimiter" in lines[0], done.stderr
    assert all(form in lines[0] for form in ("one character", "tab", "\\t", "\\x1f"))


# ------------------------------------------------------------------- 4. feature_dim


@pytest.fixture
def late_index(tmp_path, rng):
    """1,000 LIBSVM rows over features 1-4, but row 901 (beyond the first blocks of 100
    rows) uses feature 40: feature_dim is 40."""
    lines = []
    for i in range(1000):
        features = {1: rng.normal(), 1 + i % 3 + 1: rng.normal()}
        if i == 900:
            features[40] = 1.0
        body = " ".join(f"{k}:{v:.4f}" for k, v in sorted(features.items()))
        lines.append(f"{i % 2} {body}")
    (tmp_path / "late.libsvm").write_text("\n".join(lines) + "\n")
    return tmp_path / "late.libsvm"


@pytest.mark.parametrize(
    "algorithm",
    [
        ["pca", "--num_components", "2"],
        ["linear_learner", "--predictor_type", "binary_classifier", "--num_models", "2"],
        ["factorization_machines", "--predictor_type", "binary_classifier", "--num_factors", "2"],
    ],
)
def test_feature_dim_is_the_largest_index_over_the_whole_input(late_index, algorithm):
    folder = late_index.parent
    out = beam_ml(
        "train", *algorithm, "--input", late_index, "--output", folder / "s",
        "--mini_batch_size", 100,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["config"]["feature_dim"] == 40
    assert summary["rows_read"] == 1000, out.stderr
    assert not (folder / "s.dead_letters.jsonl").exists()


def test_streaming_libsvm_without_feature_dim_says_it_is_needed(late_index):
    done = beam_ml(
        "train", "pca", "--num_components", "2", "--input", "-", "--format", "libsvm",
        "--output", late_index.parent / "s", "--streaming", "--stop_when_idle", "1s",
        stdin=late_index.read_text(), check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs --feature_dim" in lines[0], done.stderr


# ------------------------------------------------- 5. quiet multi-process workers


def test_quiet_multi_process_run_prints_nothing_on_stderr(tmp_path, rng):
    """Beam's workers inherit the command's standard error; under --quiet they say
    nothing (no INFO lines, no GCS/apitools import warnings), and a failure is still
    the one line of the command."""
    np.savetxt(tmp_path / "x.csv", rng.normal(size=(40, 3)), delimiter=",")
    multi = ["--direct_running_mode", "multi_processing", "--direct_num_workers", 2]
    done = beam_ml(
        "--quiet", "train", "pca", "--input", tmp_path / "x.csv", "--output",
        tmp_path / "s", "--num_components", 2, *multi,
    )
    assert done.stderr == ""
    assert json.loads(done.stdout.strip().splitlines()[-1])["rows_read"] == 40
    (tmp_path / "bad.csv").write_text("1,2,3\n1,2,oops\n")
    failed = beam_ml(
        "--quiet", "train", "pca", "--input", tmp_path / "bad.csv", "--strict",
        "--output", tmp_path / "s2", "--num_components", 2, *multi, check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "beam-ml: error: bad record in " + str(tmp_path / "bad.csv")
        + ", line 2 (byte offset 6): field 2 ('oops') is not a number; record: '1,2,oops'"
    ]
