"""River's FMClassifier, one pass, example by example: the baseline of bench_factorization_machines.

Runs in River's own environment (River needs numpy >= 1.26, beam_ml pins 1.23.5)::

    python3.11 -m venv .venv-river && .venv-river/bin/pip install river
    .venv-river/bin/python benchmarks/river_fm.py TRAIN.libsvm TEST.libsvm [--rows N]

Reads the LIBSVM files line by line into ``{column: value}`` dicts, trains with
``learn_one`` (one pass, as River is meant to run), then scores the test file with
``predict_proba_one``. Prints one JSON line: rows, seconds (reading included, as beam_ml's
end-to-end time), learning seconds alone, and the test log loss and accuracy.
Imports nothing from beam_ml.
"""

from __future__ import annotations

import argparse
import json
import math
import time


def rows(path: str, limit: int | None = None):
    with open(path) as handle:
        for i, line in enumerate(handle):
            if limit is not None and i >= limit:
                return
            label, *pairs = line.split()
            x = {}
            for pair in pairs:
                column, value = pair.split(":")
                x[int(column)] = float(value)
            yield x, float(label) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--rows", type=int, default=None, help="train on the first N rows only")
    parser.add_argument("--n_factors", type=int, default=10)
    args = parser.parse_args()

    from river import facto

    model = facto.FMClassifier(n_factors=args.n_factors, seed=0)
    started = time.perf_counter()
    learning, n = 0.0, 0
    for x, y in rows(args.train, args.rows):
        tick = time.perf_counter()
        model.learn_one(x, y)
        learning += time.perf_counter() - tick
        n += 1
    seconds = time.perf_counter() - started
    loss = correct = m = 0
    for x, y in rows(args.test):
        p = min(max(model.predict_proba_one(x).get(True, 0.0), 1e-12), 1 - 1e-12)
        loss -= math.log(p if y else 1 - p)
        correct += (p >= 0.5) == y
        m += 1
    print(
        json.dumps(
            {
                "rows": n,
                "seconds": round(seconds, 2),
                "learn_seconds": round(learning, 2),
                "rows_per_s": round(n / seconds, 1),
                "test_log_loss": round(loss / m, 5),
                "test_accuracy": round(correct / m, 5),
            }
        )
    )


if __name__ == "__main__":
    main()
