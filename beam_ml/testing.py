"""Synthetic data with known structure, and plain reference learners to compare against.

For beam_ml's own tests and benchmarks and for users' pipeline tests: data that behaves
like a real data set of its kind, generated in memory from a seed, and the simplest
honest baselines for it, written independently of beam_ml's states.

Also a pytest plugin (``pytest_plugins = ["beam_ml.testing"]``) giving the
``fake_checkpoint_dir`` fixture; its asserts carry their own messages, so pytest need
not rewrite them (PYTEST_DONT_REWRITE: no warning when a test imported it first).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Ratings",
    "synthetic_ratings",
    "bias_baseline",
    "sgd_matrix_factorization",
    # for users' pipeline tests (issue 21): data with known answers per algorithm,
    "PCAData",
    "pca_data",
    "Blobs",
    "blobs",
    "LinearData",
    "linear_data",
    "TopicDocuments",
    "topic_documents",
    "SeasonalSeries",
    "seasonal_series",
    # closeness at each family's merge tolerance,
    "MERGE_TOLERANCES",
    "assert_state_close",
    "assert_model_close",
    "agreement_metric",
    # a TestStream recipe for snapshot assertions, and checkpoints to test against.
    "snapshot_stream",
    "streaming_options",
    "streamed_snapshots",
    "fake_checkpoint",
    "fake_checkpoint_dir",
]


@dataclass(frozen=True)
class Ratings:
    """Ratings of items by users, in the order they arrive (shuffled).

    Attributes
    ----------
    users, items : ndarray of shape (n,), int64
        Who rated what; each (user, item) pair occurs once.
    ratings : ndarray of shape (n,), float64
        Whole stars, 1 to 5.
    n_users, n_items : int
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    n_users: int
    n_items: int

    def one_hot(self, rows: slice = slice(None)) -> sp.csr_matrix:
        """FM features: user ``u`` is column ``u``, item ``i`` column ``n_users + i``."""
        users, items = self.users[rows], self.items[rows]
        n = users.shape[0]
        columns = np.column_stack([users, self.n_users + items]).ravel()
        return sp.csr_matrix(
            (np.ones(2 * n, np.float32), columns, np.arange(0, 2 * n + 1, 2)),
            shape=(n, self.n_users + self.n_items),
        )


def synthetic_ratings(
    n: int = 100_000, n_users: int = 943, n_items: int = 1682, rank: int = 5, seed: int = 0
) -> Ratings:
    """Ratings that behave like a public 100k movie-ratings set.

    Power-law activity of users and popularity of items (Pareto weights), user and item
    biases (popular items rated higher), a low-rank taste ``<p_u, q_i>`` and noise, rounded
    to whole stars and clipped to 1-5. With the defaults: a global-mean predictor scores
    RMSE ~1.16 on held-out ratings, a user + item bias model ~0.95, a biased matrix
    factorization ~0.91: the taste is there to be learnt, but is a small part of the
    variance, as in real ratings.
    """
    rng = np.random.default_rng(seed)
    activity = rng.pareto(1.2, n_users) + 1
    popularity = rng.pareto(0.9, n_items) + 1
    activity, popularity = activity / activity.sum(), popularity / popularity.sum()
    pairs = np.zeros(0, dtype=np.int64)
    while pairs.shape[0] < n:  # distinct pairs, drawn by activity x popularity
        draw = 2 * (n - pairs.shape[0])
        new = rng.choice(n_users, draw, p=activity) * n_items + rng.choice(
            n_items, draw, p=popularity
        )
        merged = np.concatenate([pairs, new])
        _, first = np.unique(merged, return_index=True)
        pairs = merged[np.sort(first)][:n]  # keep arrival order, drop repeats
    pairs = pairs[rng.permutation(n)]
    users, items = pairs // n_items, pairs % n_items
    user_bias = rng.normal(0, 0.45, n_users)
    item_bias = rng.normal(0, 0.5, n_items) + 0.25 * np.log(popularity * n_items)
    p, q = rng.normal(0, 1, (n_users, rank)), rng.normal(0, 1, (n_items, rank))
    taste = (p[users] * q[items]).sum(1) * (0.55 / np.sqrt(rank))
    raw = 3.55 + user_bias[users] + item_bias[items] + taste + rng.normal(0, 0.85, n)
    return Ratings(users, items, np.clip(np.rint(raw), 1, 5), n_users, n_items)


Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def bias_baseline(ratings: Ratings, rows: slice, reg: float = 5.0, sweeps: int = 20) -> Predictor:
    """``mean + b_user + b_item`` by ridge regression (alternating exact sweeps)."""
    u, i, y = ratings.users[rows], ratings.items[rows], ratings.ratings[rows]
    mean = y.mean()
    b_user, b_item = np.zeros(ratings.n_users), np.zeros(ratings.n_items)
    for _ in range(sweeps):
        residual = y - mean - b_item[i]
        b_user = np.bincount(u, residual, ratings.n_users) / (
            np.bincount(u, minlength=ratings.n_users) + reg
        )
        residual = y - mean - b_user[u]
        b_item = np.bincount(i, residual, ratings.n_items) / (
            np.bincount(i, minlength=ratings.n_items) + reg
        )
    return lambda users, items: mean + b_user[users] + b_item[items]


