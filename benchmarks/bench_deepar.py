"""DeepAR forecast quality and training speed (issue 19), with GluonTS's DeepAR as a peer.

The forecast tasks, the baselines and the scoring are :mod:`forecast_baselines`'s (one
harness: every figure is computed the same way on the same split):

* ``m4-hourly``: the 414 M4 Hourly series, horizon 48, M4's test split; MASE season 24.
* ``exchange_rate``: 8 daily rates, horizon 30, 5 rolling windows over the last 150
  days; MASE season 5.
* ``bike-sharing``: hourly casual and registered rentals, horizon 24, 7 rolling windows
  over the last week; MASE season 24.

DeepAR trains on each series up to its first forecast window (no window's actual values
are seen in training), ``--epochs`` passes; every window is then forecast from the
history before it (100 sample paths: the median is the point forecast of sMAPE, MASE,
ND and RMSE, the sample quantiles those of the weighted quantile loss). Median over
``--seeds`` seeds. Training windows/s counts the windows trained (fresh and replayed)
over the training time.

Settings: SageMaker's defaults (2 x 40 LSTM cells, dropout 0.1, context = prediction
length, mini-batches of 128 windows) but for ``--epochs``, ``--learning-rate`` and, per
task, the likelihood and the scaling (:data:`SETTINGS`).

``--gluonts`` trains GluonTS's DeepAR (PyTorch, CPU, one thread) on the same training
series with the same settings (its lags and time features for the frequency, the same
likelihood, network, context, mini-batch size, number of windows trained and epochs,
Adam at the same learning rate, gradients clipped at 10) but its own scaling (mean
scaling: GluonTS's DeepAR has no other) and its learning-rate schedule (halved after
``patience`` epochs without gain), in its own environment, in a subprocess; this
harness scores it and prints the ratios beam_ml / GluonTS. The environment
(benchmark-only; ``$GLUONTS_VENV`` names another)::

    /usr/bin/python3.11 -m venv /work/wt/venvs/gluonts
    /work/wt/venvs/gluonts/bin/pip install "gluonts[torch]" pandas

Run (from the repository, with the project's environment)::

    PYTHONPATH=. OMP_NUM_THREADS=1 MXNET_CPU_WORKER_NTHREADS=1 python \\
        benchmarks/bench_deepar.py --datasets m4-hourly --seeds 3 [--gluonts] [--no-ets]

This module imports only numpy at the top: ``--gluonts-worker`` runs in GluonTS's
environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forecast_baselines as fb  # noqa: E402 (the benchmarks' shared harness)

COLUMNS = ("sMAPE", "MASE", "mean_wQuantileLoss", "ND", "RMSE")
# Settings per task where the defaults do not suit it (``--likelihood`` and ``--scaling``
# override), chosen on the validation split (``--validation``, seed 0; BENCHMARKS.md):
# M4 Hourly has series repeating their day almost exactly on a high level (centred, see
# beam_ml.nn.deepar), exchange rates too; bike rentals are counts.
SETTINGS = {
    "m4-hourly": {"likelihood": "student-T", "scaling": "standard"},
    "exchange_rate": {"likelihood": "student-T", "scaling": "standard"},
    "bike-sharing": {"likelihood": "negative-binomial", "scaling": "mean"},
}


def _setting(name: str, args: argparse.Namespace, key: str) -> str:
    given = getattr(args, key)
    return SETTINGS[name][key] if given is None else given


def _split(name: str) -> tuple[object, object, object]:
    """(training block, forecast histories, actual values) of a task; the training
    block has each series once, up to its first forecast window, without item ids (a
    state tracks series with ids as growing streams)."""
    from beam_ml.core.series import SeriesBlock

    history, actual = fb.load(name)
    first = [i for i, key in enumerate(history.item_id) if not str(key).count("@")
             or str(key).endswith("@0")]  # fmt: skip
    train = SeriesBlock.from_series(
        [history.target(i) for i in first], history.start[first], history.freq
    )
    return train, history, actual


def _validation_split(name: str) -> tuple[object, object, object]:
    """The training block's own holdout, to choose settings on without the test split:
    each training series' last ``horizon`` values are forecast from the values before
    them, and only those earlier values are trained on."""
    from beam_ml.core.series import SeriesBlock

    train, _, _ = _split(name)
    horizon = fb.TASKS[name].horizon
    series = [train.target(i) for i in range(train.n_rows)]
    unit = "h" if train.freq == "H" else "D"  # the tasks' frequencies
    steps = np.array([len(v) - horizon for v in series]).astype(f"timedelta64[{unit}]")
    history = SeriesBlock.from_series([v[:-horizon] for v in series], train.start, train.freq)
    actual = SeriesBlock.from_series([v[-horizon:] for v in series], train.start + steps, train.freq)  # fmt: skip
    return history, history, actual


def _scored(history, actual, paths: np.ndarray, season: int) -> dict[str, float]:
    """This harness's metrics of sample paths (n, samples, horizon)."""
    levels = np.quantile(paths, fb.QUANTILES, axis=1)
    quantiles = dict(zip(fb.QUANTILES, levels, strict=True))
    return fb.score(history, actual, np.median(paths, axis=1), quantiles, season)


