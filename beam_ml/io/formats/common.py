"""What the formats share: bad records, lines of a chunk, numbers, ``index:value`` pairs,
and the helpers of planning (label and categorical columns, a text file's usual width).

A *bad record* is a plain dict (it goes to a dead-letter PCollection as is)::

    {"file": "gs://b/x.csv", "offset": 1234, "line": 17,
     "record": "1,2,abc", "reason": "field 2 ('abc') is not a number"}

``offset`` is the byte offset of the record's first byte in its (uncompressed) file, or
the row index for ``.npy`` and Parquet; ``line`` is the 1-based line number, or ``None``
where it is not known. Fields and columns are numbered from 0, like ``label_column``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError

#: Longest ``record`` text kept in a bad record (dead letters must stay small).
MAX_RECORD_CHARS = 1_000

#: What every parser returns: a block (``None`` if no good rows) and the bad records.
ParseResult = tuple[Block | None, list[dict[str, Any]]]

NEWLINE = 10
CR = 13


# --------------------------------------------------------------------------- helpers


def bad_record(
    file: str, offset: int, line: int | None, record: Any, reason: str
) -> dict[str, Any]:
    """Build one dead-letter dict; ``record`` is decoded and cut to 1,000 characters."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        record = bytes(record[: 4 * MAX_RECORD_CHARS]).decode("utf-8", "replace")
    elif not isinstance(record, str):
        record = repr(record)
    record = record.rstrip("\r\n")
    if len(record) > MAX_RECORD_CHARS:
        record = record[: MAX_RECORD_CHARS - 3] + "..."
    return {
        "file": file,
        "offset": int(offset),
        "line": None if line is None else int(line),
        "record": record,
        "reason": reason,
    }


