"""DeepAR (issue 19): GluonTS's lags and time features, forecasts of series with known
answers, bad input, checkpoints, resumed training and series growing on a stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from beam_ml.algorithms.deepar import DeepARConfig, DeepARState, _bottom_k
from beam_ml.core.errors import BadInputError, IncompatibleStateError
from beam_ml.core.series import SeriesBlock
from beam_ml.core.state import load_model, load_state
from beam_ml.nn.deepar import lags_for_frequency, time_features, window_loc_scale

pytestmark = pytest.mark.mxnet

SIGMA = 0.5
PERIOD = 24
START = "2024-01-01 00:00:00"  # a Monday


def _sines(rng: np.random.Generator, n: int, length: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Daily sines of random phase and level plus N(0, SIGMA^2) noise: the best forecast
    is the sine itself, off by the noise alone."""
    phase = rng.integers(0, PERIOD, n)
    level = rng.uniform(8, 12, n)
    t = np.arange(length)
    clean = level[:, None] + 4 * np.sin(2 * np.pi * (t[None, :] + phase[:, None]) / PERIOD)
    return list(clean + rng.normal(0, SIGMA, clean.shape)), clean


def _block(targets, freq="H", **fields) -> SeriesBlock:
    return SeriesBlock.from_series(targets, [START] * len(targets), freq, **fields)


_CONFIG = dict(
    time_freq="H",
    prediction_length=24,
    context_length=24,
    likelihood="gaussian",
    num_cells=20,
    num_layers=1,
    dropout_rate=0.0,
    learning_rate=0.01,
    mini_batch_size=32,
    windows_per_horizon=2.0,
    shuffle_buffer=256,
    window_reservoir_size=128,
    num_eval_samples=200,
)


@pytest.fixture(scope="module")
def sine_state():
    rng = np.random.default_rng(7)
    targets, _ = _sines(rng, 40, 400)
    config = DeepARConfig(epochs=8, **_CONFIG)
    state = DeepARState(config).update(_block(targets))
    for _ in range(config.epochs - 1):
        state = state.continued().update(_block(targets))
    return state.continued()


# --- GluonTS's features ---------------------------------------------------------------------
def test_lags_are_gluonts_lags_for_the_frequency():
    # gluonts.time_feature.get_lags_for_frequency("H") and ("D"), as GluonTS documents them
    assert lags_for_frequency("H") == [
        *range(1, 8), 23, 24, 25, 47, 48, 49, 71, 72, 73, 95, 96, 97, 119, 120, 121, 143,
        144, 145, 167, 168, 169, 335, 336, 337, 503, 504, 505, 671, 672, 673, 719, 720, 721,
    ]  # fmt: skip
    assert lags_for_frequency("D") == [
        *range(1, 9), 13, 14, 15, 20, 21, 22, 27, 28, 29, 30, 31, 56, 84, 363, 364, 365,
        727, 728, 729, 1091, 1092, 1093,
    ]  # fmt: skip
    assert lags_for_frequency("M") == [*range(1, 8), 11, 12, 13, 23, 24, 25, 35, 36, 37]


def test_time_features_match_the_calendar():
    stamps = np.array(["2024-01-01T00:00:00", "2024-03-07T23:00:00"], dtype="datetime64[s]")
    features = time_features(stamps, np.array([0, 8]), "H")
    # hour of day /23, day of week /6 (Monday 0), day of month /30, day of year /365
    expected = np.array([[0, 0, 0, 0, np.log10(2)], [1, 3 / 6, 6 / 30, 66 / 365, np.log10(10)]]) - [
        0.5,
        0.5,
        0.5,
        0.5,
        0,
    ]
    np.testing.assert_allclose(features, expected, atol=1e-6)


# --- known answers -------------------------------------------------------------------------------
def test_sine_forecast_error_is_near_the_noise_and_beats_seasonal_naive(sine_state):
    rng = np.random.default_rng(8)
    targets, clean = _sines(rng, 30, 400)  # series never seen in training
    model = sine_state.derive()
    history = _block([t[:-24] for t in targets])
    mean = model.evaluate(history)
    truth = np.stack([t[-24:] for t in targets])
    rmse = np.sqrt(np.mean((mean - truth) ** 2))
    naive = np.stack([t[-48:-24] for t in targets])  # seasonal naive: noise twice
    naive_rmse = np.sqrt(np.mean((naive - truth) ** 2))
    assert naive_rmse > 1.3 * SIGMA  # sqrt(2) sigma
    assert rmse < 1.2 * SIGMA, rmse
    assert rmse < 0.85 * naive_rmse, (rmse, naive_rmse)
    # The mean forecast follows the clean sine: the error left is the noise's.
    assert np.sqrt(np.mean((mean - clean[:, -24:]) ** 2)) < 0.5 * SIGMA


