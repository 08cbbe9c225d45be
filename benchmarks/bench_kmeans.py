"""K-Means benchmark: beam_ml end to end against scikit-learn and Spark MLlib, same data.

    python benchmarks/bench_kmeans.py [--rows 1000000] [--dim 32] [--k 16] [--spark]
    python benchmarks/bench_kmeans.py --rows 10000000 --skip-kmeans-full --skip-floors

Generates (once, cached in benchmarks/data/) Gaussian blobs with 16 known centres as
.npy, then times in one run (best of 3, the machine is noisy):

- np.load, and one pass of MiniBatchKMeans.partial_fit over 10,000-row batches;
- beam_ml end to end, as the issue defines it: ReadBlocks(.npy) -> Train(KMeansConfig)
  -> Derive(k) -> checkpoint, and Evaluate (msd) on a second read, in one pipeline;
- scikit-learn KMeans(n_init=1) and MiniBatchKMeans, in memory;
- two floors of the end to end, to read the ratio against: the same pipeline on the
  file's first 1,000 rows (Beam's fixed cost), and the same pipeline with a training
  step that costs nothing (a row count instead of the state: Beam + two reads + evaluate);
- the state's floor (issue 15): the float32 BLAS product of every 10,000-row block
  against the summary's centres (as many as a trained state holds), alone and with the
  argmin, timed alternately with the state's updates in memory;
- with --spark: Spark MLlib KMeans (local[2]) in its own environment,
  benchmarks/.venv-peers (created with `python3.11 -m venv benchmarks/.venv-peers &&
  benchmarks/.venv-peers/bin/pip install pyspark numpy pandas pyarrow`), load + fit.

Every model's cost is the mean squared distance on the full data (float64). The issue 15
targets printed at the end: end to end / MiniBatchKMeans(n_init=1).fit in memory <= 2 at
a cost ratio <= 1, and state updates / BLAS floor <= 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import numpy as np

import beam_ml

HERE = Path(__file__).resolve().parent
BLOCK = 10_000
REPEAT = 3

SPARK_SCRIPT = r"""
import json, sys, time
import numpy as np
from pyspark.sql import SparkSession
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.clustering import KMeans
path, k = sys.argv[1], int(sys.argv[2])
spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "8g")
         .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
start = time.perf_counter()
frame = spark.read.parquet(path)
data = VectorAssembler(inputCols=frame.columns, outputCol="features").transform(frame).select("features").cache()
n = data.count()
loaded = time.perf_counter()
model = KMeans(k=k, seed=0, initMode="k-means||").fit(data)
fitted = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "fit_s": fitted - loaded,
                  "centres": np.array(model.clusterCenters()).tolist(), "rows": n}))