def sgd_matrix_factorization(
    ratings: Ratings,
    rows: slice,
    k: int = 8,
    lr: float = 0.01,
    reg: float = 0.02,
    epochs: int = 20,
    seed: int = 0,
) -> Predictor:
    """Biased matrix factorization by plain per-example SGD (Funk / Koren), in numpy.

    ``mean + b_u + b_i + <p_u, q_i>``, one rating at a time, each step
    ``x += lr (error * gradient - reg * x)``: the textbook baseline of rating prediction.
    """
    rng = np.random.default_rng(seed)
    u, i, y = ratings.users[rows], ratings.items[rows], ratings.ratings[rows]
    mean = y.mean()
    b_user, b_item = np.zeros(ratings.n_users), np.zeros(ratings.n_items)
    p = rng.normal(0, 0.1, (ratings.n_users, k))
    q = rng.normal(0, 0.1, (ratings.n_items, k))
    for _ in range(epochs):
        for a, b, r in zip(u.tolist(), i.tolist(), y.tolist(), strict=True):
            pa, qb = p[a], q[b]
            error = r - (mean + b_user[a] + b_item[b] + pa @ qb)
            b_user[a] += lr * (error - reg * b_user[a])
            b_item[b] += lr * (error - reg * b_item[b])
            p[a] = pa + lr * (error * qb - reg * pa)
            q[b] = qb + lr * (error * pa - reg * qb)
    return lambda users, items: mean + b_user[users] + b_item[items] + (p[users] * q[items]).sum(1)


# --- data with known answers, one generator per algorithm (issue 21) ------------------------
# For users' pipeline tests: each returns the data and the truth it was drawn from, so a
# test asserts what a model learnt, not what it happened to give yesterday.
def _positive_largest(rows: np.ndarray) -> np.ndarray:
    """Each row's sign chosen so its largest-magnitude entry is positive (as PCA models)."""
    signs = np.sign(rows[np.arange(len(rows)), np.argmax(np.abs(rows), axis=1)])
    return rows * np.where(signs == 0, 1.0, signs)[:, None]


@dataclass(frozen=True)
class PCAData:
    """Rows with ``k`` known principal directions plus isotropic noise.

    Attributes
    ----------
    rows : ndarray of shape (n, n_features)
    components : ndarray of shape (k, n_features)
        Orthonormal, largest variance first, signed as :class:`~beam_ml.PCAModel` signs
        them (largest-magnitude entry positive).
    variances : ndarray of shape (k,)
        The true eigenvalues of the covariance along ``components`` (noise included).
    mean : ndarray of shape (n_features,)
    noise : float
        The standard deviation of the isotropic noise (every other eigenvalue is noise²).
    """

    rows: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    mean: np.ndarray
    noise: float

    @property
    def covariance(self) -> np.ndarray:
        """The population covariance the rows are drawn from."""
        d = self.mean.shape[0]
        signal = self.variances - self.noise**2
        return (self.components.T * signal) @ self.components + self.noise**2 * np.eye(d)


