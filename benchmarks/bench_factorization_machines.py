"""Factorization Machines benchmark: beam_ml end to end against River's FMClassifier.

    python benchmarks/bench_factorization_machines.py [--rows 1000000] \\
        [--river-python .venv-river/bin/python] [--river-rows N]

Generates (once, cached in benchmarks/data/) LIBSVM files of hashed sparse rows: 40
categorical fields with Zipf-like values hashed into 2^20 columns (about 40 non-zeros a
row, a few collide), labelled by a planted Factorization Machine (rank 4: linear terms plus
pairwise interactions) through a logistic link, so the Bayes log loss is known. Then, on
the same files and in this one run:

- beam_ml end to end: ``ReadBlocks`` (LIBSVM parsing) -> ``Train`` (one pass, mini-batch
  steps on MXNet) -> ``Derive`` -> model checkpoint written, on the DirectRunner;
- beam_ml state updates alone over the same rows already parsed into CSR blocks (the
  algorithm's cost without reading or Beam);
- with ``--merges``: what merging 2 and 4 replicas costs against one replica, on these
  rows (one pass) and on a 2,000 x 1,000 ratings set (6 epochs, merged every epoch);
- River's ``facto.FMClassifier`` (one pass, ``learn_one`` per example, reading included)
  in River's own environment (``--river-python``: River needs numpy >= 1.26, beam_ml pins
  1.23.5), see benchmarks/river_fm.py.

Both models are scored on the same held-out file (log loss, accuracy). Prints rows/s,
the ratio and one JSON line for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import apache_beam as beam
import numpy as np

import beam_ml
from beam_ml.io.formats import parse_libsvm
from beam_ml.io.sources import ReadBlocks

HERE = Path(__file__).resolve().parent
DIM = 2**20
FIELDS = 40
RANK = 4
BLOCK = 10_000

# One pass, mini-batches of 1,000 rows, AdaGrad. num_factors matches River's default.
CONFIG = dict(
    feature_dim=DIM,
    num_factors=10,
    predictor_type="binary_classifier",
    mini_batch_size=1000,
    optimizer="adagrad",
    bias_lr=0.05,
    linear_lr=0.05,
    factors_lr=0.02,
    bias_wd=0.0,
    linear_wd=1e-6,
    factors_wd=1e-6,
    factors_init_sigma=0.01,
)


def _hash(field: np.ndarray, value: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix of (field, value) into [0, 2^20): hashed one-hot features."""
    z = field.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + value.astype(np.uint64)
    z ^= z >> np.uint64(31)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(29)
    return (z % np.uint64(DIM)).astype(np.int64)


