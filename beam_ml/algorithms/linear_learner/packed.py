"""The packed SGD models: a network (:class:`PackedNetwork`: parameters, the step of every
model, its optimizers, the predictor), its matrix products, BLAS threads and score
histograms."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from beam_ml.algorithms.linear_learner.losses import pointwise_loss, softmax_loss
from beam_ml.core.sparse import csr_times, csr_transpose_times

_LOG = logging.getLogger("beam_ml.linear_learner")

AVERAGING_ETA = 3.0  # polynomial-decay averaging: weight (1+eta)/(t+eta) on iterate t
ADAM_EPS = 1e-8
# Score histograms: 1000 bins of 0.02 on [-10, 10) plus one overflow bin each side; the
# edge between bins 500 and 501 is score 0 (probability 0.5).
BINS_PER_UNIT = 50
HIST_BINS = 1002
HIST_CENTRE = 501
HIST_ALL_ROWS = 2**17
DIVERGED = 1e8  # a step-space weight this large (or non-finite): the model diverged


def score_edges() -> np.ndarray:
    """Score thresholds of the histogram, index k: predict positive iff bin >= k."""
    k = np.arange(HIST_BINS + 1, dtype=np.float64)
    edges = (k - HIST_CENTRE) / BINS_PER_UNIT
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


# --- moments -----------------------------------------------------------------------------
#: Multiply-adds of a mini-batch's forward product up to which the packed step runs
#: BLAS on one thread: waking OpenBLAS's threads for each small product costs more than
#: the product (the 64-feature dense benchmark: 20% faster end to end on 2 cores).
_ONE_THREAD_WORK = 2**24
_BLAS_CONTROL: Any = None  # threadpoolctl's BLAS controller, False if unavailable
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # updates running with the limit (several threads may train at once)
_BLAS_LIMIT: Any = None


def _blas_threads(work: int) -> Any:
    """A context that keeps BLAS on one thread for a training step of ``work``
    multiply-adds if it is small, via ``threadpoolctl`` when installed (it comes with
    scikit-learn); else, or for large steps, nothing changes."""
    global _BLAS_CONTROL
    if work > _ONE_THREAD_WORK:
        return contextlib.nullcontext()
    if _BLAS_CONTROL is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROL = ThreadpoolController().select(user_api="blas") or False
        except Exception:  # not installed, or an unknown BLAS: leave threads alone
            _BLAS_CONTROL = False
    if not _BLAS_CONTROL:
        return contextlib.nullcontext()
    return _one_blas_thread()


@contextlib.contextmanager
def _one_blas_thread() -> Any:
    """BLAS on one thread while any update needs it; the first sets the limit, the last
    restores the original thread counts (so concurrent updates cannot leave it set)."""
    global _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_LIMIT = _BLAS_CONTROL.limit(limits=1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


def weighted_colsum(weights: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``weights @ a`` for (rows,) weights and a (rows, c) array, by ``einsum``.

    Not through BLAS: on a mini-batch, OpenBLAS's threaded gemv spends far more time
    waking its threads than computing (in a Beam pipeline, up to 40% of the training
    step on 2 cores). Same float32 sums in another order: the last bits may differ.
    """
    return np.einsum("i,ij->j", weights, a)