def pca_data(
    n: int = 2000,
    n_features: int = 12,
    variances: tuple[float, ...] = (25.0, 9.0, 4.0, 1.0),
    noise: float = 0.1,
    seed: int = 0,
) -> PCAData:
    """Gaussian rows whose covariance has known principal directions and eigenvalues."""
    rng = np.random.default_rng(seed)
    k = len(variances)
    if not 0 < k <= n_features:
        raise ValueError(
            f"pca_data: {k} variances for {n_features} features; give 1 to {n_features}."
        )
    basis, _ = np.linalg.qr(rng.normal(size=(n_features, k)))
    components = _positive_largest(basis.T)
    mean = rng.normal(0.0, 3.0, n_features)
    signal = rng.normal(size=(n, k)) * np.sqrt(np.asarray(variances, dtype=float))
    rows = signal @ components + noise * rng.normal(size=(n, n_features)) + mean
    return PCAData(rows, components, np.asarray(variances, dtype=float) + noise**2, mean, noise)


@dataclass(frozen=True)
class Blobs:
    """Well-separated Gaussian clusters with known centres.

    Attributes
    ----------
    rows : ndarray of shape (n, n_features)
    labels : ndarray of shape (n,), int64
        The centre each row was drawn around.
    centres : ndarray of shape (k, n_features)
    spread : float
        The standard deviation of each coordinate around its centre.
    """

    rows: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    spread: float