def make_block(features: Any, labels: np.ndarray | None, file: str, offset: int) -> Block:
    """A block that remembers where its records start (orders outputs like the input)."""
    return Block(features, labels, origin=(file, int(offset)) if file else None)


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` of a field for a reason message, cut so one huge field stays readable."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without ``\\n`` and a trailing ``\\r``) of each line."""
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(data)]))
    if starts[-1] == len(data):  # data ends with a newline: no line after it
        starts, ends = starts[:-1], ends[:-1]
    if len(data):
        buf = np.frombuffer(data, dtype=np.uint8)
        has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == CR)
        ends = ends - has_cr
    return starts, ends


def fill_line_numbers(bad: list[dict[str, Any]], data: bytes, offset: int, first_line: int) -> None:
    """Set ``line`` of records found in ``data`` (which starts at byte ``offset``, on
    line ``first_line``) from their byte offsets, counting newlines in bulk."""
    if not bad:
        return
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
    rel = np.array([rec["offset"] - offset for rec in bad], dtype=np.int64)
    for rec, n_before in zip(bad, np.searchsorted(nl, rel, side="left"), strict=True):
        rec["line"] = int(first_line + n_before)


#: The UTF-8 byte order mark some tools write at the start of a text file.
BOM = b"\xef\xbb\xbf"

# A line of nothing but ASCII whitespace (what ``bytes.strip`` removes) is blank: it is
# no record in any text format. (The pattern starts with a literal, so ``re`` jumps from
# newline to newline: about 1 ms per MiB.)
_BLANK_INNER_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")


def is_blank(line: bytes) -> bool:
    return not line.strip()


def has_blank_line(data: bytes) -> bool:
    if not data:
        return False
    first_end = data.find(b"\n")
    if is_blank(data[: first_end if first_end >= 0 else len(data)]):
        return True
    last = data[data.rfind(b"\n") + 1 :]
    if len(last) > 0 and is_blank(last):
        return True
    return bool(_BLANK_INNER_LINE.search(data))


def count_line_records(data: bytes) -> int:
    """How many records the complete lines ``data`` hold, counted apart from parsing:
    the lines that are not blank (a format may say more, as LIBSVM's comments).

    Readers check that every parser accounts for each: rows used + bad records ==
    records.
    """
    if has_blank_line(data):
        return sum(1 for line in data.split(b"\n") if not is_blank(line))
    return data.count(b"\n") + (len(data) > 0 and not data.endswith(b"\n"))


def content_lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, start, end) of the lines of ``data`` that are not blank."""
    starts, ends = line_bounds(data)
    keep = np.flatnonzero(ends > starts)
    if has_blank_line(data):
        keep = np.array(
            [i for i in keep if not is_blank(data[starts[i] : ends[i]])], dtype=np.int64
        )
    return keep, starts[keep], ends[keep]


def line_of(first_line: int | None, n_before: int) -> int | None:
    return None if first_line is None else first_line + n_before


# ------------------------------------------------ index:value pairs (LIBSVM, bag of words)

#: The bytes that separate tokens: ASCII white space.
WHITESPACE = np.zeros(256, dtype=bool)
WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
COLON = ord(":")


def token_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last (inclusive) byte of each run of non-white bytes of ``buf`` (a
    chunk's bytes as uint8), found in bulk from a whitespace mask."""
    ws = WHITESPACE[buf]
    prev_ws = np.concatenate(([True], ws[:-1]))
    next_ws = np.concatenate((ws[1:], [True]))
    return np.flatnonzero(~ws & prev_ws), np.flatnonzero(~ws & next_ws)


def pair_indices(
    raw_index: np.ndarray, zero_based: bool, feature_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs' 0-based indices (float64, as read) and which of them are bad: negative,
    ``>= feature_dim``, not an integer, NaN or inf."""
    index = raw_index - (0 if zero_based else 1)
    bad = (
        (index < 0)  # also false for NaN, caught by the floor test
        | (index >= feature_dim)
        | (raw_index != np.floor(raw_index))  # not an integer, NaN or inf
    )
    return index, bad


def repeated_pairs(row_of_pair: np.ndarray, index: np.ndarray, feature_dim: int) -> np.ndarray:
    """Which pairs repeat an index an earlier pair of their row has: equal (row, index)
    keys, next to each other once sorted."""
    key = row_of_pair * (np.int64(feature_dim) + 1) + index
    order = np.argsort(key, kind="stable")
    repeated = np.zeros(len(key), dtype=bool)
    repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
    return repeated


def csr_of_lists(
    values: list[float], indices: list[int], indptr: list[int], feature_dim: int
) -> sp.csr_matrix:
    """The float32 CSR rows a line-by-line parse collected (``indptr`` starts at 0)."""
    return sp.csr_matrix(
        (
            np.asarray(values, dtype=np.float32),
            np.asarray(indices, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(indptr) - 1, feature_dim),
    )


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def columns_to_float32(columns: Sequence[Any], n_rows: int) -> np.ndarray:
    """Arrow columns -> one C-ordered float32 matrix; nulls become NaN.

    Columns are copied into the rows of a (columns, rows) array (contiguous writes),
    then transposed in one copy: about twice as fast as writing strided columns.
    """
    by_column = np.empty((len(columns), n_rows), dtype=np.float32)
    for j, column in enumerate(columns):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        row = 0
        for chunk in chunks:
            values = chunk.to_numpy(zero_copy_only=False)
            by_column[j, row : row + len(values)] = values
            row += len(values)
    return np.ascontiguousarray(by_column.T)


def to_float64(column: Any) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


FLOAT32_MAX = float(np.finfo(np.float32).max)
# What a number may be padded with in a CSV field (str.strip() would also take the
# unicode separators \x1c-\x1f, which no number parser here accepts).
ASCII_SPACE = " \t\r\n\f\v"


def split_label(
    values: np.ndarray, label_column: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if label_column is None:
        return np.ascontiguousarray(values, dtype=np.float32), None
    n = values.shape[1]
    if label_column in (0, n - 1):  # a slice copies ~9x faster than a column mask
        features = values[:, 1:] if label_column == 0 else values[:, :-1]
    else:
        features = values[:, np.arange(n) != label_column]
    labels = np.asarray(values[:, label_column], dtype=np.float64)
    return np.ascontiguousarray(features, dtype=np.float32), labels


#: What ``missing`` may be: an empty feature field is a bad record, or reads as 0.
MISSING = ("error", "zero")


def check_missing(missing: Any, owner: str = "the reader") -> None:
    if missing not in MISSING:
        raise BadInputError(
            f"The 'missing' parameter of {owner} must be one of {list(MISSING)}. "
            f"Got {missing!r} instead."
        )


def drop_nonfinite(
    features: np.ndarray,
    labels: np.ndarray | None,
    raw_rows: Any,
    label_index: int | None,
    file: str,
    row0: int,
    column_names: Sequence[str] | None = None,
    nan_word: str = "NaN",
) -> ParseResult:
    """Split off rows with NaN, inf or a feature too large for float32 as bad records.

    ``raw_rows`` are the rows as read (all columns, label at ``label_index``); reasons
    name their columns, by ``column_names`` if given.
    """
    ok = np.isfinite(features).all(axis=1)
    if labels is not None:
        ok &= np.isfinite(labels)
    if ok.all():
        return make_block(features, labels, file, row0), []
    bad = []
    for r in np.flatnonzero(~ok):
        row = np.asarray(raw_rows[r], dtype=np.float64)
        overflow = np.isfinite(row) & (np.abs(row) > FLOAT32_MAX)
        if label_index is not None:
            overflow[label_index] = False  # labels are float64
        j = int(np.flatnonzero(~np.isfinite(row) | overflow)[0])
        name = f"column {j}" if column_names is None else f"column {column_names[j]!r}"
        if overflow[j]:
            reason = f"{name} ({row[j]:g}) is too large for float32"
        else:
            reason = f"{name} is {nan_word if np.isnan(row[j]) else 'inf'}"
        bad.append(bad_record(file, row0 + int(r), None, repr(row.tolist()), reason))
    if not ok.any():
        return None, bad
    return make_block(
        np.ascontiguousarray(features[ok]),
        None if labels is None else labels[ok],
        file,
        row0,
    ), bad


# --------------------------------------------------------------------------- planning

#: Records the planner looks at to settle a text file's width.
PLAN_RECORDS = 1_000


def usual_width(widths: Iterable[int]) -> int:
    """The most common width among the first records (the wider one on a tie): one
    truncated or overlong first record must not set the width of a whole file."""
    counts = Counter(widths)
    return max(counts, key=lambda width: (counts[width], width))


def normalize_index(label_column: int, n: int, what: str) -> int:
    if not -n <= label_column < n:
        raise BadInputError(
            f"label_column must be in [{-n}, {n}) for {what} ({n} columns); got {label_column}."
        )
    return label_column % n


def resolve_categorical(
    columns: tuple[int | str, ...],
    n: int,
    names: Sequence[str] | None,
    label: int | str | None,
    what: str,
    keys_allowed: bool = False,
) -> tuple[int | str, ...]:
    """Categorical columns as normalized indices in ``[0, n)`` (names looked up in
    ``names``; with ``keys_allowed``, other names stay keys), the label excluded."""
    resolved: list[int | str] = []
    for column in columns:
        if isinstance(column, str):
            if names is not None and column in names:
                column = list(names).index(column)
            elif keys_allowed:
                resolved.append(column)
                continue
            else:
                known = f"its columns are {list(names)}" if names else "it has no header line"
                raise BadInputError(
                    f"categorical column {column!r} is not a column name of {what}; {known}. "
                    "Give an index instead."
                )
        if not -n <= column < n:
            raise BadInputError(
                f"categorical column {column} is out of range for {what} ({n} columns)."
            )
        resolved.append(column % n)
    if label is not None and label in resolved:
        raise BadInputError(f"the label column ({label!r}) cannot also be categorical.")
    if len(set(resolved)) != len(resolved):
        raise BadInputError(f"categorical_columns {list(columns)} name a column twice.")
    return tuple(resolved)