def times(x: Any, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for a dense or CSR mini-batch ``x`` (b, d) and dense ``w`` (d, c); CSR
    through scipy's kernel without its per-call checks (:mod:`beam_ml.core.sparse`)."""
    if not sp.isspmatrix_csr(x):
        return x @ w if not sp.issparse(x) else np.asarray(x @ w)
    return csr_times(x.data, x.indices, x.indptr, x.shape[1], w)


def transpose_times(x: Any, g: np.ndarray) -> np.ndarray:
    """``x.T @ g`` for a dense or CSR ``x`` (b, d) and dense ``g`` (b, c): (d, c)."""
    if not sp.isspmatrix_csr(x):
        return x.T @ g if not sp.issparse(x) else np.asarray(x.T @ g)
    return csr_transpose_times(x.data, x.indices, x.indptr, x.shape[1], g)


def row_range(x: Any, start: int, stop: int, copy: bool = False) -> Any:
    if sp.isspmatrix_csr(x):
        # Rows start:stop on the same arrays (half the cost of scipy's slicing, a copy).
        stop = min(stop, x.shape[0])
        lo, hi = int(x.indptr[start]), int(x.indptr[stop])
        return sp.csr_matrix(
            (x.data[lo:hi], x.indices[lo:hi], x.indptr[start : stop + 1] - lo),
            shape=(stop - start, x.shape[1]),
            copy=copy,
        )
    part = x[start:stop]
    return part.copy() if copy else part


def rows_where(x: Any, mask: np.ndarray) -> Any:
    return x[np.flatnonzero(mask)] if sp.issparse(x) else x[mask]


def bin_counts(scores: np.ndarray, y: np.ndarray, weights: Any = None) -> np.ndarray:
    """Per column of ``scores`` (b, c): histograms of the scores of negatives and
    positives (0/1 ``y``), shape (c, 2, bins); each row counts ``weights`` (b,) times."""
    m = scores.shape[1]
    index = np.multiply(scores, BINS_PER_UNIT)
    index += HIST_CENTRE
    np.maximum(index, 0, out=index)  # (np.clip's wrapper costs more than the work here)
    np.minimum(index, HIST_BINS - 1, out=index)
    index = index.astype(np.intp)
    index += np.arange(0, m * 2 * HIST_BINS, 2 * HIST_BINS)
    index += (y.astype(np.intp) * HIST_BINS)[:, None]
    if weights is not None:
        weights = np.repeat(weights, m)  # row-major: each row's m columns
    counts = np.bincount(index.ravel(), weights, minlength=m * 2 * HIST_BINS)
    return counts.reshape(m, 2, HIST_BINS)


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class StepResult(NamedTuple):
    """What a step of the packed models returns: progressive validation's view of the
    mini-batch before the step, per candidate (2 m: the last iterates, then the averages)."""

    loss: np.ndarray  # (2 m,) float64: the weighted sum of the rows' losses
    correct: np.ndarray  # (2 m,): right answers (classifiers; zeros for a regressor)
    weight: float  # the rows' total example weight
    scores: np.ndarray  # (b, 2 m k): the candidates' scores, in training units


class PackedNetwork:
    """The packed models as a network (:class:`beam_ml.nn.skeleton.Network`): ``m``
    linear models of ``k`` outputs side by side, each with its own learning rate, weight
    decay and L1, trained by SGD, Adam or RMSProp, each with a polynomial-decay average.

    Parameters (in the original feature and label units, so replicas whose scaler
    samples differ still average): ``coef`` (d, m k), ``intercept`` (m k,), their
    averages ``avg_coef`` and ``avg_intercept``, the optimizer's moments ``opt_m`` and
    ``opt_v`` (d + 1, m k) or None, and ``diverged`` (m,): models frozen at zero.

    :meth:`step` trains every model on one mini-batch and returns its progressive losses
    (:class:`StepResult`); :meth:`scores` is the predictor of every candidate. The state
    (:class:`~beam_ml.algorithms.linear_learner.state.LinearLearnerState`) owns the rest:
    the scaler, class counts, step counts, progressive sums and histograms.
    """

    #: The parameter arrays, by the names of the state's payload.
    PARAMETERS = ("coef", "intercept", "avg_coef", "avg_intercept", "opt_m", "opt_v")

    def __init__(self, config: Any, d: int, grid: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.config = config
        self.lr = grid[0]
        self.m, self.k = len(self.lr), config.n_outputs
        # Per weight column (m models x k outputs), for the step.
        self._lr_cols, self._wd_cols, self._l1_cols = (np.repeat(v, self.k) for v in grid)
        self.loss = config.resolved_loss
        self.optimizer = config.resolved_optimizer
        self.binary = config.predictor_type == "binary_classifier"
        self.multiclass = config.predictor_type == "multiclass_classifier"
        cols = self.m * self.k
        self.coef, self.intercept = np.zeros((d, cols)), np.zeros(cols)
        self.avg_coef, self.avg_intercept = np.zeros((d, cols)), np.zeros(cols)
        adaptive = self.optimizer in ("adam", "rmsprop")
        self.opt_m = np.zeros((d + 1, cols)) if self.optimizer == "adam" else None
        self.opt_v = np.zeros((d + 1, cols)) if adaptive else None
        self.diverged = np.zeros(self.m, dtype=bool)

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's parameters: (d, 2 m k) weights [coef | avg_coef], biases."""
        weights = np.concatenate([self.coef, self.avg_coef], axis=1)
        return weights, np.concatenate([self.intercept, self.avg_intercept])

    def scores(self, x: Any) -> np.ndarray:
        """Every candidate's scores (b, 2 m k) of a dense or CSR block, in the block's
        float precision (float32 blocks stay float32: the step's forward pass)."""
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        weights = np.concatenate([self.coef, self.avg_coef], axis=1).astype(dtype)
        scores = times(x, weights)
        scores += np.concatenate([self.intercept, self.avg_intercept]).astype(dtype)
        return scores

    def step(
        self,
        x: Any,
        y: np.ndarray,
        t: int,
        scaling: tuple[np.ndarray, np.ndarray, float, float],
        example_weights: np.ndarray | None,
    ) -> StepResult:
        """Step ``t`` on one mini-batch: every candidate predicts it, then every model
        learns from it, in the step space ``scaling`` = (feature mean, feature scale,
        label mean, label scale); ``example_weights`` (b,) or None weigh the rows.

        Shapes: x (b, d); weights (d, 2 m k) = [last iterates | averages]; scores
        (b, 2 m k). All models' forward pass is one product, the backward pass another;
        the rest is elementwise work on the scores in the input's precision.
        """
        cfg, d, m, k = self.config, self.coef.shape[0], self.m, self.k
        b, cols = x.shape[0], m * k
        mean, scale, y_mean, y_scale = scaling
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        scores = self.scores(x)
        if cfg.scales_label:
            scores -= y_mean
            scores /= y_scale
            target = (y - y_mean) / y_scale
        else:
            target = y
        last, avg = scores[:, :cols], scores[:, cols:]
        # Progressive validation: the candidates' losses on rows they have not learnt yet.
        if self.multiclass:
            cls = y.astype(np.int64)
            last_loss, grad, last_ok = softmax_loss(last.reshape(b, m, k), cls, True)
            avg_loss, _, avg_ok = softmax_loss(avg.reshape(b, m, k), cls, False)
            grad = grad.reshape(b, cols)
            correct = np.concatenate([last_ok.sum(axis=0), avg_ok.sum(axis=0)])
        else:
            t_col = target.astype(dtype)[:, None]
            last_loss, grad = pointwise_loss(self.loss, last, t_col, cfg, True)
            avg_loss, _ = pointwise_loss(self.loss, avg, t_col, cfg, False)
            if self.binary:
                # Right answers at score 0: sum(1 - y) + (2y - 1) . [s > 0], one product.
                positive = (scores > 0).astype(dtype)
                correct = (b - y.sum()) + weighted_colsum(2 * t_col[:, 0] - 1, positive)
            else:
                correct = np.zeros(2 * m)
        if example_weights is None:
            per_row, w_sum = np.ones(b, dtype=dtype), float(b)
        else:
            per_row, w_sum = example_weights.astype(dtype), float(example_weights.sum())
            grad = grad * per_row[:, None]
        # Column sums as products with a vector, not reductions with a cast.
        sums = [weighted_colsum(per_row, last_loss), weighted_colsum(per_row, avg_loss)]
        loss_sum = np.concatenate(sums).astype(np.float64)
        # Gradient in the standardized space z = (x - mean) / scale, computed without
        # centring x: z^T r = (x^T r - mean * sum(r)) / scale.
        grad /= b
        g_sum = weighted_colsum(np.ones(b, dtype=grad.dtype), grad).astype(np.float64)
        g_x = np.asarray(transpose_times(x, grad), dtype=np.float64)
        g_x -= np.outer(mean, g_sum)
        g_x /= scale[:, None]
        ratio = (scale / y_scale)[:, None]
        w_z = self.coef * ratio  # the weights in the step space, which wd and l1 act on
        wd, lr, l1 = self._wd_cols, self._lr_cols, self._l1_cols
        if wd.any():
            g_x += w_z * wd
        g = np.vstack([g_x, g_sum[None, :] if cfg.use_bias else np.zeros((1, cols))])
        step = self._direction(g, t) * -lr
        if self.diverged.any():
            step[:, np.repeat(self.diverged, k)] = 0.0
        moved = w_z + step[:d]
        if l1.any():  # proximal (soft-threshold) step for the L1 term
            moved = np.sign(moved) * np.maximum(np.abs(moved) - lr * l1, 0.0)
        dz = moved - w_z
        self.coef += dz / ratio
        if cfg.use_bias:
            self.intercept += y_scale * (step[d] - (mean / scale) @ dz)
        alpha = (1.0 + AVERAGING_ETA) / (t + AVERAGING_ETA)
        self.avg_coef += (self.coef - self.avg_coef) * alpha
        self.avg_intercept += (self.intercept - self.avg_intercept) * alpha
        # On standardized features and labels sensible weights are O(1)..O(100); far
        # beyond that (or non-finite) a model's learning rate is too large for the data.
        blown = ~(np.abs(moved) < DIVERGED).all(axis=0) | ~(np.abs(step[d]) < DIVERGED)
        if blown.any():
            self._diverge(blown)
        return StepResult(loss_sum, correct, w_sum, scores)

    def _direction(self, g: np.ndarray, t: int) -> np.ndarray:
        cfg = self.config
        if self.optimizer == "sgd":
            return g
        b2 = cfg.beta_2
        self.opt_v *= b2
        self.opt_v += (1 - b2) * g * g
        denom = np.sqrt(self.opt_v / (1 - b2**t)) + ADAM_EPS
        if self.optimizer == "rmsprop":
            return g / denom
        b1 = cfg.beta_1
        self.opt_m *= b1
        self.opt_m += (1 - b1) * g
        return self.opt_m / (1 - b1**t) / denom

    def average_in(self, other: PackedNetwork, share: float) -> None:
        """Move every parameter ``share`` of the way to ``other``'s (the merge of two
        replicas, weighted by the rows each has learnt from)."""
        for name in self.PARAMETERS:
            mine = getattr(self, name)
            if mine is not None:
                setattr(self, name, mine + (getattr(other, name) - mine) * share)

    def _diverge(self, columns: np.ndarray) -> None:
        models = columns.reshape(self.m, self.k).any(axis=1) & ~self.diverged
        if models.any():  # expected for the top of the 'auto' learning-rate grid
            _LOG.info(
                "linear_learner: packed model(s) %s diverged (learning rate %s too large); "
                "they are frozen at zero and never selected.",
                np.flatnonzero(models).tolist(),
                self.lr[models].tolist(),
            )
        self.freeze(self.diverged | models)

    def freeze(self, diverged: np.ndarray) -> None:
        """Freeze the ``diverged`` (m,) models at zero, parameters and optimizer state."""
        self.diverged = diverged
        cols = np.repeat(diverged, self.k)
        for array in (self.coef, self.avg_coef, self.opt_m, self.opt_v):
            if array is not None:
                array[:, cols] = 0.0
        self.intercept[cols] = 0.0
        self.avg_intercept[cols] = 0.0
