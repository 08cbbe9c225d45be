"""Factorization Machines on ratings: do the defaults learn, and how fast is a small step?

    python benchmarks/bench_fm_ratings.py [--epochs 10 20] [--skip-mxnet]

On synthetic ratings that behave like a public 100k movie-ratings set
(``beam_ml.testing.synthetic_ratings``: 943 users, 1,682 items, 80k train / 20k test,
one-hot user and item columns), in this one run:

- quality: test RMSE of a global mean, a user + item bias model (ridge), plain
  per-example SGD matrix factorization in numpy (k=8, lr 0.01, reg 0.02, 20 epochs) and
  the FM with only the required arguments (``num_factors=32``, ``predictor_type``) plus
  ``epochs``;
- speed: rows/s of that numpy per-example loop, and of FM state updates at mini-batches
  of 100 and 1,000 rows with the CPU step (numpy, the gradient written out) and with
  MXNet's autograd step on the CPU (what the CPU ran before), same rows, in memory.

Prints a table and one JSON line for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from beam_ml import Block, FactorizationMachinesConfig, FactorizationMachinesState
from beam_ml.testing import bias_baseline, sgd_matrix_factorization, synthetic_ratings

TRAIN, TEST = slice(0, 80_000), slice(80_000, None)


def fm_config(**extra) -> FactorizationMachinesConfig:
    settings = {"num_factors": 32, **extra}
    return FactorizationMachinesConfig(
        feature_dim=943 + 1682, predictor_type="regressor", **settings
    )


def train_fm(config, x, y, epochs: int, mxnet: bool = False) -> tuple[float, object]:
    """Seconds of state updates for ``epochs`` passes in 10,000-row blocks, and the state."""
    state = FactorizationMachinesState(config)
    if mxnet:
        from beam_ml.nn.fm import FMTrainer

        c = config
        state._trainer = FMTrainer(
            "cpu", c.feature_dim, c.num_factors, c.classifier, c.optimizer_spec,
            c.bias_lr, c.bias_wd, c.linear_lr, c.linear_wd, c.factors_lr, c.factors_wd,
        )  # fmt: skip
    start = time.perf_counter()
    for epoch in range(epochs):
        if epoch:
            state = state.continued()  # (a fresh trainer: the CPU's)
        for first in range(0, x.shape[0], 10_000):
            state.update(Block(x[first : first + 10_000], y[first : first + 10_000]))
    return time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--skip-mxnet", action="store_true")
    args = parser.parse_args()

    ratings = synthetic_ratings()
    x, y = ratings.one_hot(), ratings.ratings
    u, i, truth = ratings.users[TEST], ratings.items[TEST], y[TEST]
    test = Block(x[TEST], truth)

    def rmse(predict) -> float:
        return float(np.sqrt(np.mean((predict(u, i) - truth) ** 2)))

    result: dict = {"global_mean": float(np.sqrt(np.mean((y[TRAIN].mean() - truth) ** 2)))}
    result["bias_model"] = rmse(bias_baseline(ratings, TRAIN))
    start = time.perf_counter()
    result["sgd_mf"] = rmse(sgd_matrix_factorization(ratings, TRAIN))
    loop_rows_s = 20 * 80_000 / (time.perf_counter() - start)
    for epochs in args.epochs:
        _, state = train_fm(fm_config(epochs=epochs), x[TRAIN], y[TRAIN], epochs)
        result[f"fm_defaults_{epochs}_epochs"] = state.derive().score("rmse", test)
    print("test RMSE:", ", ".join(f"{k} {v:.4f}" for k, v in result.items()))

    result["numpy_loop_rows_s"] = loop_rows_s
    print(f"numpy per-example SGD MF loop (k=8): {loop_rows_s:,.0f} rows/s")
    runs = [("numpy", 8), ("numpy", 32)] + ([] if args.skip_mxnet else [("mxnet", 32)])
    for batch in (100, 1000):
        for engine, k in runs:
            config = fm_config(mini_batch_size=batch, merge_holdout=0.0, num_factors=k)
            seconds, _ = train_fm(config, x[TRAIN], y[TRAIN], 1, mxnet=engine == "mxnet")
            rows_s = 80_000 / seconds
            result[f"fm_{engine}_k{k}_batch_{batch}_rows_s"] = rows_s
            print(
                f"FM k={k:<2}, mini-batch {batch:>5}, {engine:>5} step: {rows_s:>10,.0f} rows/s "
                f"({1e3 * seconds / (80_000 / batch):.3f} ms a step; "
                f"{rows_s / loop_rows_s:.1f}x the numpy loop)"
            )
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
