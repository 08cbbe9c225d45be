"""Command latency: the wall time of each ``beam-ml`` command on a small input.

    python benchmarks/bench_cli.py [--rows 1000] [--repeat 5] [--before /path/to/checkout]

Writes a small K-Means problem (``--rows`` rows of 8 features, CSV) to a temporary
folder and runs, each ``--repeat`` times as a fresh process the way a user does:
``train kmeans``, ``derive``, ``inspect``, ``predict`` and ``evaluate``. Prints the
median and the best wall time of each, and two floors to read them against: a bare
``python -c pass`` and ``import numpy, scipy.sparse`` (what every algorithm needs).
On small input a command's time is its fixed cost (interpreter, imports, pipeline
start), which is what the figures are for; the work on 1,000 rows takes milliseconds.

With ``--before``, the beam_ml of another checkout (e.g. ``git worktree add /tmp/old
REV``, or ``git archive REV beam_ml | tar -x -C /tmp/old``) is timed too, its runs
alternating with this one's so that both see the same load on a shared machine. The
commands run as ``python -m beam_ml.cli`` from the temporary folder, with bytecode
caches as a user's install has them (the first run writes beam_ml's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _commands(folder: str, data: str) -> dict[str, list[str]]:
    state, model = os.path.join(folder, "state"), os.path.join(folder, "model")
    beam_ml = [sys.executable, "-m", "beam_ml.cli", "--quiet"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import numpy, scipy.sparse": [sys.executable, "-c", "import numpy, scipy.sparse"],
        "train kmeans": [
            *beam_ml, "train", "kmeans", "--input", data, "--output", state, "--k", "4"
        ],  # fmt: skip
        "derive": [*beam_ml, "derive", state, "--output", model, "--k", "3"],
        "inspect": [*beam_ml, "inspect", model],
        "predict": [
            *beam_ml, "predict", model, "--input", data, "--output", os.path.join(folder, "p.csv")
        ],  # fmt: skip
        "evaluate": [*beam_ml, "evaluate", model, "--input", data],
    }


def _run(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", metavar="CHECKOUT", help="also time this checkout's beam_ml")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as folder:
        data = os.path.join(folder, "x.csv")
        np.savetxt(data, rng.normal(size=(args.rows, 8)), delimiter=",", fmt="%.6g")
        versions = {"now": _ENV}
        if args.before:
            versions = {"before": {**_ENV, "PYTHONPATH": args.before}, **versions}
        plans = {}
        for name in versions:  # each its own checkpoints: formats may differ between them
            os.makedirs(os.path.join(folder, name))
            plans[name] = _commands(os.path.join(folder, name), data)
        print(f"{args.rows:,} rows x 8, {args.repeat} runs each (seconds of wall time)")
        columns = "".join(f" {name + ' median':>14} {name + ' best':>12}" for name in versions)
        print(f"{'command':28}{columns}")
        for command in plans["now"]:
            times: dict[str, list[float]] = {name: [] for name in versions}
            for _ in range(args.repeat):
                for name, env in versions.items():
                    times[name].append(_run(plans[name][command], folder, env))
            print(
                f"{command:28}"
                + "".join(
                    f" {statistics.median(t):14.2f} {min(t):12.2f}" for t in times.values()
                )
            )


if __name__ == "__main__":
    main()
