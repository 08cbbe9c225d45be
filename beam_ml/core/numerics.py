"""Shared numerics: the pairwise (Chan, Golub & LeVeque 1979) merge of moments.

Means and *centred* second moments of two parts combine exactly::

    n = na + nb,  delta = mean_b - mean_a,  mean = mean_a + delta * nb / n
    M2 = M2_a + M2_b + (na * nb / n) * outer(delta, delta)

so no raw sum of squares (which cancels catastrophically) is ever kept [STYLE §1.5].
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

__all__ = ["pairwise_mean", "dense_chunks"]


def pairwise_mean(
    n_a: int, mean_a: np.ndarray, n_b: int, mean_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, float]:
    """Merged count and mean, plus ``delta`` and the weight ``na*nb/n`` of its outer product."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), delta, n_a * n_b / n


def dense_chunks(features, max_rows: int = 4096, dtype=np.float64) -> Iterator[np.ndarray]:
    """Row chunks of a dense or sparse block as dense arrays of ``dtype`` (None: keep).

    A dense block is one chunk (no copy when the dtype matches); a sparse one is
    densified ``max_rows`` rows at a time, so memory stays bounded.
    """
    if not sp.issparse(features):
        yield np.asarray(features, dtype=dtype)
        return
    for start in range(0, features.shape[0], max_rows):
        yield np.asarray(features[start : start + max_rows].toarray(), dtype=dtype)
