"""Standard input (a pipe) as training input: ReadPipe and ``--input -``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from beam_ml.core.errors import BadInputError
from beam_ml.io.pipes import ReadPipe
from tests.streaming.helpers import beam_ml, run_source, stack

pytestmark = pytest.mark.streaming


def _csv(rows: np.ndarray, header: str | None = "a,b,c,y") -> list[str]:
    lines = [",".join(repr(float(v)) for v in row) for row in rows]
    return ([header] if header else []) + lines


def test_pipe_rows_labels_and_dead_letters_keep_the_pipes_positions(rng):
    rows = rng.normal(size=(500, 4)).astype(np.float32).astype(np.float64)
    lines = _csv(rows)
    lines.insert(101, "1,2,oops,4")  # line 102 of the pipe
    data = ("\n".join(lines) + "\n").encode()
    read = ReadPipe("csv", stream=io.BytesIO(data), label_column="y", block_size=64)
    assert read.n_features == 3 and read.n_bytes == len(data)
    blocks, dead = run_source(read.with_dead_letters(), 2)
    features, labels = stack(blocks)
    np.testing.assert_array_equal(features, rows[:, :3])
    np.testing.assert_array_equal(labels, rows[:, 3])
    assert max(b.n_rows for b in blocks) <= 64
    [bad] = dead
    assert bad["file"] == "<stdin>" and bad["line"] == 102
    assert bad["offset"] == data.index(b"1,2,oops,4") and "'oops'" in bad["reason"]


def test_empty_pipe_and_bad_format():
    assert ReadPipe("jsonl", stream=io.BytesIO(b"")).n_features is None
    with pytest.raises(BadInputError, match="'format' parameter of ReadPipe"):
        ReadPipe("xml", stream=io.BytesIO(b"1"))


def test_cli_reads_standard_input(tmp_path, rng):
    rows = rng.normal(size=(800, 5)).astype(np.float32).astype(np.float64)
    lines = _csv(rows, header=None)
    lines.insert(3, "1,2")
    data = ("\n".join(lines) + "\n").encode()
    out = beam_ml(
        "train",
        "pca",
        "--input",
        "-",
        "--format",
        "csv",
        "--output",
        tmp_path / "state",
        "--num_components",
        3,
        stdin=data,
    )
    summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 800 and summary["config"]["feature_dim"] == 5
    state, _ = read_checkpoint(str(tmp_path / "state"))
    reference = PCAState(PCAConfig(num_components=3)).update(rows)
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    [bad] = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert bad["file"] == "<stdin>" and bad["line"] == 4 and bad["record"] == "1,2"
