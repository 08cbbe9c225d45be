"""The packed SGD models' training: the step of every model, its matrix products, BLAS
threads, optimizers and score histograms."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

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


class PackedTraining:
    """The packed models' training, a part of :class:`LinearLearnerState`: the scaling of
    the step space, one mini-batch step of every model (progressive validation first),
    the optimizers, and freezing models that diverge. Reads the state's config, scaler,
    class counts and epoch; writes the parameters, optimizer moments, ``progress``,
    ``hist``, ``diverged``, ``steps`` and ``stepped``."""

    def _scaling(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(feature mean, feature scale, label mean, label scale) of the step space."""
        if self._scaling_cache is None or self._scaling_cache[0] != self.moments_n:
            self._scaling_cache = (self.moments_n, self._compute_scaling())
        return self._scaling_cache[1]

    def _compute_scaling(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        d, cfg = self.d, self.config
        n = max(self.moments_n, 1.0)
        std = np.sqrt(np.maximum(self.moments_m2, 0) / n)
        # A column that has (almost) not varied yet is centred but not scaled: dividing by
        # a rounding-level std would turn its first real change into a huge step.
        constant = std <= 1e-7 * np.abs(self.moments_mean) + 1e-12
        std = np.where(constant, 1.0, std)
        if cfg.normalize_data:
            mean = self.moments_mean[:d] if cfg.use_bias else np.zeros(d)
            scale = std[:d]
        else:
            mean, scale = np.zeros(d), np.ones(d)
        if cfg.scales_label:
            y_mean = float(self.moments_mean[d]) if cfg.use_bias else 0.0
            y_scale = float(std[d])
        else:
            y_mean, y_scale = 0.0, 1.0
        return mean, scale, y_mean, y_scale

    def _example_weights(self, y: np.ndarray) -> np.ndarray | None:
        if not self._binary:
            return None
        mult = self.config.positive_example_weight_mult
        if mult == "balanced":
            neg, pos = self.class_counts
            mult = neg / pos if pos > 0 and neg > 0 else 1.0
        elif mult == "auto":
            mult = 1.0
        return None if mult == 1.0 else np.where(y > 0, float(mult), 1.0)

    def _step(self, x: Any, y: np.ndarray) -> None:
        """One mini-batch: every candidate predicts it, then every model learns from it.

        Shapes: x (b, d); weights (d, 2 m k) = [last iterates | averages]; scores
        (b, 2 m k). All models' forward pass is one product, the backward pass another;
        the rest is elementwise work on the scores in the input's precision.
        """
        cfg, d, m, k = self.config, self.d, self.m, self.k
        b, cols = x.shape[0], self.m * self.k
        if self.epoch == 1 and cfg.num_point_for_scaler == 0:  # a running scaler
            self._absorb_moments(x, y)
        if self.class_counts.size and self.epoch == 1:
            self.class_counts += np.bincount(y.astype(np.int64), minlength=self.class_counts.size)
        mean, scale, y_mean, y_scale = self._scaling()
        self.steps += 1
        self.stepped += b
        t = self.steps
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        weights = np.concatenate([self.coef, self.avg_coef], axis=1).astype(dtype)
        scores = times(x, weights)
        scores += np.concatenate([self.intercept, self.avg_intercept]).astype(dtype)
        if cfg.scales_label:
            scores -= y_mean
            scores /= y_scale
            target = (y - y_mean) / y_scale
        else:
            target = y
        last, avg = scores[:, :cols], scores[:, cols:]
        # Progressive validation: the candidates' losses on rows they have not learnt yet.
        if self._multiclass:
            cls = y.astype(np.int64)
            last_loss, grad, last_ok = softmax_loss(last.reshape(b, m, k), cls, True)
            avg_loss, _, avg_ok = softmax_loss(avg.reshape(b, m, k), cls, False)
            grad = grad.reshape(b, cols)
            correct = np.concatenate([last_ok.sum(axis=0), avg_ok.sum(axis=0)])
        else:
            t_col = target.astype(dtype)[:, None]
            last_loss, grad = pointwise_loss(self._loss, last, t_col, cfg, True)
            avg_loss, _ = pointwise_loss(self._loss, avg, t_col, cfg, False)
            if self._binary:
                # Right answers at score 0: sum(1 - y) + (2y - 1) . [s > 0], one product.
                positive = (scores > 0).astype(dtype)
                correct = (b - y.sum()) + weighted_colsum(2 * t_col[:, 0] - 1, positive)
                # A long pass's histograms sample its mini-batches: all in the first
                # 2^17 rows, then every 2nd, 4th ... (the stride doubles as the pass
                # does), each counted stride times: well over 10^5 rows for any
                # threshold, at a fraction of the cost of binning every score.
                stride = 1 << ((self.stepped - b) // HIST_ALL_ROWS).bit_length()
                if t % stride == 0:
                    self._histogram(scores, y, t * stride)
            else:
                correct = np.zeros(2 * m)
        sample_w = self._example_weights(y)
        if sample_w is None:
            per_row, w_sum = np.ones(b, dtype=dtype), float(b)
        else:
            per_row, w_sum = sample_w.astype(dtype), float(sample_w.sum())
            grad = grad * per_row[:, None]
        # Column sums as products with a vector, not reductions with a cast.
        sums = [weighted_colsum(per_row, last_loss), weighted_colsum(per_row, avg_loss)]
        loss_sum = np.concatenate(sums).astype(np.float64)
        self.progressive[0] += loss_sum
        self.progressive[1] += t * loss_sum
        self.progressive[2] += correct
        self.progressive[3] += w_sum
        self.progressive[4] += t * w_sum
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

    def _direction(self, g: np.ndarray, t: int) -> np.ndarray:
        cfg = self.config
        if self._optimizer == "sgd":
            return g
        b2 = cfg.beta_2
        self.opt_v *= b2
        self.opt_v += (1 - b2) * g * g
        denom = np.sqrt(self.opt_v / (1 - b2**t)) + ADAM_EPS
        if self._optimizer == "rmsprop":
            return g / denom
        b1 = cfg.beta_1
        self.opt_m *= b1
        self.opt_m += (1 - b1) * g
        return self.opt_m / (1 - b1**t) / denom

    def _histogram(self, scores: np.ndarray, y: np.ndarray, weight: float) -> None:
        """Add every candidate's scores (b, 2 m) to its negatives/positives histograms."""
        self.progressive_hist += weight * bin_counts(scores, y)

    def _diverge(self, columns: np.ndarray) -> None:
        models = columns.reshape(self.m, self.k).any(axis=1) & ~self.diverged
        if models.any():  # expected for the top of the 'auto' learning-rate grid
            _LOG.info(
                "linear_learner: packed model(s) %s diverged (learning rate %s too large); "
                "they are frozen at zero and never selected.",
                np.flatnonzero(models).tolist(),
                self._lr[models].tolist(),
            )
        self._freeze(self.diverged | models)

    def _freeze(self, diverged: np.ndarray) -> None:
        self.diverged = diverged
        cols = np.repeat(diverged, self.k)
        for array in (self.coef, self.avg_coef, self.opt_m, self.opt_v):
            if array is not None:
                array[:, cols] = 0.0
        self.intercept[cols] = 0.0
        self.avg_intercept[cols] = 0.0
