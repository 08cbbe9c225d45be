"""Forecast accuracy over many series: sMAPE, MASE, weighted quantile loss, ND, RMSE.

The definitions are the references' own, so figures compare with published ones:

- sMAPE and MASE as the M4 competition computes them (``Mcompetitions/M4-methods``,
  ``ML_benchmarks.py``): per series ``200 * mean(|y - f| / (|y| + |f|))`` and
  ``mean(|y - f|) / mean(|x[t] - x[t - m]|)`` over the in-sample history ``x`` with the
  frequency's season ``m`` (24 for hourly), then the mean over series.
- Weighted quantile loss as GluonTS's ``Evaluator``: for each quantile ``q``,
  ``wQL[q] = 2 * sum |(f_q - y) * (1{y <= f_q} - q)| / sum |y|`` over every series and
  time point; ``mean_wQuantileLoss`` is the mean over quantiles.
- ND ``sum |y - f| / sum |y|`` and RMSE ``sqrt(mean (y - f)^2)`` over every point.

Missing actual values (NaN) are left out of every sum; a point where the actual value
and the forecast are both 0 counts as a perfect forecast in sMAPE (M4's data has none).
MASE leaves out series whose seasonal naive scale is 0 or undefined (``mase_series``
counts the others). Series are given as a
:class:`SeriesBlock`, a list of 1-D arrays (lengths may differ) or a 2-D array (one row
per series); forecasts have the same layout as the actuals. Everything is computed from
additive sums (:func:`metric_sums`, :func:`metrics_from_sums`), so evaluating pieces of
the data and adding their sums gives the figures of the whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock

__all__ = [
    "SEASONS",
    "season_of",
    "metric_sums",
    "metrics_from_sums",
    "forecast_metrics",
    "add_sums",
]

#: The seasonal period M4 uses for each frequency's base unit.
SEASONS = {"H": 24, "D": 1, "W": 1, "M": 12, "min": 1}


def season_of(freq: str) -> int:
    """M4's season for a frequency ('H' -> 24, 'M' -> 12, daily and weekly -> 1)."""
    base = freq.lstrip("0123456789")
    if base not in SEASONS:
        raise BadInputError(f"forecast metrics: no season known for frequency {freq!r}.")
    multiple = int(freq[: len(freq) - len(base)] or 1)
    season = SEASONS[base]
    # '2H' still has a daily cycle, of 12 steps; a multiple that does not divide it has none.
    return season // multiple if season % multiple == 0 else 1


