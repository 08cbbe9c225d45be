"""Forecast metrics against hand computations (per series, one loop each, as the M4 and
GluonTS code do) and against M4's published seasonal-naive figures on Hourly."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from beam_ml.core.errors import BadInputError
from beam_ml.core.forecast_metrics import (
    add_sums,
    forecast_metrics,
    metric_sums,
    metrics_from_sums,
    season_of,
)
from beam_ml.core.series import SeriesBlock

QUANTILES = (0.1, 0.5, 0.9)


def _data(rng, n=7, horizon=6, season=4):
    lengths = rng.integers(season + 2, 30, size=n)
    insample = [rng.gamma(2.0, 5.0, size=k) for k in lengths]
    actual = [rng.gamma(2.0, 5.0, size=horizon) for _ in range(n)]
    forecast = [a + rng.normal(0, 2, size=horizon) for a in actual]
    quantiles = {q: [f + (q - 0.5) * 6 for f in forecast] for q in QUANTILES}
    return insample, actual, forecast, quantiles


def _by_hand(insample, actual, forecast, quantiles, season):
    """The M4 code's sMAPE and MASE per series, GluonTS's quantile loss, pooled ND, RMSE."""
    smapes, mases = [], []
    for x, y, f in zip(insample, actual, forecast, strict=True):
        keep = ~np.isnan(y)
        y, f = y[keep], f[keep]
        smapes.append(np.mean(2 * np.abs(y - f) / (np.abs(y) + np.abs(f))) * 100)
        naive = [x[i - season] for i in range(season, len(x))]
        mases.append(np.mean(np.abs(y - f)) / np.mean(np.abs(x[season:] - np.array(naive))))
    ys = np.concatenate(actual)
    fs = np.concatenate(forecast)
    keep = ~np.isnan(ys)
    out = {
        "sMAPE": np.mean(smapes),
        "MASE": np.mean(mases),
        "ND": np.abs(ys - fs)[keep].sum() / np.abs(ys[keep]).sum(),
        "RMSE": np.sqrt(np.mean((ys - fs)[keep] ** 2)),
    }
    losses = []
    for q in QUANTILES:
        fq = np.concatenate(quantiles[q])[keep]
        loss = 2 * np.sum(np.abs((fq - ys[keep]) * ((ys[keep] <= fq) - q)))
        out[f"wQL[{q}]"] = loss / np.abs(ys[keep]).sum()
        losses.append(out[f"wQL[{q}]"])
    out["mean_wQuantileLoss"] = np.mean(losses)
    return out


def _check(got, want):
    assert set(want) <= set(got)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, err_msg=name)


def test_metrics_match_hand_computations_for_series_of_different_lengths(rng):
    insample, actual, forecast, quantiles = _data(rng)
    got = forecast_metrics(
        actual, forecast, insample=insample, season=4, quantile_forecasts=quantiles
    )
    _check(got, _by_hand(insample, actual, forecast, quantiles, 4))


def test_missing_actual_values_are_left_out(rng):
    insample, actual, forecast, quantiles = _data(rng)
    actual[2][[0, 3]] = np.nan
    actual[5][1] = np.nan
    got = forecast_metrics(
        actual, forecast, insample=insample, season=4, quantile_forecasts=quantiles
    )
    _check(got, _by_hand(insample, actual, forecast, quantiles, 4))


def test_series_blocks_and_2d_arrays_give_the_same_figures(rng):
    insample, actual, forecast, quantiles = _data(rng)
    start = ["2020-01-01"] * len(actual)
    as_lists = forecast_metrics(actual, forecast, insample=insample, season=4)
    as_blocks = forecast_metrics(
        SeriesBlock.from_series(actual, start, "H"),
        np.array(forecast),
        insample=SeriesBlock.from_series(insample, start, "H"),
        season=4,
    )
    _check(as_blocks, as_lists)


def test_sums_add_up_across_a_split_of_the_series(rng):
    insample, actual, forecast, quantiles = _data(rng, n=12)
    kwargs = {"season": 4}
    whole = metric_sums(actual, forecast, insample=insample, quantile_forecasts=quantiles, **kwargs)
    parts = []
    for part in np.split(rng.permutation(12), [3, 8]):

        def pick(seq, part=part):
            return [seq[i] for i in part]

        parts.append(
            metric_sums(
                pick(actual),
                pick(forecast),
                insample=pick(insample),
                quantile_forecasts={q: pick(v) for q, v in quantiles.items()},
                **kwargs,
            )
        )
    total = add_sums(parts)
    assert set(total) == set(whole)
    _check(metrics_from_sums(total), metrics_from_sums(whole))


def test_misaligned_forecasts_are_refused(rng):
    _, actual, forecast, _ = _data(rng)
    forecast[1] = forecast[1][:-1]
    with pytest.raises(BadInputError, match="'forecast' does not have one value per actual"):
        metric_sums(actual, forecast)


def test_seasons_follow_m4():
    assert [season_of(f) for f in ("H", "2H", "5H", "D", "W", "M")] == [24, 12, 1, 1, 1, 12]


M4 = Path(os.environ.get("BEAM_ML_DATA", "/work/shared/data")) / "m4-hourly"


def _m4_rows(name):
    with open(M4 / name, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [np.array([float(v) for v in row[1:] if v]) for row in rows]


@pytest.mark.skipif(not (M4 / "Hourly-train.csv").exists(), reason="m4-hourly data absent")
def test_seasonal_naive_on_m4_hourly_matches_m4s_published_figures():
    """M4 (Makridakis et al. 2020, Table 4): sNaive on Hourly, sMAPE 13.912, MASE 1.193."""
    train, test = _m4_rows("Hourly-train.csv"), _m4_rows("Hourly-test.csv")
    forecast = [np.resize(x[-24:], 48) for x in train]
    got = forecast_metrics(test, forecast, insample=train, season=season_of("H"))
    assert round(got["sMAPE"], 3) == 13.912
    assert round(got["MASE"], 3) == 1.193
