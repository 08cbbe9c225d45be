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


def test_temp_dirs_of_ended_processes_are_swept(tmp_path, monkeypatch):
    """A killed run's spill folder (its pid in the name) goes with the next run's
    temp_dir; a running process's folder, and other names, stay."""
    import os
    import subprocess
    import sys
    import tempfile

    from beam_ml.io.scratch import temp_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, check=True)  # fmt: skip
    dead_pid = int(ended.stdout)
    stale = tmp_path / f"beam_ml_pipe_pid{dead_pid}_abc"
    (stale / "cycle-1.csv").parent.mkdir()
    (stale / "cycle-1.csv").write_text("1,2\n")
    alive = tmp_path / f"beam_ml_pipe_pid{os.getppid()}_abc"
    other = tmp_path / f"beam_ml_kafka_pid{dead_pid}_abc"
    unnamed = tmp_path / "beam_ml_pipe_x1y2z3"
    for folder in (alive, other, unnamed):
        folder.mkdir()
    mine = temp_dir("pipe")
    assert os.path.dirname(mine) == str(tmp_path)
    assert os.path.basename(mine).startswith(f"beam_ml_pipe_pid{os.getpid()}_")
    assert not stale.exists() and alive.exists() and other.exists() and unnamed.exists()


def test_pipe_lines_map_a_spill_without_set_aside_lines_to_the_pipe():
    from beam_ml.io.pipes import _PipeLines

    where = _PipeLines(lines=10, bytes=100)  # 10 lines (100 bytes) before this cycle
    assert [where.line_of(j) for j in range(3)] == [11, 12, 13]
    fewer = where.without([(1, 7), (3, 5)])  # pipe lines 12 (7 bytes) and 14 (5 bytes)
    assert [fewer.line_of(j) for j in range(4)] == [11, 13, 15, 16]
    assert [fewer.removed_bytes_before(j) for j in range(4)] == [0, 7, 12, 12]
    again = fewer.without([(2, 4)])  # pipe line 13, index 2 of the first spill
    assert [again.line_of(j) for j in range(3)] == [11, 15, 16]


def test_pipe_feed_reads_a_descriptor_and_closes_while_the_pipe_is_open(tmp_path, monkeypatch):
    """Read with os.read (no buffered reader's lock held by a blocked thread); close()
    stops the thread at once, the writer still open, and removes the spill folder."""
    import os
    import tempfile
    import time

    from beam_ml.io.pipes import PipeFeed

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    read_end, write_end = os.pipe()
    stream = io.FileIO(read_end, "rb")
    feed = PipeFeed("csv", stream, header=False)
    os.write(write_end, b"1,2\n3,4\n5,")
    deadline = time.monotonic() + 10
    while feed.waiting({}) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    take = feed.take({})
    assert take.positions == {"lines": 2} and take.n_features == 2
    spill = take.receipt[0]
    assert os.path.exists(spill)
    feed.commit(take)
    assert not os.path.exists(spill)  # a committed cycle's spill is deleted
    started = time.monotonic()
    feed.close()
    assert time.monotonic() - started < 1.5 and not feed._thread.is_alive()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("beam_ml_pipe_")] == []
    os.close(write_end)
    stream.close()
