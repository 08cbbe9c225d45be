"""K-Means: one pass, any k, against scikit-learn on MNIST and on blobs with known centres."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans

from beam_ml import (
    KMeansConfig,
    KMeansModel,
    KMeansState,
    NotEnoughDataError,
    Train,
    WriteCheckpoint,
    read_checkpoint,
)
from tests.conftest import direct_options, load_mnist_images


def msd(centres: np.ndarray, data: np.ndarray) -> float:
    """Mean squared distance of the rows to their nearest centre (float64, chunked)."""
    total = 0.0
    for start in range(0, len(data), 100_000):
        x = np.asarray(data[start : start + 100_000], dtype=np.float64)
        d2 = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)
        total += np.maximum(d2, 0).min(axis=1).sum()
    return total / len(data)


def train(data, config, block=10_000):
    state = KMeansState(config)
    for start in range(0, len(data), block):
        state.update(data[start : start + block])
    return state


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_images()


@pytest.fixture(scope="module")
def mnist_references(mnist):
    return {
        k: (
            KMeans(k, n_init=1, random_state=0).fit(mnist).inertia_ / len(mnist),
            msd(MiniBatchKMeans(k, n_init=1, random_state=0).fit(mnist).cluster_centers_, mnist),
        )
        for k in (10, 20)
    }


@pytest.mark.parametrize("k", [10, 20])
def test_mnist_one_pass_cost_matches_lloyd(mnist, mnist_references, k):
    ours = msd(train(mnist, KMeansConfig(k=k)).derive().centres, mnist)
    lloyd, minibatch = mnist_references[k]
    assert ours <= 1.05 * lloyd, (ours / lloyd, "vs KMeans(n_init=1)")
    assert ours <= minibatch, (ours / minibatch, "vs MiniBatchKMeans")


def test_mnist_smaller_k_from_the_same_state(mnist, mnist_references):
    state = train(mnist, KMeansConfig(k=20), block=2_500)
    ours = msd(state.derive(k=10).centres, mnist)
    lloyd, minibatch = mnist_references[10]
    assert ours <= 1.05 * lloyd and ours <= minibatch, (ours / lloyd, ours / minibatch)


@pytest.mark.parametrize("parts", [2, 4, 8])
def test_merging_partial_states_stays_close_to_one_pass(mnist, parts):
    config = KMeansConfig(k=10)
    single = msd(train(mnist, config).derive().centres, mnist)
    states = [train(part, config) for part in np.array_split(mnist, parts)]
    merged = states[0]
    for other in states[1:]:
        merged = merged.merge(other)
    assert merged.n_seen == len(mnist)
    assert msd(merged.derive().centres, mnist) <= 1.02 * single


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-10, 10, size=(16, 32))
    labels = rng.integers(0, 16, 1_000_000)
    data = (centres[labels] + 1.35 * rng.normal(size=(1_000_000, 32))).astype(np.float32)
    return data, centres


def test_blobs_known_centres_any_k(blobs):
    data, truth = blobs
    state = train(data, KMeansConfig(k=16))
    model = state.derive()
    # Every true centre is found.
    gaps = np.sqrt(((truth[:, None, :] - model.centres[None]) ** 2).sum(-1)).min(axis=1)
    assert gaps.max() < 0.05, gaps
    for k in (16, 12):
        ours = msd(state.derive(k=k).centres, data)
        lloyd = KMeans(k, n_init=1, random_state=0).fit(data).inertia_ / len(data)
        minibatch = msd(
            MiniBatchKMeans(k, n_init=1, random_state=0, batch_size=4096)
            .fit(data)
            .cluster_centers_,
            data,
        )
        assert ours <= 1.05 * lloyd and ours <= minibatch, (k, ours, lloyd, minibatch)
    assert len(state.to_bytes()) < 100_000  # 160 centres of 32 floats, whatever the rows


def test_decay_follows_a_drifting_stream(rng):
    before = np.array([[0.0, 0.0], [10.0, 0.0]])
    after = before + [0.0, 30.0]
    old = before[rng.integers(0, 2, 40_000)] + 0.1 * rng.normal(size=(40_000, 2))
    new = after[rng.integers(0, 2, 20_000)] + 0.1 * rng.normal(size=(20_000, 2))
    stream = np.vstack([old, new])
    forgetting = train(stream, KMeansConfig(k=2, half_life_time_size=2_000), block=1_000).derive()
    remembering = train(stream, KMeansConfig(k=2), block=1_000).derive()
    assert msd(forgetting.centres, new) < 0.05  # found the new centres
    assert msd(remembering.centres, new) > 10  # still split between old and new
    assert forgetting.cluster_sizes.sum() < 0.1 * remembering.cluster_sizes.sum()


def test_model_outputs_and_metrics(rng):
    data = np.vstack([rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + 8])
    model = train(data, KMeansConfig(k=2)).derive()
    out = model.evaluate(data)
    assert out.shape == (1000, 2)
    labels = out[:, 0].astype(int)
    np.testing.assert_array_equal(labels, model.assign(data))
    np.testing.assert_allclose(
        out[:, 1], np.linalg.norm(data - model.centres[labels], axis=1), rtol=1e-9
    )
    assert model.score("msd", data) == pytest.approx(msd(model.centres, data), rel=1e-9)
    assert model.score("ssd", data) == pytest.approx(msd(model.centres, data) * 1000, rel=1e-9)
    again = KMeansModel.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(again.centres, model.centres)
    assert model.cluster_sizes.sum() == pytest.approx(1000)


def test_errors_are_clear(rng):
    state = train(rng.normal(size=(50, 4)), KMeansConfig(k=3))
    with pytest.raises(
        ValueError, match=r"'k' parameter of KMeansState.derive must be an int in \[1, 3\]. Got 4"
    ):
        state.derive(k=4)
    with pytest.raises(NotEnoughDataError, match="holds 2 centres"):
        KMeansState(KMeansConfig(k=3)).update(
            np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
        ).derive()
    with pytest.raises(ValueError, match="'extra_center_factor' parameter of KMeansConfig"):
        KMeansConfig(k=3, extra_center_factor=0)
    with pytest.raises(ValueError, match="'local_lloyd_init_method' parameter"):
        state.derive(local_lloyd_init_method="best")


def test_same_data_same_order_same_state(rng):
    data = rng.normal(size=(3000, 6))
    assert train(data, KMeansConfig(k=4)).to_bytes() == train(data, KMeansConfig(k=4)).to_bytes()


@pytest.mark.beam
@pytest.mark.slow
def test_multi_process_pipeline_matches_single_state(tmp_path, blobs):
    data, _ = blobs
    data = data[:200_000]
    blocks = np.array_split(data, 20)
    for i, block in enumerate(blocks):
        np.save(tmp_path / f"part{i:02d}.npy", block)
    from beam_ml import ReadBlocks

    options = direct_options(
        "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"
    )
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | ReadBlocks(str(tmp_path / "part*.npy"), "npy")
            | Train(KMeansConfig(k=16))
            | WriteCheckpoint(str(tmp_path / "state"))
        )
    state, _ = read_checkpoint(str(tmp_path / "state"))
    assert state.n_seen == 200_000
    single = msd(train(data, KMeansConfig(k=16)).derive().centres, data)
    assert msd(state.derive().centres, data) <= 1.02 * single
