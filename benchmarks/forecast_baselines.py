"""Forecast baselines for DeepAR (issue 19): seasonal naive, naive (repeat the last
value) and ETS on m4-hourly, exchange_rate and bike-sharing, scored with
:mod:`beam_ml.core.forecast_metrics` (sMAPE, MASE, mean wQL over the quantiles 0.1 ...
0.9, ND, RMSE).

The datasets (``$BEAM_ML_DATA``, default /work/shared/data) and their forecast tasks:

- ``m4-hourly``: the 414 M4 Hourly series, horizon 48, the official test split
  (Hourly-test.csv); season 24.
- ``exchange_rate``: 8 daily exchange rates (LSTNet), horizon 30 with 5 rolling windows
  over the last 150 days, GluonTS's setting; season 5 (a business week).
- ``bike-sharing``: the hourly counts of casual and registered users (hour.csv; the
  hours missing from the file are missing values), horizon 24 with 7 rolling windows
  over the last week; season 24.

A rolling window is one forecast: the history before it, then its ``horizon`` values.
``load(name)`` gives (history, actual): two SeriesBlocks, series ``i`` of the second
following series ``i`` of the first (``item_id`` "<series>" or "<series>@<window>").
``baselines(name)`` gives ``{method: metrics}``; the DeepAR benchmark imports both.

Naive methods give point forecasts only: their wQL takes the point forecast as every
quantile (as the Chronos paper's baseline tables do). ETS is statsmodels' ``ETSModel``
with initial states by the heuristic, the model of smallest AICc among (A,N,A),
(A,Ad,A) and, for positive series, (M,N,M) (the AutoETS manner; fitted on at most the
last 2,000 values); its point forecast is the model's mean, its quantiles those of 500
simulated paths. "AutoETS (statsforecast)" is statsforecast's ``AutoETS`` (the model
of the Chronos paper's baseline tables), its quantiles the bounds of its 20-80 %
prediction intervals. Both run in their own environment (benchmark-only dependencies),
made once with::

    /usr/bin/python3.11 -m venv /work/wt/venvs/forecast
    /work/wt/venvs/forecast/bin/pip install statsmodels statsforecast pandas numpy scipy

(``$FORECAST_VENV`` names another). Its forecasts are cached under the system's
temporary directory (``$FORECAST_BASELINES_CACHE``), keyed by the data.

Run (from the repository, with the project's environment)::

    PYTHONPATH=. python benchmarks/forecast_baselines.py [--datasets m4-hourly ...] [--no-ets]

This module imports only numpy at the top: ``--ets-worker`` runs in the ETS environment.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTILES = tuple(round(0.1 * k, 1) for k in range(1, 10))
ETS_HISTORY = 2_000
ETS_PATHS = 500


@dataclass(frozen=True)
class Task:
    freq: str
    horizon: int
    season: int
    windows: int
    start: str


TASKS = {
    "m4-hourly": Task("H", 48, 24, 1, "1750-01-01 00:00:00"),
    "exchange_rate": Task("D", 30, 5, 5, "1990-01-01 00:00:00"),
    "bike-sharing": Task("H", 24, 24, 7, "2011-01-01 00:00:00"),
}


def _data_dir() -> Path:
    return Path(os.environ.get("BEAM_ML_DATA", "/work/shared/data"))


# ------------------------------------------------------------------------- loading


def _full_series(name: str) -> tuple[list[str], list[np.ndarray]]:
    """Each whole series of a rolling-window dataset (ids, values with NaN gaps)."""
    root = _data_dir() / name
    if name == "exchange_rate":
        with gzip.open(root / "exchange_rate.txt.gz", "rt") as f:
            matrix = np.loadtxt(f, delimiter=",")
        return [f"rate{j}" for j in range(matrix.shape[1])], list(matrix.T)
    if name == "bike-sharing":
        with open(root / "hour.csv", newline="") as f:
            rows = [[v.strip() for v in row] for row in csv.reader(f) if row]
        header, rows = rows[0], rows[1:]
        day, hour = header.index("dteday"), header.index("hr")
        stamps = np.array([r[day] for r in rows], dtype="datetime64[h]") + np.array(
            [int(r[hour]) for r in rows]
        )
        t0 = np.datetime64(TASKS[name].start, "h")
        slot = (stamps - t0).astype(np.int64)
        out = []
        for column in ("casual", "registered"):
            values = np.full(int(slot.max()) + 1, np.nan)
            values[slot] = [float(r[header.index(column)]) for r in rows]
            out.append(values)
        return ["casual", "registered"], out
    raise ValueError(f"no such rolling-window dataset: {name!r}")


def load(name: str) -> tuple[Any, Any]:
    """(history, actual) SeriesBlocks of a dataset's forecasts (see the module doc)."""
    from beam_ml.core.series import SeriesBlock
    from beam_ml.io.formats.series_common import read_series

    task = TASKS[name]
    if name == "m4-hourly":
        root = _data_dir() / name
        blocks = []
        for file in ("Hourly-train.csv", "Hourly-test.csv"):
            read = read_series(str(root / file), "series_csv", freq="H", strict=True)
            blocks.append(SeriesBlock.concat(list(read)))
        train, test = blocks
        if not (train.item_id == test.item_id).all():
            raise ValueError("Hourly-train.csv and Hourly-test.csv list different series")
        # the test values follow the training values of each series
        steps = train.lengths.astype("timedelta64[h]")
        test = SeriesBlock(
            test.values, test.offsets, train.start + steps, "H", item_id=test.item_id
        )
        return train, test
    ids, series = _full_series(name)
    histories, actuals, keys, starts, test_starts = [], [], [], [], []
    t0 = np.datetime64(task.start, "s")
    step = np.timedelta64(1, "h" if task.freq == "H" else "D")
    for sid, values in zip(ids, series, strict=True):
        for w in range(task.windows):
            cut = len(values) - (task.windows - w) * task.horizon
            histories.append(values[:cut])
            actuals.append(values[cut : cut + task.horizon])
            keys.append(f"{sid}@{w}")
            starts.append(t0)
            test_starts.append(t0 + cut * step)
    history = SeriesBlock.from_series(histories, starts, task.freq, item_id=keys)
    actual = SeriesBlock.from_series(actuals, test_starts, task.freq, item_id=keys)
    return history, actual


