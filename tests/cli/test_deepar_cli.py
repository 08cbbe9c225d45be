"""beam-ml train | derive | inspect | predict | evaluate deepar, in this process (one
MXNet import): SageMaker's JSON lines (gzip), 'auto' cardinality from the data, bad
series as dead letters named by line, forecasts in SageMaker's inference shape checked
against the model's own predict, metrics against numpy, --resume on new observations."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from beam_ml.cli.main import _converter, main
from beam_ml.io.checkpoints import read_checkpoint, read_manifest
from beam_ml.io.formats.series_common import read_series

pytestmark = [pytest.mark.beam, pytest.mark.mxnet]

P = 8
SMALL = ["--num_cells", "8", "--num_layers", "1", "--mini_batch_size", "16"]
SMALL += ["--prediction_length", str(P), "--time_freq", "H", "--num_eval_samples", "20"]


def _series(rng, n, length, offset=0):
    t = np.arange(offset, offset + length)
    return [
        {
            "start": "2021-01-01 00:00:00",
            "target": np.round(
                5 + 2 * np.sin(2 * np.pi * (t + i) / 12) + rng.normal(0, 0.2, length), 3
            ).tolist(),
            "cat": [i % 4],
        }
        for i in range(n)
    ]


def _write(path, records, bad=()):
    lines = [json.dumps(r) for r in records]
    for at, line in bad:
        lines.insert(at, line)
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def _printed(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_train_derive_predict_evaluate_resume(tmp_path, rng, capsys):
    records = _series(rng, 12, 60)
    bad = [(3, '{"start": "2021-01-01 00:00:00", "target": [1, "x"], "cat": [0]}'),
           (9, '{"target": [1, 2], "cat": [1]}')]  # fmt: skip
    data = _write(tmp_path / "train.json.gz", records, bad)
    state, model = str(tmp_path / "state"), str(tmp_path / "model")
    assert main(["--quiet", "train", "deepar", "--input", data, "--format", "deepar_jsonl", "--output", state, *SMALL]) == 0  # fmt: skip
    trained = _printed(capsys)[0]
    assert trained["config"]["cardinality"] == [4]  # 'auto': the largest id + 1
    assert trained["rows_read"] == 12
    dead = [json.loads(line) for line in open(state + ".dead_letters.jsonl")]
    assert [d["line"] for d in dead] == [4, 10]
    assert "'target'" in dead[0]["reason"] and "'start'" in dead[1]["reason"]

    assert main(["--quiet", "derive", state, "--output", model, "--num_eval_samples", "30"]) == 0
    assert main(["--quiet", "inspect", model]) == 0
    shown = capsys.readouterr().out
    assert '"algorithm": "deepar"' in shown

    # predict: SageMaker's shape, as the model's own predict gives it (draws depend on
    # each series and the seed only), the CSV's means the same numbers
    learned, _ = read_checkpoint(model, "model")
    block = next(read_series(data, "deepar_jsonl", freq="H", dead_letters=[]))
    answers = str(tmp_path / "forecast.jsonl")
    assert main(["--quiet", "predict", model, "--input", data, "--output", answers, "--output_format", "sagemaker", "--output_types", "mean,quantiles,samples", "--quantiles", "0.1,0.5,0.9"]) == 0  # fmt: skip
    lines = open(answers).read().split("\n")[:-1]
    assert len(lines) == 14 and lines[3] == "" and lines[9] == ""  # set-aside records: empty
    got = [json.loads(line) for line in lines if line]
    want = learned.predict(block, quantiles=(0.1, 0.5, 0.9), output_types=("mean", "quantiles", "samples"))  # fmt: skip
    assert len(got) == 12 and set(got[0]) == {"mean", "quantiles", "samples"}
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["mean"], w["mean"], rtol=1e-6)
        assert list(g["quantiles"]) == ["0.1", "0.5", "0.9"]
        np.testing.assert_allclose(g["quantiles"]["0.9"], w["quantiles"]["0.9"], rtol=1e-6)
        assert np.shape(g["samples"]) == (30, P)
        np.testing.assert_allclose(np.mean(g["samples"], axis=0), g["mean"], rtol=1e-5, atol=1e-6)
    table = str(tmp_path / "forecast.csv")
    assert main(["--quiet", "predict", model, "--input", data, "--output", table]) == 0
    header, *rows = open(table).read().split("\n")[:-1]
    assert header.split(",")[:2] == ["mean_1", "mean_2"] and len(header.split(",")) == 10 * P
    np.testing.assert_allclose(
        [float(v) for v in rows[0].split(",")[:P]], got[0]["mean"], rtol=1e-6
    )

    # evaluate: the held-out last P values of each series; RMSE of the mean by numpy
    capsys.readouterr()
    letters = str(tmp_path / "evaluate.dead_letters.jsonl")
    assert main(["--quiet", "evaluate", model, "--input", data, "--dead_letters", letters]) == 0
    metrics = _printed(capsys)[0]
    assert {"sMAPE", "MASE", "mean_wQuantileLoss", "ND", "RMSE"} <= set(metrics)
    assert metrics["n_rows"] == 12 and metrics["n_dead_letters"] == 2
    truth = np.array([r["target"][-P:] for r in records])
    mean = learned.sample_paths(block, horizon_given=True).mean(axis=1)
    assert metrics["RMSE"] == pytest.approx(np.sqrt(np.mean((truth - mean) ** 2)), rel=1e-6)

    # --resume: the next observations of the same series train on from the state
    later = _write(tmp_path / "later.json.gz", _series(rng, 12, 30, offset=60))
    resumed = str(tmp_path / "resumed")
    assert main(["--quiet", "train", "deepar", "--input", later, "--format", "deepar_jsonl", "--resume", state, "--output", resumed]) == 0  # fmt: skip
    before, after = read_manifest(state), read_manifest(resumed)
    assert after["n_seen"] == before["n_seen"] + 12
    assert after["meta"]["steps"] > before["meta"]["steps"]
    assert main(["train", "deepar", "--input", later, "--format", "deepar_jsonl", "--resume", state, "--output", resumed, "--prediction_length", "5"]) == 2  # fmt: skip
    assert "trained with prediction_length=8 (not 5)" in capsys.readouterr().err


def test_series_mistakes_are_one_line(tmp_path, capsys):
    matrix = tmp_path / "rows.csv"
    matrix.write_text("1,2\n3,4\n")
    assert main(["train", "deepar", "--input", str(matrix), "--format", "csv", "--output", str(tmp_path / "s"), *SMALL]) == 2  # fmt: skip
    assert "a series model reads --format deepar_jsonl or" in capsys.readouterr().err
    assert main(["train", "pca", "--input", str(matrix), "--format", "points_csv", "--output", str(tmp_path / "p"), "--num_components", "1"]) == 2  # fmt: skip
    assert "--format points_csv reads time series" in capsys.readouterr().err
    kafka = ["--input", "kafka://127.0.0.1:1/points", "--format", "points_csv"]
    assert main(["train", "deepar", *kafka, "--output", str(tmp_path / "k"), *SMALL]) == 2
    assert "series come through a pipe (--input -) or files, not Kafka" in capsys.readouterr().err
    stream = ["--input", "kafka://127.0.0.1:1/s", "--format", "deepar_jsonl", "--streaming"]
    assert main(["train", "deepar", *stream, "--output", str(tmp_path / "k"), *SMALL]) == 1
    assert "The 'format' parameter of KafkaFeed must be one of" in capsys.readouterr().err


def test_free_parameters_parse():
    auto = _converter("Any")
    assert (auto("auto"), auto("3"), auto("3,5")) == ("auto", 3, (3, 5))
    assert _converter("tuple[float, ...]")("0.1, 0.9") == (0.1, 0.9)


def test_points_on_a_pipe_train_continuously(tmp_path):
    """`--streaming --input -` of point records: every series is tracked whole across
    the cycles' blocks (its length is its number of points)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    rng = np.random.default_rng(3)
    lines = ["series_id,timestamp,value"]
    for t in range(100):
        stamp = np.datetime64("2022-05-01T00:00") + np.timedelta64(t, "h")
        for sid in ("north", "south", "east"):
            lines.append(f"{sid},{str(stamp).replace('T', ' ')},{10 + np.sin(t / 4) + rng.normal(0, 0.1):.3f}")  # fmt: skip
    state = str(tmp_path / "live")
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli", "--quiet", "train", "deepar", "--input", "-",
         "--format", "points_csv", "--streaming", "--snapshot_every", "2s",
         "--stop_when_idle", "3s", "--output", state, *SMALL],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["snapshots"] >= 1 and summary["bad_records"] == 0
    trained, _ = read_checkpoint(state, "state")
    assert sorted(trained.tracked["length"].tolist()) == [100, 100, 100]
    assert read_manifest(state + ".model")["algorithm"] == "deepar"
