"""Blocks: the unit of data that flows through every beam_ml pipeline.

Beam's per-element overhead is microseconds while a row of floats costs nanoseconds of
arithmetic, so training data always travels as *blocks* of many rows (DESIGN.md §2,
§7). A block is of one *kind*; each kind is a class with the same small protocol,
:class:`BlockKind`:

``n_rows``
    The units the block holds: rows of a matrix, series of a set of time series.
``concat(blocks)`` / ``slice(start, stop)``
    Join blocks, or take units ``[start, stop)``: what readers and pending
    mini-batches do. Both work on whole arrays (no loop over units).
``validate(data, owner=..., spec=...)``
    ``data`` as a block of this kind, checked (shape, values, and the
    :class:`InputSpec` a state or model declares), or a :class:`BadInputError` naming
    ``owner``, the place and the field.
``origin`` / ``origin_note()``
    Where the block's first unit came from, for error messages and output order.

Two kinds: :class:`Block`, the matrix kind (dense 2-D ``numpy`` rows or a
``scipy.sparse.csr_matrix``, with optional labels), and
:class:`~beam_ml.core.series.SeriesBlock`, a set of time series. A state declares the
kind it takes (``TrainingState.BLOCK_KIND``); a state or model declares the input it
takes as a spec (``input_spec``: :class:`MatrixSpec` here, ``SeriesSpec`` for series).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError

__all__ = ["BlockKind", "InputSpec", "Block", "MatrixSpec", "as_block", "origin_note"]

KindT = TypeVar("KindT", bound="BlockKind")


class BlockKind(abc.ABC):
    """The protocol every kind of block follows (see the module docstring)."""

    origin: tuple[str, int] | None

    @property
    @abc.abstractmethod
    def n_rows(self) -> int:
        """The number of units (rows, series) in the block."""

    @classmethod
    @abc.abstractmethod
    def concat(cls: type[KindT], blocks: Sequence[KindT]) -> KindT:
        """One block with the units of ``blocks`` in order (the first one's origin)."""

    @abc.abstractmethod
    def slice(self: KindT, start: int, stop: int) -> KindT:
        """Units ``[start, stop)`` (Python slice bounds). Only a slice from the first
        unit keeps the origin: an origin names where the first unit came from."""

    @classmethod
    @abc.abstractmethod
    def validate(
        cls: type[KindT], data: Any, *, owner: str = "beam_ml", spec: InputSpec | None = None
    ) -> KindT:
        """``data`` as a checked block of this kind (without copying when possible)."""

    def origin_note(self) -> str:
        """Where the block came from, as a sentence to end an error message."""
        return origin_note(self)

    def _sliced_origin(self, start: int) -> tuple[str, int] | None:
        return self.origin if start == 0 else None


class InputSpec(abc.ABC):
    """What a state or model takes: a block kind and the shape it must have.

    Frozen dataclasses: two states merge only when their specs are equal (once both
    know theirs).
    """

    KIND: ClassVar[type[BlockKind]]

    def validate(self, data: Any, owner: str) -> BlockKind:
        """``data`` as a checked block that fits this spec."""
        return self.KIND.validate(data, owner=owner, spec=self)

    @abc.abstractmethod
    def mismatch(self, other: InputSpec) -> str:
        """How ``other`` differs, to end 'Cannot merge <family> states ...'."""

    @abc.abstractmethod
    def probe(self) -> Any:
        """The smallest valid input (one unit of zeros): checks a loaded model's arrays."""


@dataclass(frozen=True, eq=False)
class Block(BlockKind):
    """The matrix kind: many rows of features, with optional labels.

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

    @classmethod
    def concat(cls, blocks: Sequence[Block]) -> Block:
        """The rows of ``blocks`` in order: CSR if any block is sparse, else dense
        (float64 if their dtypes differ).

        One ``numpy.concatenate`` or ``scipy.sparse.vstack`` (CSR stacking joins the
        arrays, no per-row work); labels join when every block has them.
        """
        if not blocks:
            raise ValueError("Block.concat needs at least one block.")
        if len(blocks) == 1:
            return blocks[0]
        with_labels = [b.labels is not None for b in blocks]
        if any(with_labels) and not all(with_labels):
            raise BadInputError(
                "Block.concat: some blocks have labels and some do not; a batch is "
                "either labelled or not." + blocks[with_labels.index(False)].origin_note()
            )
        widths = {b.n_features for b in blocks}
        if len(widths) > 1:
            raise BadInputError(
                f"Block.concat: the blocks have {sorted(widths)} features; rows of one "
                "batch have one width."
            )
        parts = [b.features for b in blocks]
        if any(sp.issparse(p) for p in parts):
            features = sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
        else:
            mixed = len({p.dtype for p in parts}) > 1
            features = np.concatenate(parts, dtype=np.float64 if mixed else None)
        labels = np.concatenate([b.labels for b in blocks]) if with_labels[0] else None
        return Block(features, labels, blocks[0].origin)

    def slice(self, start: int, stop: int) -> Block:
        start, stop, _ = slice(start, stop).indices(self.n_rows)
        stop = max(start, stop)
        labels = None if self.labels is None else self.labels[start:stop]
        return Block(self.features[start:stop], labels, self._sliced_origin(start))

    @classmethod
    def validate(cls, data: Any, *, owner: str = "beam_ml", spec: InputSpec | None = None) -> Block:
        n_features = None if spec is None else spec.n_features  # a MatrixSpec
        return as_block(data, n_features=n_features, owner=owner)


@dataclass(frozen=True)
class MatrixSpec(InputSpec):
    """Rows of ``n_features`` features (dense or CSR)."""

    n_features: int
    KIND: ClassVar[type[BlockKind]] = Block

    def mismatch(self, other: InputSpec) -> str:
        return f"of {self.n_features} and {getattr(other, 'n_features', other)} features"

    def probe(self) -> np.ndarray:
        return np.zeros((1, self.n_features))


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


def origin_note(block: BlockKind) -> str:
    """Where a block came from, as a sentence to end an error message ('' if unknown)."""
    if block.origin is None:
        return ""
    file, offset = block.origin
    return (
        f" The block came from {file} and starts at offset {offset} (the byte offset of "
        f"its first line in a text file, the index of its first row in .npy or Parquet)."
    )
