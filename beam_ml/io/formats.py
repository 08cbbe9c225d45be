"""Parsing of complete records into blocks: CSV, LIBSVM, JSON lines, ``.npy``, Parquet.

Pure functions, no Beam: each one turns the bytes (or Arrow batch, or raw rows) of
*complete* records into one :class:`~beam_ml.core.block.Block` plus a list of bad
records, so the Beam source (:mod:`beam_ml.io.sources`), the local reader and tests share
one implementation. Rows travel in blocks (DESIGN.md §2), so the fast paths are
vectorized: ``pyarrow.csv`` for CSV, bulk tokenizing and ``numpy`` conversion for LIBSVM,
``numpy.frombuffer`` for ``.npy``. The slow, per-line paths run only on a chunk that
failed the fast path, to name the bad records; the good records of that chunk still
become a block.

A *bad record* is a plain dict (it goes to a dead-letter PCollection as is)::

    {"file": "gs://b/x.csv", "offset": 1234, "line": 17,
     "record": "1,2,abc", "reason": "field 2 ('abc') is not a number"}

``offset`` is the byte offset of the record's first byte in its (uncompressed) file, or
the row index for ``.npy`` and Parquet; ``line`` is the 1-based line number, or ``None``
where it is not known. Fields and columns are numbered from 0, like ``label_column``.
Labels always come out as float64 (regression targets keep their precision); features
as float32, dense (C order) or ``scipy.sparse.csr_matrix``. ``Block.origin`` is
``(file, offset)`` of the bytes (or first row) the block was parsed from, so outputs can
be put back in input order; it is None when ``file`` is empty.

Every record is either a row of the block or a bad record: no input makes a parser
raise anything but :class:`BadInputError` or drop a record. A record is a non-blank line
(:func:`count_records`, which the readers use to check that rows + bad records add up);
a UTF-8 byte order mark (:data:`BOM`) is the reader's to drop.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import scipy.sparse as sp

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError

__all__ = [
    "MAX_RECORD_CHARS",
    "ParseResult",
    "BOM",
    "MAX_INFERRED_FEATURE_DIM",
    "bad_record",
    "count_records",
    "fill_line_numbers",
    "is_header_line",
    "looks_like_header",
    "split_csv_line",
    "parse_csv",
    "parse_libsvm",
    "libsvm_check_indices",
    "parse_jsonl",
    "NpyHeader",
    "read_npy_header",
    "parse_npy_rows",
    "arrow_feature_columns",
    "arrow_to_block",
]

#: Longest ``record`` text kept in a bad record (dead letters must stay small).
MAX_RECORD_CHARS = 1_000

#: What every parser returns: a block (``None`` if no good rows) and the bad records.
ParseResult = tuple[Block | None, list[dict[str, Any]]]

_NEWLINE = 10
_CR = 13


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


def _block(features: Any, labels: np.ndarray | None, file: str, offset: int) -> Block:
    """A block that remembers where its records start (orders outputs like the input)."""
    return Block(features, labels, origin=(file, int(offset)) if file else None)


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of a field for a reason message, cut so one huge field stays readable."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without ``\\n`` and a trailing ``\\r``) of each line."""
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(data)]))
    if starts[-1] == len(data):  # data ends with a newline: no line after it
        starts, ends = starts[:-1], ends[:-1]
    if len(data):
        buf = np.frombuffer(data, dtype=np.uint8)
        has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR)
        ends = ends - has_cr
    return starts, ends


def fill_line_numbers(bad: list[dict[str, Any]], data: bytes, offset: int, first_line: int) -> None:
    """Set ``line`` of records found in ``data`` (which starts at byte ``offset``, on
    line ``first_line``) from their byte offsets, counting newlines in bulk."""
    if not bad:
        return
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
    rel = np.array([rec["offset"] - offset for rec in bad], dtype=np.int64)
    for rec, n_before in zip(bad, np.searchsorted(nl, rel, side="left"), strict=True):
        rec["line"] = int(first_line + n_before)


#: The UTF-8 byte order mark some tools write at the start of a text file.
BOM = b"\xef\xbb\xbf"

# A line of nothing but ASCII whitespace (what ``bytes.strip`` removes) is blank: it is
# no record in any text format. (The pattern starts with a literal, so ``re`` jumps from
# newline to newline: about 1 ms per MiB.)
_BLANK_INNER_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _has_blank_line(data: bytes) -> bool:
    if not data:
        return False
    first_end = data.find(b"\n")
    if _is_blank(data[: first_end if first_end >= 0 else len(data)]):
        return True
    last = data[data.rfind(b"\n") + 1 :]
    if len(last) > 0 and _is_blank(last):
        return True
    return bool(_BLANK_INNER_LINE.search(data))


def count_records(data: bytes, format: str) -> int:
    """How many records the complete lines ``data`` hold, counted apart from parsing.

    A record is a line that is not blank (nor, in LIBSVM, only a comment). Readers
    check that every parser accounts for each: rows used + bad records == records.
    """
    if format == "libsvm" and b"#" in data:
        return sum(1 for line in data.split(b"\n") if _libsvm_tokens(line))
    if _has_blank_line(data):
        return sum(1 for line in data.split(b"\n") if not _is_blank(line))
    return data.count(b"\n") + (len(data) > 0 and not data.endswith(b"\n"))


def _content_lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, start, end) of the lines of ``data`` that are not blank."""
    starts, ends = _line_bounds(data)
    keep = np.flatnonzero(ends > starts)
    if _has_blank_line(data):
        keep = np.array(
            [i for i in keep if not _is_blank(data[starts[i] : ends[i]])], dtype=np.int64
        )
    return keep, starts[keep], ends[keep]


def _line_of(first_line: int | None, n_before: int) -> int | None:
    return None if first_line is None else first_line + n_before


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------- CSV


def _csv_fields(line: bytes | str, delimiter: str) -> tuple[list[str], str | None]:
    """Fields of one CSV line and, if the ``csv`` module rejects it, why.

    The ``csv`` module raises on a carriage return inside a line and on a field over
    its 131,072-character limit; such a line is then split on the delimiter alone (good
    enough to count fields and spot a header) and the reason makes it a bad record.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    try:
        return next(csv.reader([line], delimiter=delimiter), []), None
    except csv.Error as exc:
        if "new-line" in str(exc):
            reason = (
                "a carriage return inside the line (a quoted line break, or mixed line endings)"
            )
        elif "field limit" in str(exc):
            reason = f"a field is longer than {csv.field_size_limit():,} characters"
        else:
            reason = f"not a valid CSV line ({exc})"
        return [f.strip().strip('"') for f in line.split(delimiter)], reason


def split_csv_line(line: bytes | str, delimiter: str = ",") -> list[str]:
    """Fields of one CSV line (quotes handled like ``pyarrow.csv``'s defaults).

    Never raises: a line the ``csv`` module rejects is split on the delimiter alone.
    """
    return _csv_fields(line, delimiter)[0]


def _numeric_fields(fields: Sequence[str], categorical: Sequence[int]) -> list[str]:
    """The fields that should hold numbers: all but the categorical ones (all of them
    when every field is categorical, since then nothing else can tell a header)."""
    if not categorical:
        return list(fields)
    skip = set(categorical)
    rest = [f for j, f in enumerate(fields) if j not in skip]
    return rest if len(fields) > len(skip) else list(fields)


def looks_like_header(fields: Sequence[str], categorical: Sequence[int] = ()) -> bool:
    """True when a first line is a header: some non-empty field is not a number.

    Empty fields do not count, so a first data row with a missing value is still data
    (and becomes a bad record rather than a silently skipped header). Fields of the
    ``categorical`` columns (indices) do not count either: they hold text in data rows.
    """
    return any(
        f.strip() and not _is_number(f.strip()) for f in _numeric_fields(fields, categorical)
    )


def is_header_line(
    line: bytes | str,
    delimiter: str = ",",
    names: Sequence[str] | None = None,
    categorical: Sequence[int] = (),
) -> bool:
    """True when a CSV line looks like a header (:func:`looks_like_header`) and is a
    valid CSV line: a line the ``csv`` module rejects is a bad record, not a header.

    With ``names`` (the header of the input's first file), the first line of another
    file is a header only if it is that header or has no number at all: a first row of
    data with one bad field must become a bad record, not vanish as a header. Only the
    fields outside the ``categorical`` columns (indices) are looked at, but a line equal
    to ``names`` is a header whatever it holds.
    """
    fields, error = _csv_fields(line, delimiter)
    if error is not None:
        return False
    stripped = tuple(f.strip() for f in fields)
    if names is not None and stripped == tuple(names):
        return True
    if not looks_like_header(fields, categorical):
        return False
    numeric = _numeric_fields(stripped, categorical)
    return names is None or not any(map(_is_number, numeric))


