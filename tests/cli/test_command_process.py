"""The beam-ml command as a process (issue 15): what it imports, what it leaves behind,
what it prints when output is cut short or a metric is undefined."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from beam_ml import KMeansConfig, KMeansState, LinearLearnerConfig, write_checkpoint
from beam_ml.algorithms.linear_learner import LinearLearnerState
from beam_ml.core.block import Block
from tests.conftest import REPO


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _beam_ml(*args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or _env(),
        cwd=cwd,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def _running(args: list, cwd: Path, tmp: Path, prefix: str) -> subprocess.Popen:
    """``beam-ml ARGS`` started with TMPDIR=tmp, returned once its temporary folder
    (``prefix*``) exists; its standard error is a pipe."""
    child = subprocess.Popen(
        [sys.executable, "-m", "beam_ml.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(TMPDIR=str(tmp)),
        cwd=cwd,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(prefix) for p in tmp.iterdir()):
        assert child.poll() is None and time.monotonic() < deadline, f"no {prefix}* folder seen"
        time.sleep(0.01)
    return child


@pytest.fixture
def kmeans(tmp_path, rng):
    """A K-Means state and a CSV of 300 rows with two malformed lines (lines 11, 201)."""
    data = rng.normal(size=(300, 3)).astype(np.float32)
    write_checkpoint(str(tmp_path / "state"), KMeansState(KMeansConfig(k=3)).update(data))
    lines = [",".join(repr(float(v)) for v in row) for row in data]
    lines.insert(10, "1.0,oops,2.0")
    lines.insert(200, "1.0,2.0")
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_import_and_checkpoint_commands_do_not_load_beam(kmeans):
    state, model = kmeans / "state", kmeans / "model"
    loaded = _child(
        f"""
        import contextlib, io, json, sys
        import beam_ml
        from beam_ml.cli.main import main
        after_import = "apache_beam" in sys.modules
        with contextlib.redirect_stdout(io.StringIO()):
            codes = [main(["derive", {str(state)!r}, "--output", {str(model)!r}, "--k", "2"]),
                     main(["inspect", {str(model)!r}])]
        print(json.dumps({{"codes": codes, "after_import": after_import,
                          "after_commands": "apache_beam" in sys.modules}}))
        """
    )
    assert loaded == {"codes": [0, 0], "after_import": False, "after_commands": False}
    # The public names still resolve, Beam's ones by importing Beam then.
    names = _child(
        """
        import json, beam_ml, beam_ml.io, beam_ml.transforms
        from beam_ml.io.checkpoints import WriteCheckpoint
        assert beam_ml.WriteCheckpoint is WriteCheckpoint
        assert beam_ml.ReadBlocks is beam_ml.io.ReadBlocks
        assert beam_ml.Evaluate is beam_ml.transforms.Evaluate
        print(json.dumps(sorted(n for n in beam_ml.__all__ if getattr(beam_ml, n) is None)))
        """
    )
    assert names == []


def test_evaluate_leaves_no_temporary_folder_and_reports_dead_letters(kmeans):
    write_checkpoint(
        str(kmeans / "model"), KMeansState(KMeansConfig(k=3)).update(np.eye(3) * 2).derive(k=2)
    )
    tmp, work = kmeans / "tmp", kmeans / "work"
    tmp.mkdir()
    work.mkdir()
    env = _env(TMPDIR=str(tmp))
    done = _beam_ml(
        "--quiet", "evaluate", kmeans / "model", "--input", kmeans / "x.csv", cwd=work, env=env
    )
    metrics = json.loads(done.stdout)
    assert metrics["n_rows"] == 300 and metrics["n_dead_letters"] == 2
    # The documented default: ./evaluate.dead_letters.jsonl, named in the JSON and on stderr.
    assert metrics["dead_letters"] == "evaluate.dead_letters.jsonl"
    assert "2 malformed records set aside in evaluate.dead_letters.jsonl" in done.stderr
    dead = (work / "evaluate.dead_letters.jsonl").read_text().splitlines()
    assert sorted(json.loads(d)["line"] for d in dead) == [11, 201]
    assert sorted(os.listdir(work)) == ["evaluate.dead_letters.jsonl"]
    assert os.listdir(tmp) == [], "evaluate left temporary files behind"

    # --output: the same JSON in the file, the dead letters beside it or at --dead_letters.
    done = _beam_ml(
        "evaluate", kmeans / "model", "--input", kmeans / "x.csv", "--output", work / "m.json",
        cwd=work, env=env,
    )  # fmt: skip
    assert json.loads((work / "m.json").read_text()) == json.loads(done.stdout.splitlines()[-1])
    assert (work / "m.json.dead_letters.jsonl").exists()
    done = _beam_ml(
        "evaluate", kmeans / "model", "--input", kmeans / "x.csv",
        "--dead_letters", kmeans / "bad.jsonl", cwd=work, env=env,
    )  # fmt: skip
    assert json.loads(done.stdout.splitlines()[-1])["dead_letters"] == str(kmeans / "bad.jsonl")
    assert len((kmeans / "bad.jsonl").read_text().splitlines()) == 2
    assert os.listdir(tmp) == []


def test_evaluate_stopped_by_sigterm_removes_its_temporary_folder(kmeans, rng):
    model = KMeansState(KMeansConfig(k=2)).update(np.eye(3)).derive()
    write_checkpoint(str(kmeans / "model"), model)
    np.save(kmeans / "x.npy", rng.normal(size=(300_000, 3)).astype(np.float32))
    tmp = kmeans / "tmp"
    tmp.mkdir()
    child = _running(
        ["evaluate", kmeans / "model", "--input", "x.npy"], kmeans, tmp, "beam_ml_eval_"
    )
    child.send_signal(signal.SIGTERM)  # the pipeline has started, or is about to
    _, err = child.communicate(timeout=300)
    assert child.returncode == 143 and err.decode() == "", err.decode()
    assert list(tmp.iterdir()) == []


def test_evaluate_on_clean_data_says_no_dead_letters_and_quiet_is_quiet(kmeans):
    model = KMeansState(KMeansConfig(k=2)).update(np.eye(3)).derive()
    write_checkpoint(str(kmeans / "model"), model)
    clean = kmeans / "clean.csv"
    clean.write_text("1,2,3\n4,5,6\n")
    for args in (
        ("evaluate", kmeans / "model", "--input", clean),
        ("derive", kmeans / "state", "--output", kmeans / "model2"),
        ("inspect", kmeans / "model2"),
    ):
        done = _beam_ml("--quiet", *args, cwd=kmeans)
        assert done.stderr == "", f"beam-ml {args[0]} --quiet printed: {done.stderr}"
    done = _beam_ml("evaluate", kmeans / "model", "--input", clean, cwd=kmeans)
    metrics = json.loads(done.stdout)
    assert metrics["n_dead_letters"] == 0 and "dead_letters" not in metrics
    assert not (kmeans / "evaluate.dead_letters.jsonl").exists()


def test_undefined_metric_is_json_null(tmp_path, rng):
    """Recall and ROC AUC on data without a positive label are undefined: null, not NaN
    (which is not JSON)."""
    x = rng.normal(size=(200, 2))
    state = LinearLearnerState(LinearLearnerConfig(predictor_type="binary_classifier"))
    labels = (x[:, 0] > 0).astype(float)
    write_checkpoint(str(tmp_path / "model"), state.update(Block(x, labels=labels)).derive())
    np.savetxt(tmp_path / "negatives.csv", np.column_stack([np.zeros(50), x[:50]]), delimiter=",")
    done = _beam_ml(
        "evaluate", tmp_path / "model", "--input", tmp_path / "negatives.csv",
        "--label_column", 0, cwd=tmp_path,
    )  # fmt: skip
    line = done.stdout.strip().splitlines()[-1]
    assert "NaN" not in line
    metrics = json.loads(line)
    assert metrics["recall"] is None and metrics["roc_auc_score"] is None


def test_inspect_into_a_closed_pipe_exits_quietly(kmeans):
    child = subprocess.Popen(
        [sys.executable, "-m", "beam_ml.cli", "inspect", kmeans / "state"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=kmeans,
    )
    child.stdout.close()  # the reader left before anything was written (`| head -0`)
    _, err = child.communicate(timeout=300)
    assert err.decode() == "" and child.returncode == 141  # as a tool killed by SIGPIPE


def test_the_run_after_a_kill_9_removes_what_the_killed_run_left(kmeans, rng):
    """Issue 22: after each kill -9 during train the temp folder kept Beam's
    beam-pipeline-temp* folder and the output's parent a beam-temp-<dead letters>-*
    folder. Both now live where the next run finds them and removes them."""
    np.save(kmeans / "big.npy", rng.normal(size=(4_000_000, 8)).astype(np.float32))
    tmp = kmeans / "tmp"
    tmp.mkdir()
    command = [sys.executable, "-m", "beam_ml.cli", "train", "kmeans", "--k", "4"]
    child = _running(
        [*command[3:], "--input", "big.npy", "--output", "out"], kmeans, tmp, "beam_ml_run_"
    )
    time.sleep(0.3)  # the pipeline is built, and running
    assert child.poll() is None
    child.kill()
    child.wait()
    left = [p.name for p in tmp.iterdir()]
    assert any(n.startswith("beam_ml_run_") for n in left), left  # what a kill -9 leaves
    sink = kmeans / "beam-temp-out.dead_letters.jsonl-0123456789abcdef"
    sink.mkdir()  # as Beam's dead-letter sink leaves it when killed mid-write
    done = subprocess.run(
        [
            *command,
            "--input",
            "x.csv",
            "--output",
            "out2",
            "--dead_letters",
            "out.dead_letters.jsonl",
        ],
        capture_output=True,
        text=True,
        env=_env(TMPDIR=str(tmp)),
        cwd=kmeans,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == [] and not sink.exists()
    assert len((kmeans / "out.dead_letters.jsonl").read_text().splitlines()) == 2