spark.stop()
"""


def make_data(rows: int, dim: int, k: int) -> tuple[Path, np.ndarray]:
    folder = HERE / "data"
    folder.mkdir(exist_ok=True)
    npy = folder / f"blobs_{rows}x{dim}_k{k}.npy"
    rng = np.random.default_rng(0)
    centres = rng.uniform(-10, 10, size=(k, dim))
    if not npy.exists():
        labels = rng.integers(0, k, rows)
        data = (centres[labels] + 1.35 * rng.normal(size=(rows, dim))).astype(np.float32)
        np.save(npy, data)
    return npy, centres


def msd(centres: np.ndarray, data: np.ndarray) -> float:
    centres = np.asarray(centres, dtype=np.float64)
    total = 0.0
    for start in range(0, len(data), 100_000):
        x = data[start : start + 100_000].astype(np.float64)
        d2 = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)
        total += np.maximum(d2, 0).min(axis=1).sum()
    return total / len(data)


def timed(fn):
    best, value = float("inf"), None
    for _ in range(REPEAT):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def beam_ml_end_to_end(npy: Path, k: int, evaluate: bool = True) -> tuple[np.ndarray, float]:
    """The issue's end to end: read .npy -> state -> derive k -> evaluate (msd on a
    second read of the file, as `beam-ml evaluate` does); one pipeline."""
    out = HERE / "data" / "kmeans-model"
    with beam.Pipeline(options=beam_ml.pipeline_options()) as p:
        model = (
            p
            | "Read" >> beam_ml.ReadBlocks(str(npy), "npy", block_size=BLOCK)
            | beam_ml.Train(beam_ml.KMeansConfig(k=k))
            | beam_ml.Derive()
        )
        _ = model | beam.Map(lambda m: beam_ml.write_checkpoint(str(out), m))
        if evaluate:
            _ = (
                p
                | "ReadAgain" >> beam_ml.ReadBlocks(str(npy), "npy", block_size=BLOCK)
                | beam_ml.Evaluate(model)
                | beam.Map(
                    lambda metrics: (HERE / "data" / "kmeans-metrics.json").write_text(
                        json.dumps(metrics)
                    )
                )
            )
    metrics = (
        json.loads((HERE / "data" / "kmeans-metrics.json").read_text())
        if evaluate
        else {"msd": None}
    )
    return beam_ml.read_checkpoint(str(out))[0].centres, metrics["msd"]


def beam_ml_floor(npy: Path, model: beam_ml.KMeansModel) -> None:
    """The end to end's pipeline with a training step that costs nothing: ReadBlocks ->
    row count in place of Train -> Derive, and ReadBlocks -> Evaluate(model). No state,
    however cheap, can make the end to end faster than this."""
    with beam.Pipeline(options=beam_ml.pipeline_options()) as p:
        _ = (
            p
            | "Read" >> beam_ml.ReadBlocks(str(npy), "npy", block_size=BLOCK)
            | beam.Map(lambda block: block.n_rows)
            | beam.CombineGlobally(sum)
        )
        _ = (
            p
            | "ReadAgain" >> beam_ml.ReadBlocks(str(npy), "npy", block_size=BLOCK)
            | beam_ml.Evaluate(model)
        )


def spark(npy: Path, data: np.ndarray, k: int) -> dict | None:
    python = HERE / ".venv-peers" / "bin" / "python"
    if not python.exists():
        print(
            "Spark: benchmarks/.venv-peers is missing (see the docstring); skipped", file=sys.stderr
        )
        return None
    parquet = npy.with_suffix(".parquet")
    if not parquet.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({f"x{i}": data[:, i] for i in range(data.shape[1])}), parquet)
    done = subprocess.run(
        [str(python), "-c", SPARK_SCRIPT, str(parquet), str(k)],
        capture_output=True,
        text=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(python)},
    )
    if done.returncode != 0:
        print("Spark failed:\n" + done.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def equal_cost_peer(data: np.ndarray, k: int, seeds: int, target: float) -> dict | None:
    """MiniBatchKMeans(n_init=1).fit over ``seeds`` seeds: which reach ``target`` (+0.1%).

    Its defaults stop early and may settle in a local optimum (seed 0 here: 1.79x the
    optimum), so the time for the peer to reach beam_ml's cost is the expected time of
    restarts until one does: the mean fit time / the fraction of fits that reach it.
    """
    from sklearn.cluster import MiniBatchKMeans

    if not seeds:
        return None
    fits = []
    for seed in range(seeds):
        elapsed, model = timed(
            lambda seed=seed: MiniBatchKMeans(k, n_init=1, random_state=seed).fit(data)
        )
        fits.append((elapsed, msd(model.cluster_centers_, data), model.n_steps_))
        print(
            f"MiniBatchKMeans seed {seed}: {elapsed:.2f} s, cost {fits[-1][1]:.3f}, "
            f"{fits[-1][2]} steps",
            flush=True,
        )
    reached = sum(cost <= target * 1.001 for _, cost, _ in fits)
    mean_s = float(np.mean([elapsed for elapsed, _, _ in fits]))
    print(f"MiniBatchKMeans: {reached} of {seeds} fits reach beam_ml's cost {target:.3f}")
    return {
        "fits": fits,
        "reached": reached,
        "expected_s": mean_s * seeds / reached if reached else float("inf"),
    }


def main() -> None:
    global REPEAT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spark", action="store_true", help="also run Spark MLlib (see docstring)")
    parser.add_argument(
        "--skip-kmeans-full", action="store_true", help="skip scikit-learn KMeans (multi-pass)"
    )
    parser.add_argument(
        "--skip-floors", action="store_true", help="skip the three extra Beam pipelines"
    )
    parser.add_argument("--skip-partial-fit", action="store_true", help="skip the partial_fit pass")
    parser.add_argument(
        "--equal-cost-seeds",
        type=int,
        default=0,
        help="also fit MiniBatchKMeans(n_init=1) with seeds 0..N-1: the time to reach beam_ml's cost",
    )
    args = parser.parse_args()
    REPEAT = args.repeat
    n, d, k = args.rows, args.dim, args.k
    from sklearn.cluster import KMeans, MiniBatchKMeans

    npy, truth = make_data(n, d, k)
    seconds: dict[str, float] = {}
    costs: dict[str, float] = {}
    seconds["np_load"], data = timed(lambda: np.load(npy))

    def partial_fit_pass():
        model = MiniBatchKMeans(k, n_init=1, random_state=0, batch_size=BLOCK)
        for start in range(0, n, BLOCK):
            model.partial_fit(data[start : start + BLOCK])
        return model.cluster_centers_

    if not args.skip_partial_fit:
        seconds["minibatch_partial_fit_pass"], centres = timed(partial_fit_pass)
        costs["minibatch_partial_fit_pass"] = msd(centres, data)

    def updates():
        state = beam_ml.KMeansState(beam_ml.KMeansConfig(k=k))
        for start in range(0, n, BLOCK):
            state.update(data[start : start + BLOCK])
        return state

    def product_floor(centres: np.ndarray, argmin: bool) -> None:
        for start in range(0, n, BLOCK):
            scores = data[start : start + BLOCK] @ centres.T
            if argmin:
                scores.argmin(axis=1)

    # The state's updates and its floor, alternately (the machine is shared): the
    # floor's centres are as many as the state trained on these rows holds.
    state = updates()
    floor_centres = state.centres.astype(np.float32)
    alternating = {
        "beam_ml_state_updates": updates,
        "blas_floor_product": lambda: product_floor(floor_centres, False),
        "blas_floor_product_argmin": lambda: product_floor(floor_centres, True),
    }
    seconds.update(dict.fromkeys(alternating, float("inf")))
    # CPU seconds of the process (every thread, OpenBLAS's too) as well: the work, which
    # other jobs on the machine disturb less than the wall clock.
    cpu = dict.fromkeys(alternating, float("inf"))
    for _ in range(REPEAT):
        for name, fn in alternating.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    summary_size = len(state.centres)
    seconds["beam_ml_derive_in_memory"], centres = timed(lambda: state.derive().centres)
    costs["beam_ml_state_updates"] = msd(centres, data)
    seconds["beam_ml_end_to_end"], (centres, evaluated) = timed(lambda: beam_ml_end_to_end(npy, k))
    costs["beam_ml_end_to_end"] = msd(centres, data)
    # The pipeline's own evaluation agrees with the independent one.
    assert abs(evaluated - costs["beam_ml_end_to_end"]) <= 1e-6 * evaluated, evaluated
    if not args.skip_floors:
        model = beam_ml.read_checkpoint(str(HERE / "data" / "kmeans-model"))[0]  # these rows'
        seconds["floor_no_cost_state"], _ = timed(lambda: beam_ml_floor(npy, model))
        small = npy.with_name(npy.stem + "_first1000.npy")
        np.save(small, data[:1000])
        seconds["floor_beam_1000_rows"], _ = timed(lambda: beam_ml_end_to_end(small, k))
        seconds["beam_ml_train_derive_only"], _ = timed(lambda: beam_ml_end_to_end(npy, k, False))
    if not args.skip_kmeans_full:
        seconds["sklearn_kmeans_fit"], model = timed(
            lambda: KMeans(k, n_init=1, random_state=0).fit(data)
        )
        costs["sklearn_kmeans_fit"] = msd(model.cluster_centers_, data)
    seconds["sklearn_minibatch_fit"], model = timed(
        lambda: MiniBatchKMeans(k, n_init=1, random_state=0).fit(data)
    )
    costs["sklearn_minibatch_fit"] = msd(model.cluster_centers_, data)
    equal_cost = equal_cost_peer(data, k, args.equal_cost_seeds, costs["beam_ml_end_to_end"])
    costs["true_centres"] = msd(truth, data)
    if args.spark:
        result = spark(npy, data, k)
        if result:
            seconds["spark_load"], seconds["spark_fit"] = result["load_s"], result["fit_s"]
            seconds["spark_end_to_end"] = result["load_s"] + result["fit_s"]
            costs["spark_end_to_end"] = msd(np.array(result["centres"]), data)

    ours = seconds["beam_ml_end_to_end"]
    ratios = {
        "issue 15: end to end / MiniBatchKMeans fit (<= 2)": ours
        / seconds["sklearn_minibatch_fit"],
        "issue 15: its cost / MiniBatchKMeans cost (<= 1)": costs["beam_ml_end_to_end"]
        / costs["sklearn_minibatch_fit"],
        "issue 15: state updates / BLAS floor (<= 2)": seconds["beam_ml_state_updates"]
        / seconds["blas_floor_product"],
        "  state updates / BLAS floor with argmin": seconds["beam_ml_state_updates"]
        / seconds["blas_floor_product_argmin"],
        "  the same in CPU seconds (all threads)": cpu["beam_ml_state_updates"]
        / cpu["blas_floor_product"],
        "  the same with argmin, CPU seconds": cpu["beam_ml_state_updates"]
        / cpu["blas_floor_product_argmin"],
    }
    if equal_cost:
        seconds["minibatch_fit_to_equal_cost"] = equal_cost["expected_s"]
        ratios["end to end / MiniBatchKMeans to equal cost"] = ours / equal_cost["expected_s"]
    if "minibatch_partial_fit_pass" in seconds:
        peer = seconds["np_load"] + seconds["minibatch_partial_fit_pass"]
        ratios["beam_ml / (np_load + partial_fit pass)"] = ours / peer
        ratios["beam_ml cost / partial_fit pass cost"] = (
            costs["beam_ml_end_to_end"] / costs["minibatch_partial_fit_pass"]
        )
        for label, name in (
            ("  floor: pipeline on 1,000 rows / the same", "floor_beam_1000_rows"),
            ("  floor: state costing nothing / the same", "floor_no_cost_state"),
            ("  the same, train + derive only (no evaluate)", "beam_ml_train_derive_only"),
        ):
            if name in seconds:
                ratios[label] = seconds[name] / peer
    if "sklearn_kmeans_fit" in seconds:
        ratios["sklearn KMeans fit / beam_ml"] = seconds["sklearn_kmeans_fit"] / ours
        ratios["beam_ml cost / sklearn KMeans cost"] = (
            costs["beam_ml_end_to_end"] / costs["sklearn_kmeans_fit"]
        )
    if "spark_end_to_end" in seconds:
        ratios["spark end to end / beam_ml"] = seconds["spark_end_to_end"] / ours
        ratios["beam_ml cost / spark cost"] = (
            costs["beam_ml_end_to_end"] / costs["spark_end_to_end"]
        )

    print(f"\nK-Means benchmark: {n:,} x {d} float32 blobs, k={k}, {os.cpu_count()} cores")
    print(f"{'step':32s} {'seconds':>8s} {'rows/s':>12s} {'cost (msd)':>11s}")
    for name, value in seconds.items():
        cost = f"{costs[name]:11.3f}" if name in costs else ""
        print(f"{name:32s} {value:8.2f} {n / value:12,.0f} {cost}")
    print(f"{'true centres':32s} {'':8s} {'':12s} {costs['true_centres']:11.3f}")
    print(f"summary centres (the BLAS floor's): {summary_size}")
    print("CPU seconds (all threads): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + "\n")
    for name, value in ratios.items():
        print(f"{name:52s} {value:8.3f}")
    print(
        json.dumps(
            {
                "rows": n,
                "dim": d,
                "k": k,
                "summary": summary_size,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "costs": costs,
                "ratios": ratios,
            },
            default=float,
        )
    )


if __name__ == "__main__":
    main()