@functools.lru_cache(maxsize=64)
def _csv_options(
    n_columns: int, label_column: int | None, delimiter: str, categorical: tuple[int, ...] = ()
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    names = [f"f{j}" for j in range(n_columns)]
    types = {name: pa.float32() for name in names}
    if label_column is not None:
        types[names[label_column]] = pa.float64()  # labels keep float64 precision
    for j in categorical:
        types[names[j]] = pa.string()  # as written ('' for an empty field, never null)
    return (
        # use_threads: pyarrow parses the chunk's 1 MiB blocks on all cores.
        pa_csv.ReadOptions(column_names=names, use_threads=True),
        pa_csv.ParseOptions(delimiter=delimiter),
        # Only "" is null, so 'nan' parses as NaN and 'NA' fails (both bad records).
        pa_csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=True,
        ),
    )


def _columns_to_float32(columns: Sequence[Any], n_rows: int) -> np.ndarray:
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


def _to_float64(column: Any) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _csv_field_name(j: int, column_names: Sequence[str] | None) -> str:
    if column_names is not None and j < len(column_names):
        return f"field {j} [{column_names[j]}]"
    return f"field {j}"


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# What a number may be padded with in a CSV field (str.strip() would also take the
# unicode separators \x1c-\x1f, which no number parser here accepts).
_ASCII_SPACE = " \t\r\n\f\v"


def _csv_problem(
    fields: Sequence[str],
    n_columns: int,
    column_names: Sequence[str] | None,
    label_column: int | None = None,
    split_error: str | None = None,
    categorical: Sequence[int] = (),
    missing: str = "error",
) -> str | None:
    """Why one CSV record is bad (the reference check), or None if it is good.

    Fields of the ``categorical`` columns may hold anything; with ``missing='zero'`` an
    empty feature field is good (an empty label never is).
    """
    if split_error is not None:
        return split_error
    if len(fields) != n_columns:
        return f"expected {n_columns} fields, found {len(fields)}"
    for j, field in enumerate(fields):
        if j in categorical:
            continue
        text = field.strip(_ASCII_SPACE)
        name = _csv_field_name(j, column_names)
        if not text:
            if missing == "zero" and j != label_column:
                continue
            return f"{name} is empty"
        try:
            value = float(text)
        except ValueError:
            return f"{name} ({_short(field)}) is not a number"
        if math.isnan(value):
            return f"{name} is NaN"
        if math.isinf(value):
            return f"{name} is inf"
        if j != label_column and abs(value) > _FLOAT32_MAX:  # features are float32
            return f"{name} ({_short(field)}) is too large for float32"
    return None


def _split_label(
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


def parse_csv(
    data: bytes,
    *,
    n_columns: int,
    label_column: int | None = None,
    delimiter: str = ",",
    column_names: Sequence[str] | None = None,
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
    n_records: int | None = None,
    missing: str = "error",
    categorical: Sequence[int] = (),
    feature_dim: int | None = None,
) -> ParseResult:
    """Parse complete CSV lines (no header) into a dense float32 block.

    Parameters
    ----------
    data : bytes
        Whole lines; the last one may lack its newline. Empty lines are skipped.
    n_columns : int
        Fields every line must have, the label included.
    label_column : int, optional
        Index (0-based, already normalized to ``[0, n_columns)``) of the label field;
        it goes to ``Block.labels`` (float64) and is left out of the features.
    delimiter : str, default ','
    column_names : sequence of str, optional
        Header names, only used to make reasons clearer.
    file, offset, line : str, int, int or None
        Where ``data`` comes from (for bad records): its path, the byte offset of its
        first byte and the line number of its first line (``None`` if unknown).
    n_records : int, optional
        :func:`count_records` of ``data``, if the caller has it (saves counting twice).
    missing : {'error', 'zero'}, default 'error'
        An empty feature field: a bad record (``'error'``), or 0 (``'zero'``; in
        hashed rows the feature is then absent, which is the same). An empty label
        is always a bad record.
    categorical : sequence of int, optional
        Field indices (0-based, normalized, the label's excluded) whose values are
        labels, not numbers: the rows become a CSR block of ``feature_dim`` columns,
        the numeric fields first, then each non-empty categorical value as a 1.0 in
        the column :func:`hashed_column` gives (see :func:`hashed_rows`).
    feature_dim : int, optional
        Width of the hashed rows (required with ``categorical``).

    Returns
    -------
    block : Block or None
        The good rows in order; ``None`` if there are none.
    bad : list of dict
        One bad record per line with a wrong field count, a non-number, an empty
        field (unless ``missing='zero'``), NaN or inf.

    Notes
    -----
    Fast path: ``pyarrow.csv.read_csv`` of the whole chunk, multithreaded, every column
    typed float32 (the label float64). If it raises (field count, non-number), the
    chunk is re-read line by line with the reference check to find the bad lines.
    """
    if not data or data.isspace():
        return None, []
    if label_column is not None and not 0 <= label_column < n_columns:
        raise BadInputError(f"label_column must be in [0, {n_columns}); got {label_column}.")
    check_missing(missing)
    hashing = None
    if categorical:
        hashing = _CsvHashing.build(n_columns, label_column, categorical, feature_dim)
    careful = functools.partial(
        _parse_csv_lines,
        data,
        n_columns,
        label_column,
        delimiter,
        column_names,
        file,
        offset,
        line,
        missing=missing,
        hashing=hashing,
    )
    read_opts, parse_opts, convert_opts = _csv_options(
        n_columns, label_column, delimiter, tuple(categorical)
    )
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=convert_opts,
        )
    except pa.ArrowException:
        return careful()
    n_rows = table.num_rows
    if n_rows != (count_records(data, "csv") if n_records is None else n_records):
        # pyarrow ends a row at a lone '\r' and keeps whitespace-only lines; records
        # are the non-blank '\n' lines, so the careful path decides.
        return careful()
    columns = table.columns
    if hashing is not None:
        return _csv_hashed_table(
            data, columns, hashing, missing, delimiter, column_names, file, offset, line
        )
    if missing == "zero":  # empty feature fields (nulls) read as 0; NaN stays NaN
        columns = [
            c if j == label_column or not c.null_count else pc.fill_null(c, 0.0)
            for j, c in enumerate(columns)
        ]
    if label_column is None:
        features = _columns_to_float32(columns, n_rows)
        labels = None
        row_ok = np.isfinite(features).all(axis=1)
    else:
        features = _columns_to_float32(
            [c for j, c in enumerate(columns) if j != label_column], n_rows
        )
        labels = _to_float64(columns[label_column])
        row_ok = np.isfinite(features).all(axis=1) & np.isfinite(labels)
    if row_ok.all():
        return (_block(features, labels, file, offset) if n_rows else None), []
    # Some NaN/inf/empty fields: map rows back to their lines to report them (rows are
    # the non-blank lines in order: their count was checked above).
    line_index, starts, ends = _content_lines(data)
    bad = []
    for r in np.flatnonzero(~row_ok):
        text = data[starts[r] : ends[r]]
        fields, error = _csv_fields(text, delimiter)
        reason = _csv_problem(fields, n_columns, column_names, label_column, error, missing=missing)
        bad.append(
            bad_record(
                file,
                offset + int(starts[r]),
                _line_of(line, int(line_index[r])),
                text,
                reason or "a field is not a finite number",
            )
        )
    good = row_ok
    block = None
    if good.any():
        block = _block(
            np.ascontiguousarray(features[good]),
            None if labels is None else labels[good],
            file,
            offset,
        )
    return block, bad


