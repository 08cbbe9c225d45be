"""The exact path of squared loss, and the scaler's moments: statistics, no SGD."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from beam_ml.core.numerics import pairwise_mean

_LOG = logging.getLogger("beam_ml.linear_learner")

#: Above this many features the exact path's (d+1) x (d+1) float64 matrix (512 MiB at
#: 8192) is not kept, and squared loss uses the packed models only.
MAX_EXACT_FEATURES = 8192


def column_moments(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Column means and centred sums of squares (float64) of a dense or CSR block.

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
        return mean, m2 + (rows - stored) * mean * mean
    # float64 throughout: a constant column must come out with exactly zero variance.
    # Column sums as a product with a ones vector (BLAS), not a reduction with a cast.
    x = np.asarray(x, dtype=np.float64)
    ones = np.ones(rows)
    mean = ones @ x / rows
    centred = x - mean
    centred *= centred
    return mean, ones @ centred


def merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    if n_a == 0:
        return n_b, mean_b.copy(), m2_b.copy()
    n, mean, delta, weight = pairwise_mean(n_a, mean_a, n_b, mean_b)
    return n, mean, m2_a + m2_b + weight * delta * delta


# --- the elastic net on a Gram matrix --------------------------------------------------------
def elastic_net(
    gram: np.ndarray,
    cross: np.ndarray,
    wd: float,
    l1: float,
    tol: float = 1e-13,
    max_sweeps: int = 10_000,
) -> np.ndarray:
    """argmin_w  w^T gram w / 2 - cross . w + wd/2 ||w||^2 + l1 ||w||_1.

    Cyclic coordinate descent with covariance updates: the gradient ``q = cross - gram w``
    is kept up to date with one column per changed coordinate, so a sweep costs O(d^2)
    and never touches the data.
    """
    d = len(cross)
    w, q = np.zeros(d), cross.astype(np.float64).copy()
    diag = np.diag(gram) + wd
    for _ in range(max_sweeps):
        biggest, largest = 0.0, 0.0
        for j in range(d):
            if diag[j] <= 0:
                continue
            rho = q[j] + gram[j, j] * w[j]
            new = math.copysign(max(abs(rho) - l1, 0.0), rho) / diag[j]
            change = new - w[j]
            if change != 0.0:
                q -= gram[:, j] * change
                w[j] = new
                biggest = max(biggest, abs(change))
            largest = max(largest, abs(new))
        if biggest <= tol * max(largest, 1e-300):
            return w
    _LOG.warning(
        "linear_learner: the elastic net did not converge in %d sweeps (last change %.3g "
        "of the largest weight); try normalize_data=True.",
        max_sweeps,
        biggest / max(largest, 1e-300),
    )
    return w


def ridge(gram: np.ndarray, cross: np.ndarray, wd: float) -> np.ndarray:
    """Solve (gram + wd I) w = cross: Cholesky, or least squares if singular (wd = 0)."""
    system = gram + wd * np.eye(len(cross))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(system), cross)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(system, cross, rcond=None)[0]
