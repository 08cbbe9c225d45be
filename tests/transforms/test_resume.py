"""Resuming SGD states: new data trains on from the checkpoint (it is not averaged with
an untrained replica), and counts and statistics cover old and new rows."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from beam_ml import (
    FactorizationMachinesConfig,
    FactorizationMachinesState,
    KMeansConfig,
    LinearLearnerConfig,
    LinearLearnerState,
    ReadCheckpoint,
    Train,
    WriteCheckpoint,
    read_checkpoint,
)
from beam_ml.core.block import Block
from tests.conftest import direct_options


def _logistic(rng, n, d=10, w=None):
    w = rng.normal(size=d) if w is None else w
    x = rng.normal(size=(n, d))
    y = (x @ w + rng.logistic(size=n) > 0).astype(float)
    return Block(x, y), w


def _train_then_resume(tmp_path, config, day1, day2):
    path = str(tmp_path / "state")
    with beam.Pipeline(options=direct_options()) as p:
        _ = p | beam.Create([day1]) | Train(config) | WriteCheckpoint(path)
    with beam.Pipeline(options=direct_options()) as p:
        resumed = p | ReadCheckpoint(path)
        _ = (
            p
            | "Day2" >> beam.Create([day2])
            | Train(config, resume_from=resumed)
            | (WriteCheckpoint(path))
        )
    return read_checkpoint(path)[0]


def _log_loss(model, block):
    p = np.clip(model.evaluate(block.features)[:, 0], 1e-12, 1 - 1e-12)
    y = block.labels
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.mark.beam
def test_linear_learner_resume_continues_the_packed_models(tmp_path, rng):
    config = LinearLearnerConfig(
        predictor_type="binary_classifier", num_models=4, mini_batch_size=100
    )
    day1, w = _logistic(rng, 5_000)
    day2, _ = _logistic(rng, 20_000, w=w)
    resumed = _train_then_resume(tmp_path, config, day1, day2)
    assert resumed.n_seen == 25_000 and resumed.stepped == 25_000
    # Exactly day 1's state, continued, trained on day 2 (one bundle, one replica).
    alone = LinearLearnerState(config).update(day1)
    expected = alone.followed_by(alone.continued().update(day2))
    np.testing.assert_array_equal(resumed.coef, expected.coef)
    np.testing.assert_array_equal(resumed.progress, expected.progress)
    # ... which learnt from day 2: averaging day 1's model with a fresh one would not.
    merged = alone.merge(LinearLearnerState(config).update(day2))
    test, _ = _logistic(rng, 20_000, w=w)
    one_pass = LinearLearnerState(config).update(
        Block(np.vstack([day1.features, day2.features]), np.concatenate([day1.labels, day2.labels]))
    )
    loss_resumed = _log_loss(resumed.derive(), test)
    loss_one_pass = _log_loss(one_pass.derive(), test)
    assert loss_resumed <= 1.01 * loss_one_pass, (loss_resumed, loss_one_pass)
    assert np.abs(resumed.coef - merged.coef).max() > 1e-6


@pytest.mark.beam
@pytest.mark.mxnet
def test_factorization_machines_resume_counts_all_rows_and_learns_on(tmp_path, rng):
    config = FactorizationMachinesConfig(
        feature_dim=10,
        num_factors=4,
        predictor_type="binary_classifier",
        mini_batch_size=200,
        linear_lr=0.02,
        seed=3,
        merge_holdout=0.0,  # every row trains: the progressive-validation count is exact
    )
    day1, w = _logistic(rng, 4_000)
    day2, _ = _logistic(rng, 16_000, w=w)
    test, _ = _logistic(rng, 10_000, w=w)
    resumed = _train_then_resume(tmp_path, config, day1, day2)
    assert resumed.n_seen == 20_000
    assert resumed.pv[0] == 20_000 - resumed.pending.n_rows
    # The resumed model learnt from day 2: clearly better than after day 1 alone, and
    # than day 1's model averaged with a replica trained on day 2 from scratch.
    after_day1 = FactorizationMachinesState(config).update(day1)
    merged = after_day1.merge(FactorizationMachinesState(config).update(day2))
    loss = _log_loss(resumed.derive(), test)
    assert loss < 0.97 * _log_loss(after_day1.derive(), test)
    assert loss < _log_loss(merged.derive(), test)


@pytest.mark.beam
def test_kmeans_with_decay_resumes_in_order(tmp_path, rng):
    """Old rows fade as new ones come, across a resume as within one pass."""
    config = KMeansConfig(k=2, half_life_time_size=1_000)
    before, after = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 50.0], [10.0, 50.0]])
    day1 = before[rng.integers(0, 2, 5_000)] + rng.normal(size=(5_000, 2))
    day2 = after[rng.integers(0, 2, 8_000)] + rng.normal(size=(8_000, 2))
    resumed = _train_then_resume(tmp_path, config, day1, day2)
    assert resumed.n_seen == 13_000
    old_weight = resumed.weights[resumed.centres[:, 1] < 25].sum()
    assert old_weight < 5_000 * 0.5**8 * 1.01  # decayed by 8 half-lives, as in one pass
    centres = resumed.derive().centres
    assert np.abs(np.sort(centres[:, 0]) - [0, 10]).max() < 0.3 and (centres[:, 1] > 49).all()
    # Without decay, resuming is an ordinary merge: every row keeps its weight.
    plain = _train_then_resume(tmp_path / "plain", KMeansConfig(k=2), day1, day2)
    assert plain.weights.sum() == pytest.approx(13_000)