def _parse_csv_lines(
    data: bytes,
    n_columns: int,
    label_column: int | None,
    delimiter: str,
    column_names: Sequence[str] | None,
    file: str,
    offset: int,
    line: int | None,
    *,
    missing: str = "error",
    hashing: _CsvHashing | None = None,
) -> ParseResult:
    """Line-by-line CSV parse of one chunk that failed the fast path."""
    keep, starts, ends = _content_lines(data)
    texts = [data[a:b].decode("utf-8", "replace") for a, b in zip(starts, ends, strict=True)]
    # one reader per line: an unmatched quote must not swallow the next lines
    rows = [_csv_fields(text, delimiter) for text in texts]
    categorical = () if hashing is None else hashing.categorical
    good_rows: list[Sequence[str]] = []
    bad = []
    for k, (i, (fields, error)) in enumerate(zip(keep, rows, strict=True)):
        reason = _csv_problem(
            fields, n_columns, column_names, label_column, error, categorical, missing
        )
        if reason is None:
            good_rows.append(fields)
            continue
        bad.append(
            bad_record(file, offset + int(starts[k]), _line_of(line, int(i)), texts[k], reason)
        )
    if not good_rows:
        return None, bad
    if hashing is not None:
        # the reference check passed: numeric fields are finite numbers or empty
        numeric = np.array(
            [
                [float(row[j].strip(_ASCII_SPACE) or "nan") for j in hashing.numeric]
                for row in good_rows
            ],
            dtype=np.float32,
        ).reshape(len(good_rows), len(hashing.numeric))
        text = [pa.array([row[j] for row in good_rows], pa.string()) for j in hashing.categorical]
        labels = None
        if label_column is not None:
            labels = np.array(
                [float(row[label_column].strip(_ASCII_SPACE)) for row in good_rows],
                dtype=np.float64,
            )
        return _hashed_csv_block(numeric, text, labels, hashing, file, offset), bad
    # the reference check passed: every field is a finite number (or empty: missing)
    values = np.array(
        [[float(f.strip(_ASCII_SPACE) or 0.0) for f in row] for row in good_rows],
        dtype=np.float64,
    )
    features, labels = _split_label(values, label_column)
    return _block(features, labels, file, offset), bad


# ------------------------------------------------ categorical columns, missing values

#: What ``missing`` may be: an empty feature field is a bad record, or reads as 0.
MISSING = ("error", "zero")
#: ``feature_dim`` of hashed rows when none is given.
DEFAULT_HASHED_FEATURE_DIM = 2**20


def check_missing(missing: Any, owner: str = "the reader") -> None:
    if missing not in MISSING:
        raise BadInputError(
            f"The 'missing' parameter of {owner} must be one of {list(MISSING)}. "
            f"Got {missing!r} instead."
        )


_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place on a uint64 array (wrapping)."""
    h ^= h >> _S33
    h *= _MIX1
    h ^= h >> _S33
    h *= _MIX2
    h ^= h >> _S33
    return h


def _column_seed(column: str | int) -> np.uint64:
    """The hash state a column starts from: BLAKE2b of its key (field index or JSON
    key), so equal values of different columns hash apart."""
    key = str(column).encode("utf-8", "surrogatepass")
    return np.uint64(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def hash_values(column: str | int, values: pa.Array | Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes (uint64) of categorical ``values`` of ``column``.

    Each value's UTF-8 bytes are read as little-endian 64-bit words (the last one
    zero-padded); the state starts at the column's seed and takes each word by
    ``h = fmix64((h ^ word) * golden)``, then ``h = fmix64(h ^ length)``. All values
    are hashed together, one numpy step per word position (a loop over the longest
    value's words, not over values), and the result is the same in every process,
    run and machine (Python's own ``hash`` of a str is salted per process).
    """
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(list(values), pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[values.offset : values.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    )
    lengths = np.diff(offsets)
    n_words = (lengths + 7) // 8
    # every value's bytes, each value padded with zeros to whole words
    word_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_words, out=word_start[1:])
    padded = np.zeros(int(word_start[-1]) * 8, dtype=np.uint8)
    total = int(offsets[-1] - offsets[0])  # the values' bytes are contiguous
    if total:
        shift = np.repeat(word_start[:-1] * 8 - (offsets[:-1] - offsets[0]), lengths)
        shift += np.arange(total)
        padded[shift] = data[offsets[0] : offsets[-1]]
    words = padded.view("<u8")
    h = np.full(n, _column_seed(column), dtype=np.uint64)
    for k in range(int(n_words.max(initial=0))):
        active = np.flatnonzero(n_words > k)
        state = h[active] ^ words[word_start[active] + k]
        state *= _GOLDEN
        h[active] = _fmix64(state)
    h ^= lengths.astype(np.uint64)
    return _fmix64(h)


def hash_value(column: str | int, value: str) -> int:
    """:func:`hash_values` of one value."""
    return int(hash_values(column, [value])[0])


def hashed_column(column: str | int, value: str, n_numeric: int, feature_dim: int) -> int:
    """The feature column that ``value`` of a categorical ``column`` sets to 1.0 in rows
    of ``feature_dim`` columns whose first ``n_numeric`` hold the numeric fields."""
    return n_numeric + hash_value(column, value) % (feature_dim - n_numeric)