def test_gaussian_likelihood_recovers_the_noise_level(sine_state):
    rng = np.random.default_rng(9)
    targets, _ = _sines(rng, 20, 400)
    paths = sine_state.derive().sample_paths(_block(targets), num_samples=400)
    spread = paths[:, :, 0].std(axis=1)  # one step ahead: the noise alone
    assert 0.6 * SIGMA < np.median(spread) < 1.5 * SIGMA, np.median(spread)


def test_metrics_score_the_held_out_values(sine_state):
    rng = np.random.default_rng(10)
    targets, _ = _sines(rng, 20, 400)
    model = sine_state.derive()
    metrics = model.metrics_from_sums(model.metric_sums(_block(targets)))
    paths = model.sample_paths(_block(targets), horizon_given=True)  # the same draws
    truth = np.stack([t[-24:] for t in targets])
    np.testing.assert_allclose(metrics["RMSE"], np.sqrt(np.mean((paths.mean(1) - truth) ** 2)))
    median = np.median(paths, axis=1)
    smape = np.mean(200 * np.abs(truth - median) / (np.abs(truth) + np.abs(median)))
    np.testing.assert_allclose(metrics["sMAPE"], smape)
    assert metrics["mean_wQuantileLoss"] < metrics["ND"]  # a spread beats a point


def test_predict_gives_sagemakers_inference_output(sine_state):
    model = sine_state.derive(num_eval_samples=50)
    rng = np.random.default_rng(11)
    targets, _ = _sines(rng, 2, 100)
    out = model.predict(_block(targets), quantiles=[0.1, 0.5, 0.9], output_types=("mean", "quantiles", "samples"))  # fmt: skip
    assert len(out) == 2 and set(out[0]) == {"mean", "quantiles", "samples"}
    assert set(out[0]["quantiles"]) == {"0.1", "0.5", "0.9"}
    assert len(out[0]["mean"]) == 24 and np.shape(out[0]["samples"]) == (50, 24)
    low, high = np.array(out[0]["quantiles"]["0.1"]), np.array(out[0]["quantiles"]["0.9"])
    assert (low < high).all()


# --- bad input ------------------------------------------------------------------------------------
def test_bad_configs_name_the_parameter():
    with pytest.raises(ValueError, match="'likelihood' parameter of DeepARConfig must be one of"):
        DeepARConfig("H", 24, likelihood="poisson")
    with pytest.raises(ValueError, match="'time_freq'"):
        DeepARConfig("fortnight", 24)
    with pytest.raises(ValueError, match="'cardinality'"):
        DeepARConfig("H", 24, cardinality=(3, 0))
    with pytest.raises(ValueError, match="'test_quantiles'"):
        DeepARConfig("H", 24, test_quantiles=(0.5, 1.0))
    with pytest.raises(ValueError, match="'prediction_length'"):
        DeepARConfig("H", 0)


def test_bad_series_raise_clear_errors():
    counts = DeepARState(DeepARConfig("H", 4, likelihood="negative-binomial"))
    with pytest.raises(BadInputError, match=r"counts >= 0; 'target' of series 1 at time 2 is -3"):
        counts.update(_block([np.ones(10), np.array([1.0, 2, -3, 4])]))
    shares = DeepARState(DeepARConfig("H", 4, likelihood="beta"))
    with pytest.raises(BadInputError, match=r"in \(0, 1\); 'target' of series 0 at time 1 is 1.5"):
        shares.update(_block([np.array([0.5, 1.5, 0.2])]))
    state = DeepARState(DeepARConfig("D", 4))
    with pytest.raises(BadInputError, match="frequency 'D'; the block's 'freq' is 'H'"):
        state.update(_block([np.ones(10)]))
    with pytest.raises(BadInputError, match="expects 0 'cat' values per series; the block has 1"):
        state.update(_block([np.ones(10)], freq="D", cat=[[1]]))
    assert state.n_seen == 0 and counts.n_seen == 0


def test_a_missing_gpu_fails_before_anything_changes():
    from beam_ml.nn.engine import DeviceUnavailableError

    state = DeepARState(DeepARConfig("H", 4, device="gpu:7"))
    with pytest.raises(DeviceUnavailableError, match="gpu:7"):
        state.update(_block([np.ones(30)]))
    assert state.n_seen == 0 and state.input_spec is None and state.params is None


# --- checkpoints, resume, streams --------------------------------------------------------------
def _small(**changes) -> DeepARConfig:
    return DeepARConfig(**{**_CONFIG, "num_cells": 8, "windows_per_horizon": 0.5, **changes})


