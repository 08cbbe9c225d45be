"""The command line's friction points of issue 24: defaults in --help, escaped CSV
delimiters, predict output aligned with its input, honest feature_dim, a quiet
multi-process run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.cli.test_cli import beam_ml

pytestmark = pytest.mark.beam


def _flat(text: str) -> str:
    """argparse's help as one line (it wraps words at the terminal width)."""
    return re.sub(r"\s+", " ", text)


def _option_help(help_text: str, option: str) -> str:
    """The help of one option, as one line: its entry, up to the next option's."""
    entry = re.search(rf"^  {option}\b.*?(?=^  -|^\S|\Z)", help_text, re.M | re.S)
    assert entry, f"{option} is not in the help"
    return _flat(entry.group(0))


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
    assert "[factorization_machines] " in criteria and "[linear_learner] " in criteria
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


# ------------------------------------------------- 3. predict aligned with its input


def _predictions(path):
    """(header, rows): a row is None where the output line is empty."""
    lines = path.read_text().split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    rows = [None if not line else np.array(line.split(","), dtype=float) for line in lines[1:-1]]
    return lines[0], rows


def test_predict_writes_a_header_and_one_line_per_record_with_bad_ones_empty(tmp_path, rng):
    from beam_ml import read_checkpoint
    from beam_ml.core.block import Block

    data = rng.normal(size=(2, 600, 4)).astype(np.float32)
    bad = {0: {0, 7, 8, 99, 100, 101, 350, 599}, 1: {250, 599}}  # data rows set aside
    for f in (0, 1):
        lines = ["a,b,c,d"] + [",".join(repr(float(v)) for v in row) for row in data[f]]
        for r in bad[f]:
            lines[1 + r] = "1,2,oops,4" if r % 2 else "1,2"
        (tmp_path / f"part{f}.csv").write_text("\n".join(lines) + "\n")
    beam_ml("train", "pca", "--input", f"{tmp_path}/part*.csv", "--output", tmp_path / "s",
            "--num_components", 3)
    beam_ml("derive", tmp_path / "s", "--output", tmp_path / "m", "--num_components", 2)
    model, _ = read_checkpoint(str(tmp_path / "m"))
    for f in (0, 1):  # one file at a time: its line i is the output's line i
        out = tmp_path / f"p{f}.csv"
        beam_ml("predict", tmp_path / "m", "--input", tmp_path / f"part{f}.csv",
                "--output", out, "--mini_batch_size", 50)
        header, rows = _predictions(out)
        assert header == "projection_0,projection_1"
        assert len(rows) == 600
        assert {i for i, row in enumerate(rows) if row is None} == bad[f]
        expected = model.evaluate(Block(data[f]))
        for i, row in enumerate(rows):
            if row is not None:
                np.testing.assert_allclose(row, expected[i], rtol=1e-6, atol=1e-6)
    # a compressed file: its records are counted as it is decompressed
    import gzip

    (tmp_path / "zipped.csv.gz").write_bytes(gzip.compress((tmp_path / "part0.csv").read_bytes()))
    beam_ml("predict", tmp_path / "m", "--input", tmp_path / "zipped.csv.gz",
            "--output", tmp_path / "z.csv", "--mini_batch_size", 50)
    assert (tmp_path / "z.csv").read_text() == (tmp_path / "p0.csv").read_text()
    # both files: in path order, each file's records in order
    beam_ml("predict", tmp_path / "m", "--input", f"{tmp_path}/part*.csv",
            "--output", tmp_path / "both.csv", "--mini_batch_size", 64)
    _, rows = _predictions(tmp_path / "both.csv")
    assert {i for i, row in enumerate(rows) if row is None} == bad[0] | {600 + r for r in bad[1]}


def test_predict_from_standard_input_and_npy_keeps_alignment(tmp_path, rng):
    from beam_ml import read_checkpoint
    from beam_ml.core.block import Block

    centres = np.array([[0.0, 0, 0], [8, 8, 8]])
    data = (centres[rng.integers(0, 2, 300)] + rng.normal(size=(300, 3))).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    beam_ml("train", "kmeans", "--input", tmp_path / "x.npy", "--output", tmp_path / "s", "--k", 2)
    beam_ml("derive", tmp_path / "s", "--output", tmp_path / "m")
    model, _ = read_checkpoint(str(tmp_path / "m"))
    expected = model.evaluate(Block(data))

    holes = {3, 120, 299}
    lines = [" ".join(f"{j + 1}:{v!r}" for j, v in enumerate(map(float, row))) for row in data]
    lines = [("0 1:x" if i in holes else "0 " + line) for i, line in enumerate(lines)]
    beam_ml("predict", tmp_path / "m", "--input", "-", "--format", "libsvm",
            "--output", tmp_path / "p.csv", "--mini_batch_size", 40,
            stdin="\n".join(lines) + "\n")
    header, rows = _predictions(tmp_path / "p.csv")
    assert header == "cluster,distance"
    assert {i for i, row in enumerate(rows) if row is None} == holes and len(rows) == 300
    for i, row in enumerate(rows):
        if row is not None:
            np.testing.assert_allclose(row, expected[i], rtol=1e-5, atol=1e-5)

    with_nan = data.copy()
    with_nan[[0, 77]] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    beam_ml("predict", tmp_path / "m", "--input", tmp_path / "nan.npy",
            "--output", tmp_path / "q.csv", "--mini_batch_size", 40)
    _, rows = _predictions(tmp_path / "q.csv")
    assert {i for i, row in enumerate(rows) if row is None} == {0, 77} and len(rows) == 300


def test_predict_header_of_a_classifier(tmp_path):
    lines = [f"{i % 2} 1:{(i % 2) * 2 - 1 + 0.1 * (i % 7)} 2:{0.01 * i}" for i in range(400)]
    (tmp_path / "t.libsvm").write_text("\n".join(lines) + "\n")
    beam_ml("train", "linear_learner", "--predictor_type", "binary_classifier",
            "--num_models", 2, "--input", tmp_path / "t.libsvm", "--output", tmp_path / "s")
    beam_ml("derive", tmp_path / "s", "--output", tmp_path / "m")
    beam_ml("predict", tmp_path / "m", "--input", tmp_path / "t.libsvm",
            "--output", tmp_path / "p.csv")
    header, rows = _predictions(tmp_path / "p.csv")
    assert header == "probability,predicted_label" and len(rows) == 400
    assert all(0 <= row[0] <= 1 and row[1] in (0, 1) for row in rows)
