"""The series kind of block: a set of time series (DeepAR's input).

Each series has a target of its own length, a start timestamp and, optionally,
categorical ids and dynamic features aligned with the target, as in SageMaker DeepAR's
JSON Lines (``{"start": "2012-01-01 00:00:00", "target": [...], "cat": [...],
"dynamic_feat": [[...], ...]}``); one frequency holds for the block. The targets are
stored one after another in one array with CSR-like ``offsets``, so ``concat`` and
``slice`` are a few array operations whatever the number of series, and validating
a block never loops over its series.

Missing target values are NaN (DeepAR's "NaN" or null); infinities are not values.
Dynamic features must be finite, categorical ids non-negative integers. Series may carry
ids (``item_id``, strings: the M4 ids, or the keys of series that grow on a stream), in
every series of a block or in none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from beam_ml.core.block import BlockKind, InputSpec, origin_note
from beam_ml.core.errors import BadInputError

__all__ = ["SeriesBlock", "SeriesSpec", "FREQUENCIES", "is_frequency"]

#: SageMaker DeepAR's ``time_freq``: an optional positive multiple of a base unit.
FREQUENCIES = ("min", "H", "D", "W", "M")
_FREQ = re.compile(r"([1-9][0-9]*)?(" + "|".join(FREQUENCIES) + r")")
_START = "datetime64[s]"


def is_frequency(value: Any) -> bool:
    """Whether ``value`` is a frequency DeepAR knows: 'H', 'D', '5min'..."""
    return isinstance(value, str) and _FREQ.fullmatch(value) is not None


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


@dataclass(frozen=True, eq=False)
class SeriesBlock(BlockKind):
    """Many time series of one frequency.

    Parameters
    ----------
    values : ndarray of shape (n_observations,), float
        Every series' target, one series after another; NaN marks a missing value.
    offsets : ndarray of shape (n_series + 1,), int64
        Series ``i`` is ``values[offsets[i]:offsets[i + 1]]`` (``offsets[0] == 0``).
    start : ndarray of shape (n_series,), datetime64[s]
        The timestamp of each series' first value.
    freq : str
        The time between two values: ``'min'``, ``'H'``, ``'D'``, ``'W'`` or ``'M'``,
        optionally with a multiple (``'5min'``, ``'2H'``), as DeepAR's ``time_freq``.
    cat : ndarray of shape (n_series, n_cat), int64, optional
        Categorical ids of each series (DeepAR's ``cat``).
    dynamic_feat : ndarray of shape (n_dynamic, n_observations), optional
        Time-varying features aligned with ``values`` (DeepAR's ``dynamic_feat``).
    origin : (str, int), optional
        Where the first series came from (file, byte offset of its record).
    item_id : ndarray of shape (n_series,), str, optional
        Each series' id.
    """

    values: np.ndarray
    offsets: np.ndarray
    start: np.ndarray
    freq: str
    cat: np.ndarray | None = None
    dynamic_feat: np.ndarray | None = None
    origin: tuple[str, int] | None = None
    item_id: np.ndarray | None = None

    # --- construction ----------------------------------------------------------------
    @classmethod
    def from_series(
        cls,
        targets: Sequence[Any],
        start: Sequence[Any],
        freq: str,
        cat: Sequence[Sequence[int]] | None = None,
        dynamic_feat: Sequence[Any] | None = None,
        origin: tuple[str, int] | None = None,
        item_id: Sequence[Any] | None = None,
    ) -> SeriesBlock:
        """A block from one target per series (and the same-length lists of starts,
        ``cat`` rows, ``(n_dynamic, length)`` dynamic features and ids), checked."""
        n = len(targets)
        given_fields = (("start", start), ("cat", cat), ("dynamic_feat", dynamic_feat))
        for field, given in (*given_fields, ("item_id", item_id)):
            if given is not None and len(given) != n:
                raise BadInputError(
                    f"SeriesBlock: {n} targets but {len(given)} values of '{field}'; one "
                    "per series."
                )
        parts = []
        for i, target in enumerate(targets):
            part = _floats(target, i, "target", "a list of numbers (NaN or null for a missing value)")  # fmt: skip
            if part.ndim != 1:
                raise BadInputError(
                    f"SeriesBlock: series {i} has a 'target' of shape {part.shape}; a target "
                    "is one list of numbers."
                )
            parts.append(part)
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate(parts) if parts else np.zeros(0)
        starts = _parse_starts(start)
        cats = None if cat is None else _parse_cat(cat)
        dynamic = None if dynamic_feat is None else _parse_dynamic(dynamic_feat, lengths)
        ids = None if item_id is None else _parse_item_id(item_id)
        block = cls(values, offsets, starts, freq, cats, dynamic, origin, ids)
        return cls.validate(block, owner="SeriesBlock")

    @classmethod
    def from_records(
        cls, records: Sequence[Mapping[str, Any]], freq: str, origin: tuple[str, int] | None = None
    ) -> SeriesBlock:
        """A block from DeepAR JSON Lines records (dicts with ``start`` and ``target``,
        and ``cat``, ``dynamic_feat`` and ``item_id`` in every record or in none)."""
        for field in ("cat", "dynamic_feat", "item_id"):
            present = [field in r for r in records]
            if any(present) and not all(present):
                raise BadInputError(
                    f"SeriesBlock: record {present.index(not present[0])} "
                    f"{'lacks' if present[0] else 'has'} '{field}', record 0 "
                    f"{'has' if present[0] else 'lacks'} it; all records or none have it."
                )
        for i, record in enumerate(records):
            for field in ("start", "target"):
                if field not in record:
                    raise BadInputError(f"SeriesBlock: record {i} has no '{field}'.")
        has = records[0] if records else {}
        return cls.from_series(
            [r["target"] for r in records],
            [r["start"] for r in records],
            freq,
            cat=[r["cat"] for r in records] if "cat" in has else None,
            dynamic_feat=[r["dynamic_feat"] for r in records] if "dynamic_feat" in has else None,
            origin=origin,
            item_id=[r["item_id"] for r in records] if "item_id" in has else None,
        )

    # --- the block protocol ------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """The number of series."""
        return int(self.offsets.shape[0]) - 1

    @property
    def n_observations(self) -> int:
        """Target values (missing ones included) over all series."""
        return int(self.values.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """(n_series,) int64: each series' target length."""
        return np.diff(self.offsets)

    @property
    def n_cat(self) -> int:
        return 0 if self.cat is None else int(self.cat.shape[1])

    @property
    def n_dynamic(self) -> int:
        return 0 if self.dynamic_feat is None else int(self.dynamic_feat.shape[0])

    @property
    def series_ids(self) -> np.ndarray:
        """(n_observations,) int64: the series each value belongs to."""
        return np.repeat(np.arange(self.n_rows), self.lengths)

    def target(self, i: int) -> np.ndarray:
        """Series ``i``'s target (a view)."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def concat(cls, blocks: Sequence[SeriesBlock]) -> SeriesBlock:
        """The series of ``blocks`` in order; one frequency, ``cat`` and
        ``dynamic_feat`` of the same widths in all blocks or in none, and ``item_id`` in
        all blocks or in none."""
        if not blocks:
            raise ValueError("SeriesBlock.concat needs at least one block.")
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        for block in blocks[1:]:
            for what, mine, theirs in (
                ("freq", first.freq, block.freq),
                ("number of 'cat' values", _width(first.cat, 1), _width(block.cat, 1)),
                (
                    "number of 'dynamic_feat'",
                    _width(first.dynamic_feat, 0),
                    _width(block.dynamic_feat, 0),
                ),  # fmt: skip
                ("'item_id' presence", first.item_id is not None, block.item_id is not None),
            ):
                if mine != theirs:
                    raise BadInputError(
                        f"SeriesBlock.concat: blocks of different {what} ({mine!r} and "
                        f"{theirs!r}) do not join." + block.origin_note()
                    )
        lengths = np.concatenate([b.lengths for b in blocks])
        return cls(
            np.concatenate([b.values for b in blocks]),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.concatenate([b.start for b in blocks]),
            first.freq,
            None if first.cat is None else np.concatenate([b.cat for b in blocks]),
            None
            if first.dynamic_feat is None
            else np.concatenate([b.dynamic_feat for b in blocks], axis=1),
            first.origin,
            None if first.item_id is None else np.concatenate([b.item_id for b in blocks]),
        )

    def slice(self, start: int, stop: int) -> SeriesBlock:
        """Series ``[start, stop)``; values and dynamic features are views."""
        start, stop, _ = slice(start, stop).indices(self.n_rows)
        stop = max(start, stop)
        bounds = self.offsets[start : stop + 1]
        lo, hi = int(bounds[0]), int(bounds[-1])
        return SeriesBlock(
            self.values[lo:hi],
            bounds - lo,
            self.start[start:stop],
            self.freq,
            None if self.cat is None else self.cat[start:stop],
            None if self.dynamic_feat is None else self.dynamic_feat[:, lo:hi],
            self._sliced_origin(start),
            None if self.item_id is None else self.item_id[start:stop],
        )

    @classmethod
    def validate(
        cls, data: Any, *, owner: str = "beam_ml", spec: InputSpec | None = None
    ) -> SeriesBlock:
        """``data`` if it is a well-formed SeriesBlock that fits ``spec`` (a
        :class:`SeriesSpec`), else a :class:`BadInputError` naming the series and field."""
        if not isinstance(data, SeriesBlock):
            raise BadInputError(
                f"{owner} expects a SeriesBlock (a set of time series); got a "
                f"{type(data).__name__}."
            )
        _Checker(data, owner).check(spec)
        return data


def _width(array: np.ndarray | None, axis: int) -> int | None:
    return None if array is None else int(array.shape[axis])


def _floats(value: Any, series: int, field: str, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(
            f"SeriesBlock: series {series} has a '{field}' that is not {what}."
        ) from None


def _parse_starts(start: Sequence[Any]) -> np.ndarray:
    try:
        return np.asarray(start, dtype=_START)
    except (TypeError, ValueError):
        for i, value in enumerate(start):
            try:
                np.datetime64(value, "s")
            except (TypeError, ValueError):
                raise BadInputError(
                    f"SeriesBlock: series {i} has 'start' {value!r}, which is not a "
                    "timestamp ('YYYY-MM-DD HH:MM:SS')."
                ) from None
        raise


def _parse_cat(cat: Sequence[Sequence[int]]) -> np.ndarray:
    widths = {len(c) for c in cat}
    if len(widths) > 1:
        first = len(cat[0])
        i = next(i for i, c in enumerate(cat) if len(c) != first)
        raise BadInputError(
            f"SeriesBlock: series {i} has {len(cat[i])} 'cat' values, series 0 has {first}; "
            "every series has the same number."
        )
    return np.asarray(cat).reshape(len(cat), widths.pop() if widths else 0)


def _parse_item_id(item_id: Sequence[Any]) -> np.ndarray:
    ids = np.asarray(item_id)
    if ids.ndim != 1 or ids.dtype.kind not in "UiuO":
        raise BadInputError(
            f"SeriesBlock: 'item_id' must be one id (a string or an integer) per series; got "
            f"{ids.dtype} {ids.shape}."
        )
    return ids.astype(str)


def _parse_dynamic(dynamic_feat: Sequence[Any], lengths: np.ndarray) -> np.ndarray:
    parts = []
    for i, features in enumerate(dynamic_feat):
        part = _floats(features, i, "dynamic_feat", "lists of numbers of one length")
        if part.ndim != 2 or part.shape[1] != lengths[i]:
            raise BadInputError(
                f"SeriesBlock: series {i} has 'dynamic_feat' of shape {part.shape}; each "
                f"feature must be aligned with its target of {lengths[i]} values."
            )
        if parts and part.shape[0] != parts[0].shape[0]:
            raise BadInputError(
                f"SeriesBlock: series {i} has {part.shape[0]} 'dynamic_feat', series 0 has "
                f"{parts[0].shape[0]}; every series has the same number."
            )
        parts.append(part)
    return np.concatenate(parts, axis=1) if parts else np.zeros((0, 0))


class _Checker:
    """The checks of :meth:`SeriesBlock.validate`, each over whole arrays."""

    def __init__(self, block: SeriesBlock, owner: str):
        self.block, self.owner = block, owner

    def fail(self, message: str) -> None:
        raise BadInputError(f"{self.owner} {message}" + origin_note(self.block))

    def locate(self, position: int) -> str:
        """'series i at time t' for a position in ``values``."""
        series = int(np.searchsorted(self.block.offsets, position, side="right")) - 1
        return f"series {series} at time {position - int(self.block.offsets[series])}"

    def check(self, spec: InputSpec | None) -> None:
        self.structure()
        self.targets()
        self.starts()
        self.frequency()
        self.categories()
        self.dynamic()
        self.ids()
        if spec is not None:
            self.fits(spec)

    def structure(self) -> None:
        b = self.block
        offsets = np.asarray(b.offsets)
        if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets.dtype.kind not in "iu":
            self.fail(f"expects 'offsets' of n_series + 1 integers; got {offsets.dtype} {offsets.shape}.")  # fmt: skip
        values = np.asarray(b.values)
        if values.ndim != 1 or values.dtype.kind != "f":
            self.fail(f"expects 'values' as one float array; got {values.dtype} {values.shape}.")
        if offsets[0] != 0 or offsets[-1] != values.shape[0] or (np.diff(offsets) < 0).any():
            self.fail(
                f"expects 'offsets' from 0 up to the {values.shape[0]} values, never "
                "decreasing (a damaged SeriesBlock)."
            )

    def targets(self) -> None:
        b = self.block
        empty = b.lengths == 0
        if empty.any():
            self.fail(f"expects at least one target value per series; series {_first(empty)} has an empty 'target'.")  # fmt: skip
        infinite = np.isinf(b.values)
        if infinite.any():
            self.fail(
                f"expects finite or missing (NaN) target values; 'target' of "
                f"{self.locate(_first(infinite))} is {b.values[_first(infinite)]}."
            )

    def starts(self) -> None:
        b = self.block
        start = np.asarray(b.start)
        if start.dtype.kind != "M" or start.shape != (b.n_rows,):
            self.fail(f"expects one datetime64 'start' per series ({b.n_rows}); got {start.dtype} {start.shape}.")  # fmt: skip
        missing = np.isnat(start)
        if missing.any():
            self.fail(f"expects a 'start' timestamp per series; series {_first(missing)} has none (NaT).")  # fmt: skip

    def frequency(self) -> None:
        freq = self.block.freq
        if not is_frequency(freq):
            self.fail(
                f"expects a 'freq' of {list(FREQUENCIES)}, optionally with a multiple "
                f"('5min'); got {freq!r}."
            )

    def categories(self) -> None:
        b = self.block
        if b.cat is None:
            return
        cat = np.asarray(b.cat)
        if cat.ndim != 2 or cat.shape[0] != b.n_rows or cat.dtype.kind not in "iu":
            self.fail(f"expects 'cat' as integers of shape ({b.n_rows}, n_cat); got {cat.dtype} {cat.shape}.")  # fmt: skip
        negative = cat < 0
        if negative.any():
            series, feature = np.unravel_index(_first(negative), cat.shape)
            self.fail(f"expects non-negative 'cat' ids; series {series} has {cat[series, feature]} in 'cat' {feature}.")  # fmt: skip

    def dynamic(self) -> None:
        b = self.block
        if b.dynamic_feat is None:
            return
        dyn = np.asarray(b.dynamic_feat)
        if dyn.ndim != 2 or dyn.shape[1] != b.n_observations or dyn.dtype.kind != "f":
            self.fail(
                f"expects 'dynamic_feat' of floats aligned with the targets, shape "
                f"(n_dynamic, {b.n_observations}); got {dyn.dtype} {dyn.shape}."
            )
        bad = ~np.isfinite(dyn)
        if bad.any():
            feature, position = np.unravel_index(_first(bad), dyn.shape)
            self.fail(
                f"expects finite 'dynamic_feat'; feature {feature} of {self.locate(position)} "
                f"is {dyn[feature, position]}."
            )

    def ids(self) -> None:
        b = self.block
        if b.item_id is None:
            return
        ids = np.asarray(b.item_id)
        if ids.shape != (b.n_rows,) or ids.dtype.kind != "U":
            self.fail(f"expects 'item_id' as one string per series ({b.n_rows}); got {ids.dtype} {ids.shape}.")  # fmt: skip

    def fits(self, spec: InputSpec) -> None:
        if not isinstance(spec, SeriesSpec):
            raise TypeError(f"A SeriesBlock is checked against a SeriesSpec, not {spec!r}.")
        b = self.block
        if spec.freq is not None and b.freq != spec.freq:
            self.fail(f"expects series of frequency {spec.freq!r}; the block's 'freq' is {b.freq!r}.")  # fmt: skip
        if spec.cardinality is not None:
            if b.n_cat != len(spec.cardinality):
                self.fail(f"expects {len(spec.cardinality)} 'cat' values per series; the block has {b.n_cat}.")  # fmt: skip
            if b.n_cat:
                over = b.cat >= np.asarray(spec.cardinality)
                if over.any():
                    series, feature = np.unravel_index(_first(over), b.cat.shape)
                    self.fail(
                        f"expects 'cat' {feature} in [0, {spec.cardinality[feature]}); "
                        f"series {series} has {b.cat[series, feature]}."
                    )
        if spec.num_dynamic_feat is not None and b.n_dynamic != spec.num_dynamic_feat:
            self.fail(f"expects {spec.num_dynamic_feat} 'dynamic_feat' per series; the block has {b.n_dynamic}.")  # fmt: skip


@dataclass(frozen=True)
class SeriesSpec(InputSpec):
    """Series of one frequency, with ``cardinality`` (the number of ids of each
    categorical feature) and ``num_dynamic_feat`` dynamic features; None: not checked."""

    freq: str | None = None
    cardinality: tuple[int, ...] | None = None
    num_dynamic_feat: int | None = None
    KIND: ClassVar[type[BlockKind]] = SeriesBlock

    def mismatch(self, other: InputSpec) -> str:
        for field in ("freq", "cardinality", "num_dynamic_feat"):
            mine, theirs = getattr(self, field), getattr(other, field, None)
            if mine != theirs:
                return f"with {field} {mine!r} and {theirs!r}"
        return f"with inputs {self} and {other}"

    def probe(self) -> SeriesBlock:
        n_cat = 0 if self.cardinality is None else len(self.cardinality)
        return SeriesBlock(
            np.zeros(1),
            np.array([0, 1], dtype=np.int64),
            np.array(["2000-01-01"], dtype=_START),
            self.freq or "D",
            np.zeros((1, n_cat), dtype=np.int64) if n_cat else None,
            np.zeros((self.num_dynamic_feat, 1)) if self.num_dynamic_feat else None,
        )