def test_checkpoint_round_trip_continues_identically():
    rng = np.random.default_rng(12)
    targets, _ = _sines(rng, 10, 300)
    state = DeepARState(_small()).update(_block(targets[:6]))
    again = load_state(state.to_bytes())
    assert again.to_bytes() == state.to_bytes()
    a, b = (s.update(_block(targets[6:])).continued() for s in (state, again))
    assert a.steps == b.steps > 0
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    model = a.derive()
    assert load_model(model.to_bytes()).to_bytes() == model.to_bytes()


def test_resume_continues_training_on_new_observations():
    rng = np.random.default_rng(13)
    targets, _ = _sines(rng, 12, 400)
    old = DeepARState(_small()).update(_block([t[:200] for t in targets])).continued()
    new = old.continued().update(_block([t[:400] for t in targets])).continued()
    resumed = old.followed_by(new)
    assert resumed.steps > old.steps and resumed.n_seen == 24
    assert any(not np.array_equal(resumed.params[k], old.params[k]) for k in old.params)
    # replicas of different start points do not average
    fresh = DeepARState(_small()).update(_block(targets))
    with pytest.raises(IncompatibleStateError, match="different start points"):
        resumed.continued().update(_block(targets)).merge(fresh)


def _tagged(targets, starts, ids) -> SeriesBlock:
    """Series with an id each (as the streaming point-record reader gives them)."""
    plain = SeriesBlock.from_series(targets, starts, "H")
    return dataclasses.replace(plain, item_id=np.asarray(ids))


def test_series_growing_on_a_stream_give_the_windows_of_whole_series():
    rng = np.random.default_rng(14)
    targets, _ = _sines(rng, 3, 300)
    config = _small(windows_per_horizon=2.0)
    whole = DeepARState(config)
    whole.num_dynamic = 0
    whole._allocate()
    expected = whole._windows(_tagged(targets, [START] * 3, ["a", "b", "c"]))
    stream = DeepARState(config)
    stream.num_dynamic = 0
    stream._allocate()
    cuts = [0, 50, 51, 170, 300]
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        start = np.datetime64(START) + np.timedelta64(lo, "h")
        parts.append(stream._windows(_tagged([t[lo:hi] for t in targets], [start] * 3, ["a", "b", "c"])))  # fmt: skip
    got = np.concatenate(parts)
    assert len(expected) > 20
    order = lambda rows: rows[np.argsort(rows[:, 0])]  # noqa: E731 (by key)
    np.testing.assert_array_equal(order(got), order(expected))
    # Memory per series is the tail, whatever the history's length.
    assert stream.tracked["tail"].shape == (3, config.window - 1)
    np.testing.assert_array_equal(stream.tracked["length"], [300, 300, 300])
    np.testing.assert_allclose(
        stream.tracked["abs_sum"], [np.abs(t).sum() for t in targets], rtol=1e-12
    )


def test_reservoirs_merge_into_the_sample_of_their_union():
    rng = np.random.default_rng(15)
    a, b = rng.random((30, 4)), rng.random((25, 4))
    shared = a[:5]  # windows both replicas kept from their start point
    merged = _bottom_k(np.concatenate([a, shared]), b, 20)
    union = np.concatenate([a, b])
    np.testing.assert_array_equal(merged, union[np.argsort(union[:, 0])[:20]])


def test_early_stopping_ends_training_after_patience_passes_without_gain():
    rng = np.random.default_rng(16)
    targets, _ = _sines(rng, 6, 200)
    state = DeepARState(_small(epochs=5, early_stopping_patience=1)).update(_block(targets))
    state = state.continued()  # pass 1 sets the best loss
    assert not state.stopped and np.isfinite(state.early[2])
    state.update(_block(targets))
    state.early[:2] = [1e9, 1.0]  # pass 2 scored worse than the best
    state = state.continued()
    assert state.stopped
    steps = state.steps
    assert state.update(_block(targets)).continued().steps == steps


def test_new_data_after_an_early_stop_trains_on_its_first_pass():
    rng = np.random.default_rng(18)
    targets, _ = _sines(rng, 6, 200)
    state = DeepARState(_small(epochs=3, early_stopping_patience=1)).update(_block(targets))
    state = state.continued().update(_block(targets))
    state.early[:2] = [1e9, 1.0]  # pass 2 scored worse than pass 1: stop
    state = state.continued()
    assert state.stopped
    # the run's 3 epochs done: the next pass reads new data
    state = state.update(_block(targets)).continued()
    assert not state.stopped
    steps = state.steps
    fresh, _ = _sines(rng, 6, 200)
    assert state.update(_block(fresh)).continued().steps > steps


