"""The beam-ml command end to end, as a user runs it (a real subprocess each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from tests.conftest import REPO

pytestmark = pytest.mark.beam


def beam_ml(*args, check=True, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        input=stdin,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"beam-ml {args} failed ({done.returncode}):\n{done.stderr}")
    return done


def write_csv(path: Path, rows: np.ndarray, header=True):
    names = ",".join(f"f{i}" for i in range(rows.shape[1]))
    np.savetxt(path, rows, delimiter=",", fmt="%.17g", header=names if header else "", comments="")


@pytest.fixture
def dataset(tmp_path, rng):
    # float32-representable values: the readers emit float32 blocks, so the references match exactly.
    parts = [
        (rng.normal(size=(n, 6)) @ rng.normal(size=(6, 6)) + 2)
        .astype(np.float32)
        .astype(np.float64)
        for n in (700, 500, 400)
    ]
    for i, part in enumerate(parts):
        write_csv(tmp_path / f"part{i}.csv", part)
    return tmp_path, parts


def test_train_derive_predict_evaluate_resume(dataset):
    folder, parts = dataset
    state_dir, model_dir = folder / "state", folder / "model"
    out = beam_ml(
        "train",
        "pca",
        "--input",
        f"{folder}/part[01].csv",
        "--format",
        "csv",
        "--output",
        state_dir,
        "--num_components",
        4,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["n_seen"] == 1200 and summary["rows_read"] == 1200
    assert "rows/s" in out.stderr
    assert not list(folder.glob("state.dead_letters*")), "no dead letters file when nothing was bad"

    derived = json.loads(
        beam_ml("derive", state_dir, "--output", model_dir, "--num_components", 2).stdout
    )
    reference = (
        PCAState(PCAConfig(num_components=4)).update(np.vstack(parts[:2])).derive(num_components=2)
    )
    np.testing.assert_allclose(
        derived["explained_variance_ratio"], reference.explained_variance_ratio, rtol=1e-5
    )

    beam_ml(
        "predict",
        model_dir,
        "--input",
        f"{folder}/part*.csv",
        "--output",
        folder / "proj.csv",
        "--mini_batch_size",
        128,
    )
    projections = np.loadtxt(folder / "proj.csv", delimiter=",", skiprows=1)  # header
    np.testing.assert_allclose(
        projections, reference.evaluate(np.vstack(parts)), rtol=1e-6, atol=1e-6
    )

    metrics = json.loads(
        beam_ml("evaluate", model_dir, "--input", f"{folder}/part2.csv")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert metrics["n_rows"] == 400
    assert metrics["reconstruction_mse"] == pytest.approx(
        reference.score("reconstruction_mse", parts[2]), rel=1e-6
    )

    beam_ml(
        "train",
        "pca",
        "--input",
        f"{folder}/part2.csv",
        "--output",
        state_dir,
        "--resume",
        state_dir,
    )
    resumed, manifest = read_checkpoint(str(state_dir))
    everything = PCAState(PCAConfig(num_components=4)).update(np.vstack(parts))
    assert manifest["n_seen"] == 1600
    np.testing.assert_allclose(resumed.scatter, everything.scatter, rtol=1e-9, atol=1e-9)
    inspected = json.loads(beam_ml("inspect", state_dir).stdout)
    assert inspected["algorithm"] == "pca" and inspected["n_seen"] == 1600


def test_malformed_rows_go_to_dead_letters_and_strict_stops(tmp_path, rng):
    good = rng.normal(size=(300, 4)).astype(np.float32).astype(np.float64)
    lines = [",".join(repr(float(v)) for v in row) for row in good]
    lines.insert(10, "1.0,2.0,oops,4.0")
    lines.insert(200, "1.0,2.0")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    beam_ml(
        "train",
        "pca",
        "--input",
        tmp_path / "data.csv",
        "--output",
        tmp_path / "state",
        "--num_components",
        2,
    )
    state, _ = read_checkpoint(str(tmp_path / "state"))
    np.testing.assert_allclose(
        state.scatter, PCAState(PCAConfig(2)).update(good).scatter, rtol=1e-6
    )
    dead = [json.loads(x) for x in (tmp_path / "state.dead_letters.jsonl").read_text().splitlines()]
    assert sorted(d["line"] for d in dead) == [11, 201]
    assert all(d["file"].endswith("data.csv") and d["reason"] for d in dead)

    strict = beam_ml(
        "train",
        "pca",
        "--input",
        tmp_path / "data.csv",
        "--output",
        tmp_path / "s2",
        "--num_components",
        2,
        "--strict",
        check=False,
    )
    assert strict.returncode == 1
    assert len(strict.stderr.strip().splitlines()) <= 2, strict.stderr
    assert "line 11" in strict.stderr and "oops" in strict.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "train",
                "pca",
                "--input",
                "{d}/part0.csv",
                "--output",
                "{d}/s",
                "--num_components",
                "2",
                "--num_componets",
                "3",
            ],
            "unrecognized option '--num_componets'",
        ),
        (
            [
                "train",
                "pca",
                "--input",
                "{d}/nothing*.csv",
                "--output",
                "{d}/s",
                "--num_components",
                "2",
            ],
            "matched no files",
        ),
        (
            ["train", "pca", "--input", "{d}/part0.csv", "--output", "{d}/s"],
            "needs --num_components",
        ),
        (
            [
                "train",
                "pca",
                "--input",
                "{d}/part0.csv",
                "--output",
                "{d}/s",
                "--num_components",
                "9",
            ],
            "'num_components' parameter of PCAConfig must be an int in [1, 6]",
        ),
        (["derive", "{d}/no_state", "--output", "{d}/m"], "No beam_ml checkpoint"),
        (
            [
                "train",
                "pca",
                "--input",
                "{d}/part0.csv",
                "--output",
                "{d}/s",
                "--num_components",
                "2",
                "--algorithm_mode",
                "fast",
            ],
            "invalid choice: 'fast'",
        ),
    ],
)
def test_mistakes_are_one_clear_line(dataset, args, message):
    folder, _ = dataset
    done = beam_ml(*[a.format(d=folder) for a in args], check=False)
    assert done.returncode in (1, 2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_derive_beyond_the_state_is_one_line(dataset):
    folder, _ = dataset
    beam_ml(
        "train",
        "pca",
        "--input",
        f"{folder}/part0.csv",
        "--output",
        folder / "s",
        "--num_components",
        2,
    )
    done = beam_ml(
        "derive", folder / "s", "--output", folder / "m", "--num_components", 7, check=False
    )
    assert done.returncode == 1 and "must be an int in [1, 6]. Got 7" in done.stderr
    resumed = beam_ml(
        "train",
        "pca",
        "--input",
        f"{folder}/part1.csv",
        "--output",
        folder / "s",
        "--resume",
        folder / "s",
        "--num_components",
        3,
        check=False,
    )
    assert resumed.returncode == 2 and "num_components=2 (not 3)" in resumed.stderr


@pytest.mark.slow
def test_multi_process_cli_run_equals_single_process(dataset):
    folder, parts = dataset
    beam_ml(
        "train",
        "pca",
        "--input",
        f"{folder}/part*.csv",
        "--output",
        folder / "multi",
        "--num_components",
        3,
        "--mini_batch_size",
        100,
        "--direct_running_mode",
        "multi_processing",
        "--direct_num_workers",
        2,
    )
    state, _ = read_checkpoint(str(folder / "multi"))
    np.testing.assert_allclose(
        state.scatter, PCAState(PCAConfig(3)).update(np.vstack(parts)).scatter, rtol=1e-9
    )


def test_help_is_clear():
    top = beam_ml("--help").stdout
    assert all(word in top for word in ("train", "derive", "predict", "evaluate"))
    train = beam_ml("train", "pca", "--help").stdout
    assert "--num_components" in train and "--algorithm_mode {regular,randomized,sketch}" in train


def test_empty_input_is_one_clear_line(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    done = beam_ml(
        "train",
        "pca",
        "--input",
        tmp_path / "empty.csv",
        "--output",
        tmp_path / "s",
        "--num_components",
        2,
        check=False,
    )
    assert done.returncode == 2 and "no rows were read" in done.stderr
    assert not (tmp_path / "s").exists()


def test_kmeans_train_derive_smaller_k_predict_evaluate(tmp_path, rng):
    centres = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    data = (centres[rng.integers(0, 4, 4000)] + rng.normal(size=(4000, 3))).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    beam_ml("train", "kmeans", "--input", tmp_path / "x.npy", "--output", tmp_path / "s", "--k", 4)
    derived = json.loads(
        beam_ml("derive", tmp_path / "s", "--output", tmp_path / "m", "--k", 3).stdout
    )
    assert derived["k"] == 3 and sum(derived["cluster_sizes"]) == pytest.approx(4000)
    beam_ml("derive", tmp_path / "s", "--output", tmp_path / "m")  # k from the state: 4
    beam_ml(
        "predict", tmp_path / "m", "--input", tmp_path / "x.npy", "--output", tmp_path / "p.csv"
    )
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)  # header
    model, _ = read_checkpoint(str(tmp_path / "m"))
    np.testing.assert_array_equal(predicted[:, 0], model.assign(data))
    metrics = json.loads(
        beam_ml("evaluate", tmp_path / "m", "--input", tmp_path / "x.npy").stdout.splitlines()[-1]
    )
    assert metrics["msd"] == pytest.approx(np.mean(predicted[:, 1] ** 2), rel=1e-5)
    assert metrics["msd"] < 3.5  # 3 dims of unit noise