def blobs(
    n: int = 3000,
    k: int = 3,
    n_features: int = 5,
    separation: float = 20.0,
    spread: float = 1.0,
    seed: int = 0,
) -> Blobs:
    """``k`` clusters whose centres are at least ``separation`` apart (in ``spread`` units
    the clusters never overlap with the defaults: a k-means model must find the centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, n_features))
    if k > 1:
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        centres *= separation / gaps[np.triu_indices(k, 1)].min()
    labels = rng.integers(0, k, n)
    return Blobs(
        centres[labels] + spread * rng.normal(size=(n, n_features)), labels, centres, spread
    )


@dataclass(frozen=True)
class LinearData:
    """Labelled rows from a known linear model.

    Attributes
    ----------
    block : Block
        Features (n, n_features) and labels: ``x @ weights + bias + noise`` (regressor),
        or 0/1 drawn with probability ``sigmoid(x @ weights + bias)`` (binary_classifier).
    weights : ndarray of shape (n_features,)
    bias : float
    noise : float
    predictor_type : str
    """

    block: Any
    weights: np.ndarray
    bias: float
    noise: float
    predictor_type: str


def linear_data(
    n: int = 2000,
    n_features: int = 8,
    predictor_type: str = "regressor",
    weights: np.ndarray | None = None,
    bias: float = 0.5,
    noise: float = 0.1,
    seed: int = 0,
) -> LinearData:
    """Rows for the linear learner (and factorization machines) with known weights."""
    from beam_ml.core.block import Block

    if predictor_type not in ("regressor", "binary_classifier"):
        raise ValueError(
            f"linear_data: predictor_type must be 'regressor' or 'binary_classifier'; got {predictor_type!r}."
        )
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.0, n_features) if weights is None else np.asarray(weights, float)
    x = rng.normal(size=(n, w.shape[0]))
    score = x @ w + bias
    if predictor_type == "regressor":
        labels = score + noise * rng.normal(size=n)
    else:
        labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-score))).astype(np.float64)
    return LinearData(Block(x, labels), w, float(bias), float(noise), predictor_type)


@dataclass(frozen=True)
class TopicDocuments:
    """Word counts of documents drawn from known topics.

    Attributes
    ----------
    counts : ndarray of shape (n, vocabulary), float64
    topics : ndarray of shape (n_topics, vocabulary)
        Each topic's word distribution: uniform over its own ``words_per_topic`` words.
    mixtures : ndarray of shape (n, n_topics)
        Each document's topic proportions (sparse Dirichlet: mostly one topic).
    """

    counts: np.ndarray
    topics: np.ndarray
    mixtures: np.ndarray

    @property
    def dominant_topic(self) -> np.ndarray:
        return np.argmax(self.mixtures, axis=1)


def topic_documents(
    n: int = 1000,
    n_topics: int = 3,
    words_per_topic: int = 10,
    words_per_document: int = 20,
    concentration: float = 0.1,
    seed: int = 0,
) -> TopicDocuments:
    """Bag-of-words documents for the NTM: each topic owns its own words, so a topic
    model's top words per topic should be one topic's block of word ids."""
    rng = np.random.default_rng(seed)
    vocabulary = n_topics * words_per_topic
    topics = np.kron(np.eye(n_topics), np.full(words_per_topic, 1.0 / words_per_topic))
    mixtures = rng.dirichlet(np.full(n_topics, concentration), n)
    words = mixtures @ topics
    counts = rng.multinomial(words_per_document, words / words.sum(1, keepdims=True))
    return TopicDocuments(counts.astype(np.float64).reshape(n, vocabulary), topics, mixtures)


_FREQ_UNITS = {"min": "m", "H": "h", "D": "D", "W": "W", "M": "M"}


@dataclass(frozen=True)
class SeasonalSeries:
    """Time series with a known seasonal pattern, and their noise-free continuation.

    Attributes
    ----------
    block : SeriesBlock
        The observed series (``length`` values each).
    pattern : ndarray of shape (period,)
        The multiplicative season: series ``i`` at season position ``s`` is
        ``levels[i] * pattern[s]`` times noise; position 0 is the first of ``period``
        steps counted from 2000-01-01 (for 'M' and period 12: January).
    levels : ndarray of shape (n_series,)
    future : ndarray of shape (n_series, prediction_length)
        The expected (noise-free) next values of each series: what a forecast should give.
    """

    block: Any
    pattern: np.ndarray
    levels: np.ndarray
    future: np.ndarray


def seasonal_series(
    n_series: int = 20,
    length: int = 96,
    period: int = 12,
    freq: str = "M",
    amplitude: float = 0.4,
    noise: float = 0.05,
    prediction_length: int = 12,
    seed: int = 0,
) -> SeasonalSeries:
    """Series for DeepAR: a level per series times a sine season, multiplicative noise,
    starting at different times (so the season is not aligned with the series' start)."""
    from beam_ml.core.series import SeriesBlock

    if freq not in _FREQ_UNITS:
        raise ValueError(f"seasonal_series: freq must be one of {list(_FREQ_UNITS)}; got {freq!r}.")
    rng = np.random.default_rng(seed)
    pattern = 1.0 + amplitude * np.sin(2 * np.pi * np.arange(period) / period)
    levels = rng.uniform(10.0, 100.0, n_series)
    shifts = rng.integers(0, period, n_series)
    steps = shifts[:, None] + np.arange(length + prediction_length)[None, :]
    expected = levels[:, None] * pattern[steps % period]
    observed = expected[:, :length] * (1.0 + noise * rng.normal(size=(n_series, length)))
    unit = _FREQ_UNITS[freq]
    base = np.datetime64("2000-01", "M") if unit == "M" else np.datetime64("2000-01-01T00:00")
    starts = (base + shifts.astype(f"timedelta64[{unit}]")).astype("datetime64[s]")
    offsets = np.arange(0, (n_series + 1) * length, length, dtype=np.int64)
    block = SeriesBlock(observed.ravel(), offsets, starts, freq)
    return SeasonalSeries(block, pattern, levels, expected[:, length:])


# --- closeness at each family's merge tolerance ---------------------------------------------
#: How far apart two states of the same rows may be when the rows were split, ordered or
#: merged differently: the tolerances the contract suite (tests/contract) holds every
#: family to, and so what a user's test of a pipeline (more workers, other blocks) may
#: expect. Per family:
#:
#: - pca, series_stats: exact statistics, relative tolerance (float rounding); PCA's
#:   sketch mode: within the two sketches' own shrinkage bounds;
#: - vocabulary: each count within the sketches' own stated error (the value is slack);
#: - kmeans: derived centres, absolute, in the data's units (blobs of unit spread);
#: - factorization_machines, linear_learner: the models' metric on held-out rows, within
#:   this fraction of the labels' standard deviation (RMSE) or absolutely (classifiers:
#:   accuracy, cross-entropy) — SGD replicas averaged take another path than one pass;
#: - ntm: perplexities within this fraction of the smaller one;
#: - deepar: forecast RMSE within this fraction of the targets' standard deviation.
MERGE_TOLERANCES: dict[str, float] = {
    "pca": 1e-9,
    "series_stats": 1e-9,
    "vocabulary": 0.0,
    "kmeans": 0.5,
    "factorization_machines": 0.05,
    "linear_learner": 0.05,
    "ntm": 0.75,
    "deepar": 0.1,
}
_SGD_FAMILIES = ("factorization_machines", "linear_learner", "ntm", "deepar")


def _tolerance(family: str, given: float | None) -> float:
    if given is not None:
        return given
    if family not in MERGE_TOLERANCES:
        raise ValueError(f"no merge tolerance known for family {family!r}; pass tolerance=.")
    return MERGE_TOLERANCES[family]


def assert_state_close(a: Any, b: Any, data: Any = None, *, tolerance: float | None = None) -> None:
    """Assert that two training states hold the same knowledge, at the family's merge
    tolerance (:data:`MERGE_TOLERANCES`, or ``tolerance``).

    ``a`` and ``b`` must be of one family and config and have seen the same number of
    rows. Statistics states compare their statistics; SGD-trained ones (factorization
    machines, linear learner, NTM, DeepAR) compare their derived models on ``data``,
    held-out rows (a labelled Block, counts, a SeriesBlock), which they then need.
    """
    from beam_ml.core.errors import IncompatibleStateError

    try:
        a.check_mergeable(b)
    except IncompatibleStateError as exc:
        raise AssertionError(str(exc)) from None
    assert a.n_seen == b.n_seen, f"n_seen differs: {a.n_seen} vs {b.n_seen}"
    family = a.FAMILY
    tol = _tolerance(family, tolerance)
    if family == "pca" and not a.config.exact:
        _assert_sketches_close(a, b)
    elif family == "kmeans":
        np.testing.assert_allclose(a.weights.sum(), b.weights.sum(), rtol=1e-9)
        assert_model_close(a.derive(), b.derive(), tolerance=tol)
    elif family == "vocabulary":
        _assert_vocabularies_close(a, b, tol)
    elif family in _SGD_FAMILIES:
        if data is None:
            raise ValueError(
                f"assert_state_close: {family} states are compared by their models on held-out "
                "rows; pass data=."
            )
        if family == "linear_learner":
            _assert_linear_statistics_close(a, b)
            a, b = (_packed_by_loss(s) for s in (a, b))
        else:
            a, b = a.derive(), b.derive()
        assert_model_close(a, b, data, tolerance=tol)
    else:
        _assert_payloads_close(a, b, tol)


def _assert_payloads_close(a: Any, b: Any, rtol: float) -> None:
    """Exact statistics: every payload number equal up to ``rtol`` (of the array's scale)."""
    (meta_a, arrays_a), (meta_b, arrays_b) = a._payload(), b._payload()
    assert arrays_a.keys() == arrays_b.keys(), (sorted(arrays_a), sorted(arrays_b))
    for name, value in arrays_a.items():
        other = arrays_b[name]
        if value.dtype.kind in "fc":
            scale = float(np.abs(value).max(initial=0.0))
            np.testing.assert_allclose(value, other, rtol=rtol, atol=rtol * scale, err_msg=name)
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)
    for name, value in meta_a.items():
        if isinstance(value, float):
            np.testing.assert_allclose(value, meta_b[name], rtol=rtol, err_msg=name)