def test_standard_scaling_centres_on_the_context_mean_and_deviation():
    settings = _small(scaling="standard").settings(0)
    L, C = settings.max_lag, settings.context_length
    rng = np.random.default_rng(17)
    target = rng.normal(500.0, 3.0, (5, L + C))
    target[1, L + 3 : L + 9] = np.nan  # gaps in the context: left out
    target[2, L:] = np.nan  # no context: the whole window's values
    target[3] = np.nan  # nothing: loc 0, scale 1
    target[4, L:] = 500.0  # a constant context: the deviation's floor
    loc, scale = window_loc_scale(target, slice(L, None), settings)
    for i, part in enumerate([target[0, L:], target[1, L:], target[2, :L]]):
        seen = part[~np.isnan(part)]
        np.testing.assert_allclose(loc[i, 0], seen.mean(), rtol=1e-6)
        np.testing.assert_allclose(scale[i, 0], np.abs(seen - seen.mean()).mean(), rtol=1e-5)
    assert (loc[3, 0], scale[3, 0]) == (0.0, 1.0)
    np.testing.assert_allclose([loc[4, 0], scale[4, 0]], [500.0, 0.5], rtol=1e-6)
    # Counts are never centred: negative-binomial keeps GluonTS's mean scaling.
    counts = _small(scaling="standard", likelihood="negative-binomial").settings(0)
    loc, scale = window_loc_scale(np.abs(target[:1]), slice(L, None), counts)
    assert loc[0, 0] == 0.0
    np.testing.assert_allclose(scale[0, 0], np.abs(target[0, L:]).mean(), rtol=1e-6)


def test_centred_forecasts_of_a_day_repeated_on_a_high_level_beat_seasonal_naive():
    # The daily swing is 0.4 % of the level (as M4 Hourly's smoothest series): centred,
    # the network sees it as any sine.
    rng = np.random.default_rng(18)
    targets, _ = _sines(rng, 40, 400)
    targets = [t + 1000.0 for t in targets]
    config = DeepARConfig(epochs=8, **{**_CONFIG, "scaling": "standard"})
    state = DeepARState(config).update(_block(targets))
    for _ in range(config.epochs - 1):
        state = state.continued().update(_block(targets))
    unseen = [t + 1000.0 for t in _sines(np.random.default_rng(19), 30, 400)[0]]
    mean = state.continued().derive().evaluate(_block([t[:-24] for t in unseen]))
    truth = np.stack([t[-24:] for t in unseen])
    naive = np.stack([t[-48:-24] for t in unseen])
    rmse, naive_rmse = (np.sqrt(np.mean((f - truth) ** 2)) for f in (mean, naive))
    assert rmse < 1.2 * SIGMA and rmse < 0.85 * naive_rmse, (rmse, naive_rmse)


def test_student_t_draws_follow_the_t_distribution():
    """Forecast draws (Bailey's polar form from two uniforms) against scipy's Student-t:
    location, scale and degrees of freedom from the network's raw outputs."""
    from scipy import stats

    from beam_ml.nn.deepar import _np_softplus, _sample

    rng = np.random.default_rng(7)
    m = 200_000
    raw = np.tile([[1.5, 0.3, 0.2]], (m, 1))  # loc 1.5, sigma softplus(0.3), nu 2 + softplus(0.2)
    scale = np.full((m, 1), 4.0, np.float32)
    draws = _sample("student-T", raw, scale, rng.random((m, 2)))
    sigma, nu = _np_softplus(0.3), 2.0 + _np_softplus(0.2)
    reference = stats.t(df=nu, loc=1.5 * 4.0, scale=sigma * 4.0)
    assert stats.kstest(draws, reference.cdf).pvalue > 0.01
    # and a wrong nu is told apart at this sample size
    assert stats.kstest(draws, stats.t(df=nu + 2, loc=6.0, scale=sigma * 4.0).cdf).pvalue < 1e-6


def test_sample_paths_of_a_series_do_not_depend_on_its_block_or_chunks(sine_state, monkeypatch):
    # Paths are forecast in chunks of series (bounded memory); a series' paths are the
    # same alone, in a block, and whatever the chunk size.
    from beam_ml.algorithms import deepar

    model = sine_state.derive()
    targets, _ = _sines(np.random.default_rng(11), 7, 300)
    whole = model.sample_paths(_block(targets), 20)
    monkeypatch.setattr(deepar, "_PATH_ROWS", 3 * 20)  # chunks of 3 series
    np.testing.assert_allclose(model.sample_paths(_block(targets), 20), whole, rtol=1e-6)
    for i in (0, 4, 6):
        np.testing.assert_allclose(model.sample_paths(_block(targets[i : i + 1]), 20)[0], whole[i], rtol=1e-6)
    assert np.abs(whole[0] - whole[1]).max() > 0.1  # different series, different paths
