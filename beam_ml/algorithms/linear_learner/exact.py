"""The exact path of squared loss: ridge and the elastic net from the Gram matrix."""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg

_LOG = logging.getLogger("beam_ml.linear_learner")

#: Above this many features the exact path's (d+1) x (d+1) float64 matrix (512 MiB at
#: 8192) is not kept, and squared loss uses the packed models only.
MAX_EXACT_FEATURES = 8192


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
