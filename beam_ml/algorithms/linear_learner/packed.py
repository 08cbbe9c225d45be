"""Pieces of the packed SGD models' step: matrix products, BLAS threads, histograms."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.sparse import csr_times, csr_transpose_times

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


def stack_rows(a: Any, b: Any) -> Any:
    if sp.issparse(a) or sp.issparse(b):
        return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)], format="csr")
    return np.vstack([a, b]) if a.dtype == b.dtype else np.vstack([a, b]).astype(np.float64)


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