def _hash_codes(
    column: str | int, values: pa.Array | pa.ChunkedArray, n_numeric: int, feature_dim: int
) -> np.ndarray:
    """The hashed column of each value (int64, -1 for an empty value or a null).

    Values are dictionary-encoded, then the distinct values of the block trimmed of
    ASCII white space and hashed (:func:`hash_values`, vectorized); the rows take
    theirs by one numpy lookup.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    encoded = pc.dictionary_encode(values)
    # trimmed after encoding: ' a' and 'a' are two codes of one hashed column
    words = pc.utf8_trim(encoded.dictionary, characters=_ASCII_SPACE)
    width = np.uint64(feature_dim - n_numeric)
    lookup = np.empty(len(words) + 1, dtype=np.int64)  # the last: nulls
    lookup[:-1] = (hash_values(column, words) % width).astype(np.int64) + n_numeric
    lookup[:-1][pc.utf8_length(words).to_numpy(zero_copy_only=False) == 0] = -1
    lookup[-1] = -1
    codes = pc.fill_null(encoded.indices, len(words)).to_numpy(zero_copy_only=False)
    return lookup[codes]


def hashed_rows(
    numeric: np.ndarray, codes: Sequence[np.ndarray], feature_dim: int
) -> sp.csr_matrix:
    """Rows of ``feature_dim`` columns: ``numeric`` (rows, n_numeric; NaN = missing,
    left out like zeros) in the first columns, then a 1.0 at each code >= 0 of each
    categorical column. Two values of a row that hash to one column add up (the
    hashing trick's collisions). float32, sorted indices, no explicit zeros."""
    n_rows = numeric.shape[0]
    present = (numeric != 0) & ~np.isnan(numeric)
    num_rows, num_cols = np.nonzero(present)
    parts_rows, parts_cols = [num_rows], [num_cols]
    parts_vals = [numeric[num_rows, num_cols].astype(np.float32)]
    for code in codes:
        rows = np.flatnonzero(code >= 0)
        parts_rows.append(rows)
        parts_cols.append(code[rows])
        parts_vals.append(np.ones(len(rows), dtype=np.float32))
    index_dtype = np.int32 if feature_dim < 2**31 else np.int64
    matrix = sp.csr_matrix(
        (
            np.concatenate(parts_vals),
            (np.concatenate(parts_rows), np.concatenate(parts_cols).astype(index_dtype)),
        ),
        shape=(n_rows, feature_dim),
        dtype=np.float32,
    )
    matrix.sum_duplicates()  # sorts the indices too
    return matrix


@dataclass(frozen=True)
class _CsvHashing:
    """The columns of a CSV record with categorical fields: numeric fields (in order,
    label excluded) go to columns 0.., categorical ones are hashed."""

    n_columns: int
    label_column: int | None
    categorical: tuple[int, ...]
    numeric: tuple[int, ...]
    feature_dim: int

    @classmethod
    def build(
        cls,
        n_columns: int,
        label_column: int | None,
        categorical: Sequence[int],
        feature_dim: int | None,
    ) -> _CsvHashing:
        cat = tuple(sorted(set(int(j) for j in categorical)))
        if any(not 0 <= j < n_columns or j == label_column for j in cat):
            raise BadInputError(
                f"categorical columns must be field indices in [0, {n_columns}) other than "
                f"the label's ({label_column}); got {list(categorical)}."
            )
        numeric = tuple(j for j in range(n_columns) if j != label_column and j not in cat)
        check_hashed_feature_dim(feature_dim, len(numeric))
        return cls(n_columns, label_column, cat, numeric, int(cast(int, feature_dim)))


def check_hashed_feature_dim(feature_dim: Any, n_numeric: int) -> None:
    """Hashed rows need room for the numeric columns and at least one hashed one."""
    if (
        isinstance(feature_dim, bool)
        or not isinstance(feature_dim, int)
        or feature_dim <= n_numeric
    ):
        raise BadInputError(
            f"rows with categorical columns need a feature_dim larger than their "
            f"{n_numeric} numeric columns (the rest is the range values are hashed "
            f"into; default {DEFAULT_HASHED_FEATURE_DIM:,}); got {feature_dim!r}."
        )


def _hashed_csv_block(
    numeric: np.ndarray,
    categorical: Sequence[Any],
    labels: np.ndarray | None,
    hashing: _CsvHashing,
    file: str,
    offset: int,
) -> Block:
    """Good rows -> block: ``numeric`` (rows, numeric fields; NaN = missing), the
    categorical fields as Arrow string columns, the labels."""
    codes = [
        _hash_codes(j, column, len(hashing.numeric), hashing.feature_dim)
        for j, column in zip(hashing.categorical, categorical, strict=True)
    ]
    return _block(hashed_rows(numeric, codes, hashing.feature_dim), labels, file, offset)


def _csv_hashed_table(
    data: bytes,
    columns: Sequence[Any],
    hashing: _CsvHashing,
    missing: str,
    delimiter: str,
    column_names: Sequence[str] | None,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    """The fast path's table of a chunk with categorical columns -> block, bad records.

    A row is bad when a numeric field is NaN or inf, or empty (null) unless
    ``missing='zero'``, or its label is empty, NaN or inf.
    """
    n_rows = len(columns[0])
    row_ok = np.ones(n_rows, dtype=bool)
    for j in hashing.numeric:
        values = columns[j].to_numpy(zero_copy_only=False)
        ok = np.isfinite(values)
        if missing == "zero" and columns[j].null_count:
            ok |= columns[j].is_null().to_numpy(zero_copy_only=False)
        row_ok &= ok
    if hashing.label_column is not None:
        row_ok &= np.isfinite(_to_float64(columns[hashing.label_column]))
    bad: list[dict[str, Any]] = []
    if not row_ok.all():
        line_index, starts, ends = _content_lines(data)
        for r in np.flatnonzero(~row_ok):
            text = data[starts[r] : ends[r]]
            fields, error = _csv_fields(text, delimiter)
            reason = _csv_problem(
                fields,
                hashing.n_columns,
                column_names,
                hashing.label_column,
                error,
                hashing.categorical,
                missing,
            )
            bad.append(
                bad_record(
                    file,
                    offset + int(starts[r]),
                    _line_of(line, int(line_index[r])),
                    text,
                    reason or "a field is not a finite number",
                )
            )
        if not row_ok.any():
            return None, bad
    numeric = _columns_to_float32([columns[j] for j in hashing.numeric], n_rows)
    labels = None
    if hashing.label_column is not None:
        labels = _to_float64(columns[hashing.label_column])
    text = [columns[j] for j in hashing.categorical]
    if not row_ok.all():
        mask = pa.array(row_ok)
        numeric = numeric[row_ok]
        labels = None if labels is None else labels[row_ok]
        text = [pc.filter(c, mask) for c in text]
    return _hashed_csv_block(numeric, text, labels, hashing, file, offset), bad


# ---------------------------------------------------------------------------- LIBSVM


def _libsvm_tokens(line: bytes) -> list[bytes]:
    """Tokens of one LIBSVM line: comment stripped, ``qid:`` dropped."""
    if b"#" in line:
        line = line.split(b"#", 1)[0]
    tokens = line.split()
    if len(tokens) > 1 and tokens[1].startswith(b"qid:"):
        del tokens[1]
    return tokens


def _libsvm_line(
    tokens: list[bytes], feature_dim: int | None, zero_based: bool
) -> tuple[str | None, float, list[int], list[float]]:
    """Reference check and parse of one LIBSVM line: (reason, label, indices, values)."""
    label_text = tokens[0].decode("utf-8", "replace")
    try:
        label = float(label_text)
    except ValueError:
        return f"label ({_short(label_text)}) is not a number", 0.0, [], []
    if not math.isfinite(label):
        return f"label is {label_text}", 0.0, [], []
    shift = 0 if zero_based else 1
    indices: list[int] = []
    values: list[float] = []
    seen: set[int] = set()
    for token in tokens[1:]:
        text = token.decode("utf-8", "replace")
        key, colon, value_text = text.partition(":")
        if not colon or not key or not value_text or ":" in value_text:
            return f"{_short(text)} is not an index:value pair", label, [], []
        try:
            raw_index = int(key)
        except ValueError:
            return f"index {_short(key)} is not an integer", label, [], []
        try:
            value = float(value_text)
        except ValueError:
            return (
                f"value of index {raw_index} ({_short(value_text)}) is not a number",
                label,
                [],
                [],
            )
        if not math.isfinite(value):
            return f"value of index {raw_index} is {value_text}", label, [], []
        if abs(value) > _FLOAT32_MAX:
            return f"value of index {raw_index} is too large for float32", label, [], []
        index = raw_index - shift
        if raw_index == 0 and not zero_based:
            return _INDEX_0_REASON, label, [], []
        if index < 0:
            base = "0-based" if zero_based else "1-based (zero_based=False)"
            return f"index {raw_index} is out of range: indices are {base}", label, [], []
        if feature_dim is not None and index >= feature_dim:
            return (
                f"index {raw_index} is out of range for feature_dim={feature_dim}",
                label,
                [],
                [],
            )
        if index in seen:
            return f"duplicate index {raw_index}", label, [], []
        seen.add(index)
        indices.append(index)
        values.append(value)
    return None, label, indices, values


def _floats_exact_blob(blob: bytes, expected: int) -> np.ndarray | None:
    """The ``expected`` whitespace-separated numbers of ``blob``, or None.

    ``np.fromstring`` stops at the first unparsable text; the trailing sentinel makes a
    token with a bad suffix (``'2x'``) at the end detectable too, and a token that reads
    as two numbers (``'1-2'``) makes the count too large.
    """
    blob += b" 0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not be read to its end"
        try:
            values = np.fromstring(blob, dtype=np.float64, sep=" ")  # noqa: NPY201
        except ValueError:
            return None
    if len(values) != expected + 1:
        return None
    return values[:-1]


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_COLON = ord(":")
# Byte classes of the numpy tokenizer: 0 whitespace, 1 colon, 2 a character of a plain
# decimal number (digits, sign, point, exponent), 3 anything else.
_LIBSVM_CLASS = np.full(256, 3, dtype=np.uint8)
_LIBSVM_CLASS[_WHITESPACE] = 0
_LIBSVM_CLASS[_COLON] = 1
_LIBSVM_CLASS[list(b"0123456789+-.eE")] = 2
_LIBSVM_CLASS_TABLE = _LIBSVM_CLASS.tobytes()  # for bytes.translate: 2x numpy's lookup
_LIBSVM_SEPARATORS = bytes(np.flatnonzero(_LIBSVM_CLASS < 2).tolist())


@dataclass
class _LibsvmTokens:
    """A chunk of LIBSVM lines, tokenized in bulk: one entry per row or per pair."""

    row_start: np.ndarray  # (rows,) byte offset of each row's label in the chunk
    labels: np.ndarray  # (rows,)
    counts: np.ndarray  # (rows,) pairs per row
    raw_index: np.ndarray  # (pairs,) index as written, as float
    values: np.ndarray  # (pairs,)

    def row_lines(self, data: bytes) -> np.ndarray:
        """0-based line of each row in ``data`` (only needed to report bad rows)."""
        nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
        return np.searchsorted(nl, self.row_start)


def _libsvm_bulk(data: bytes) -> _LibsvmTokens | None:
    """Tokenize a whole chunk with numpy; None if any line needs the careful path.

    Fields (runs of bytes that are neither whitespace nor ``:``) come from one pass over
    a byte-class table. A field followed by ``:`` is an index, one preceded by ``:`` a
    value, one with neither a label; each colon must join exactly one index to one value,
    and the labels must be exactly the first field of each line. All fields are then
    converted at once: concatenated into one Arrow string array cast to float64 (C++,
    correctly rounded like ``float()``). A chunk with other characters (``nan``, ``inf``,
    ...) takes :func:`_libsvm_bulk_text`.
    """
    if b"#" in data or (b"q" in data and b"qid:" in data):  # memchr first: 100x faster
        return None  # comments and qids are rare: the line path handles them
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    if n == 0:
        return None
    cls = np.frombuffer(data.translate(_LIBSVM_CLASS_TABLE), dtype=np.uint8)
    if (cls == 3).any():
        return _libsvm_bulk_text(data)
    separator = np.flatnonzero(cls < 2)
    gaps = np.diff(separator)
    if len(separator) and cls[0] > 1 and separator[-1] == n - 1 and (gaps > 1).all():
        # The usual layout: every field is followed by exactly one separator byte.
        end = separator
        start = np.empty_like(end)
        start[0] = 0
        np.add(separator[:-1], 1, out=start[1:])
        after = buf[separator]
        before = np.empty_like(after)
        before[0] = _NEWLINE
        before[1:] = after[:-1]
        long_gap = None
    else:
        in_field = np.empty(n + 2, dtype=bool)
        in_field[0] = in_field[-1] = False
        np.greater(cls, 1, out=in_field[1:-1])
        edges = np.flatnonzero(in_field[1:] != in_field[:-1])
        start, end = edges[0::2], edges[1::2]  # [start, end) of each field
        if len(start) == 0:
            return None
        after = buf[np.minimum(end, n - 1)]  # the byte after each field (end < n but the last)
        if end[-1] == n:
            after[-1] = _NEWLINE
        before = buf[start - 1]  # start > 0 but the first
        if start[0] == 0:
            before[0] = _NEWLINE
        gap = np.empty(len(start), dtype=np.int64)
        gap[0] = 1
        np.subtract(start[1:], end[:-1], out=gap[1:])
        long_gap = np.flatnonzero(gap > 1)
    n_fields = len(start)
    is_index = after == _COLON
    is_value = before == _COLON
    n_colons = int(np.count_nonzero(cls == 1))
    n_pairs = int(np.count_nonzero(is_index))
    if (
        n_colons != n_pairs
        or is_index[-1]
        or not np.array_equal(is_index[:-1], is_value[1:])
        or (is_index & is_value).any()
    ):
        return None  # a colon not between exactly one index and one value
    is_label = ~(is_index | is_value)
    # a field starts its line iff a newline lies in the gap before it (usually 1 byte)
    first = before == _NEWLINE
    if long_gap is not None and len(long_gap):
        nl = np.flatnonzero(buf == _NEWLINE)
        first[long_gap] = np.searchsorted(nl, end[long_gap - 1]) < np.searchsorted(
            nl, start[long_gap]
        )
    first[0] = True
    if not np.array_equal(first, is_label):
        return None  # a line not made of a label then index:value pairs
    # where each field starts once the separators are dropped
    offsets = np.empty(n_fields + 1, dtype=np.int32 if n < 2**31 else np.int64)
    if long_gap is None:  # one separator after each field: k of them before field k
        np.subtract(start, np.arange(n_fields), out=offsets[:-1])
        offsets[-1] = n - n_fields
    else:
        offsets[0] = 0
        np.cumsum(end - start, out=offsets[1:])
    text = data.translate(None, _LIBSVM_SEPARATORS)  # the fields, end to end
    kind = pa.string() if n < 2**31 else pa.large_string()
    strings = pa.Array.from_buffers(
        kind, n_fields, [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )
    numbers = None
    if not (b"." in data or b"e" in data or b"E" in data or b"+" in data or b"-" in data):
        # Only unsigned integers (0/1 labels, one-hot data): Arrow's int64 parse is faster,
        # and int64 -> float64 rounds like float() does. ('-0' would lose its sign, so
        # no '-' at all.) Too large for int64: the float cast below.
        try:
            numbers = pc.cast(strings, pa.int64()).to_numpy(zero_copy_only=False)
            numbers = numbers.astype(np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            numbers = None
    try:
        if numbers is None:
            numbers = pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # A malformed number ('1-2', '--1', ...): the general tokenizer decides, as before
        # (it rejects the chunk, whose lines are then checked one by one).
        return _libsvm_bulk_text(data)
    label_at = np.flatnonzero(is_label)
    pairs = numbers[~is_label]
    counts = np.diff(label_at, append=n_fields)
    counts -= 1
    counts //= 2
    return _LibsvmTokens(
        row_start=start[label_at],
        labels=numbers[label_at],
        counts=counts,
        raw_index=pairs[0::2],
        values=pairs[1::2],
    )


def _libsvm_bulk_text(data: bytes) -> _LibsvmTokens | None:
    """The general bulk tokenizer: whitespace tokens, numbers read by ``np.fromstring``.

    Token boundaries come from a whitespace mask, rows from the line each token is on;
    a label must have no colon, a pair exactly one, neither at its ends. All numbers
    are then read by one ``np.fromstring`` over the chunk with colons made spaces,
    which must yield exactly one number per label and two per pair.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    ws = _WHITESPACE[buf]
    prev_ws = np.concatenate(([True], ws[:-1]))
    next_ws = np.concatenate((ws[1:], [True]))
    tok_start = np.flatnonzero(~ws & prev_ws)
    tok_end = np.flatnonzero(~ws & next_ws)  # inclusive
    if len(tok_start) == 0:
        return None
    nl = np.flatnonzero(buf == _NEWLINE)
    tok_line = np.searchsorted(nl, tok_start)
    first = np.concatenate(([True], tok_line[1:] != tok_line[:-1]))
    colon = np.flatnonzero(buf == _COLON)
    owner = np.searchsorted(tok_start, colon, side="right") - 1
    n_colons = np.bincount(owner, minlength=len(tok_start))
    if (n_colons[first] != 0).any() or (n_colons[~first] != 1).any():
        return None
    if len(colon) and ((colon == tok_start[owner]).any() or (colon == tok_end[owner]).any()):
        return None
    numbers = _floats_exact_blob(data.replace(b":", b" "), len(tok_start) + len(colon))
    if numbers is None:
        return None
    per_token = 1 + (~first)  # a label is one number, a pair two
    position = np.cumsum(per_token) - per_token
    pair_pos = position[~first]
    row_of_token = np.cumsum(first) - 1
    return _LibsvmTokens(
        row_start=tok_start[first],
        labels=numbers[position[first]],
        counts=np.bincount(row_of_token[~first], minlength=int(first.sum())),
        raw_index=numbers[pair_pos],
        values=numbers[pair_pos + 1],
    )


def parse_libsvm(
    data: bytes,
    *,
    feature_dim: int,
    zero_based: bool = False,
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
) -> ParseResult:
    """Parse complete LIBSVM/SVMlight lines into a float32 CSR block with labels.

    Lines are ``label idx:val idx:val ...``; a ``qid:`` token is ignored, ``#`` starts a
    comment, empty lines are skipped. Indices are 1-based unless ``zero_based``.

    Returns
    -------
    block : Block or None
        ``features`` is a ``csr_matrix`` of shape (rows, feature_dim), float32, sorted
        indices; ``labels`` float64.
    bad : list of dict
        A non-numeric label or value, a malformed pair, a non-integer, negative or
        ``>= feature_dim`` index, a duplicate index, NaN or inf.

    Notes
    -----
    The chunk is tokenized in pieces of about 64 KiB of whole lines by
    :func:`_libsvm_bulk` (numpy over the raw bytes, one Arrow cast for the numbers);
    small pieces keep numpy's temporaries in memory the allocator reuses, where
    chunk-sized ones cost a page fault per 4 KiB each time (2x the whole parse). The
    pairs are checked in bulk, rows with a problem found with vectorized masks; only
    the bad lines go through the per-token reference check. A chunk that the bulk
    tokenizer cannot take (comments, ``qid:``, malformed lines) is parsed line by line.
    """
    if not data or data.isspace():
        return None, []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    bad: list[dict[str, Any]] = []
    index_dtype = np.int32 if feature_dim < 2**31 else np.int64
    start, piece_line = 0, line  # piece_line: the line number of the piece's first line
    while start < len(data):
        stop = data.find(b"\n", start + _LIBSVM_PIECE) + 1 or len(data)
        piece = data[start:stop] if start or stop < len(data) else data
        tokens = _libsvm_bulk(piece)
        if tokens is None:
            if piece.isspace():
                if piece_line is not None:
                    piece_line += piece.count(b"\n")
                start = stop
                continue
            return _parse_libsvm_lines(data, feature_dim, zero_based, file, offset, line)
        parts.append(
            _libsvm_rows(
                tokens,
                piece,
                feature_dim,
                zero_based,
                index_dtype,
                file,
                offset + start,
                piece_line,
                bad,
            )
        )
        if piece_line is not None:
            piece_line += piece.count(b"\n")
        start = stop
    labels = np.concatenate([part[0] for part in parts])
    if not len(labels):
        return None, bad
    counts = np.concatenate([part[3] for part in parts])
    indptr = np.empty(len(labels) + 1, dtype=index_dtype)
    indptr[0] = 0
    np.cumsum(counts, out=indptr[1:])
    features = sp.csr_matrix(
        (
            np.concatenate([part[2] for part in parts]),
            np.concatenate([part[1] for part in parts]),
            indptr,
        ),
        shape=(len(labels), feature_dim),
    )
    if not features.has_sorted_indices:
        features.sort_indices()
    return _block(features, labels, file, offset), bad


#: Bytes of whole lines tokenized at a time by :func:`parse_libsvm`.
_LIBSVM_PIECE = 64 * 2**10


def _libsvm_rows(
    tokens: _LibsvmTokens,
    data: bytes,
    feature_dim: int,
    zero_based: bool,
    index_dtype: type,
    file: str,
    offset: int,
    line: int | None,
    bad: list[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the tokenized rows of ``data``: (labels, indices, float32 values, pairs per
    row) of the good rows, each row's indices in the order written; bad rows are
    appended to ``bad`` (their reasons from the per-token reference check)."""
    labels, counts = tokens.labels, tokens.counts
    raw_index, values = tokens.raw_index, tokens.values
    n_rows = len(labels)
    index = raw_index - (0 if zero_based else 1)
    pair_bad = (
        (index < 0)  # also false for NaN, caught by the floor test
        | (index >= feature_dim)
        | (raw_index != np.floor(raw_index))  # not an integer, NaN or inf
        | ~(np.abs(values) <= _FLOAT32_MAX)  # too large for float32, NaN or inf
    )
    any_pair_bad = bool(pair_bad.any())
    if any_pair_bad:
        index[pair_bad] = 0
    index = index.astype(index_dtype)
    # Indices that increase within each row (the usual case) hold no duplicate; else
    # look for one among the sorted (row, index) keys.
    step_down = index[1:] <= index[:-1]
    row_first = np.cumsum(counts[:-1])[counts[1:] > 0]
    step_down[row_first[row_first > 0] - 1] = False  # a new row may start lower
    row_bad = ~np.isfinite(labels)
    if step_down.any():
        row_of_pair = np.repeat(np.arange(n_rows), counts)
        key = row_of_pair * (np.int64(feature_dim) + 1) + index
        order = np.argsort(key, kind="stable")
        dup = np.zeros(len(key), dtype=bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        row_bad[row_of_pair[pair_bad | dup]] = True
    elif any_pair_bad:
        row_bad[np.repeat(np.arange(n_rows), counts)[pair_bad]] = True
    values = values.astype(np.float32)
    if not row_bad.any():
        return labels, index, values, counts
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
    line_start = np.concatenate(([0], nl + 1))
    line_end = np.concatenate((nl, [len(data)]))
    row_lines = tokens.row_lines(data)
    for r in np.flatnonzero(row_bad):
        i = int(row_lines[r])
        text = data[line_start[i] : line_end[i]]
        reason = _libsvm_line(_libsvm_tokens(text), feature_dim, zero_based)[0]
        bad.append(
            bad_record(
                file,
                offset + int(line_start[i]),
                _line_of(line, i),
                text,
                reason or "not a valid LIBSVM line",
            )
        )
    good = ~row_bad
    keep = np.repeat(good, counts)
    return labels[good], index[keep], values[keep], counts[good]


def _parse_libsvm_lines(
    data: bytes,
    feature_dim: int,
    zero_based: bool,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    """Line-by-line LIBSVM parse of one chunk that failed the bulk path."""
    labels: list[float] = []
    indices: list[int] = []
    values: list[float] = []
    indptr = [0]
    bad = []
    position = 0
    for i, text in enumerate(data.split(b"\n")):
        start = position
        position += len(text) + 1
        tokens = _libsvm_tokens(text)
        if not tokens:
            continue
        reason, label, idx, vals = _libsvm_line(tokens, feature_dim, zero_based)
        if reason is not None:
            bad.append(bad_record(file, offset + start, _line_of(line, i), text, reason))
            continue
        order = np.argsort(idx, kind="stable")
        labels.append(label)
        indices.extend(np.asarray(idx, dtype=np.int64)[order].tolist())
        values.extend(np.asarray(vals, dtype=np.float64)[order].tolist())
        indptr.append(len(indices))
    if not labels:
        return None, bad
    features = sp.csr_matrix(
        (
            np.asarray(values, dtype=np.float32),
            np.asarray(indices, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(labels), feature_dim),
    )
    return _block(features, np.asarray(labels, dtype=np.float64), file, offset), bad


#: The largest ``feature_dim`` a reader infers from the data (LIBSVM's largest index);
#: a larger one must be given: one stray index must not make a model of 10^12 features.
MAX_INFERRED_FEATURE_DIM = 2**20

_INDEX_0_REASON = "index 0 in a 1-based file: pass --zero_based true (zero_based=True)"


def _inferred_index_problem(raw_index: int, zero_based: bool, limit: int) -> str | None:
    if raw_index == 0 and not zero_based:
        return _INDEX_0_REASON
    if raw_index - (0 if zero_based else 1) >= limit:
        return (
            f"index {raw_index} would make the inferred feature_dim larger than "
            f"{limit:,}; if the input really has that many features, pass "
            "--feature_dim (feature_dim=...)"
        )
    return None


def libsvm_check_indices(
    data: bytes, *, zero_based: bool = False, limit: int = MAX_INFERRED_FEATURE_DIM
) -> tuple[int, tuple[int, bytes, str] | None]:
    """Largest feature index in ``data`` (0-based; -1 if none), and the first record
    that forbids inferring ``feature_dim`` from it, as (line index in ``data``, line,
    reason): index 0 in a 1-based file, or an index that would make ``feature_dim``
    exceed ``limit``.

    Malformed lines are ignored here; the reader reports them as bad records later.
    """
    shift = 0 if zero_based else 1
    tokens = _libsvm_bulk(data)
    if tokens is not None:
        raw = tokens.raw_index
        raw = raw[np.isfinite(raw) & (raw == np.floor(raw))]
        if not len(raw):
            return -1, None
        if raw.max() - shift < limit and (zero_based or raw.min() != 0):
            return int(raw.max()) - shift, None
    # a problem to locate, or lines the bulk tokenizer does not take: line by line
    largest = -1
    for i, text in enumerate(data.split(b"\n")):
        for token in _libsvm_tokens(text)[1:]:
            try:
                raw_index = int(token.partition(b":")[0])
            except ValueError:
                continue
            problem = _inferred_index_problem(raw_index, zero_based, limit)
            if problem is not None:
                return largest, (i, text, problem)
            largest = max(largest, raw_index - shift)
    return largest, None


# ------------------------------------------------------------------------ JSON lines


def _json_number(value: Any) -> bool:
    return type(value) in (int, float)  # bool is an int subclass, but not a number here


def _jsonl_item(
    item: Any,
    n_features: int,
    label_column: int | str | None,
    features_key: str,
    missing: str = "error",
) -> tuple[str | None, list[float], float | None]:
    """Reference check of one decoded JSON record: (reason, features, label)."""
    label = None
    if isinstance(item, list):
        if isinstance(label_column, str):
            return (
                f"expected an object with keys {features_key!r} and {label_column!r}, "
                "found an array",
                [],
                None,
            )
        expected = n_features + (label_column is not None)
        if len(item) != expected:
            return f"expected {expected} numbers, found {len(item)}", [], None
        values = list(item)
        if label_column is not None:
            label = values.pop(label_column)
            if not _json_number(label):
                return f"label (element {label_column}) is not a number", [], None
    elif isinstance(item, dict):
        if features_key not in item:
            return f"missing key {features_key!r}", [], None
        values = item[features_key]
        if not isinstance(values, list):
            return f"{features_key!r} is not an array", [], None
        if len(values) != n_features:
            return f"expected {n_features} features, found {len(values)}", [], None
        if isinstance(label_column, str):
            if label_column not in item:
                return f"missing label key {label_column!r}", [], None
            label = item[label_column]
            if not _json_number(label):
                return f"label {label_column!r} ({_short(label)}) is not a number", [], None
        elif label_column is not None:
            return (
                f"expected an array (label_column={label_column}), found an object",
                [],
                None,
            )
    else:
        return (
            f"expected a JSON array or an object with {features_key!r}, "
            f"found {type(item).__name__}",
            [],
            None,
        )
    if missing == "zero" and None in values:  # null features read as 0
        values = [0 if value is None else value for value in values]
    for j, value in enumerate(values):
        if not _json_number(value):
            return f"feature {j} ({_short(json.dumps(value))}) is not a number", [], None
        number = _json_float(value)
        if number is None or abs(number) > _FLOAT32_MAX:
            return f"feature {j} ({_short(value)}) is too large for float32", [], None
        if not math.isfinite(number):
            return f"feature {j} is {value}", [], None
    if label is not None:
        number = _json_float(label)
        if number is None:
            return f"label ({_short(label)}) is too large for a float", [], None
        if not math.isfinite(number):
            return f"label is {label}", [], None
    return None, values, label


def _json_float(value: int | float) -> float | None:
    """``float(value)``, or None for an integer beyond float's range (JSON has no limit)."""
    try:
        return float(value)
    except OverflowError:
        return None


def _numeric_matrix(rows: list[Any], width: int) -> np.ndarray | None:
    """``rows`` as a float64 matrix if they are all lists of ``width`` JSON numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ragged lists: VisibleDeprecationWarning
        try:
            array = np.array(rows)
        except (ValueError, TypeError, OverflowError):  # ragged, or a huge integer
            return None
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "fi":
        return None
    return array.astype(np.float64, copy=False)


def parse_jsonl(
    data: bytes,
    *,
    n_features: int,
    label_column: int | str | None = None,
    features_key: str = "features",
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
    missing: str = "error",
    categorical: Sequence[int | str] = (),
    feature_dim: int | None = None,
) -> ParseResult:
    """Parse complete JSON lines into a dense float32 block.

    Each line is either a JSON array of numbers (``label_column`` is then an element
    index, or None) or an object whose ``features_key`` array holds the features
    (``label_column`` is then the label's key, or None).

    ``missing='zero'`` reads a ``null`` feature as 0 (a null label stays bad).
    ``categorical`` (see :func:`parse_csv`) makes the rows hashed CSR rows of
    ``feature_dim`` columns: in arrays, element indices (the label's counted, as in
    ``label_column``); in objects, top-level keys, or indices into the features array.
    A categorical value is a string, or a number or boolean taken as its JSON text
    (``3``, ``2.5``, ``true``); ``null``, ``""`` or an absent key set no feature.
    ``n_features`` is the record's width without categoricals (array elements but the
    label's, or the features array's length), as a dense reader counts it.

    Returns
    -------
    block : Block or None
    bad : list of dict
        Invalid JSON, a wrong form or length, a missing key, a non-number (``true``,
        ``null`` and strings included), NaN or inf.

    Notes
    -----
    Decoding is one ``json.loads`` per line (C code); the numbers of all lines are then
    converted and checked in one numpy call. Lines containing ``true``/``false`` skip
    that bulk step, because numpy would silently read booleans as 0/1.
    """
    check_missing(missing)
    starts, ends = _line_bounds(data)
    texts = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    keep = [i for i, text in enumerate(texts) if text.strip()]
    if not keep:
        return None, []
    if categorical:
        hashing = _JsonHashing.build(n_features, label_column, categorical, feature_dim)
        return _parse_jsonl_hashed(
            data, starts, texts, keep, hashing, features_key, missing, file, offset, line
        )
    items: list[Any] = []
    errors: dict[int, str] = {}
    for k, i in enumerate(keep):
        try:
            items.append(json.loads(texts[i]))
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            items.append(None)
            errors[k] = f"invalid JSON: {exc}"
    fast = None
    if not errors and not any(b"true" in texts[i] or b"false" in texts[i] for i in keep):
        fast = _jsonl_fast(items, n_features, label_column, features_key)
    if fast is not None:
        features, labels = fast
        return _block(features, labels, file, offset), []
    good_values: list[list[float]] = []
    good_labels: list[float | None] = []
    bad = []
    for k, i in enumerate(keep):
        reason = errors.get(k)
        if reason is None:
            reason, values, label = _jsonl_item(
                items[k], n_features, label_column, features_key, missing
            )
        if reason is not None:
            bad.append(
                bad_record(file, offset + int(starts[i]), _line_of(line, i), texts[i], reason)
            )
            continue
        good_values.append(values)
        good_labels.append(label)
    if not good_values:
        return None, bad
    features = np.array(good_values, dtype=np.float32).reshape(len(good_values), n_features)
    labels = None if label_column is None else np.array(good_labels, dtype=np.float64)
    return _block(features, labels, file, offset), bad


def _jsonl_fast(
    items: list[Any],
    n_features: int,
    label_column: int | str | None,
    features_key: str,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Vectorized path when every record has the expected form; None otherwise."""
    if all(type(item) is list for item in items):
        if isinstance(label_column, str):
            return None
        width = n_features + (label_column is not None)
        matrix = _numeric_matrix(items, width)
        if matrix is None or not np.isfinite(matrix).all():
            return None
        features, labels = _split_label(matrix, label_column)
        # a feature beyond float32's range became inf: the per-record check names it
        return (features, labels) if np.isfinite(features).all() else None
    if all(type(item) is dict for item in items):
        if label_column is not None and not isinstance(label_column, str):
            return None
        try:
            rows = [item[features_key] for item in items]
            labels_raw = None if label_column is None else [item[label_column] for item in items]
        except (KeyError, TypeError):
            return None
        matrix = _numeric_matrix(rows, n_features)
        if matrix is None or not np.isfinite(matrix).all():
            return None
        labels = None
        if labels_raw is not None:
            if not all(_json_number(v) for v in labels_raw):
                return None
            try:
                labels = np.array(labels_raw, dtype=np.float64)
            except OverflowError:  # an integer beyond float's range: named per record
                return None
            if not np.isfinite(labels).all():
                return None
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        return (features, labels) if np.isfinite(features).all() else None
    return None


@dataclass(frozen=True)
class _JsonHashing:
    """Where the categorical values of a JSON record are: element indices of arrays
    (``label_column`` an int or None), or keys / features-array indices of objects."""

    n_features: int
    label_column: int | str | None
    indices: tuple[int, ...]  # arrays: element indices; objects: features-array indices
    keys: tuple[str, ...]  # objects only
    feature_dim: int

    @classmethod
    def build(
        cls,
        n_features: int,
        label_column: int | str | None,
        categorical: Sequence[int | str],
        feature_dim: int | None,
    ) -> _JsonHashing:
        indices = tuple(sorted({int(c) for c in categorical if not isinstance(c, str)}))
        keys = tuple(dict.fromkeys(c for c in categorical if isinstance(c, str)))
        if label_column is not None and (label_column in indices or label_column in keys):
            raise BadInputError(f"the label ({label_column!r}) cannot be a categorical column.")
        check_hashed_feature_dim(feature_dim, n_features - len(indices))
        return cls(n_features, label_column, indices, keys, int(cast(int, feature_dim)))

    @property
    def n_numeric(self) -> int:
        """Numeric features per record (the same for arrays and objects)."""
        return self.n_features - len(self.indices)

    def split(
        self, item: Any, features_key: str, missing: str
    ) -> tuple[str | None, list[float], list[str | None], float | None]:
        """(reason, numeric values (NaN = missing), categorical texts, label) of one
        decoded record."""
        label: Any = None
        if isinstance(item, list):
            if self.keys or isinstance(self.label_column, str):
                return "expected a JSON object, found an array", [], [], None
            width = self.n_features + (self.label_column is not None)
            if len(item) != width:
                return f"expected {width} elements, found {len(item)}", [], [], None
            fields = list(item)
            if self.label_column is not None:
                label = fields[self.label_column]
            skip = {*self.indices, self.label_column}
            numeric = [(j, v) for j, v in enumerate(fields) if j not in skip]
            texts = [(j, fields[j]) for j in self.indices]
            what = "element"
        elif isinstance(item, dict):
            values = item.get(features_key)
            if not isinstance(values, list):
                return f"missing or non-array key {features_key!r}", [], [], None
            if len(values) != self.n_features:
                return f"expected {self.n_features} features, found {len(values)}", [], [], None
            if self.label_column is not None:
                if self.label_column not in item:
                    return f"missing label key {self.label_column!r}", [], [], None
                label = item[self.label_column]
            numeric = [(j, v) for j, v in enumerate(values) if j not in self.indices]
            texts = [(j, values[j]) for j in self.indices] + [(k, item.get(k)) for k in self.keys]
            what = "feature"
        else:
            return f"expected a JSON array or object, found {type(item).__name__}", [], [], None
        numbers: list[float] = []
        for j, value in numeric:
            if value is None:
                if missing != "zero":
                    return f"{what} {j} is null (missing='zero' reads it as 0)", [], [], None
                numbers.append(math.nan)
                continue
            number = _json_float(value) if _json_number(value) else None
            if number is None or not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
                return (
                    f"{what} {j} ({_short(json.dumps(value))}) is not a float32 number",
                    [],
                    [],
                    None,
                )
            numbers.append(number)
        words: list[str | None] = []
        for j, value in texts:
            if value is None or isinstance(value, str):
                words.append(value)
            elif isinstance(value, (bool, int, float)):
                words.append(json.dumps(value))
            else:
                return (
                    f"categorical {j!r} ({_short(json.dumps(value))}) is not a string or number",
                    [],
                    [],
                    None,
                )
        if self.label_column is not None:
            number = _json_float(label) if _json_number(label) else None
            if number is None or not math.isfinite(number):
                return f"label ({_short(json.dumps(label))}) is not a finite number", [], [], None
            label = number
        return None, numbers, words, label

    def column_keys(self) -> list[int | str]:
        return [*self.indices, *self.keys]


def _parse_jsonl_hashed(
    data: bytes,
    starts: np.ndarray,
    texts: list[bytes],
    keep: list[int],
    hashing: _JsonHashing,
    features_key: str,
    missing: str,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    """JSON lines with categorical values -> hashed CSR block (see :func:`parse_jsonl`).

    Records are decoded and checked one by one (``json.loads`` is per line anyway);
    the numbers then go to numpy, and each categorical column is hashed per distinct
    value of the block (:func:`_hash_codes`).
    """
    numbers: list[list[float]] = []
    words: list[list[str | None]] = []
    labels: list[float] = []
    bad = []
    n_numeric = hashing.n_numeric
    for i in keep:
        try:
            item = json.loads(texts[i])
            reason, nums, cats, label = hashing.split(item, features_key, missing)
        except (ValueError, RecursionError) as exc:
            reason = f"invalid JSON: {exc}"
        if reason is not None:
            bad.append(
                bad_record(file, offset + int(starts[i]), _line_of(line, i), texts[i], reason)
            )
            continue
        numbers.append(nums)
        words.append(cats)
        labels.append(label)
    if not numbers:
        return None, bad
    numeric = np.array(numbers, dtype=np.float32).reshape(len(numbers), n_numeric)
    columns = hashing.column_keys()
    codes = [
        _hash_codes(
            key, pa.array([row[c] for row in words], pa.string()), n_numeric, hashing.feature_dim
        )
        for c, key in enumerate(columns)
    ]
    array_labels = None
    if hashing.label_column is not None:
        array_labels = np.array(labels, dtype=np.float64)
    return _block(hashed_rows(numeric, codes, hashing.feature_dim), array_labels, file, offset), bad


# ------------------------------------------------------------------------------ .npy


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says, and where its data starts.

    Attributes
    ----------
    shape : tuple of int
        ``(n_rows, n_columns)``.
    dtype : numpy.dtype
    header_len : int
        Byte offset of row 0; row ``r`` starts at ``header_len + r * row_bytes``.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    header_len: int

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_columns(self) -> int:
        return self.shape[1]

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize


#: Longest ``.npy`` header read (numpy >= 1.24 refuses more than 10,000 bytes too).
_NPY_MAX_HEADER = 64 * 2**10


def read_npy_header(f: BinaryIO, path: str = "", size: int | None = None) -> NpyHeader:
    """Read the header of a ``.npy`` stream positioned at its start.

    ``size``, the file's length in bytes, if given, must hold the rows the header
    declares: nothing is allocated from a header before it is checked against it.

    Raises
    ------
    BadInputError
        Not a ``.npy`` file (or a header numpy cannot parse), not 2-D, Fortran order
        (rows are not contiguous, so they cannot be read by range), a non-numeric dtype
        (pickled object arrays included), or a shape the file is too short for.
    """
    fmt = np.lib.format
    start = f.tell()
    prefix = f.read(12)
    if len(prefix) < 10 or prefix[:6] != fmt.MAGIC_PREFIX:
        raise BadInputError(f"{path} is not a .npy file (it does not start with \\x93NUMPY).")
    major = prefix[6]
    header_size = (
        struct.unpack("<H", prefix[8:10])[0]
        if major == 1
        else struct.unpack("<I", prefix[8:12].ljust(4, b"\0"))[0]
    )
    if header_size > _NPY_MAX_HEADER:
        raise BadInputError(
            f"{path} declares a .npy header of {header_size:,} bytes (at most "
            f"{_NPY_MAX_HEADER:,} are read); it is corrupt or not written by numpy."
        )
    f.seek(start)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(f)
        else:  # (3, 0): utf-8 header, same layout; numpy has no public reader for it
            shape, fortran_order, dtype = fmt._read_array_header(f, version)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - numpy's parser raises ValueError,
        # SyntaxError, tokenize.TokenError, TypeError ... on a damaged header
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path} is not a readable .npy file: {message[:300]}") from None
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise BadInputError(f"{path} has an invalid .npy shape {shape!r:.100}.")
    if len(shape) != 2:
        raise BadInputError(
            f"{path} holds an array of shape {shape}; ReadBlocks reads 2-D arrays "
            "(rows, columns). Save a single column with x.reshape(-1, 1)."
        )
    if fortran_order and shape[0] > 1 and shape[1] > 1:
        raise BadInputError(
            f"{path} is in Fortran order, so its rows are not contiguous; save it with "
            "np.save(path, np.ascontiguousarray(x))."
        )
    if dtype.kind not in "fiub" or dtype.itemsize == 0:
        raise BadInputError(
            f"{path} has dtype {dtype}; ReadBlocks needs a real numeric .npy array."
        )
    head = NpyHeader((int(shape[0]), int(shape[1])), dtype, int(f.tell()))
    if size is not None and head.header_len + head.n_rows * head.row_bytes > size:
        raise BadInputError(
            f"{path} declares {head.n_rows:,} rows of {head.n_columns:,} {dtype} values "
            f"({head.n_rows * head.row_bytes:,} bytes), but the file holds only "
            f"{max(0, size - head.header_len):,} bytes of data: it is truncated or corrupt."
        )
    return head


def parse_npy_rows(
    raw: bytes | bytearray | memoryview,
    header: NpyHeader,
    *,
    label_column: int | None = None,
    file: str = "",
    row0: int = 0,
) -> ParseResult:
    """Rows of a ``.npy`` file (raw bytes of whole rows) -> float32 block.

    Rows with NaN or inf become bad records (``offset`` is the row index, ``row0`` the
    index of the first row in ``raw``).
    """
    values = np.frombuffer(raw, dtype=header.dtype).reshape(-1, header.n_columns)
    if len(values) == 0:
        return None, []
    features, labels = _split_label(values, label_column)
    return _drop_nonfinite(features, labels, values, label_column, file, row0)


def _drop_nonfinite(
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
        return _block(features, labels, file, row0), []
    bad = []
    for r in np.flatnonzero(~ok):
        row = np.asarray(raw_rows[r], dtype=np.float64)
        overflow = np.isfinite(row) & (np.abs(row) > _FLOAT32_MAX)
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
    return _block(
        np.ascontiguousarray(features[ok]),
        None if labels is None else labels[ok],
        file,
        row0,
    ), bad


# ---------------------------------------------------------------------------- Arrow


def arrow_feature_columns(
    schema: pa.Schema, label_column: int | str | None, path: str = ""
) -> tuple[list[str], str | None]:
    """Split a Parquet/Arrow schema into feature column names and the label name.

    Raises
    ------
    BadInputError
        A non-numeric column (it would have to be encoded first), or a label column
        that is not in the schema.
    """
    names = list(schema.names)
    label = None
    if isinstance(label_column, str):
        if label_column not in names:
            raise BadInputError(
                f"label_column {label_column!r} is not a column of {path}; its columns are {names}."
            )
        label = label_column
    elif label_column is not None:
        if not -len(names) <= label_column < len(names):
            raise BadInputError(
                f"label_column must be in [{-len(names)}, {len(names)}) for {path} "
                f"({len(names)} columns); got {label_column}."
            )
        label = names[label_column]
    for field in schema:
        t = field.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise BadInputError(
                f"column {field.name!r} of {path} has type {t}; ReadBlocks reads numeric "
                "columns only (encode or drop it first)."
            )
    return [n for n in names if n != label], label


def arrow_to_block(
    batch: pa.RecordBatch | pa.Table,
    feature_names: Sequence[str],
    label_name: str | None = None,
    *,
    file: str = "",
    row0: int = 0,
) -> ParseResult:
    """An Arrow batch of numeric columns -> float32 block; rows with a null, NaN or
    inf become bad records (``offset`` = row index)."""
    n_rows = batch.num_rows
    if n_rows == 0:
        return None, []
    features = _columns_to_float32([batch.column(n) for n in feature_names], n_rows)
    labels = None if label_name is None else _to_float64(batch.column(label_name))
    if np.isfinite(features).all() and (labels is None or np.isfinite(labels).all()):
        return _block(features, labels, file, row0), []
    names = list(feature_names) + ([label_name] if label_name else [])
    # the columns as float64, so a reason can tell overflow from inf
    raw = np.column_stack([_to_float64(batch.column(n)) for n in names])
    label_index = len(feature_names) if label_name else None
    return _drop_nonfinite(features, labels, raw, label_index, file, row0, names, "null or NaN")
