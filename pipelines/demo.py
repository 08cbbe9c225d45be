"""The bundled demo: `make demo`.

Generates a small dataset with a known structure (20 sensor readings driven by 3
hidden factors, plus noise and a couple of malformed lines), then runs the `beam-ml`
command line as a user would: train a PCA state, derive a model, evaluate it on
held-out data, predict, and resume training with a new day of data. It prints each
command and what a person wants to know: did PCA find the 3 factors?
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path("demo_output")
D, K = 20, 3


def make_data(rng: np.random.Generator) -> np.ndarray:
    """Rows of 20 readings: 3 hidden factors mixed in, plus a little noise."""
    data_dir = OUT / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    mixing, _ = np.linalg.qr(rng.normal(size=(D, K)))  # (d, k) orthonormal: the true subspace
    header = ",".join(f"sensor_{i:02d}" for i in range(D))

    def rows(n: int) -> np.ndarray:
        return (
            (rng.normal(size=(n, K)) * [6.0, 3.0, 1.5]) @ mixing.T
            + 0.3 * rng.normal(size=(n, D))
            + 50.0
        )

    for day, n in (
        ("day1-part1", 30_000),
        ("day1-part2", 30_000),
        ("day2", 20_000),
        ("holdout", 10_000),
    ):
        np.savetxt(
            data_dir / f"{day}.csv", rows(n), delimiter=",", fmt="%.5f", header=header, comments=""
        )
    with open(data_dir / "day1-part2.csv", "a") as handle:  # what real files contain
        handle.write("51.2,49.9,oops,50.1\n")
        handle.write(",".join(["50.0"] * (D - 1)) + ",nan\n")
    return mixing


def beam_ml(*args: str) -> dict:
    command = [sys.executable, "-m", "beam_ml.cli", *args]
    print(f"\n$ beam-ml {shlex.join(args)}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        print(f"  | {line}")
    if done.returncode != 0:
        sys.exit(f"demo step failed (exit {done.returncode})")
    out = done.stdout.strip().splitlines()
    return json.loads(out[-1]) if out and out[-1].startswith("{") else {}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # Beam's import-time notices are not for this demo
    rng = np.random.default_rng(2026)
    truth = make_data(rng)
    data = OUT / "data"
    print(
        f"Generated {data}/: 20 sensors driven by {K} hidden factors (90,000 rows in 4 CSV files,"
        " 2 malformed lines)"
    )

    trained = beam_ml(
        "train",
        "pca",
        "--input",
        f"{data}/day1-*.csv",
        "--output",
        f"{OUT}/state",
        "--num_components",
        "5",
    )
    dead = [json.loads(line) for line in open(OUT / "state.dead_letters.jsonl")]
    model = beam_ml(
        "derive", f"{OUT}/state", "--output", f"{OUT}/model", "--num_components", str(K)
    )
    metrics = beam_ml("evaluate", f"{OUT}/model", "--input", f"{data}/holdout.csv")
    beam_ml(
        "predict",
        f"{OUT}/model",
        "--input",
        f"{data}/holdout.csv",
        "--output",
        f"{OUT}/projections.csv",
    )
    resumed = beam_ml(
        "train",
        "pca",
        "--input",
        f"{data}/day2.csv",
        "--output",
        f"{OUT}/state",
        "--resume",
        f"{OUT}/state",
    )
    beam_ml("derive", f"{OUT}/state", "--output", f"{OUT}/model", "--num_components", str(K))

    from beam_ml import read_checkpoint

    final, _ = read_checkpoint(f"{OUT}/model")
    cosines = np.clip(np.linalg.svd(final.components @ truth, compute_uv=False), -1, 1)
    angles = np.degrees(np.arccos(cosines))
    lines = sum(1 for _ in open(OUT / "projections.csv")) - 1  # its header line
    print("\n=== What PCA found ===")
    print(
        f"rows trained on: {trained['n_seen']:,} (day 1), then {resumed['n_seen']:,} after resuming with day 2"
    )
    print(
        "variance explained by each component: "
        + ", ".join(f"{r:.1%}" for r in model["explained_variance_ratio"])
        + f" (total {model['cumulative_explained_variance_ratio']:.1%})"
    )
    print(
        f"held-out data: {metrics['explained_variance_ratio']:.1%} of its variance captured, "
        f"reconstruction MSE {metrics['reconstruction_mse']:.4f} per reading (expected: noise "
        f"variance 0.09 x {D - K}/{D} dimensions outside the factors = {0.09 * (D - K) / D:.4f})"
    )
    print(
        "angles between the learned and the true 3-factor subspace: "
        + ", ".join(f"{a:.2f}°" for a in angles)
    )
    print(f"projections of the {lines:,} held-out rows: {OUT}/projections.csv")
    for record in dead:
        print(f"set aside: {record['file']} line {record['line']}: {record['reason']}")
    ok = angles.max() < 2.0
    print("PCA recovered the hidden factors." if ok else "PCA did NOT recover the hidden factors.")
    ok = kmeans_demo(rng) and ok
    ok = streaming_demo(rng) and ok
    sys.exit(0 if ok else 1)


def kmeans_demo(rng: np.random.Generator) -> bool:
    """Customer segments: train once for k <= 10, then pick k from the same state."""
    segments = rng.uniform(-8, 8, size=(6, 8))  # 6 hidden segments in 8 features
    rows = segments[rng.integers(0, 6, 60_000)] + rng.normal(size=(60_000, 8))
    np.save(OUT / "data" / "customers.npy", rows.astype(np.float32))
    print(
        "\nGenerated demo_output/data/customers.npy: 60,000 customers, 8 features, 6 hidden segments"
    )
    beam_ml(
        "train",
        "kmeans",
        "--input",
        f"{OUT}/data/customers.npy",
        "--output",
        f"{OUT}/kmeans_state",
        "--k",
        "10",
    )
    msd = {}
    for k in range(2, 11):
        beam_ml("derive", f"{OUT}/kmeans_state", "--output", f"{OUT}/kmeans_k{k}", "--k", str(k))
        msd[k] = beam_ml(
            "evaluate", f"{OUT}/kmeans_k{k}", "--input", f"{OUT}/data/customers.npy", "--quiet"
        )["msd"]
    print("\n=== What K-Means found (one pass over the data, every k derived from one state) ===")
    for k, value in msd.items():
        print(f"k={k:2d}  mean squared distance {value:8.3f}  " + "#" * int(min(value, 60)))
    # The elbow: the first k after which more clusters stop paying (8 dims of unit noise: msd ~ 8).
    chosen = next(k for k in range(2, 10) if msd[k] - msd[k + 1] < 0.05 * msd[k])
    print(
        f"the curve flattens at k={chosen}: {'the 6 hidden segments' if chosen == 6 else 'not 6!'}"
    )
    return chosen == 6


def streaming_demo(rng: np.random.Generator) -> bool:
    """A drifting stream through a pipe: models published while it flows, following it."""
    before = rng.uniform(-5, 5, size=(3, 4))
    after = before + 8.0  # every segment moves half way through the stream
    args = [
        "train", "kmeans", "--k", "3", "--half_life_time_size", "1000", "--input", "-",
        "--format", "csv", "--output", f"{OUT}/stream_state", "--streaming",
        "--snapshot_every", "1s",
    ]  # fmt: skip
    for old in ("stream_state", "stream_state.model"):  # --streaming continues what it finds
        shutil.rmtree(OUT / old, ignore_errors=True)
    print("\nStreaming 20,000 rows through a pipe, the segments moving after 10,000:")
    print(f"$ python make_rows.py | beam-ml {shlex.join(args)}", flush=True)
    trainer = subprocess.Popen(
        [sys.executable, "-m", "beam_ml.cli", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for batch in range(8):
        centres = before if batch < 4 else after
        rows = centres[rng.integers(0, 3, 2_500)] + 0.5 * rng.normal(size=(2_500, 4))
        trainer.stdin.write("".join(",".join(f"{v:.4f}" for v in r) + "\n" for r in rows).encode())
        trainer.stdin.flush()
        time.sleep(0.6)
    out, err = trainer.communicate()  # the end of the pipe ends the run
    for line in err.decode().splitlines():
        print(f"  | {line}")
    if trainer.returncode != 0:
        sys.exit(f"demo step failed (exit {trainer.returncode})")
    from beam_ml import read_checkpoint

    model, manifest = read_checkpoint(f"{OUT}/stream_state.model", "model")
    gaps = [float(np.min(np.linalg.norm(model.centres - c, axis=1))) for c in after]
    followed = max(gaps) < 0.5
    print(
        f"the last model (snapshot {manifest['extra']['snapshot']}) has a centre within "
        f"{max(gaps):.2f} of each moved segment: "
        + ("it followed the drift." if followed else "it did NOT follow the drift!")
    )
    return followed


if __name__ == "__main__":
    main()