def _assert_sketches_close(a: Any, b: Any) -> None:
    """Two Frequent Directions sketches of the same data differ by at most their bounds."""
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)
    gap = np.linalg.norm(a.sketch.T @ a.sketch - b.sketch.T @ b.sketch, 2)
    assert gap <= a.shrinkage + b.shrinkage + 1e-6 * a.trace, (gap, a.shrinkage, b.shrinkage)


def _assert_vocabularies_close(a: Any, b: Any, slack: float) -> None:
    """Two sketches of the same tokens: each count within its own error of the truth, so
    within the larger error of each other; each error within the stated bound."""
    assert a.n_tokens == b.n_tokens, (a.n_tokens, b.n_tokens)
    for s in (a, b):
        assert 0 <= s.error <= (s.n_tokens - s.counts.sum()) / (s.config.sketch_size + 1)
    words = sorted(set(a.words.to_pylist()) | set(b.words.to_pylist()))
    gap = np.abs(a.count_of(words) - b.count_of(words))
    assert gap.max(initial=0) <= max(a.error, b.error) + slack, (gap.max(), a.error, b.error)


def _assert_linear_statistics_close(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(a.class_counts, b.class_counts)
    if a.has_exact:
        np.testing.assert_allclose(a.exact_mean, b.exact_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(a.exact_scatter, b.exact_scatter, rtol=1e-9, atol=1e-7)


def _packed_by_loss(state: Any) -> Any:
    """The linear learner's packed model of lowest loss: what SGD merges approximate."""
    return state.derive(solver="packed", binary_classifier_model_selection_criteria="loss_function")


def agreement_metric(model: Any) -> str:
    """The metric two models of an SGD family are compared on (and tuning ranks by)."""
    family = model.FAMILY
    if family == "factorization_machines":
        return "binary_classification_accuracy" if model.classifier else "rmse"
    if family == "linear_learner":
        return {
            "regressor": "rmse",
            "binary_classifier": "binary_classification_cross_entropy",
            "multiclass_classifier": "multiclass_cross_entropy",
        }[model.predictor_type]
    if family == "ntm":
        return "perplexity"
    if family == "deepar":
        return "RMSE"
    raise ValueError(f"no agreement metric for {family} models.")


def _metric_scale(metric: str, data: Any, scores: tuple[float, float]) -> float:
    """What a metric gap is a fraction of: the labels' or targets' spread for errors in
    label units, the smaller score for perplexity, 1 for accuracies and cross-entropies."""
    if metric in ("rmse", "mae"):
        return float(np.std(data.labels))
    if metric == "RMSE":
        return float(np.nanstd(data.values))
    if metric == "perplexity":
        return min(scores)
    return 1.0


def assert_model_close(
    a: Any, b: Any, data: Any = None, *, tolerance: float | None = None, metric: str | None = None
) -> None:
    """Assert that two models of one family agree, at its merge tolerance.

    PCA: the same subspace (largest principal angle within the models' certified
    ``angle_bound``\\s) and explained variances (within their ``error_bound``\\s); k-means:
    centres matched one to one, within ``tolerance`` in every coordinate; the other
    families: ``metric`` (default :func:`agreement_metric`) on ``data`` within
    ``tolerance`` of its scale (see :data:`MERGE_TOLERANCES`).
    """
    assert type(a) is type(b), f"a {type(a).__name__} and a {type(b).__name__}"
    family = a.FAMILY
    tol = _tolerance(family, tolerance)
    if family == "pca":
        assert a.components.shape == b.components.shape, (a.components.shape, b.components.shape)
        cosines = np.linalg.svd(a.components @ b.components.T, compute_uv=False)
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
        assert angle <= a.angle_bound + b.angle_bound + 1e-3, (angle, a.angle_bound, b.angle_bound)
        slack = a.error_bound + b.error_bound + 1e-6 * a.explained_variance.max()
        gap = np.abs(a.explained_variance - b.explained_variance).max()
        assert gap <= slack, (gap, slack)
        return
    if family == "kmeans":
        from scipy.optimize import linear_sum_assignment

        assert a.centres.shape == b.centres.shape, (a.centres.shape, b.centres.shape)
        cost = np.abs(a.centres[:, None] - b.centres[None]).max(axis=2)
        rows, cols = linear_sum_assignment(cost)
        worst = float(cost[rows, cols].max())
        assert worst <= tol, f"k-means centres differ by {worst:.3g} (tolerance {tol})"
        return
    if data is None:
        raise ValueError(f"assert_model_close: {family} models are compared on rows; pass data=.")
    metric = metric or agreement_metric(a)
    scores = (a.score(metric, data), b.score(metric, data))
    allowed = tol * _metric_scale(metric, data, scores)
    assert abs(scores[0] - scores[1]) <= allowed, (metric, scores, allowed)


# --- a TestStream recipe for snapshot assertions ---------------------------------------------
def snapshot_stream(elements: Sequence[Any]) -> Any:
    """A Beam ``TestStream`` that emits each block (or ``(model_id, block)`` pair) on its
    own, then ends (the watermark to infinity, so the final snapshot comes)."""
    from apache_beam.testing.test_stream import TestStream

    stream = TestStream()
    for element in elements:
        stream = stream.add_elements([element])
    return stream.advance_watermark_to_infinity()


def streaming_options(*argv: str) -> Any:
    """beam_ml's local pipeline options (:func:`beam_ml.pipeline_options`), streaming."""
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_ml.core.runner import pipeline_options

    options = pipeline_options(list(argv))
    options.view_as(StandardOptions).streaming = True
    return options


def _record_snapshot(element: Any, directory: str) -> Any:
    """Write a snapshot's bytes (never a pickle) named by arrival time and key."""
    import time
    import uuid

    key, state = element if isinstance(element, tuple) else ("", element)
    name = f"{time.monotonic_ns():020d}-{str(key).encode().hex()}-{uuid.uuid4().hex[:8]}.state"
    with open(os.path.join(directory, name), "wb") as handle:
        handle.write(state.to_bytes())
    return element


def streamed_snapshots(
    config: Any,
    elements: Sequence[Any],
    directory: str,
    *,
    snapshot_every_rows: int,
    keyed: bool = False,
) -> list[Any]:
    """The snapshots :class:`~beam_ml.transforms.stream.TrainStreaming` emits over
    ``elements`` fed one by one through a TestStream, in order: states, or
    ``(model_id, state)`` pairs when ``keyed``. ``directory`` (e.g. pytest's ``tmp_path``)
    receives them: the last snapshot comes at the end of the global window, after an
    ``assert_that`` inside the pipeline has checked its own, so they are asserted after
    the run. Snapshots come every ``snapshot_every_rows`` rows and at the end.
    """
    import apache_beam as beam

    from beam_ml.core.state import load_state
    from beam_ml.transforms.stream import TrainStreaming

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with beam.Pipeline(options=streaming_options()) as p:
        _ = (
            p
            | "Stream" >> snapshot_stream(elements)
            | TrainStreaming(
                config,
                snapshot_every_seconds=None,
                snapshot_every_rows=snapshot_every_rows,
                keyed=keyed,
            )
            | "Record" >> beam.Map(_record_snapshot, directory)
        )
    found = []
    for name in sorted(n for n in os.listdir(directory) if n.endswith(".state")):
        with open(os.path.join(directory, name), "rb") as handle:
            state = load_state(handle.read())
        key = bytes.fromhex(name.split("-")[1]).decode()
        found.append((key, state) if keyed else state)
    return found


# --- a fake checkpoint directory -------------------------------------------------------------
def fake_checkpoint(
    directory: str | os.PathLike,
    states: Any = None,
    *,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint directory as ``beam-ml train`` would, and return its path.

    ``states``: one state, or several written in turn (the last is current and all are
    kept in the manifest's ``history``, as the snapshots of continuous training); by
    default three snapshots of a 2-component PCA state (``feature_dim=12``) over the first
    100, 200 then 300 rows of ``pca_data(n=300)``. ``extra`` goes into the manifest (default
    as the command writes it: no derive defaults, ``trained_on`` 'beam_ml.testing').
    """
    from beam_ml.core.state import TrainingState
    from beam_ml.io.checkpoints import write_checkpoint

    if states is None:
        from beam_ml.algorithms.pca import PCAConfig, PCAState

        rows = pca_data(n=300).rows
        config = PCAConfig(num_components=2, feature_dim=rows.shape[1])  # as the command fills it
        states = [PCAState(config).update(rows[:n]) for n in (100, 200, 300)]
    elif isinstance(states, TrainingState):
        states = [states]
    path = os.fspath(directory)
    extra = {"derive_defaults": {}, "trained_on": "beam_ml.testing"} if extra is None else extra
    for state in states:
        write_checkpoint(path, state, extra, keep=len(states))
    return path


try:  # the fixture, for `pytest_plugins = ["beam_ml.testing"]`; pytest is optional
    import pytest as _pytest
except ImportError:  # pragma: no cover - only without pytest
    _pytest = None

if _pytest is not None:

    @_pytest.fixture
    def fake_checkpoint_dir(tmp_path: Any) -> str:
        """A checkpoint directory of :func:`fake_checkpoint`'s default PCA state (three
        snapshots kept), in the test's own ``tmp_path``."""
        return fake_checkpoint(tmp_path / "checkpoint")
