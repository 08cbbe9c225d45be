"""K-Means in one pass: a mergeable weighted summary, then any k from it.

The state is a *summary*: at most ``k * extra_center_factor`` weighted centres, each the
exact mean of the rows it absorbed (SageMaker: the state "acts like a core set, and can
be used to solve k-means for any k <= k_max without retraining", Liberty et al. 2020).

Update, per block (vectorized, no loop over rows):

1. *Oversample* (k-means|| style, Bahmani et al. 2012): pick new candidate centres
   among the block's rows with probability proportional to their squared distance to
   the current centres, in two rounds; the first block starts uniformly.
2. *Absorb*: assign every row to its nearest centre (old or new; a stream's few new
   candidates per block hold only their own row until the next block) and move each
   centre to the exact weighted mean of what it holds.
3. *Reduce*: when the summary exceeds its budget, merge centres back to 7/8 of it
   (the cheapest Ward pairs, or weighted k-means on the centres when many must go);
   merged centres are weighted means of their members, so the summary stays a set of
   exact means, and the next few blocks' candidates fit without a reduce.

Merge = union, then reduce. Because every centre is the mean of its rows,
``cost(data, C) <= cost(summary, C) + cost(data, summary)`` for any centres ``C``, and
``derive`` minimises the first term by weighted k-means (several seeded trials of
k-means++ and Lloyd) on the summary alone. Decay (``half_life_time_size``) halves the
weight of what was seen every that many rows, so a drifting stream is followed.

Randomness comes from generators seeded by ``(seed, rows seen)``: the state holds no
RNG, and the same data in the same order gives the same state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from beam_ml.core.block import Block, MatrixSpec
from beam_ml.core.constraints import Constraints, Hidden, Interval, Options, validate_parameters
from beam_ml.core.errors import IncompatibleStateError, NotEnoughDataError
from beam_ml.core.numerics import dense_chunks
from beam_ml.core.plan import ResumePlan
from beam_ml.core.state import Model, TrainingState, register
from beam_ml.core.validation import check_choice, check_int

__all__ = ["KMeansConfig", "KMeansState", "KMeansModel"]

_INIT = ("kmeans++", "random")
# k-means|| rounds of candidate sampling per block, budget / rounds candidates each.
_OVERSAMPLE_ROUNDS = 2
_REDUCE_STEPS = 10
# Fewer new candidates than this per block (a stream's steady state): one round, and
# they join the next block's product instead of a product of their own.
_FEW_CANDIDATES = 8


@dataclass(frozen=True)
class KMeansConfig:
    """What must match for two k-means states to merge (SageMaker hyperparameter names).

    Parameters
    ----------
    k : int
        The largest number of clusters a model will be derived for (k_max).
    feature_dim : int, optional
        Number of features; inferred from the first block when omitted.
    extra_center_factor : int | str
        The summary keeps at most k * extra_center_factor weighted centres. 'auto'
        (SageMaker's default) grows with the dimension, from 10 (d <= 320) to 40: in
        high dimension the squared error falls slowly with more centres, so the summary
        needs more of them to keep k-means on it within ~1% of k-means on the data.
    half_life_time_size : int
        Rows after which the weight of what was seen halves (0: no decay).
    init_method : {'kmeans++', 'random'}
        How new summary centres are drawn from a block: by squared distance to the
        current centres (k-means++ style) or uniformly.
    seed : int
        Seeds every random choice, so training is reproducible.
    """

    k: int
    feature_dim: int | None = None
    extra_center_factor: int | str = "auto"
    half_life_time_size: int = 0
    init_method: str = "kmeans++"
    seed: int = 0

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "k": [Interval(int, 1, None)],
        "feature_dim": [Interval(int, 1, None), None],
        "extra_center_factor": [Hidden(Options(("auto",))), Interval(int, 1, None)],
        "half_life_time_size": [Interval(int, 0, None)],
        "init_method": [Options(_INIT)],
        "seed": [Interval(int, 0, None)],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)

    def budget(self, d: int) -> int:
        """The number of weighted centres the summary keeps for ``d`` features."""
        factor = self.extra_center_factor
        if factor == "auto":
            factor = int(np.clip(np.ceil(d / 32), 10, 40))
        return self.k * max(factor, 2)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, m) squared Euclidean distances through one matrix product."""
    d2 = (
        np.einsum("ij,ij->i", points, points)[:, None]
        - 2.0 * (points @ centres.T)
        + np.einsum("ij,ij->i", centres, centres)[None, :]
    )
    return np.maximum(d2, 0.0, out=d2)


class _Rows:
    """Rows prepared once for every distance computation of an update: ``[x, 1]`` in
    float32 and ``||x||^2``.

    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` and the first term does not change the
    argmin, so one product of [x, 1] with [-2c, ||c||^2] gives the scores and a single
    pass finds the minimum. float32 halves the memory traffic that dominates here (the
    means themselves are accumulated in float64).
    """

    def __init__(self, points: np.ndarray):
        self.augmented = np.empty((points.shape[0], points.shape[1] + 1), dtype=np.float32)
        self.augmented[:, :-1] = points
        self.augmented[:, -1] = 1.0
        x = self.augmented[:, :-1]
        self.squared_norms = np.einsum("ij,ij->i", x, x).astype(np.float64)

    def nearest(self, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of and squared distance to the nearest of ``centres``, for each row."""
        c32 = np.empty((centres.shape[0], centres.shape[1] + 1), dtype=np.float32)
        c32[:, :-1] = -2.0 * centres
        c32[:, -1] = np.einsum("ij,ij->i", centres, centres)
        rows = np.arange(len(self.augmented))
        if len(centres) < 16:  # a few new candidates: OpenBLAS is 2-3x faster this way round
            scores = c32 @ self.augmented.T  # (m, n)
            labels = np.argmin(scores, axis=0)
            chosen = scores.ravel()[labels * scores.shape[1] + rows]
        else:
            scores = self.augmented @ c32.T  # (n, m)
            labels = np.argmin(scores, axis=1)
            # One gather from the flat scores (take_along_axis builds broadcast indices).
            chosen = scores.ravel()[rows * scores.shape[1] + labels]
        nearest = np.add(chosen, self.squared_norms)
        return labels, np.maximum(nearest, 0.0, out=nearest)


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for each point."""
    return _Rows(points).nearest(centres)


def _weighted_means(
    points: np.ndarray, weights: np.ndarray | None, labels: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per label: total weight (m,) and weighted sum (m, d) in float64, via one product
    with the (m, n) one-hot matrix (sparse unless it is small). ``weights=None``: ones."""
    n = len(labels)
    mass = np.bincount(labels, weights=weights, minlength=m).astype(np.float64)
    values = np.ones(n) if weights is None else weights
    if m * n <= 65_536:  # the summary's own k-means: a dense product is cheapest
        onehot = np.zeros((m, n))
        onehot[labels, np.arange(n)] = values
    else:
        onehot = sp.csc_matrix((values, labels, np.arange(n + 1)), shape=(m, n))
    return mass, onehot @ points


def _pairwise(points: np.ndarray) -> np.ndarray | None:
    """All squared distances among a small summary (one product beats k passes)."""
    return _squared_distances(points, points) if len(points) <= 4096 else None


def _kmeans_pp(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    pairwise: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of k seeds by weighted k-means++ (Arthur & Vassilvitskii 2007)."""

    def distances_to(index: int) -> np.ndarray:
        if pairwise is not None:
            return pairwise[index]
        return _squared_distances(points, points[index : index + 1])[:, 0]

    chosen = [int(rng.choice(len(points), p=weights / weights.sum()))]
    closest = distances_to(chosen[0]).copy()
    for _ in range(1, k):
        mass = weights * closest
        total = mass.sum()
        if total <= 0:  # fewer distinct points than seeds: no more spread to gain
            break
        index = min(int(np.searchsorted(np.cumsum(mass), rng.random() * total)), len(points) - 1)
        chosen.append(index)
        np.minimum(closest, distances_to(index), out=closest)
    return np.asarray(chosen)


def _lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centres: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted Lloyd iterations; returns centres, labels and the weighted cost."""
    scale = float(np.average(np.einsum("ij,ij->i", points, points), weights=weights)) or 1.0
    previous = np.inf
    for _ in range(max(max_iter, 1)):
        d2 = _squared_distances(points, centres)
        labels = np.argmin(d2, axis=1)
        cost = float(weights @ d2[np.arange(len(points)), labels])
        mass, sums = _weighted_means(points, weights, labels, len(centres))
        filled = mass > 0
        centres = centres.copy()
        centres[filled] = sums[filled] / mass[filled, None]
        if previous - cost <= tol * scale * weights.sum():
            break
        previous = cost
    d2 = _squared_distances(points, centres)
    labels = np.argmin(d2, axis=1)
    return centres, labels, float(weights @ d2[np.arange(len(points)), labels])


def _cluster(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    init: str = "kmeans++",
    max_iter: int = 300,
    tol: float = 1e-4,
    trials: int = 1,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Best of ``trials`` weighted k-means runs: centres, labels, cost."""
    best = None
    pairwise = _pairwise(points) if init == "kmeans++" else None
    for _ in range(trials):
        if init == "kmeans++":
            seeds = _kmeans_pp(points, weights, k, rng, pairwise)
        else:
            seeds = rng.choice(len(points), size=k, replace=False, p=weights / weights.sum())
        result = _lloyd(points, weights, points[seeds], max_iter, tol)
        if best is None or result[2] < best[2]:
            best = result
    return best


def _cheapest_first(cost: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """Indices of ``cost`` in stable ascending order, in two parts: a sorted prefix of at
    least ``count`` (all ties included), then the sorted rest, only if it is reached. A
    few merges read only the cheapest pairs; sorting all m^2 / 2 was a fifth of an
    update."""
    if count >= len(cost):
        yield np.argsort(cost, kind="stable")
        return
    bound = np.partition(cost, count)[count]
    for part in (np.flatnonzero(cost <= bound), np.flatnonzero(cost > bound)):
        yield part[np.argsort(cost[part], kind="stable")]


def _ward_pairs(centres: np.ndarray, weights: np.ndarray, merges: int) -> np.ndarray:
    """Labels that merge ``merges`` disjoint pairs of centres, cheapest (Ward) first."""
    m = len(centres)
    w = (
        weights[:, None]
        * weights[None, :]
        / np.maximum(weights[:, None] + weights[None, :], 1e-300)
    )
    rows, cols = np.triu_indices(m, k=1)
    cost = (w * _squared_distances(centres, centres))[rows, cols]
    pairs = (  # ~10 x merges are read
        pair
        for part in _cheapest_first(cost, max(64, 16 * merges))
        for pair in zip(rows[part].tolist(), cols[part].tolist(), strict=True)
    )
    labels, used = np.arange(m), set()
    for i, j in pairs:
        if i not in used and j not in used:
            labels[j] = i
            used.update((i, j))
            if len(used) == 2 * merges:
                break
    # Compact the labels to 0..m-merges-1.
    return np.unique(labels, return_inverse=True)[1]


@register
class KMeansState(TrainingState):
    """A one-pass k-means summary: up to ``budget`` weighted centres (exact means).

    Attributes
    ----------
    centres : ndarray of shape (m, d), float64
        The summary's centres, m <= ``config.budget(d)``.
    weights : ndarray of shape (m,), float64
        Rows (decayed, if configured) each centre stands for.
    n : int
        Rows seen.
    """

    FAMILY = "kmeans"
    SERIAL_VERSION = 1
    CONFIG = KMeansConfig
    BLOCK_KIND = Block
    PLAN = ResumePlan(resume="continue")  # with decay, new rows weigh more than old ones

    def __init__(self, config: KMeansConfig):
        super().__init__(config)
        self.n = 0
        d = config.feature_dim
        self.centres = np.zeros((0, d)) if d is not None else None
        self.weights = np.zeros(0)

    @property
    def n_seen(self) -> int:
        return self.n

    @property
    def n_features(self) -> int | None:
        return None if self.centres is None else self.centres.shape[1]

    @property
    def input_spec(self) -> MatrixSpec | None:
        return None if self.centres is None else MatrixSpec(self.centres.shape[1])

    @property
    def _budget(self) -> int:
        return self.config.budget(self.n_features)

    def _rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.n, salt])

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> KMeansState:
        features = self._check(block).features
        if features.shape[0] == 0:
            return self
        if self.centres is None:
            self.centres = np.zeros((0, features.shape[1]))
        for chunk in dense_chunks(features, max_rows=max(4096, self._budget * 4), dtype=None):
            self._absorb_rows(chunk)
        return self

    def _decay(self, rows: int) -> None:
        if self.config.half_life_time_size:
            self.weights = self.weights * 0.5 ** (rows / self.config.half_life_time_size)

    def _absorb_rows(self, rows: np.ndarray) -> None:
        """Draw candidate centres from the block, assign every row to its nearest centre
        (old, or new unless the candidates are few), and move the centres to the exact
        weighted means.

        A block gets new candidates in proportion to its share of the weight seen
        (all of the budget for the first block, ~budget/t for the t-th of a stationary
        stream, more again after decay), as a merge-and-reduce coreset gives each new
        part its share; so the steady-state cost is one (rows x budget) product.
        """
        rng = self._rng(1)
        self._decay(rows.shape[0])
        budget, n_rows, old = self._budget, rows.shape[0], len(self.centres)
        share = n_rows / (self.weights.sum() + n_rows)
        wanted = max(1, int(np.ceil(budget * share)))
        prepared = _Rows(rows)
        if old:
            labels, closest = prepared.nearest(self.centres)
        else:
            labels, closest = np.zeros(n_rows, dtype=np.int64), np.full(n_rows, np.inf)
        picked: list[np.ndarray] = []
        rounds = 1 if wanted < _FEW_CANDIDATES else _OVERSAMPLE_ROUNDS
        for _ in range(rounds):
            uniform = self.config.init_method == "random" or not np.isfinite(closest).all()
            chosen = self._sample(closest, max(1, wanted // rounds), uniform, rng)
            if len(chosen) == 0:
                break
            first = old + sum(len(p) for p in picked)
            if old and wanted < _FEW_CANDIDATES:
                # A few candidates: each starts as its own row only; the rows near it
                # join it from the next block on (its distances come with the next
                # block's product instead of a product of their own).
                labels[chosen] = first + np.arange(len(chosen))
                closest[chosen] = 0.0
            else:
                # Incremental: only the new candidates' distances are computed.
                new_labels, new_closest = prepared.nearest(rows[chosen])
                better = new_closest < closest
                labels[better] = first + new_labels[better]
                closest[better] = new_closest[better]
            picked.append(chosen)
        centres = np.vstack([self.centres, *(rows[p] for p in picked)])
        # Each old centre keeps its weight and absorbs its rows: exact means.
        mass, sums = _weighted_means(rows, None, labels, len(centres))
        mass[:old] += self.weights
        sums[:old] += self.weights[:, None] * self.centres
        filled = mass > 0
        centres = sums[filled] / mass[filled, None]
        if wanted >= budget // 4:
            # A block that brings many new centres gets a second Lloyd step over the
            # old centres (weighted) and its rows together.
            points = np.vstack([self.centres, rows])
            weights = np.concatenate([self.weights, np.ones(n_rows)])
            labels = _nearest(points, centres)[0]
            mass, sums = _weighted_means(points, weights, labels, len(centres))
            filled = mass > 0
            centres = sums[filled] / mass[filled, None]
        self.centres, self.weights = centres, mass[filled]
        self.n += n_rows
        # Reduce to a little under the budget: the next blocks' few new centres then
        # fit without a reduce after every block.
        self._reduce(budget, rng, target=budget - budget // 8)

    @staticmethod
    def _sample(
        closest: np.ndarray, count: int, uniform: bool, rng: np.random.Generator
    ) -> np.ndarray:
        """Distinct row indices drawn uniformly or in proportion to ``closest`` (D^2)."""
        n_rows = len(closest)
        if uniform:
            return np.sort(rng.choice(n_rows, size=min(count, n_rows), replace=False))
        # Inverse CDF on the running sum: rng.choice(p=...) normalises and checks p first,
        # half of this step's time.
        cumulative = np.cumsum(closest)
        total = cumulative[-1]
        if not total > 0:
            return np.zeros(0, dtype=np.int64)
        draws = np.searchsorted(cumulative, rng.random(count) * total, side="right")
        return np.unique(np.minimum(draws, n_rows - 1))

    def _reduce(self, budget: int, rng: np.random.Generator, target: int | None = None) -> None:
        """Bring a summary over the budget back to ``target`` (default: the budget)
        centres; every centre stays an exact mean.

        A few extra centres (the steady state of a stream): merge the pairs whose
        merge raises the cost least (Ward: w_i w_j / (w_i + w_j) ||c_i - c_j||^2),
        disjoint pairs at once. Many (a merge of two states, the first blocks):
        weighted k-means on the centres themselves.
        """
        if len(self.centres) <= budget:
            return
        target = budget if target is None else target
        excess = len(self.centres) - target
        if excess > budget // 4:
            _, labels, _ = _cluster(
                self.centres, self.weights, target, rng, max_iter=_REDUCE_STEPS, tol=0.0
            )
        else:
            labels = _ward_pairs(self.centres, self.weights, excess)
        mass, sums = _weighted_means(self.centres, self.weights, labels, labels.max() + 1)
        filled = mass > 0
        self.centres, self.weights = sums[filled] / mass[filled, None], mass[filled]

    def merge(self, other: KMeansState) -> KMeansState:
        self.check_mergeable(other)
        merged = KMeansState(self.config)
        merged.n = self.n + other.n
        parts = [s for s in (self, other) if s.centres is not None]
        merged.centres = np.vstack([s.centres for s in parts]) if parts else None
        merged.weights = np.concatenate([self.weights, other.weights])
        if merged.centres is not None:
            merged._reduce(merged._budget, merged._rng(2))
        return merged

    def continued(self) -> KMeansState:
        """Where new rows start when resuming: a summary of their own (same features)."""
        fresh = KMeansState(self.config)
        if self.centres is not None:
            fresh.centres = np.zeros((0, self.centres.shape[1]))
        return fresh

    def followed_by(self, later: KMeansState) -> KMeansState:
        """This summary, decayed by ``later``'s rows (``half_life_time_size``), merged
        with ``later``'s: what one pass over the old rows and then the new ones gives."""
        older = KMeansState(self.config)
        older.n, older.centres, older.weights = self.n, self.centres, self.weights.copy()
        older._decay(later.n)
        return older.merge(later)

    # --- models ----------------------------------------------------------------------
    def derive(
        self,
        k: int | None = None,
        local_lloyd_max_iter: int = 300,
        local_lloyd_tol: float = 1e-4,
        local_lloyd_init_method: str = "kmeans++",
        local_lloyd_num_trials: int | str = "auto",
    ) -> KMeansModel:
        """A k-means model for any ``k`` up to the config's, from the summary alone.

        Parameters
        ----------
        k : int, optional
            Number of clusters (default: the config's k).
        local_lloyd_max_iter : int
            Lloyd iterations per trial on the summary.
        local_lloyd_tol : float
            Stop a trial when the cost improves by less than this fraction of the
            summary's mean squared norm.
        local_lloyd_init_method : {'kmeans++', 'random'}
            Seeding of each trial.
        local_lloyd_num_trials : int | str
            Trials; the one with the lowest cost on the summary wins. 'auto' (SageMaker's
            default) is 30: a trial on the small summary costs milliseconds.

        Raises
        ------
        NotEnoughDataError
            When the summary holds fewer than k centres.
        """
        where = "KMeansState.derive"
        k = check_int(self.config.k if k is None else k, "k", where, 1, self.config.k)
        check_int(local_lloyd_max_iter, "local_lloyd_max_iter", where, 1)
        trials = 30 if local_lloyd_num_trials == "auto" else local_lloyd_num_trials
        check_int(trials, "local_lloyd_num_trials", where, 1)
        check_choice(local_lloyd_init_method, "local_lloyd_init_method", where, _INIT)
        if local_lloyd_tol < 0:
            raise ValueError(
                f"The 'local_lloyd_tol' parameter of {where} must be >= 0. Got {local_lloyd_tol!r} instead."
            )
        if len(self.weights) < k:
            raise NotEnoughDataError(
                f"The k-means summary holds {len(self.weights)} centres after {self.n} rows; "
                f"k={k} needs at least {k}."
            )
        rng = np.random.default_rng([self.config.seed, k, 3])
        centres, labels, _ = _cluster(
            self.centres,
            self.weights,
            k,
            rng,
            init=local_lloyd_init_method,
            max_iter=local_lloyd_max_iter,
            tol=local_lloyd_tol,
            trials=trials,
        )
        sizes = np.bincount(labels, weights=self.weights, minlength=k)
        # Largest cluster first: ids are stable across derivations from the same state.
        order = np.argsort(-sizes, kind="stable")
        return KMeansModel(centres=centres[order], cluster_sizes=sizes[order], n_seen=self.n)

    # --- serialization ---------------------------------------------------------------
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        # Padded to the budget so the size depends on the config and d only.
        arrays = {}
        if self.centres is not None:  # an empty state may not know d: no budget then
            budget = self._budget
            centres = np.zeros((budget, self.centres.shape[1]))
            centres[: len(self.centres)] = self.centres
            weights = np.zeros(budget)
            weights[: len(self.weights)] = self.weights
            arrays = {"centres": centres, "weights": weights}
        return {"size": len(self.weights)}, arrays

    @classmethod
    def _from_payload(
        cls, config: KMeansConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> KMeansState:
        state = cls(config)
        state.n = int(meta["n_seen"])
        size = int(meta["size"])
        if "centres" in arrays:
            budget = config.budget(arrays["centres"].shape[1])
            shapes = (arrays["centres"].shape[0], arrays["weights"].shape)
            if shapes != (budget, (budget,)) or size > budget:
                raise IncompatibleStateError(
                    f"k-means payload holds {arrays['centres'].shape[0]} centres; the config's budget is {budget}."
                )
            state.centres, state.weights = arrays["centres"][:size], arrays["weights"][:size]
        return state


class KMeansModel(Model):
    """A derived k-means model.

    Attributes
    ----------
    centres : ndarray of shape (k, d)
        Cluster centres, largest cluster first.
    cluster_sizes : ndarray of shape (k,)
        Rows (decayed weight) of the training data in each cluster.
    n_seen : int
    """

    FAMILY = "kmeans"
    SERIAL_VERSION = 1
    METRICS = ("msd", "ssd", "n_rows")

    def __init__(self, centres: np.ndarray, cluster_sizes: np.ndarray, n_seen: int = 0):
        self.centres = centres
        self.cluster_sizes = cluster_sizes
        self.n_seen = n_seen

    @property
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.centres.shape[1])

    @property
    def k(self) -> int:
        return self.centres.shape[0]

    def _nearest(self, features: Any) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre and squared distance per row, in float64. ``||x||^2`` does not
        change the argmin, so it is added to the chosen scores only (one pass over the
        (rows, k) scores fewer, and none for the per-row norms' broadcast)."""
        if sp.issparse(features):
            sq = np.asarray(features.multiply(features).sum(axis=1)).ravel()
            scores = np.asarray(features @ (-2.0 * self.centres.T))
        else:
            x = np.asarray(features, dtype=np.float64)
            sq = np.einsum("ij,ij->i", x, x)
            scores = x @ (-2.0 * self.centres.T)
        scores += np.einsum("ij,ij->i", self.centres, self.centres)
        labels = np.argmin(scores, axis=1)
        d2 = np.take_along_axis(scores, labels[:, None], axis=1)[:, 0] + sq
        return labels, np.maximum(d2, 0.0, out=d2)

    def assign(self, block: Any) -> np.ndarray:
        """The nearest centre's index for each row, shape (rows,)."""
        return self._nearest(self._check(block).features)[0]

    def evaluate(self, block: Any) -> np.ndarray:
        """Per row: the cluster id, then the distance to its centre; shape (rows, 2)."""
        labels, d2 = self._nearest(self._check(block).features)
        return np.column_stack([labels, np.sqrt(d2)])

    def metric_sums(self, block: Any) -> dict[str, float]:
        _, d2 = self._nearest(self._check(block).features)
        return {"n_rows": float(len(d2)), "ssd": float(d2.sum())}

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """``ssd``: sum of squared distances to the nearest centre; ``msd``: its mean
        (SageMaker's k-means metrics)."""
        n = sums["n_rows"]
        return {"n_rows": n, "ssd": sums["ssd"], "msd": sums["ssd"] / n if n else float("nan")}

    def describe(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n_features": self.n_features,
            "n_seen": self.n_seen,
            "cluster_sizes": [round(float(s), 3) for s in self.cluster_sizes],
        }

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_seen": self.n_seen}, {
            "centres": self.centres,
            "cluster_sizes": self.cluster_sizes,
        }

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> KMeansModel:
        return cls(n_seen=int(meta["n_seen"]), **arrays)


KMeansState.MODEL = KMeansModel
