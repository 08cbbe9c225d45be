"""Command latency: the wall time of each ``beam-ml`` command on a small input.

    python benchmarks/bench_cli.py [--rows 1000] [--repeat 5]

Writes a small K-Means problem (``--rows`` rows of 8 features, CSV) to a temporary
folder and runs, each ``--repeat`` times as a fresh process the way a user does:
``train kmeans``, ``derive``, ``inspect``, ``predict`` and ``evaluate``. Prints the
median and the best wall time of each, and two floors to read them against: a bare
``python -c pass`` and ``import numpy, scipy.sparse`` (what every algorithm needs).
On small input a command's time is its fixed cost (interpreter, imports, pipeline
start), which is what the figures are for; the work on 1,000 rows takes milliseconds.
The commands run as ``python -m beam_ml.cli`` from the temporary folder, so
``PYTHONPATH=/path/to/other/checkout`` times another version of beam_ml.
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


def _time(argv: list[str], repeat: int, cwd: str) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as folder:
        data = os.path.join(folder, "x.csv")
        np.savetxt(data, rng.normal(size=(args.rows, 8)), delimiter=",", fmt="%.6g")
        state, model = os.path.join(folder, "state"), os.path.join(folder, "model")
        beam_ml = [sys.executable, "-m", "beam_ml.cli", "--quiet"]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import numpy, scipy.sparse": [sys.executable, "-c", "import numpy, scipy.sparse"],
            "train kmeans": [
                *beam_ml,
                "train",
                "kmeans",
                "--input",
                data,
                "--output",
                state,
                "--k",
                "4",
            ],
            "derive": [*beam_ml, "derive", state, "--output", model, "--k", "3"],
            "inspect": [*beam_ml, "inspect", model],
            "predict": [
                *beam_ml,
                "predict",
                model,
                "--input",
                data,
                "--output",
                os.path.join(folder, "p.csv"),
            ],
            "evaluate": [*beam_ml, "evaluate", model, "--input", data],
        }
        print(f"{args.rows:,} rows x 8, {args.repeat} runs each (seconds of wall time)")
        print(f"{'command':28} {'median':>7} {'best':>7}")
        for name, argv in commands.items():
            times = _time(argv, args.repeat, folder)
            print(f"{name:28} {statistics.median(times):7.2f} {min(times):7.2f}")


if __name__ == "__main__":
    main()
