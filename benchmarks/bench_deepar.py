"""DeepAR forecast quality and training speed (issue 19).

Data (``$BEAM_ML_DATA``, default /work/shared/data):

* ``m4-hourly``: the 414 M4 Hourly series, horizon 48, scored on the official test
  values (Hourly-test.csv) after the training values (Hourly-train.csv). The files give
  no start dates: every series starts at 1750-01-01 00:00 (the hour-of-day features are
  then not aligned with the true clock; the lags carry the daily and weekly seasons).
* ``exchange_rate``: 8 daily exchange rates (LSTNet), the last 30 days held out.
* ``bike-sharing``: hourly rentals (casual, registered, total; hour.csv), the last 48
  hours held out; the few hours absent from the file are missing values.

For each data set: DeepAR trained on the history (every series up to its held-out part)
for ``--epochs`` passes, median over ``--seeds`` of sMAPE, MASE, mean weighted quantile
loss, ND and RMSE (the model's own metrics), and the baselines computed here on the same
split: seasonal naive (the last season repeated) and repeat-last (the last value), point
forecasts (their quantile loss is that of the point at every quantile). Training
windows/s counts the windows trained (fresh and replayed) over the training time.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_deepar.py --seeds 3
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from beam_ml.algorithms.deepar import DeepARConfig, DeepARState
from beam_ml.core import forecast_metrics
from beam_ml.core.series import SeriesBlock

DATA = Path(os.environ.get("BEAM_ML_DATA", "/work/shared/data"))
START = "1750-01-01 00:00:00"


def m4_hourly() -> tuple[list[np.ndarray], list[np.ndarray], str, int, int]:
    def rows(name: str) -> list[np.ndarray]:
        with open(DATA / "m4-hourly" / name) as f:
            reader = csv.reader(f)
            next(reader)
            return [np.array([float(v) for v in row[1:] if v != ""]) for row in reader]

    return rows("Hourly-train.csv"), rows("Hourly-test.csv"), "H", 48, 24


def exchange_rate() -> tuple[list[np.ndarray], list[np.ndarray], str, int, int]:
    with gzip.open(DATA / "exchange_rate" / "exchange_rate.txt.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    h = 30
    return [c[:-h] for c in table.T], [c[-h:] for c in table.T], "D", h, 7


def bike_sharing() -> tuple[list[np.ndarray], list[np.ndarray], str, int, int]:
    with open(DATA / "bike-sharing" / "hour.csv") as f:
        rows = list(csv.DictReader(f))
    stamps = np.array(
        [np.datetime64(r["dteday"]) + np.timedelta64(int(r["hr"]), "h") for r in rows]
    )
    index = ((stamps - stamps[0]) // np.timedelta64(1, "h")).astype(np.int64)
    h, series = 48, []
    for column in ("casual", "registered", "cnt"):
        values = np.full(index[-1] + 1, np.nan)
        values[index] = [float(r[column]) for r in rows]
        series.append(values)
    return [s[:-h] for s in series], [s[-h:] for s in series], "H", h, 24


DATASETS = {"m4-hourly": m4_hourly, "exchange_rate": exchange_rate, "bike-sharing": bike_sharing}


def baselines(train, test, season, quantiles, freq) -> dict[str, dict[str, float]]:
    out = {}
    h = len(test[0])
    truth = np.stack(test)
    for name, forecast in (
        ("seasonal_naive", lambda s: np.resize(s[-season:], h)),
        ("repeat_last", lambda s: np.full(h, s[~np.isnan(s)][-1])),
    ):
        point = np.stack([forecast(s) for s in train])
        out[name] = forecast_metrics.forecast_metrics(
            truth,
            point,
            insample=train,
            season=forecast_metrics.season_of(freq),
            quantile_forecasts={q: point for q in quantiles},  # a point at every quantile
        )
    return out


def run(name: str, args: argparse.Namespace) -> dict:
    train, test, freq, h, season = DATASETS[name]()
    history = SeriesBlock.from_series(train, [START] * len(train), freq)
    full = SeriesBlock.from_series(
        [np.concatenate([a, b]) for a, b in zip(train, test, strict=True)],
        [START] * len(train),
        freq,
    )
    runs = []
    for seed in range(args.seeds):
        config = DeepARConfig(
            time_freq=freq,
            prediction_length=h,
            context_length=args.context or h,
            epochs=args.epochs,
            likelihood=args.likelihood,
            learning_rate=args.learning_rate,
            mini_batch_size=args.mini_batch_size,
            num_eval_samples=args.samples,
            windows_per_horizon=args.windows_per_horizon,
            seed=seed,
        )
        state = DeepARState(config)
        started = time.perf_counter()
        trained = 0
        for _ in range(args.epochs):
            state = state.continued() if state.n_seen else state
            state.update(history)
            trained = state.steps * config.mini_batch_size
        state = state.continued()  # the last pending windows
        trained = state.steps * config.mini_batch_size
        seconds = time.perf_counter() - started
        model = state.derive()
        started = time.perf_counter()
        metrics = model.metrics_from_sums(model.metric_sums(full))
        forecast_seconds = time.perf_counter() - started
        metrics.update(
            windows_per_s=trained / seconds,
            train_s=seconds,
            steps=state.steps,
            forecast_s=forecast_seconds,
        )
        print(name, "seed", seed, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        runs.append(metrics)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {"deepar": median, **baselines(train, test, season, config.test_quantiles, freq)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--likelihood", default="student-T")
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--mini-batch-size", type=int, default=128)
    parser.add_argument("--windows-per-horizon", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    for name in args.datasets:
        result = run(name, args)
        print("RESULT", name, json.dumps(result))
        print(f"| {name} | method | sMAPE | MASE | mean wQL | ND | RMSE |")
        for method, m in result.items():
            print(
                f"| | {method} | {m['sMAPE']:.2f} | {m['MASE']:.3f} | "
                f"{m['mean_wQuantileLoss']:.4f} | {m['ND']:.4f} | {m['RMSE']:.4g} |"
            )


if __name__ == "__main__":
    main()
