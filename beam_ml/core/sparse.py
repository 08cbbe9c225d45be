"""CSR products for small mini-batches, without scipy's per-call checks.

``scipy.sparse`` builds a matrix object, checks its format and picks a kernel on every
product: ~30-50 us, as much as the arithmetic of a 100-row mini-batch. These call the
same C++ kernels (``csr_matvecs`` / ``csc_matvecs``, what ``x @ w`` and ``x.T @ g`` run)
on the raw CSR arrays; the arithmetic, and so the result, is scipy's.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:
    from scipy.sparse import _sparsetools
except ImportError:  # pragma: no cover - a scipy that moved them: the public operators
    _sparsetools = None

__all__ = ["csr_times", "csr_transpose_times"]


def _kernel_fits(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, w: np.ndarray) -> bool:
    return (
        _sparsetools is not None
        and w.dtype in (np.float32, np.float64)
        and data.dtype == w.dtype
        and indices.dtype == indptr.dtype
        and w.flags.c_contiguous
    )


def csr_times(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int, w: np.ndarray
) -> np.ndarray:
    """``x @ w`` for the CSR matrix ``x`` (rows, n_cols) given by its arrays and a dense
    ``w`` of shape (n_cols, c) or (n_cols,)."""
    rows = indptr.shape[0] - 1
    if not _kernel_fits(data, indices, indptr, w):
        return np.asarray(sp.csr_matrix((data, indices, indptr), (rows, n_cols)) @ w)
    width = w.shape[1] if w.ndim == 2 else 1
    out = np.zeros((rows,) + w.shape[1:], dtype=w.dtype)
    _sparsetools.csr_matvecs(
        rows, n_cols, width, indptr, indices, data, w.ravel(), out.ravel()
    )  # fmt: skip
    return out


def csr_transpose_times(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int, g: np.ndarray
) -> np.ndarray:
    """``x.T @ g`` for the CSR matrix ``x`` (rows, n_cols) and a dense ``g`` of shape
    (rows, c) or (rows,): the CSC matrix ``x.T`` on the same arrays."""
    rows = indptr.shape[0] - 1
    if not _kernel_fits(data, indices, indptr, g):
        return np.asarray(sp.csr_matrix((data, indices, indptr), (rows, n_cols)).T @ g)
    width = g.shape[1] if g.ndim == 2 else 1
    out = np.zeros((n_cols,) + g.shape[1:], dtype=g.dtype)
    _sparsetools.csc_matvecs(n_cols, rows, width, indptr, indices, data, g.ravel(), out.ravel())
    return out
