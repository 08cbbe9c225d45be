"""Blocks: the unit of data that flows through every beam_ml pipeline.

Beam's per-element overhead is microseconds while a row of floats costs nanoseconds of
arithmetic, so training data always travels as *blocks* of many rows (DESIGN.md §2):
a dense 2-D ``numpy`` array or a ``scipy.sparse.csr_matrix``, with optional labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError

__all__ = ["Block", "as_block", "origin_note"]


@dataclass(frozen=True, eq=False)
class Block:
    """Many rows of features, with optional labels.

    Parameters
    ----------
    features : ndarray of shape (n_rows, n_features) or csr_matrix
        Float rows. Dense blocks are usually float32 (what readers emit).
    labels : ndarray of shape (n_rows,), optional
        One label per row, for supervised algorithms.
    origin : (str, int), optional
        Where the block's first row came from: the source (file path) and the byte
        offset (text formats) or row index (npy, parquet). Orders outputs such as
        predictions like the input, and names the place in error messages.
    """

    features: Any
    labels: np.ndarray | None = None
    origin: tuple[str, int] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.features)


def _first_bad(values: np.ndarray) -> tuple[int, int] | None:
    bad = np.argwhere(~np.isfinite(values))
    return (int(bad[0][0]), int(bad[0][1])) if len(bad) else None


def as_block(data: Any, *, n_features: int | None = None, owner: str = "beam_ml") -> Block:
    """Validate ``data`` and return it as a :class:`Block` (without copying if possible).

    Accepts a Block, a 2-D array-like or a scipy sparse matrix. Raises
    :class:`BadInputError` naming what was expected: wrong rank, no feature column,
    non-numeric values, NaN/inf (with the row and column), or a feature count other
    than ``n_features``.
    """
    block = data if isinstance(data, Block) else Block(data)
    source = "" if block.origin is None else f" (block from {block.origin[0]} at {block.origin[1]})"
    features = block.features
    if sp.issparse(features):
        if not sp.isspmatrix_csr(features):
            features = sp.csr_matrix(features)
        values = features.data
    else:
        try:
            features = np.asarray(features)
        except (TypeError, ValueError) as exc:  # ragged lists and the like
            raise BadInputError(
                f"{owner} expects a 2-D numeric block; got {exc}" + source
            ) from None
        if features.ndim != 2:
            raise BadInputError(
                f"{owner} expects a 2-D block of shape (rows, features); got an array of "
                f"shape {features.shape}. Reshape a single row with x.reshape(1, -1)." + source
            )
        if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
            raise BadInputError(
                f"{owner} expects real numeric features; got dtype {features.dtype}." + source
            )
        values = features
    if features.shape[1] == 0:
        raise BadInputError(
            f"{owner} expects at least one feature; got a block of {features.shape[0]} rows "
            "and no feature columns (is the label the only column?)." + source
        )
    if n_features is not None and features.shape[1] != n_features:
        raise BadInputError(
            f"X has {features.shape[1]} features, but {owner} expects {n_features}." + source
        )
    if not np.isfinite(values).all():
        if sp.issparse(features):
            pos = int(np.argmax(~np.isfinite(values)))
            row = int(np.searchsorted(features.indptr, pos, side="right") - 1)
            where = f"row {row}, column {int(features.indices[pos])}"
        else:
            row, col = _first_bad(values)
            where = f"row {row}, column {col}"
        raise BadInputError(
            f"{owner} expects finite features; the block has NaN or inf at {where}." + source
        )
    labels = block.labels
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise BadInputError(
                f"{owner} expects one label per row ({features.shape[0]}); got labels "
                f"of shape {labels.shape}." + source
            )
    if features is block.features and labels is block.labels:
        return block
    return Block(features, labels, block.origin)


def origin_note(block: Block) -> str:
    """Where a block came from, as a sentence to end an error message ('' if unknown)."""
    if block.origin is None:
        return ""
    file, offset = block.origin
    return (
        f" The block came from {file} and starts at offset {offset} (the byte offset of "
        f"its first line in a text file, the index of its first row in .npy or Parquet)."
    )
