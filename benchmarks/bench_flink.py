"""Flink benchmark (issue 17): rows/s of K-Means and Linear Learner training on the local
Flink cluster at parallelism 1 and 2, against the local runner on the same files, and the
fixed cost of a job.

    make flink-up
    .venv/bin/python benchmarks/bench_flink.py [--rows 400000] [--files 8] [--dim 20]
    make flink-down

Generates (in a temporary folder) ``--files`` .npy files of blobs (K-Means) and of a
noisy linear target (Linear Learner, label last), then times each
``ReadBlocks -> Train -> WriteCheckpoint`` pipeline, end to end (submission, staging
and SDK worker start included), on: beam_ml's local runner, and Flink through Beam's job
server with the EXTERNAL worker pool at --parallelism 1 and 2. The fixed cost is the
same pipeline on a 10-row file, run ``--fixed-runs`` times per runner after one warm-up
job (the first job on a fresh cluster also loads classes); the median is reported with the
range. rows/s is rows / wall time; "net" subtracts that runner's median fixed cost (n/a
when the run took less than a second more than it, since it varies by seconds under
load). Each line also prints the machine's 1-minute load average at its end: the
machine is shared, so compare runs made in one invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np

from beam_ml import (
    KMeansConfig,
    LinearLearnerConfig,
    ReadBlocks,
    Train,
    WriteCheckpoint,
    pipeline_options,
    read_checkpoint,
)

FLINK = [
    "--runner=PortableRunner",
    "--job_endpoint=127.0.0.1:8099",
    "--environment_type=EXTERNAL",
    "--environment_config=127.0.0.1:50000",
]


def write_files(folder: Path, rows: int, files: int, dim: int, labelled: bool, seed: int) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(16, dim))
    weights = rng.normal(size=dim)
    for i in range(files):
        n = rows // files
        if labelled:
            x = rng.normal(size=(n, dim))
            data = np.column_stack([x, x @ weights + rng.normal(scale=0.1, size=n)])
        else:
            data = centres[rng.integers(0, 16, n)] + rng.normal(size=(n, dim))
        np.save(folder / f"part-{i}.npy", data.astype(np.float32))
    return str(folder / "part-*.npy")


def train(pattern: str, config, labelled: bool, argv: list[str], out: str) -> float:
    start = time.monotonic()
    with beam.Pipeline(options=pipeline_options(argv)) as p:
        _ = (
            p
            | ReadBlocks(pattern, "npy", label_column=-1 if labelled else None)
            | Train(config)
            | WriteCheckpoint(out)
        )
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--fixed-runs", type=int, default=3)
    parser.add_argument("--algorithms", default="kmeans,linear_learner")
    args = parser.parse_args()
    runners = {
        "local": [],
        "flink p=1": [*FLINK, "--parallelism=1"],
        "flink p=2": [*FLINK, "--parallelism=2"],
    }
    algorithms = {
        "kmeans": (KMeansConfig(k=16, feature_dim=args.dim), False),
        "linear_learner": (
            LinearLearnerConfig(predictor_type="regressor", feature_dim=args.dim),
            True,
        ),
    }
    with tempfile.TemporaryDirectory(prefix="beam_ml_bench_flink_") as tmp:
        root = Path(tmp)
        tiny = write_files(root / "tiny", 10, 1, args.dim, False, 0)
        print(f"{args.rows:,} rows x {args.dim} features in {args.files} .npy files")
        fixed = {}
        for name, argv in runners.items():
            warm_up = train(tiny, algorithms["kmeans"][0], False, argv, f"{tmp}/tiny-out")
            runs = [
                train(tiny, algorithms["kmeans"][0], False, argv, f"{tmp}/tiny-out")
                for _ in range(args.fixed_runs)
            ]
            fixed[name] = statistics.median(runs)
            print(
                f"fixed cost (10-row K-Means job) {name:10s} {fixed[name]:7.1f} s median of "
                f"{len(runs)} ({min(runs):.1f}-{max(runs):.1f} s; warm-up job {warm_up:.1f} s)"
                f"  load {os.getloadavg()[0]:.1f}"
            )
        for algo in args.algorithms.split(","):
            config, labelled = algorithms[algo]
            pattern = write_files(root / algo, args.rows, args.files, args.dim, labelled, 1)
            for name, argv in runners.items():
                out = f"{tmp}/{algo}-{name.replace(' ', '_')}"
                seconds = train(pattern, config, labelled, argv, out)
                state, _ = read_checkpoint(out)
                assert state.n_seen == args.rows // args.files * args.files
                net = seconds - fixed[name]
                # Below a second over the fixed cost (which varies by seconds), no net rate
                net_rate = f"{args.rows / net:,.0f} rows/s" if net > 1 else "n/a"
                print(
                    f"{algo:15s} {name:10s} {seconds:7.1f} s  {args.rows / seconds:10,.0f} rows/s"
                    f"  (net of fixed cost: {net_rate})  load {os.getloadavg()[0]:.1f}"
                )


if __name__ == "__main__":
    main()
