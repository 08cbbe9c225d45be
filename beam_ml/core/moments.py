"""Centred moments: count, mean and centred second moments, merged pairwise.

One object for every state that keeps them (PCA, the linear learner's exact statistics
and its scaler): ``n``, the ``mean`` and ``m2``, either the centred scatter matrix
``sum (x - mean)(x - mean)^T`` (``scatter=True``), its diagonal, the per-column centred
sums of squares, or its trace, the sum of squared distances to the mean (a float: PCA's
total variance, beside a scatter or sketch that it pools with :meth:`Moments.pooled`'s
terms). All in float64; parts merge with the pairwise formula
(:func:`beam_ml.core.numerics.pairwise_mean`), never through raw sums of squares.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.numerics import pairwise_mean

__all__ = ["Moments"]


class Moments:
    """``n`` rows' mean and centred second moments (a matrix, or per column).

    Parameters
    ----------
    n : float
        Rows (or weight) summarized; 0 for none.
    mean : ndarray of shape (d,), float64
    m2 : ndarray of shape (d, d) or (d,), float64, or float
        The centred scatter matrix, the per-column centred sums of squares, or their
        total (the scatter's trace).
    """

    __slots__ = ("n", "mean", "m2")

    def __init__(self, n: float, mean: np.ndarray, m2: np.ndarray):
        self.n, self.mean, self.m2 = n, mean, m2

    @classmethod
    def zeros(cls, d: int, scatter: bool) -> Moments:
        """No rows yet, ``d`` columns."""
        return cls(0, np.zeros(d), np.zeros((d, d) if scatter else d))

    @classmethod
    def of_rows(cls, rows: np.ndarray, overwrite: bool = False) -> Moments:
        """The centred scatter of a dense chunk of rows (float64 whatever its dtype);
        ``overwrite``: the chunk is float64 scratch, centred in place (no copy)."""
        mean = rows.mean(axis=0, dtype=np.float64)
        if overwrite:
            rows -= mean
            centred = rows
        else:
            centred = rows - mean  # one pass, one copy
        return cls(rows.shape[0], mean, centred.T @ centred)  # numpy: a symmetric rank-k update

    @classmethod
    def of_columns(cls, x: Any) -> Moments:
        """Per-column moments of a dense or CSR block.

        For CSR the centred sum is taken over the stored entries plus the implicit zeros
        (``(rows - nnz_j) * mean_j^2``): every term is a square of a centred value, so no
        cancellation, and the block is never densified.
        """
        rows = x.shape[0]
        if sp.issparse(x):
            d = x.shape[1]
            mean = np.bincount(x.indices, weights=x.data, minlength=d) / rows
            stored = np.bincount(x.indices, minlength=d)
            centred = x.data.astype(np.float64) - mean[x.indices]
            m2 = np.bincount(x.indices, weights=centred * centred, minlength=d)
            return cls(rows, mean, m2 + (rows - stored) * mean * mean)
        # float64 throughout: a constant column must come out with exactly zero variance.
        # Column sums as a product with a ones vector (BLAS), not a reduction with a cast.
        x = np.asarray(x, dtype=np.float64)
        ones = np.ones(rows)
        mean = ones @ x / rows
        centred = x - mean
        centred *= centred
        return cls(rows, mean, ones @ centred)

    def merged(self, other: Moments) -> Moments:
        """Both parts' moments (a new object; an empty side gives a copy of the other)."""
        if self.n == 0:
            return other.copy()
        if other.n == 0:
            return self.copy()
        return self.pooled(other)[0]

    def pooled(self, other: Moments) -> tuple[Moments, np.ndarray, float]:
        """Both parts' moments (neither empty), with the pairwise terms ``delta`` (the
        other part's mean minus this one's) and ``weight`` (``n_a n_b / n``), for a state
        that pools a second-moment summary of its own with them (PCA's scatter or sketch)."""
        n, mean, delta, weight = pairwise_mean(self.n, self.mean, other.n, other.mean)
        return Moments(n, mean, self.pooled_m2(self.m2, other.m2, delta, weight)), delta, weight

    @staticmethod
    def pooled_m2(
        m2_a: np.ndarray | float, m2_b: np.ndarray | float, delta: np.ndarray, weight: float
    ) -> np.ndarray | float:
        """Two parts' centred second moments (matrices, per column or totals) pooled,
        given the pairwise terms ``delta`` and ``weight`` of :func:`pairwise_mean`."""
        if np.ndim(m2_a) == 0:  # totals: the order of the sums PCA's states were made with
            return m2_a + (m2_b + weight * float(delta @ delta))
        if m2_a.ndim == 2:
            return m2_a + m2_b + weight * np.outer(delta, delta)
        return m2_a + m2_b + weight * delta * delta

    def copy(self) -> Moments:
        m2 = self.m2.copy() if isinstance(self.m2, np.ndarray) else self.m2
        return Moments(self.n, None if self.mean is None else self.mean.copy(), m2)

    def __repr__(self) -> str:
        d = None if self.mean is None else self.mean.shape[0]
        return f"Moments(n={self.n}, d={d}, m2={np.shape(self.m2)})"