def make_data(rows: int, test_rows: int = 100_000) -> tuple[Path, Path, float]:
    """Train and test LIBSVM files and the Bayes (true-probability) test log loss."""
    folder = HERE / "data"
    folder.mkdir(exist_ok=True)
    train, test = folder / f"fm_train_{rows}.libsvm", folder / f"fm_test_{rows}.libsvm"
    info = folder / f"fm_info_{rows}.json"
    if train.exists() and test.exists() and info.exists():
        return train, test, json.loads(info.read_text())["bayes_test_log_loss"]
    rng = np.random.default_rng(0)
    vocab = (10 ** rng.uniform(1, 3.5, FIELDS)).astype(np.int64)  # 10 .. 3,000 values
    linear = rng.normal(0, 0.16, DIM)
    factors = rng.normal(0, 0.13, (DIM, RANK))  # pairwise terms with std about 1
    bias = -1.5

    def chunk(n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        u = rng.random((n, FIELDS))
        values = (u**3 * vocab).astype(np.int64)  # popular values are common
        ids = np.sort(_hash(np.arange(FIELDS)[None, :], values), axis=1)  # (n, FIELDS)
        keep = np.ones_like(ids, dtype=bool)
        keep[:, 1:] = ids[:, 1:] != ids[:, :-1]  # a collision within a row is one feature
        present = np.where(keep, 1.0, 0.0)
        xv = (factors[ids] * present[..., None]).sum(axis=1)  # (n, RANK)
        x2v2 = ((factors[ids] ** 2).sum(-1) * present).sum(axis=1)
        score = bias + (linear[ids] * present).sum(axis=1) + 0.5 * ((xv**2).sum(1) - x2v2)
        p = 1.0 / (1.0 + np.exp(-score))
        y = (rng.random(n) < p).astype(np.int64)
        return [row[k] for row, k in zip(ids, keep, strict=True)], y, p

    def write(path: Path, n: int) -> float:
        loss, done = 0.0, 0
        with open(path, "w") as handle:
            while done < n:
                size = min(100_000, n - done)
                rows_ids, y, p = chunk(size)
                handle.writelines(
                    f"{label} " + " ".join(f"{i + 1}:1" for i in ids) + "\n"
                    for label, ids in zip(y, rows_ids, strict=True)
                )
                loss -= float(np.sum(np.where(y == 1, np.log(p), np.log1p(-p))))
                done += size
        return loss / n

    write(train, rows)
    bayes = write(test, test_rows)
    info.write_text(json.dumps({"bayes_test_log_loss": bayes}))
    return train, test, bayes


def read_libsvm(path: Path, chunk_bytes: int = 4 << 20) -> beam_ml.Block:
    """The whole file as one CSR block, parsed in chunks of whole lines (as the reader)."""
    import scipy.sparse as sp

    data, blocks, start = path.read_bytes(), [], 0
    while start < len(data):
        stop = data.find(b"\n", start + chunk_bytes)
        stop = len(data) if stop < 0 else stop + 1
        block, bad = parse_libsvm(data[start:stop], feature_dim=DIM)
        assert not bad, bad[:3]
        blocks.append(block)
        start = stop
    features = sp.vstack([b.features for b in blocks], format="csr")
    return beam_ml.Block(features, np.concatenate([b.labels for b in blocks]))


def test_metrics(model: beam_ml.FactorizationMachinesModel, test: beam_ml.Block) -> dict:
    metrics = model.metrics_from_sums(model.metric_sums(test))
    return {
        "test_log_loss": round(metrics["binary_classification_cross_entropy"], 5),
        "test_accuracy": round(metrics["binary_classification_accuracy"], 5),
        "test_auc": round(metrics["roc_auc_score"], 5),
    }


def beam_ml_end_to_end(train: Path, config) -> tuple[float, beam_ml.FactorizationMachinesModel]:
    target = str(HERE / "data" / "fm_model")
    started = time.perf_counter()
    with beam.Pipeline(options=beam_ml.pipeline_options()) as p:
        _ = (
            p
            | ReadBlocks(str(train), "libsvm", feature_dim=DIM, block_size=BLOCK)
            | beam_ml.Train(config)
            | beam_ml.Derive()
            | beam.Map(lambda m: beam_ml.write_checkpoint(target, m))
        )
    seconds = time.perf_counter() - started
    return seconds, beam_ml.read_checkpoint(target)[0]


def in_memory(train: Path, config) -> tuple[float, float, dict]:
    """Parsing alone, then state updates alone over the parsed blocks (no Beam)."""
    started = time.perf_counter()
    block = read_libsvm(train)
    parse = time.perf_counter() - started
    state = beam_ml.FactorizationMachinesState(config)
    started = time.perf_counter()
    for start in range(0, block.n_rows, BLOCK):
        state.update(
            beam_ml.Block(
                block.features[start : start + BLOCK], block.labels[start : start + BLOCK]
            )
        )
    update = time.perf_counter() - started
    return parse, update, {"bytes": len(state.to_bytes())}


def _replicas(config, blocks: list[beam_ml.Block], replicas: int, epochs: int = 1, finish=True):
    """``replicas`` states, each on a contiguous share of ``blocks``, merged after every
    epoch (each epoch's replicas start from the last merge) and the merge finished against
    that start point, as ``Train`` runs them (``finish=False``: the plain average)."""
    shares = np.array_split(np.arange(len(blocks)), replicas)
    state = None
    for _ in range(epochs):
        start = None if state is None else state.continued()
        parts = []
        for share in shares:
            part = beam_ml.FactorizationMachinesState(config) if start is None else start._copy()
            for i in share:
                part.update(blocks[i])
            parts.append(part)
        state = parts[0]
        for part in parts[1:]:
            state = state.merge(part)
        if finish:
            state = state.finish_round(start)
    return state


def _ratings(rng: np.random.Generator, n: int = 240_000, noise: float = 0.5):
    """2,000 users x 1,000 items: biases + rank-2 factors + noise, one-hot user and item."""
    import scipy.sparse as sp

    users, items, rank = 2000, 1000, 2
    p, q = rng.normal(0, 1 / np.sqrt(rank), (users, rank)), rng.normal(0, 1, (items, rank))
    bu, bi = rng.normal(0, 0.3, users), rng.normal(0, 0.3, items)
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    y = 3.0 + bu[u] + bi[i] + (p[u] * q[i]).sum(1) + noise * rng.normal(size=n)
    x = sp.csr_matrix(
        (
            np.ones(2 * n, np.float32),
            np.column_stack([u, users + i]).ravel(),
            np.arange(0, 2 * n + 1, 2),
        ),
        shape=(n, users + items),
    )
    return x, y


def merges(train: Path, test: beam_ml.Block) -> dict:
    """Test loss of merged replicas against one replica on all the data (in memory)."""
    out = {}
    config = beam_ml.FactorizationMachinesConfig(**CONFIG)
    data = read_libsvm(train)
    blocks = [
        beam_ml.Block(data.features[i : i + BLOCK], data.labels[i : i + BLOCK])
        for i in range(0, data.n_rows, BLOCK)
    ]
    for finish in (True, False):
        name = "" if finish else "_plain_average"
        loss = {
            r: test_metrics(_replicas(config, blocks, r, finish=finish).derive(), test)[
                "test_log_loss"
            ]
            for r in (1, 2, 4)
        }
        out[f"hashed_one_pass_log_loss{name}"] = {r: round(v, 5) for r, v in loss.items()}
        out[f"hashed_one_pass_change_pct{name}"] = {
            r: round(100 * (loss[r] / loss[1] - 1), 2) for r in (2, 4)
        }
    x, y = _ratings(np.random.default_rng(0))
    ratings = beam_ml.FactorizationMachinesConfig(
        feature_dim=3000, num_factors=2, predictor_type="regressor", mini_batch_size=1000,
        bias_lr=0.01, linear_lr=0.01, factors_lr=0.01, bias_wd=0.0, linear_wd=1e-5,
        factors_wd=1e-5, factors_init_sigma=0.1,
    )  # fmt: skip
    blocks = [beam_ml.Block(x[i : i + BLOCK], y[i : i + BLOCK]) for i in range(0, 200_000, BLOCK)]
    held_out = beam_ml.Block(x[200_000:], y[200_000:])
    for finish in (True, False):
        name = "" if finish else "_plain_average"
        rmse = {
            r: _replicas(ratings, blocks, r, 6, finish).derive().score("rmse", held_out)
            for r in (1, 2, 4)
        }
        out[f"ratings_6_epochs_rmse{name}"] = {r: round(v, 4) for r, v in rmse.items()}
        out[f"ratings_6_epochs_change_pct{name}"] = {
            r: round(100 * (rmse[r] / rmse[1] - 1), 2) for r in (2, 4)
        }
    return out


def river(python: str, train: Path, test: Path, rows: int | None) -> dict:
    command = [python, str(HERE / "river_fm.py"), str(train), str(test)]
    if rows:
        command += ["--rows", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--river-python", help="python of an environment with River installed")
    parser.add_argument(
        "--river-rows", type=int, help="River trains on the first N rows only (default: all)"
    )
    parser.add_argument("--skip-in-memory", action="store_true")
    parser.add_argument(
        "--merges",
        action="store_true",
        help="also measure merged replicas (2 and 4) against one (hashed data, ratings)",
    )
    args = parser.parse_args()

    train, test, bayes = make_data(args.rows)
    config = beam_ml.FactorizationMachinesConfig(**CONFIG)
    test_block = read_libsvm(test)
    results: dict = {"rows": args.rows, "bayes_test_log_loss": round(bayes, 5)}

    seconds, model = beam_ml_end_to_end(train, config)
    results["beam_ml"] = {
        "seconds": round(seconds, 2),
        "rows_per_s": round(args.rows / seconds),
        **test_metrics(model, test_block),
    }
    if not args.skip_in_memory:
        parse, update, extra = in_memory(train, config)
        results["parse_libsvm_in_memory"] = {
            "seconds": round(parse, 2),
            "rows_per_s": round(args.rows / parse),
        }
        results["state_updates_in_memory"] = {
            "seconds": round(update, 2),
            "rows_per_s": round(args.rows / update),
            "state_bytes": extra["bytes"],
        }
    if args.merges:
        results["merges"] = merges(train, test_block)
    if args.river_python:
        results["river"] = river(args.river_python, train, test, args.river_rows)
        results["beam_ml_over_river_rows_per_s"] = round(
            results["beam_ml"]["rows_per_s"] / results["river"]["rows_per_s"], 1
        )

    print(
        f"\nFM benchmark: {args.rows:,} rows, 2^20 hashed columns, ~{FIELDS} non-zeros a row, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
