"""Per-family cases for the state contract suite: a config, data, and equivalence.

Every registered family must appear here; ``test_every_family_has_a_case`` fails
otherwise, so a new algorithm joins the suite by adding its cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from beam_ml.algorithms.kmeans import KMeansConfig, KMeansState
from beam_ml.algorithms.pca import PCAConfig, PCAState


@dataclass
class Case:
    name: str
    config: Any
    other_config: Any  # a config that must refuse to merge with ``config``
    make_data: Callable[[np.random.Generator, int], np.ndarray]
    assert_equivalent: Callable[[Any, Any], None]
    exact: bool


def _pca_data(rng: np.random.Generator, n: int) -> np.ndarray:
    basis = rng.normal(size=(4, 12))
    return (rng.normal(size=(n, 4)) * [5, 3, 2, 1]) @ basis + 0.1 * rng.normal(size=(n, 12)) + 3.0


def _pca_exact_equal(a: PCAState, b: PCAState) -> None:
    assert a.n == b.n
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.scatter, b.scatter, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)


def _pca_sketch_equivalent(a: PCAState, b: PCAState) -> None:
    """Two Frequent Directions sketches of the same data differ by at most their bounds."""
    assert a.n == b.n
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)
    gap = np.linalg.norm(a.sketch.T @ a.sketch - b.sketch.T @ b.sketch, 2)
    assert gap <= a.shrinkage + b.shrinkage + 1e-6 * a.trace, (gap, a.shrinkage, b.shrinkage)


_BLOB_CENTRES = np.array([[0.0, 0, 0, 0, 0], [20, 0, 0, 0, 0], [0, 20, 0, 0, 0]])


def _blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    return _BLOB_CENTRES[rng.integers(0, 3, n)] + rng.normal(size=(n, 5))


def _kmeans_equivalent(a: KMeansState, b: KMeansState) -> None:
    """Same rows and weight; k=3 models on well-separated blobs agree to within noise."""
    assert a.n == b.n
    np.testing.assert_allclose(a.weights.sum(), b.weights.sum(), rtol=1e-9)
    ca, cb = (s.derive(k=3).centres for s in (a, b))
    order = lambda c: c[np.lexsort(np.round(c.T[::-1], 0))]  # noqa: E731
    np.testing.assert_allclose(order(ca), order(cb), atol=0.5)


CASES = [
    Case(
        "pca-regular",
        PCAConfig(num_components=3),
        PCAConfig(num_components=4),
        _pca_data,
        _pca_exact_equal,
        exact=True,
    ),
    Case(
        "pca-sketch",
        PCAConfig(num_components=3, algorithm_mode="sketch", extra_components=2),
        PCAConfig(num_components=3, algorithm_mode="sketch", extra_components=3),
        _pca_data,
        _pca_sketch_equivalent,
        exact=False,
    ),
    Case(
        "kmeans",
        KMeansConfig(k=3, extra_center_factor=10),
        KMeansConfig(k=3, extra_center_factor=5),
        _blobs,
        _kmeans_equivalent,
        exact=False,
    ),
]