# ------------------------------------------------------------------------ methods


def _filled(values: np.ndarray) -> np.ndarray:
    """``values`` with each missing value replaced by the last one seen before it (the
    first values, if missing, by the first one seen)."""
    seen = ~np.isnan(values)
    index = np.where(seen, np.arange(values.shape[0]), 0)
    np.maximum.accumulate(index, out=index)
    filled = values[index]
    return np.where(np.isnan(filled), values[seen][0], filled)


def _tails(history: Any, length: int) -> np.ndarray:
    """(n_series, length): the last ``length`` values of each series, gaps filled."""
    return np.stack(
        [_filled(history.target(i))[-length:] for i in range(history.n_rows)]
    )  # one small slice per series: the harness, not a hot path


def seasonal_naive(history: Any, horizon: int, season: int) -> np.ndarray:
    """Each series' last season, repeated over the horizon."""
    tail = _tails(history, season)
    return np.tile(tail, (1, -(-horizon // season)))[:, :horizon]


def naive(history: Any, horizon: int) -> np.ndarray:
    """Each series' last value, repeated."""
    return np.repeat(_tails(history, 1), horizon, axis=1)


def _cache_dir() -> Path:
    root = os.environ.get("FORECAST_BASELINES_CACHE", tempfile.gettempdir())
    path = Path(root) / "beam_ml_forecast_baselines"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ets(
    history: Any, horizon: int, season: int, library: str = "statsmodels"
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """ETS point forecasts (n, horizon) and quantile forecasts, from the ETS environment
    (cached)."""
    values = np.asarray(history.values, dtype=np.float64)
    offsets = np.asarray(history.offsets, dtype=np.int64)
    key = hashlib.sha1(
        values.tobytes()
        + offsets.tobytes()
        + repr((horizon, season, ETS_HISTORY, ETS_PATHS, QUANTILES, library)).encode()  # fmt: skip
    ).hexdigest()[:16]
    out = _cache_dir() / f"ets-{key}.npz"
    if not out.exists():
        python = Path(os.environ.get("FORECAST_VENV", "/work/wt/venvs/forecast")) / "bin/python"
        if not python.exists():
            raise FileNotFoundError(
                f"no ETS environment at {python.parent.parent}; make it as the module doc says"
            )
        job = _cache_dir() / f"in-{key}.npz"
        np.savez(
            job, values=values, offsets=offsets, horizon=horizon, season=season, library=library
        )
        partial = out.with_suffix(".partial.npz")
        subprocess.run(
            [str(python), __file__, "--ets-worker", str(job), str(partial)],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
        partial.rename(out)
        job.unlink()
    found = np.load(out)
    return found["mean"], {q: found["quantiles"][k] for k, q in enumerate(QUANTILES)}


def _ets_one(y: np.ndarray, horizon: int, season: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, quantiles (n_quantiles, horizon)) of the AICc-best ETS model of ``y``."""
    import warnings

    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    warnings.simplefilter("ignore")
    series = pd.Series(_filled(y)[-ETS_HISTORY:])
    configs = [
        {"error": "add", "trend": None, "seasonal": "add"},
        {"error": "add", "trend": "add", "damped_trend": True, "seasonal": "add"},
    ]
    if (series > 0).all():
        configs.append({"error": "mul", "trend": None, "seasonal": "mul"})
    best = None
    for config in configs:
        try:
            fit = ETSModel(
                series, seasonal_periods=season, initialization_method="heuristic", **config
            ).fit(disp=False)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(fit.aicc) and (best is None or fit.aicc < best.aicc):
            best = fit
    if best is None:  # nothing fits: the seasonal naive forecast, no spread
        point = np.resize(series.to_numpy()[-season:], horizon)
        return point, np.tile(point, (len(QUANTILES), 1))
    mean = np.asarray(best.forecast(horizon), dtype=np.float64)
    paths = best.simulate(
        horizon, repetitions=ETS_PATHS, anchor="end", rng=np.random.default_rng(seed)
    )
    quantiles = np.quantile(np.asarray(paths, dtype=np.float64), QUANTILES, axis=1)
    return mean, quantiles


def _auto_ets(y: np.ndarray, horizon: int, season: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, quantiles) of statsforecast's AutoETS: the quantiles are the bounds of its
    prediction intervals (levels 20, 40, 60, 80) and the mean."""
    from statsforecast.models import AutoETS

    levels = [20, 40, 60, 80]
    found = AutoETS(season_length=season).forecast(
        y=_filled(y)[-ETS_HISTORY:], h=horizon, level=levels
    )
    mean = np.asarray(found["mean"], dtype=np.float64)
    bounds = []
    for q in QUANTILES:
        level = int(round(abs(1 - 2 * q) * 100))
        side = "lo" if q < 0.5 else "hi"
        bounds.append(mean if level == 0 else np.asarray(found[f"{side}-{level}"], np.float64))
    return mean, np.stack(bounds)


def _ets_worker(job: str, out: str) -> None:
    data = np.load(job)
    values, offsets = data["values"], data["offsets"]
    horizon, season = int(data["horizon"]), int(data["season"])
    fit = _auto_ets if str(data["library"]) == "statsforecast" else _ets_one
    n = offsets.shape[0] - 1
    means = np.empty((n, horizon))
    quantiles = np.empty((len(QUANTILES), n, horizon))
    started = time.monotonic()
    for i in range(n):
        means[i], quantiles[:, i] = fit(values[offsets[i] : offsets[i + 1]], horizon, season, i)
        if (i + 1) % 50 == 0:
            print(f"ETS: {i + 1}/{n} series, {time.monotonic() - started:.0f} s", file=sys.stderr)
    np.savez(out, mean=means, quantiles=quantiles)


# ------------------------------------------------------------------------ scoring


def score(
    history: Any, actual: Any, point: np.ndarray, quantiles: dict | None, season: int
) -> dict:
    """The metrics of one method's forecasts (a point forecast stands in for every
    quantile when the method gives none)."""
    from beam_ml.core.forecast_metrics import forecast_metrics

    qs = quantiles if quantiles is not None else {q: point for q in QUANTILES}
    return forecast_metrics(actual, point, insample=history, season=season, quantile_forecasts=qs)


def baselines(name: str, *, with_ets: bool = True) -> dict[str, dict[str, float]]:
    """``{method: metrics}`` of the baselines on dataset ``name``."""
    task = TASKS[name]
    history, actual = load(name)
    out = {
        "seasonal naive": score(
            history, actual, seasonal_naive(history, task.horizon, task.season), None, task.season
        ),
        "naive": score(history, actual, naive(history, task.horizon), None, task.season),
    }
    if with_ets:
        mean, quantiles = ets(history, task.horizon, task.season)
        out["ETS (statsmodels)"] = score(history, actual, mean, quantiles, task.season)
        mean, quantiles = ets(history, task.horizon, task.season, "statsforecast")
        out["AutoETS (statsforecast)"] = score(history, actual, mean, quantiles, task.season)
    return out


def _table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| dataset | method | sMAPE | MASE | mean wQL | ND | RMSE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, methods in results.items():
        for method, m in methods.items():
            lines.append(
                f"| {name} | {method} | {m['sMAPE']:.3f} | {m['MASE']:.3f} | "
                f"{m['mean_wQuantileLoss']:.4f} | {m['ND']:.4f} | {m['RMSE']:.4g} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--no-ets", action="store_true", help="skip ETS")
    parser.add_argument("--ets-worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ets_worker:
        _ets_worker(*args.ets_worker)
        return
    results = {}
    for name in args.datasets:
        started = time.monotonic()
        results[name] = baselines(name, with_ets=not args.no_ets)
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(_table(results))


if __name__ == "__main__":
    main()
