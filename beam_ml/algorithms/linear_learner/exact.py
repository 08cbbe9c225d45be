"""The exact path of squared loss: ridge and the elastic net from the Gram matrix."""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg

from beam_ml.core.moments import Moments

_LOG = logging.getLogger("beam_ml.linear_learner")

#: Above this many features the exact path's (d+1) x (d+1) float64 matrix (512 MiB at
#: 8192) is not kept, and squared loss uses the packed models only.
MAX_EXACT_FEATURES = 8192


def solve(
    exact: Moments,
    wd: float,
    l1: float,
    normalize_data: bool,
    normalize_label: bool,
    use_bias: bool,
) -> tuple[np.ndarray, float, str, int]:
    """The squared-loss model from the moments of ``[x, y]``: (coef, intercept, method,
    nonzero coefficients). Ridge in closed form, or with ``l1`` the elastic net, on the
    Gram matrix of the standardized (``normalize_data``) features and label."""
    n, mean, scatter = exact.n, exact.mean, exact.m2
    d = mean.shape[0] - 1
    if not use_bias:  # the uncentred second moments: no intercept to absorb the mean
        scatter = scatter + n * np.outer(mean, mean)
    std = np.sqrt(np.maximum(np.diag(exact.m2), 0) / n)
    scale = np.where(std[:d] > 0, std[:d], 1.0) if normalize_data else np.ones(d)
    y_scale = float(std[d]) if normalize_label and std[d] > 0 else 1.0
    gram = scatter[:d, :d] / (n * np.outer(scale, scale))
    cross = scatter[:d, d] / (n * scale * y_scale)
    if l1 == 0.0:
        w = ridge(gram, cross, wd)
        method = "ridge (closed form)"
    else:
        w = elastic_net(gram, cross, wd, l1)
        method = "elastic net (coordinate descent on the Gram matrix)"
    coef = w * y_scale / scale
    intercept = float(mean[d] - mean[:d] @ coef) if use_bias else 0.0
    return coef, intercept, method, int(np.count_nonzero(w))


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
