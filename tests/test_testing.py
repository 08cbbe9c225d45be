"""beam_ml.testing: the generators' known answers hold (checked with numpy and
scikit-learn), the closeness assertions pass on equivalent states and fail on different
ones, the TestStream recipe gives the snapshots, and the fake checkpoint reads back."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from beam_ml import KMeansConfig, KMeansState, PCAConfig, PCAState, read_checkpoint
from beam_ml.algorithms.kmeans import KMeansModel
from beam_ml.algorithms.linear_learner import LinearLearnerConfig, LinearLearnerState
from beam_ml.core.series import SeriesBlock
from beam_ml.io.checkpoints import read_manifest
from beam_ml.testing import (
    MERGE_TOLERANCES,
    assert_model_close,
    assert_state_close,
    blobs,
    fake_checkpoint,
    linear_data,
    pca_data,
    seasonal_series,
    streamed_snapshots,
    topic_documents,
)

pytest_plugins = ["beam_ml.testing"]  # the fake_checkpoint_dir fixture


def test_pca_data_has_its_stated_covariance_and_components():
    data = pca_data(n=20_000, seed=1)
    np.testing.assert_allclose(np.cov(data.rows.T), data.covariance, atol=0.6)
    eigenvalues, vectors = np.linalg.eigh(data.covariance)
    np.testing.assert_allclose(eigenvalues[::-1][:4], data.variances, rtol=1e-10)
    np.testing.assert_allclose(
        np.abs(vectors[:, ::-1][:, :4].T @ data.components.T), np.eye(4), atol=1e-8
    )
    model = PCAState(PCAConfig(num_components=4)).update(data.rows).derive()
    np.testing.assert_allclose(np.abs((model.components * data.components).sum(1)), 1.0, atol=0.01)
    np.testing.assert_allclose(model.explained_variance, data.variances, rtol=0.05)


def test_blobs_centres_are_what_k_means_finds():
    data = blobs(n=3000, k=4, seed=2)
    gaps = np.linalg.norm(data.centres[:, None] - data.centres[None], axis=2)
    assert gaps[np.triu_indices(4, 1)].min() == pytest.approx(20.0)
    model = KMeansState(KMeansConfig(k=4)).update(data.rows).derive()
    truth = KMeansModel(data.centres, np.bincount(data.labels).astype(float), 3000)
    assert_model_close(model, truth, tolerance=0.2)  # 750 rows a cluster: centres to ~0.04
    with pytest.raises(AssertionError, match="centres differ"):
        assert_model_close(model, KMeansModel(data.centres + 1.0, truth.cluster_sizes))


def test_linear_data_weights_are_recovered_by_independent_fits():
    regression = linear_data(n=5000, noise=0.1, seed=3)
    x, y = regression.block.features, regression.block.labels
    coef = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)[0]
    np.testing.assert_allclose(coef[:-1], regression.weights, atol=0.01)
    assert coef[-1] == pytest.approx(regression.bias, abs=0.01)
    binary = linear_data(n=20_000, predictor_type="binary_classifier", seed=4)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(binary.block.features, binary.block.labels)
    np.testing.assert_allclose(fit.coef_[0], binary.weights, atol=0.15)
    assert set(np.unique(binary.block.labels)) == {0.0, 1.0}


def test_topic_documents_use_their_topics_words():
    docs = topic_documents(n=500, n_topics=3, words_per_topic=10, words_per_document=20, seed=5)
    assert docs.counts.shape == (500, 30) and (docs.counts.sum(1) == 20).all()
    np.testing.assert_allclose(docs.topics.sum(1), 1.0)
    per_topic = docs.counts.reshape(500, 3, 10).sum(2)  # words from each topic's block
    dominant = (per_topic.argmax(1) == docs.dominant_topic).mean()
    assert dominant > 0.95, dominant


def test_seasonal_series_follow_their_pattern():
    data = seasonal_series(n_series=30, length=48, period=12, noise=0.02, seed=6)
    block = SeriesBlock.validate(data.block)
    values = block.values.reshape(30, 48)
    # A seasonal-naive forecast (the last period again) matches the stated future.
    naive = values[:, -12:]
    np.testing.assert_allclose(naive / data.future, 1.0, atol=0.1)
    np.testing.assert_allclose(data.future.max(1) / data.future.min(1), 1.4 / 0.6, rtol=1e-9)


def test_assert_state_close_at_the_merge_tolerance():
    rows = pca_data(n=900, seed=7).rows
    config = PCAConfig(num_components=3)
    whole = PCAState(config).update(rows)
    merged = PCAState(config).update(rows[:400]).merge(PCAState(config).update(rows[400:]))
    assert_state_close(whole, merged)
    assert_model_close(whole.derive(), merged.derive())
    other = PCAState(config).update(pca_data(n=900, seed=8).rows)
    with pytest.raises(AssertionError):
        assert_state_close(whole, other)
    with pytest.raises(AssertionError):
        assert_model_close(whole.derive(), other.derive())
    with pytest.raises(AssertionError, match="num_components"):
        assert_state_close(whole, PCAState(PCAConfig(num_components=2)).update(rows))


def test_sgd_states_are_compared_on_held_out_rows():
    train, probe = linear_data(n=4000, seed=9), linear_data(n=500, seed=10)
    config = LinearLearnerConfig(predictor_type="regressor", mini_batch_size=50, num_models=4)
    whole = LinearLearnerState(config).update(train.block)
    half = train.block.n_rows // 2
    parts = [
        LinearLearnerState(config).update(train.block.slice(a, b))
        for a, b in ((0, half), (half, None))
    ]
    assert_state_close(whole, parts[0].merge(parts[1]), probe.block)
    with pytest.raises(ValueError, match="pass data="):
        assert_state_close(whole, whole)
    assert MERGE_TOLERANCES["linear_learner"] == 0.05


@pytest.mark.beam
@pytest.mark.streaming
def test_streamed_snapshots_recipe(tmp_path):
    rows = pca_data(n=46, seed=11).rows
    blocks = np.split(rows, [10, 17, 22, 42])  # 10, 7, 5, 20, 4 rows
    snapshots = streamed_snapshots(PCAConfig(2), blocks, tmp_path, snapshot_every_rows=15)
    assert [s.n_seen for s in snapshots] == [17, 42, 46]
    assert_state_close(snapshots[-1], PCAState(PCAConfig(2)).update(rows))


def test_fake_checkpoint_dir_fixture(fake_checkpoint_dir):
    state, manifest = read_checkpoint(fake_checkpoint_dir)
    assert state.n_seen == 300 and [h["n_seen"] for h in manifest["history"]] == [300, 200, 100]
    older, _ = read_checkpoint(fake_checkpoint_dir, payload=manifest["history"][2]["payload"])
    config = PCAConfig(num_components=2, feature_dim=12)
    assert_state_close(older, PCAState(config).update(pca_data(n=300).rows[:100]))
    assert manifest["extra"]["trained_on"] == "beam_ml.testing"


def test_fake_checkpoint_of_a_given_state(tmp_path):
    state = KMeansState(KMeansConfig(k=2)).update(blobs(n=200, k=2).rows)
    path = fake_checkpoint(tmp_path / "km", state, extra={"derive_defaults": {"k": 2}})
    assert read_manifest(path)["extra"] == {"derive_defaults": {"k": 2}}
    assert_state_close(read_checkpoint(path)[0], state)
