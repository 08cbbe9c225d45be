"""Validation rows: the rows set aside by the hash of their content (issue 24)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.errors import IncompatibleStateError
from beam_ml.nn.engine import _mix64, row_keys

_VALIDATION_ROWS = 10_000  # validation rows kept, at most (fewer above 800 features)


def validation_rows_kept(d: int) -> int:
    """Validation rows a state keeps for ``d`` features: 10,000, down to 1,000 at 8,192+
    features (stored as CSR, at most ~8 MB of dense rows)."""
    return int(min(_VALIDATION_ROWS, max(1000, 2**23 // max(d, 1))))


def row_keys_of(x: Any, y: np.ndarray) -> np.ndarray:
    """The rows' :func:`~beam_ml.nn.engine.row_keys`, dense or CSR."""
    return row_keys(x, y) if sp.issparse(x) else _dense_row_keys(x, y)


def _dense_row_keys(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`~beam_ml.nn.engine.row_keys` of dense rows, without building CSR rows:
    the same keys (a row's key does not depend on how it is stored)."""
    with np.errstate(over="ignore"):
        d = x.shape[1]
        columns = np.arange(d, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        entry = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        np.left_shift(entry, np.uint64(32), out=entry)
        np.bitwise_xor(entry, columns, out=entry)
        # splitmix64's finalizer (engine._mix64) in place: two buffers, no array per step.
        spare = np.empty_like(entry)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, 0)):
            np.right_shift(entry, np.uint64(shift), out=spare)
            np.bitwise_xor(entry, spare, out=entry)
            if factor:
                np.multiply(entry, np.uint64(factor), out=entry)
        entry[x == 0] = 0  # only stored (non-zero) entries are hashed
        rows = entry.sum(axis=1, dtype=np.uint64)
        label = y.astype(np.float64).view(np.uint64)
        return _mix64(rows + _mix64(label ^ np.uint64(0xD1B54A32D192ED03)))


class ValidationRows:
    """The validation rows a state keeps: a bounded uniform sample of the rows whose hash
    falls in the validation fraction, with the number of times each was seen.

    A row is set aside when its :func:`~beam_ml.nn.engine.row_keys` hash (of its
    columns, values and label) is in the lowest ``fraction`` of the key space: the same
    rows in any block, worker or epoch. The sample keeps the ``size`` distinct rows of
    smallest key (a bottom-k sketch: uniform, and the same however the rows were split)
    and, unlike FM's merge sample, *how many times* each occurs, so repeated rows (a9a:
    26,008 distinct rows of 32,561) weigh as in the data. Counts are kept in two parts:
    ``base``, those of the epochs closed before this state's start (the same on every
    replica of an epoch, so a merge takes one side's), and ``added``, rows new in this
    epoch (summed by a merge: each replica saw other rows). Only the first epoch and
    training resumed on new rows (epochs past ``config.epochs``) add rows; later epochs
    of the same data only keep the sampled rows out of training. A set-aside row the
    sample cannot take (its key above the largest kept while the sample is full) trains
    like any other. Memory: ``size`` rows.
    """

    def __init__(self, size: int, n_features: int, fraction: float):
        self.size, self.n_features, self.fraction = size, n_features, fraction
        self.features = sp.csr_matrix((0, n_features), dtype=np.float32)
        self.labels = np.zeros(0)
        self.keys = np.zeros(0, dtype=np.uint64)
        self.base, self.added = np.zeros(0), np.zeros(0)

    @property
    def n_rows(self) -> int:
        """Rows in the sample, each as many times as seen."""
        return int(self.base.sum() + self.added.sum())

    @property
    def weights(self) -> np.ndarray:
        return self.base + self.added

    def set_aside(self, x: Any, y: np.ndarray, keys: np.ndarray, add: bool) -> np.ndarray | None:
        """Which rows of ``x`` (dense or CSR; ``keys``: :func:`row_keys_of` them) train (a
        bool mask; None: all of them); with ``add`` the set-aside ones enter the sample."""
        held = keys < np.uint64(self.fraction * 2.0**64)  # fraction <= 0.5
        full = len(self.keys) == self.size
        if full:  # a key above the largest kept is not (and can never be) in the sample
            held &= keys <= self.keys[-1]
        if not held.any():
            return None
        if add:
            rows = np.flatnonzero(held)
            part = sp.csr_matrix(x[rows])
            self._union(part, y[rows], keys[rows], np.zeros(len(rows)), np.ones(len(rows)))
        return ~held

    def _union(self, x, y, keys, base, added) -> None:
        """Fold rows (with counts) in: equal keys add their counts, the ``size``
        smallest keys stay."""
        all_keys = np.concatenate([self.keys, keys])
        unique, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
        base_sum = np.bincount(inverse, weights=np.concatenate([self.base, base]))
        added_sum = np.bincount(inverse, weights=np.concatenate([self.added, added]))
        keep = slice(0, self.size)
        self.features = sp.vstack([self.features, x], format="csr")[first[keep]]
        self.labels = np.concatenate([self.labels, y])[first[keep]]
        self.keys = unique[keep]
        self.base, self.added = base_sum[keep], added_sum[keep]

    def merged(self, other: ValidationRows) -> ValidationRows:
        """Both sides' rows: ``added`` counts sum, ``base`` counts are this side's (the
        same start on both sides) or, for rows only the other side has, the other's."""
        out = self.copy()
        if len(other.keys):
            mine = np.isin(other.keys, self.keys)
            base = np.where(mine, 0.0, other.base)
            out._union(other.features, other.labels, other.keys, base, other.added)
        return out

    def restarted(self) -> ValidationRows:
        """The sample at the start of the next epoch: every count is now ``base``."""
        out = self.copy()
        out.base, out.added = self.base + self.added, np.zeros_like(self.added)
        return out

    def copy(self) -> ValidationRows:
        out = ValidationRows(self.size, self.n_features, self.fraction)
        out.features, out.labels, out.keys = self.features.copy(), self.labels.copy(), self.keys
        out.base, out.added = self.base.copy(), self.added.copy()
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        x = self.features
        return {
            "validation_data": x.data,
            "validation_indices": x.indices.astype(np.int32),  # feature_dim < 2^31
            "validation_indptr": x.indptr.astype(np.int64),
            "validation_labels": self.labels,
            "validation_keys": self.keys,
            "validation_counts": np.stack([self.base, self.added]),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Any, size: int, n_features: int, fraction: float
    ) -> ValidationRows:
        out = cls(size, n_features, fraction)
        if arrays.get("validation_keys") is None:  # states of before 2026-12-04: none
            return out
        indptr = arrays["validation_indptr"]
        out.features = sp.csr_matrix(
            (arrays["validation_data"], arrays["validation_indices"], indptr),
            shape=(len(indptr) - 1, n_features),
        )
        out.labels, out.keys = arrays["validation_labels"], arrays["validation_keys"]
        out.base, out.added = arrays["validation_counts"]
        rows = out.features.shape[0]
        if not (out.labels.shape == out.keys.shape == out.base.shape == (rows,)) or rows > size:
            raise IncompatibleStateError(
                f"The state's validation sample holds {rows} rows, {out.labels.shape[0]} "
                f"labels and {out.keys.shape[0]} keys; expected one of each, at most {size}."
            )
        if np.any(np.diff(out.keys) <= 0) or out.keys.dtype != np.uint64:
            raise IncompatibleStateError("The state's validation sample keys are not increasing.")
        return out
