"""Tuning (issue 21) against training every configuration fully, on real data.

    cd <repo> && PYTHONPATH=. BEAM_ML_DATA=../shared/data OMP_NUM_THREADS=1 \\
        MXNET_CPU_WORKER_NTHREADS=1 nice -n 10 python benchmarks/bench_tuning.py [--quick]

1. Successive halving (``eta`` 3 and 2) against ``eta=1`` (every configuration trained on all
   rows): factorization machines, binary classifier, on a9a (LIBSVM: 32,561 training
   rows, 123 sparse binary features); the grid crosses the linear and the factors'
   learning rates and ``num_factors``. Validation: the first half of a9a.t (8,141 rows),
   which ranks the configurations; test: its second half (8,140), which only scores the
   chosen models.
2. A derive grid (one pass, every model derived) against training each grid point:
   linear learner, regressor, on California housing (20,640 districts, shuffled with a
   fixed seed: 60% training, 20% validation, 20% test; ocean_proximity hashed, the 207
   missing total_bedrooms read as 0), ``wd`` x ``l1`` on the exact path (ridge and
   elastic net from the Gram matrix).

Reported: the chosen configuration, its validation and test metrics, the rows fed to
training (summed over configurations, rungs and epochs) and the wall time. ``--quick``
runs smaller grids (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beam_ml import Block, read_checkpoint  # noqa: E402
from beam_ml.algorithms.factorization_machines import FactorizationMachinesState  # noqa: E402
from beam_ml.algorithms.linear_learner import LinearLearnerState  # noqa: E402
from beam_ml.io.sources import read_blocks_local  # noqa: E402
from beam_ml.tuning import tune  # noqa: E402

DATA = Path(os.environ.get("BEAM_ML_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _read(path: Path, fmt: str, **options) -> Block:
    return Block.concat(list(read_blocks_local(str(path), fmt, **options)))


def _rows(block: Block, start: int, stop: int | None = None) -> Block:
    return block.slice(start, block.n_rows if stop is None else stop)


def _run(name: str, state_class, base, grid, train, valid, test, test_metrics, **options):
    with tempfile.TemporaryDirectory() as scratch:
        started = time.time()
        result = tune(state_class, base, grid, train, valid, scratch, **options)
        seconds = time.time() - started
        model, _ = read_checkpoint(result.model_path)
        scores = {m: round(float(model.score(m, test)), 4) for m in test_metrics}
    row = {
        "run": name,
        "strategy": result.strategy,
        "configurations": len(result.leaderboard),
        "models_scored": sum(len(e["models"]) for e in result.leaderboard),
        "chosen": result.best["params"],
        "validation": {result.metric: round(result.best[result.metric], 4)},
        "test": scores,
        "rows_processed": result.rows_processed,
        "rows_full_grid": result.rows_full_grid,
        "seconds": round(seconds, 1),
        "schedule": result.schedule,
    }
    print(json.dumps(row), flush=True)
    return row


def halving(quick: bool) -> list[dict]:
    train = _read(DATA / "a9a" / "a9a", "libsvm", feature_dim=123)
    held_out = _read(DATA / "a9a" / "a9a.t", "libsvm", feature_dim=123)
    valid, test = _rows(held_out, 0, 8141), _rows(held_out, 8141)
    base = dict(feature_dim=123, predictor_type="binary_classifier", epochs=1, mini_batch_size=100)
    rates = [1e-3, 1e-1] if quick else [1e-3, 1e-2, 1e-1]
    grid = {"linear_lr": rates, "factors_lr": rates, "num_factors": [4, 16]}
    metrics = ("binary_classification_accuracy", "binary_classification_cross_entropy")
    cls = FactorizationMachinesState
    return [
        _run(name, cls, base, grid, train, valid, test, metrics, eta=eta)
        for eta, name in (
            (3, "successive halving, eta=3"),
            (2, "successive halving, eta=2"),
            (1, "train all (eta=1)"),
        )
    ]


def derive_grid(quick: bool) -> list[dict]:
    path = DATA / "california-housing" / "housing.csv"
    data = _read(
        path,
        "csv",
        label_column="median_house_value",
        categorical_columns="ocean_proximity",
        missing="zero",
        feature_dim=40,
    )
    order = np.random.default_rng(0).permutation(data.n_rows)
    features, labels = data.features[order], data.labels[order]
    n = data.n_rows
    cut1, cut2 = int(0.6 * n), int(0.8 * n)
    train = Block(features[:cut1], labels[:cut1])
    valid = Block(features[cut1:cut2], labels[cut1:cut2])
    test = Block(features[cut2:], labels[cut2:])
    base = dict(predictor_type="regressor", feature_dim=40, epochs=1)
    wds = [0.0, 1e-3, 1e-1] if quick else [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    l1s = [0.0, 1e-2] if quick else [0.0, 1e-4, 1e-3, 1e-2]
    grid = {"wd": wds, "l1": l1s}
    metrics = ("rmse", "r2")
    return [
        _run("derive grid (one pass)", LinearLearnerState, base, grid, train, valid, test, metrics),
        _run(
            "train each point",
            LinearLearnerState,
            base,
            grid,
            train,
            valid,
            test,
            metrics,
            retrain=True,
            eta=1,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("halving", "derive"))
    args = parser.parse_args()
    if args.only in (None, "derive"):
        derive_grid(args.quick)
    if args.only in (None, "halving"):
        halving(args.quick)


if __name__ == "__main__":
    main()