def run_deepar(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    from beam_ml.algorithms.deepar import DeepARConfig, DeepARState

    task = fb.TASKS[name]
    train, history, actual = (_validation_split if args.validation else _split)(name)
    config = DeepARConfig(
        time_freq=task.freq,
        prediction_length=task.horizon,
        context_length=args.context or task.horizon,
        epochs=args.epochs,
        likelihood=_setting(name, args, "likelihood"),
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        num_eval_samples=args.samples,
        windows_per_horizon=args.windows_per_horizon,
        scaling=_setting(name, args, "scaling"),
        seed=seed,
    )
    state = DeepARState(config)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        state = state.continued() if epoch else state
        state.update(train)
    state = state.continued()  # the last pending windows
    seconds = time.perf_counter() - started
    model = state.derive()
    started = time.perf_counter()
    paths = model.sample_paths(history)
    forecast_seconds = time.perf_counter() - started
    metrics = _scored(history, actual, paths, task.season)
    if args.save:  # the forecasts, for a look at single series
        np.save(Path(args.save) / f"{name}-seed{seed}.npy", paths.astype(np.float32))
    windows = state.steps * config.mini_batch_size
    metrics.update(
        windows=windows, windows_per_s=windows / seconds, train_s=seconds,
        steps=state.steps, forecast_s=forecast_seconds,
    )  # fmt: skip
    return metrics


# --------------------------------------------------------------------------- GluonTS
def run_gluonts(name: str, seed: int, windows: int, args: argparse.Namespace) -> dict[str, float]:
    """GluonTS's DeepAR trained on ``windows`` windows (as many as ours), scored here."""
    task = fb.TASKS[name]
    train, history, actual = _split(name)
    python = Path(os.environ.get("GLUONTS_VENV", "/work/wt/venvs/gluonts")) / "bin/python"
    if not python.exists():
        raise FileNotFoundError(
            f"no GluonTS environment at {python.parent.parent}; make it as the module doc says"
        )
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.npz", Path(tmp) / "out.npz"
        np.savez(
            job,
            train_values=train.values, train_offsets=train.offsets,
            values=history.values, offsets=history.offsets,
            start=str(np.datetime64(fb.TASKS[name].start, "s")),
            freq=task.freq, horizon=task.horizon, context=args.context or task.horizon,
            batch=args.mini_batch_size, windows=windows, lr=args.learning_rate,
            epochs=args.epochs, samples=args.samples, seed=seed,
            likelihood=_setting(name, args, "likelihood"),
        )  # fmt: skip
        subprocess.run(
            [str(python), __file__, "--gluonts-worker", str(job), str(out)],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        found = np.load(out)
        metrics = _scored(history, actual, found["paths"], task.season)
        metrics.update(
            windows=float(found["windows"]), windows_per_s=float(found["windows"]) / float(found["train_s"]),
            train_s=float(found["train_s"]), forecast_s=float(found["forecast_s"]),
        )  # fmt: skip
    return metrics


def _gluonts_worker(job: str, out: str) -> None:
    """In GluonTS's environment: train its DeepAR, forecast every history."""
    import pandas as pd
    import torch
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.distributions import NegativeBinomialOutput, StudentTOutput
    from gluonts.torch.model.deepar import DeepAREstimator

    torch.set_num_threads(1)
    d = np.load(job)
    freq, horizon = str(d["freq"]).replace("H", "h"), int(d["horizon"])  # pandas 2 spells hours "h"
    batch, epochs = int(d["batch"]), int(d["epochs"])
    torch.manual_seed(int(d["seed"]))
    np.random.seed(int(d["seed"]))
    start = pd.Period(str(d["start"]), freq=freq)

    def dataset(values, offsets):
        series = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return ListDataset([{"start": start, "target": s} for s in series], freq=freq)

    batches = max(int(round(int(d["windows"]) / batch / epochs)), 1)
    estimator = DeepAREstimator(
        freq=freq,
        prediction_length=horizon,
        context_length=int(d["context"]),
        num_layers=2,
        hidden_size=40,
        dropout_rate=0.1,
        distr_output=(
            NegativeBinomialOutput()
            if str(d["likelihood"]) == "negative-binomial"
            else StudentTOutput()
        ),
        scaling=True,
        lr=float(d["lr"]),
        weight_decay=1e-8,
        batch_size=batch,
        num_batches_per_epoch=batches,
        num_parallel_samples=int(d["samples"]),
        trainer_kwargs={
            "max_epochs": epochs, "accelerator": "cpu", "devices": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": False, "gradient_clip_val": 10.0, "default_root_dir": str(Path(out).parent),
        },
    )  # fmt: skip
    started = time.perf_counter()
    predictor = estimator.train(dataset(d["train_values"], d["train_offsets"]), cache_data=True)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    forecasts = list(predictor.predict(dataset(d["values"], d["offsets"])))
    paths = np.stack([f.samples for f in forecasts])
    np.savez(
        out, paths=paths, train_s=train_s, forecast_s=time.perf_counter() - started,
        windows=batches * batch * epochs,
    )  # fmt: skip


# --------------------------------------------------------------------------- report
def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _row(method: str, m: dict[str, float]) -> str:
    return (
        f"| | {method} | {m['sMAPE']:.2f} | {m['MASE']:.3f} | "
        f"{m['mean_wQuantileLoss']:.4f} | {m['ND']:.4f} | {m['RMSE']:.4g} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(fb.TASKS), default=list(fb.TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--likelihood", default=None, help="default: SETTINGS")
    parser.add_argument("--scaling", default=None, choices=("mean", "standard"))
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--mini-batch-size", type=int, default=128)
    parser.add_argument("--windows-per-horizon", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--save", help="a directory to save the sample paths in")
    parser.add_argument("--no-ets", action="store_true", help="skip the ETS baselines")
    parser.add_argument("--gluonts", action="store_true", help="also GluonTS's DeepAR")
    parser.add_argument(
        "--validation", action="store_true",
        help="score on each training series' last horizon (to choose settings): DeepAR only",
    )  # fmt: skip
    parser.add_argument("--gluonts-worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gluonts_worker:
        _gluonts_worker(*args.gluonts_worker)
        return
    for name in args.datasets:
        runs, peers = [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(run_deepar(name, seed, args))
            print(name, "seed", seed, json.dumps({k: round(v, 4) for k, v in runs[-1].items()}), flush=True)  # fmt: skip
            if args.gluonts and not args.validation:
                peers.append(run_gluonts(name, seed, int(runs[-1]["windows"]), args))
                print(name, "gluonts seed", seed, json.dumps({k: round(v, 4) for k, v in peers[-1].items()}), flush=True)  # fmt: skip
        result = {"DeepAR (beam_ml)": _median(runs)}
        if args.validation:
            print("VALIDATION", name, json.dumps(result))
            continue
        if peers:
            result["DeepAR (GluonTS, PyTorch)"] = _median(peers)
        result.update(fb.baselines(name, with_ets=not args.no_ets))
        print("RESULT", name, json.dumps(result))
        print(f"| {name} | method | sMAPE | MASE | mean wQL | ND | RMSE |")
        for method, m in result.items():
            print(_row(method, m))
        if peers:
            ours, theirs = result["DeepAR (beam_ml)"], result["DeepAR (GluonTS, PyTorch)"]
            ratios = {k: ours[k] / theirs[k] for k in (*COLUMNS, "windows_per_s")}
            print("RATIOS beam_ml / GluonTS", name, json.dumps({k: round(v, 3) for k, v in ratios.items()}))  # fmt: skip


if __name__ == "__main__":
    main()