def _flat(series: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of series given as a SeriesBlock, a 2-D array or a list."""
    if isinstance(series, SeriesBlock):
        return np.asarray(series.values, dtype=np.float64), np.asarray(series.offsets)
    if isinstance(series, np.ndarray) and series.ndim == 2:
        n, h = series.shape
        return series.astype(np.float64).ravel(), np.arange(n + 1, dtype=np.int64) * h
    try:
        parts = [np.asarray(s, dtype=np.float64).ravel() for s in series]
    except (TypeError, ValueError):
        raise BadInputError(
            f"forecast metrics: '{what}' is not series of numbers (a SeriesBlock, a 2-D "
            "array or a list of 1-D arrays)."
        ) from None
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return (np.concatenate(parts) if parts else np.zeros(0)), offsets


def _aligned(values: np.ndarray, offsets: np.ndarray, like: np.ndarray, what: str) -> np.ndarray:
    if offsets.shape != like.shape or (offsets != like).any():
        raise BadInputError(
            f"forecast metrics: '{what}' does not have one value per actual value "
            f"(series lengths {np.diff(offsets)[:5].tolist()}... against "
            f"{np.diff(like)[:5].tolist()}...)."
        )
    return values


def _per_series(weights: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(ids, weights=weights, minlength=n)


def _seasonal_scale(insample: Any, season: int, n: int) -> np.ndarray:
    """(n,) M4's MASE scale: each series' mean |x[t] - x[t - season]| (NaN pairs left out)."""
    values, offsets = _flat(insample, "insample")
    if offsets.shape[0] - 1 != n:
        raise BadInputError(
            f"forecast metrics: {offsets.shape[0] - 1} in-sample series for {n} actual series."
        )
    ids = np.repeat(np.arange(n), np.diff(offsets))
    diff = np.abs(values[season:] - values[:-season]) if values.shape[0] > season else np.zeros(0)
    pair_ids = ids[season:]
    ok = (pair_ids == ids[: ids.shape[0] - season]) & np.isfinite(diff)
    total = _per_series(np.where(ok, diff, 0.0), pair_ids, n)
    count = _per_series(ok.astype(np.float64), pair_ids, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / count


def metric_sums(
    actual: Any,
    forecast: Any,
    *,
    insample: Any = None,
    season: int = 1,
    quantile_forecasts: Mapping[float, Any] | None = None,
) -> dict[str, float]:
    """Additive sums from which :func:`metrics_from_sums` gives the metrics.

    Parameters
    ----------
    actual : SeriesBlock, list of 1-D arrays or 2-D array
        The observed future values (NaN: missing, left out).
    forecast : same layout as ``actual``
        The point forecast (for ND and sMAPE GluonTS and M4 use the median or mean).
    insample : same number of series, any lengths, optional
        The history before each forecast, for MASE's scale; MASE is left out without it.
    season : int
        MASE's seasonal period (:func:`season_of`: 24 for hourly data).
    quantile_forecasts : {quantile: forecasts in ``actual``'s layout}, optional
        For the weighted quantile losses.
    """
    y, offsets = _flat(actual, "actual")
    f = _aligned(*_flat(forecast, "forecast"), offsets, "forecast")
    n = offsets.shape[0] - 1
    ids = np.repeat(np.arange(n), np.diff(offsets))
    seen = ~np.isnan(y)
    y0 = np.where(seen, y, 0.0)
    error = np.where(seen, np.abs(y - f), 0.0)
    if (seen & ~np.isfinite(f)).any():
        raise BadInputError("forecast metrics: the forecast has NaN or infinite values.")
    points = _per_series(seen.astype(np.float64), ids, n)
    scored = points > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.abs(y0) + np.abs(f)
        ratio = np.where(seen & (denominator > 0), error / denominator, 0.0)
        smape = 200.0 * _per_series(ratio, ids, n) / points
        mean_error = _per_series(error, ids, n) / points
    sums = {
        "series": float(scored.sum()),
        "points": float(points.sum()),
        "smape_sum": float(smape[scored].sum()),
        "abs_error": float(error.sum()),
        "abs_target": float(np.abs(y0).sum()),
        "squared_error": float((error**2).sum()),
    }
    if insample is not None:
        scale = _seasonal_scale(insample, int(season), n)
        good = scored & np.isfinite(scale) & (scale > 0)
        sums["mase_series"] = float(good.sum())
        sums["mase_sum"] = float((mean_error[good] / scale[good]).sum())
    for q, quantile_forecast in (quantile_forecasts or {}).items():
        fq = _aligned(*_flat(quantile_forecast, f"quantile {q}"), offsets, f"quantile {q}")
        loss = np.abs((fq - y0) * ((y0 <= fq).astype(np.float64) - float(q)))
        sums[f"quantile_loss[{float(q)}]"] = float(2.0 * np.where(seen, loss, 0.0).sum())
    return sums


def metrics_from_sums(sums: Mapping[str, float]) -> dict[str, float]:
    """sMAPE, MASE (with in-sample history), ND, RMSE, wQL per quantile and its mean."""
    nan = float("nan")
    abs_target = sums["abs_target"]
    out = {
        "sMAPE": sums["smape_sum"] / sums["series"] if sums["series"] else nan,
        "ND": sums["abs_error"] / abs_target if abs_target else nan,
        "RMSE": float(np.sqrt(sums["squared_error"] / sums["points"])) if sums["points"] else nan,
    }
    if "mase_sum" in sums:
        out["MASE"] = sums["mase_sum"] / sums["mase_series"] if sums["mase_series"] else nan
    losses = {
        k[len("quantile_loss[") : -1]: v for k, v in sums.items() if k.startswith("quantile_loss[")
    }
    for q, loss in losses.items():
        out[f"wQL[{q}]"] = loss / abs_target if abs_target else nan
    if losses:
        out["mean_wQuantileLoss"] = float(np.mean([out[f"wQL[{q}]"] for q in losses]))
    return out


def forecast_metrics(actual: Any, forecast: Any, **kwargs: Any) -> dict[str, float]:
    """:func:`metrics_from_sums` of :func:`metric_sums` (same arguments)."""
    return metrics_from_sums(metric_sums(actual, forecast, **kwargs))


def add_sums(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The sums of several pieces of data, added key by key."""
    total: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total
