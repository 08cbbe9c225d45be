"""Beam sources that read files straight into blocks: ``ReadBlocks``.

Training data flows as blocks, never as rows (DESIGN.md §2): a per-row PCollection costs
microseconds per element, a parsed 10,000-row block costs the same once. So the reader
does not use ``ReadFromText``; it splits each file into byte ranges (row ranges for
``.npy``, row groups for Parquet), shuffles only those small range descriptors to the
workers, and each worker parses its range in chunks of about ``block_size`` rows with the
vectorized parsers of :mod:`beam_ml.io.formats`, emitting one :class:`Block` per chunk.

Everything that can be checked before the pipeline runs is checked in the constructor
(formats, patterns, header, label column, feature count), so a bad pipeline fails at
construction with one clear message [STYLE §1.7]. Bad records found while reading go to
a dead-letter output (``with_dead_letters()``), or are counted, logged and dropped, or,
with ``strict=True``, stop the pipeline naming the file, line and reason [STYLE §1.8].

Examples
--------
>>> import apache_beam as beam                                    # doctest: +SKIP
>>> read = ReadBlocks("data/*.csv", "csv", label_column="price")  # doctest: +SKIP
>>> read.n_features                                               # doctest: +SKIP
8
>>> with beam.Pipeline() as p:                                    # doctest: +SKIP
...     blocks, bad = p | read.with_dead_letters()
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import logging
import lzma
import queue
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, cast

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io import formats

__all__ = [
    "FORMATS",
    "DEAD_LETTERS",
    "METRICS_NAMESPACE",
    "ReadBlocks",
    "ReadCounts",
    "read_blocks_local",
]

#: The formats ``ReadBlocks`` reads.
FORMATS = ("csv", "libsvm", "jsonl", "npy", "parquet")
#: Tag of the dead-letter output.
DEAD_LETTERS = "dead_letters"
#: Namespace of the ``records_read``, ``rows_read`` (rows used), ``bad_records`` (set
#: aside) and ``bytes_read`` counters; records_read == rows_read + bad_records.
METRICS_NAMESPACE = "beam_ml"
#: Default ``max_bad_fraction``: a file (or range) with more bad records than this
#: fraction of its records (and at least ``_MIN_BAD_TO_STOP``) stops the reading.
MAX_BAD_FRACTION = 0.5
_MIN_BAD_TO_STOP = 10

_TEXT_FORMATS = ("csv", "libsvm", "jsonl")
# LIBSVM files are scanned for their largest index only up to this size; beyond it a
# construction-time pass over the data costs too much, so feature_dim must be given.
_LIBSVM_SCAN_LIMIT = 256 * 2**20
# Line numbers of bad records come from counting the newlines before their chunk, a
# re-read of the file's prefix done once per range, and only this far into a file.
_LINE_COUNT_LIMIT = 256 * 2**20
# The longest record (line) read: parsing one costs ~20x its size in memory, so a
# file without line breaks (or a runaway line) must not decide how much is allocated.
_MAX_RECORD_BYTES = 16 * 2**20
_MIN_CHUNK = 64 * 2**10
_MAX_CHUNK = 1 * 2**30
_PROGRESS_SECONDS = 5.0
_LOGGED_BAD_RECORDS = 5
_UNBOUNDED = 2**62

_log = logging.getLogger("beam_ml.io")


# ----------------------------------------------------------------- plan (construction)


@dataclass(frozen=True)
class _Spec:
    """Everything a worker needs to read a range: small, picklable, resolved once."""

    format: str
    n_columns: int | None  # CSV fields / .npy columns per row, label included
    n_features: int | None
    label_column: int | str | None  # int index (csv, npy, jsonl arrays) or name
    header: bool  # CSV: the first line of a file may be a header
    header_auto: bool  # ... and is skipped only if it looks like one
    column_names: tuple[str, ...] | None
    delimiter: str
    zero_based: bool
    features_key: str
    block_size: int
    split_bytes: int
    strict: bool
    row_bytes_hint: int = 128
    max_bad_fraction: float = MAX_BAD_FRACTION
    missing: str = "error"  # empty feature fields: bad records, or 0 ('zero')
    # Categorical columns (CSV: field indices; JSON: element indices, keys or indices
    # into the features array), hashed into n_features columns; n_values is then the
    # record's dense width (what n_features would be without them).
    categorical: tuple[int | str, ...] = ()
    n_values: int | None = None


@dataclass(frozen=True)
class _Range:
    """One unit of work: bytes [start, end) of a text file, rows of a ``.npy`` file or
    row groups of a Parquet file."""

    path: str
    start: int
    end: int


def _patterns(file_pattern: str | Sequence[str]) -> list[str]:
    if isinstance(file_pattern, str):
        return [file_pattern]
    patterns = list(file_pattern)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise BadInputError(
            f"file_pattern must be a glob or a non-empty list of globs; got {file_pattern!r}."
        )
    return patterns


def _match_files(file_pattern: str | Sequence[str]) -> list[tuple[str, int]]:
    """(path, size) of every matched file, sorted and without duplicates."""
    patterns = _patterns(file_pattern)
    try:
        results = FileSystems.match(patterns)
    except BeamIOError as exc:
        raise BadInputError(f"cannot list input {patterns}: {exc}") from None
    files: dict[str, int] = {}
    for pattern, result in zip(patterns, results, strict=True):
        if not result.metadata_list:
            raise BadInputError(f"input pattern {pattern!r} matched no files")
        for meta in result.metadata_list:
            files[meta.path] = int(meta.size_in_bytes)
    return sorted(files.items())


def _is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def _open(path: str, *, seekable: bool = False) -> BinaryIO:
    """Open raw bytes for range reads, or decompressed bytes for .gz & co."""
    if seekable or not _is_compressed(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return cast(BinaryIO, _Decompressed(path))


# Python's own decompressors raise on a stream that ends early (Beam's return what
# they have, so a truncated .gz would lose its tail without a word).
_DECOMPRESSORS: dict[str, Any] = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: bz2.BZ2File,
    CompressionTypes.LZMA: lzma.LZMAFile,
}


class _Decompressed:
    """The decompressed bytes of a file; truncated or corrupt data is a BadInputError."""

    def __init__(self, path: str):
        self.path = path
        kind = CompressionTypes.detect_compression_type(path)
        self.raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        make = _DECOMPRESSORS.get(kind)
        self.inner = make(self.raw) if make else FileSystems.open(path, compression_type=kind)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.inner.read(n)
        except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise BadInputError(
                f"{self.path} is truncated or corrupt: it cannot be decompressed to its "
                f"end ({exc}); repair or remove it."
            ) from None
        return data

    def close(self) -> None:
        self.inner.close()
        self.raw.close()

    def __enter__(self) -> _Decompressed:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _peek_lines(path: str) -> tuple[list[bytes], int]:
    """First lines of a (decompressed) text file: at least one complete non-blank line
    and about 64 KiB, for the header, the column count and a bytes-per-row estimate.
    Returns (complete lines, bytes per line)."""
    pieces: list[bytes] = []
    size, first_text, last_newline = 0, -1, -1
    with _open(path) as f:
        while True:
            piece = f.read(2**16)
            if not piece:
                break
            if first_text < 0 and piece.strip():
                first_text = size + len(piece) - len(piece.lstrip())
            newline = piece.rfind(b"\n")
            if newline >= 0:
                last_newline = size + newline
            pieces.append(piece)
            size += len(piece)
            if 0 <= first_text < last_newline and size >= 2**16:
                break
            if size > _MAX_RECORD_BYTES:
                raise BadInputError(
                    f"the first line of {path} is longer than {_MAX_RECORD_BYTES >> 20} MiB; "
                    "is this the right format?"
                )
    data = b"".join(pieces)
    if piece:  # stopped early: keep complete lines only
        data = data[: last_newline + 1]
    if data.startswith(formats.BOM):
        data = data[len(formats.BOM) :]
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines, max(1, len(data) // max(1, data.count(b"\n")))


def _first_nonempty(files: list[tuple[str, int]]) -> Iterator[str]:
    return (path for path, size in files if size > 0)


def _normalize_index(label_column: int, n: int, what: str) -> int:
    if not -n <= label_column < n:
        raise BadInputError(
            f"label_column must be in [{-n}, {n}) for {what} ({n} columns); got {label_column}."
        )
    return label_column % n


def check_label_column(value: Any, owner: str) -> None:
    """Readers' shared checks (identical messages for ReadBlocks, ReadSql, records)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise BadInputError(
            f"The 'label_column' parameter of {owner} must be an int, a str or None. "
            f"Got {value!r} instead."
        )


def check_feature_dim(value: Any, owner: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BadInputError(
            f"The 'feature_dim' parameter of {owner} must be an int >= 1 or None. "
            f"Got {value!r} instead."
        )


def check_bad_fraction_option(value: Any, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadInputError(
            f"The 'max_bad_fraction' parameter of {owner} must be a number in [0, 1]. "
            f"Got {value!r} instead."
        )


def check_positive_ints(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(
                f"The {name!r} parameter of {owner} must be an int >= 1. Got {value!r} instead."
            )


def _check_options(
    format: str,
    label_column: Any,
    header: Any,
    delimiter: Any,
    feature_dim: Any,
    block_size: Any,
    split_bytes: Any,
) -> None:
    if format not in FORMATS:
        raise BadInputError(
            f"The 'format' parameter of ReadBlocks must be one of {list(FORMATS)}. "
            f"Got {format!r} instead."
        )
    check_label_column(label_column, "ReadBlocks")
    if header not in ("auto", True, False):
        raise BadInputError(
            "The 'header' parameter of ReadBlocks must be 'auto', True or False. "
            f"Got {header!r} instead."
        )
    if header is True and format != "csv":
        raise BadInputError(f"header=True only applies to CSV, not {format!r}.")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
        raise BadInputError(
            "The 'delimiter' parameter of ReadBlocks must be one character (not a quote "
            f"or newline). Got {delimiter!r} instead."
        )
    check_feature_dim(feature_dim, "ReadBlocks")
    check_positive_ints("ReadBlocks", block_size=block_size, split_bytes=split_bytes)


def _plan(
    files: list[tuple[str, int]],
    format: str,
    *,
    label_column: int | str | None,
    header: bool | str,
    delimiter: str,
    feature_dim: int | None,
    zero_based: bool,
    block_size: int,
    split_bytes: int,
    strict: bool,
    features_key: str,
    categorical: tuple[int | str, ...] = (),
) -> _Spec:
    """Validate the options against the first non-empty file and resolve them."""
    spec = _Spec(
        format=format,
        n_columns=None,
        n_features=None,
        label_column=label_column,
        header=False,
        header_auto=header == "auto",
        column_names=None,
        delimiter=delimiter,
        zero_based=bool(zero_based),
        features_key=features_key,
        block_size=block_size,
        split_bytes=split_bytes,
        strict=bool(strict),
        categorical=categorical,
    )
    first = next(_first_nonempty(files), None)
    planner = {
        "csv": _plan_csv,
        "libsvm": _plan_libsvm,
        "jsonl": _plan_jsonl,
        "npy": _plan_npy,
        "parquet": _plan_parquet,
    }[format]
    return planner(spec, files, first, header, feature_dim)


def _usual_width(widths: Iterable[int]) -> int:
    """The most common width among the first records (the wider one on a tie): one
    truncated or overlong first record must not set the width of a whole file."""
    counts = Counter(widths)
    return max(counts, key=lambda width: (counts[width], width))


#: Records the planner looks at to settle a text file's width.
_PLAN_RECORDS = 1_000


def _plan_csv(
    spec: _Spec, files: list[tuple[str, int]], first: str | None, header: Any, _: Any
) -> _Spec:
    label = spec.label_column
    for path in _first_nonempty(files):
        lines, hint = _peek_lines(path)
        data_lines = [ln for ln in lines if ln.strip()]
        if not data_lines:
            continue  # only blank lines: nothing to learn from this file
        first_fields = formats.split_csv_line(lines[0], spec.delimiter)
        first_blank = not lines[0].strip()  # then data_lines[0] is not lines[0]
        widths = [
            len(formats.split_csv_line(line, spec.delimiter))
            for line in data_lines[int(not first_blank) : _PLAN_RECORDS]
        ]
        # 'auto': a first line with a non-number, as wide as the rows under it (a
        # malformed first row of data is no header: it is a bad record); categorical
        # fields given by index hold text in data rows too, so they do not count
        guess = _usual_width(widths if first_blank else [len(first_fields), *widths])
        text_fields: tuple[int, ...] = ()
        if spec.categorical and not any(isinstance(c, str) for c in spec.categorical):
            text_fields = tuple(c % guess for c in spec.categorical if -guess <= c < guess)  # type: ignore[operator]
        has_header = not first_blank and (
            header is True
            or (
                header == "auto"
                and formats.is_header_line(lines[0], spec.delimiter, categorical=text_fields)
                and (not widths or len(first_fields) == _usual_width(widths))
            )
        )
        if has_header:
            names = tuple(f.strip() for f in first_fields)
            n_columns = len(names)
        else:
            names = None
            n_columns = _usual_width(widths if first_blank else [len(first_fields), *widths])
        if isinstance(label, str):
            if names is None:
                raise BadInputError(
                    f"label_column {label!r} is a column name, but the first line of "
                    f"{path} is not a header; give the label's index instead."
                )
            if label not in names:
                raise BadInputError(
                    f"label_column {label!r} is not in the header of {path}; its "
                    f"columns are {list(names)}."
                )
            label = names.index(label)
        elif label is not None:
            label = _normalize_index(label, n_columns, path)
        categorical = _resolve_categorical(spec.categorical, n_columns, names, label, path)
        return replace(
            spec,
            categorical=tuple(sorted(categorical)),  # type: ignore[type-var]
            n_columns=n_columns,
            n_features=n_columns - (label is not None),
            label_column=label,
            header=has_header,
            column_names=names,
            row_bytes_hint=hint,
        )
    # No data anywhere: nothing will be read, so there is nothing to validate against.
    return replace(spec, header=header is not False)


def _plan_libsvm(
    spec: _Spec,
    files: list[tuple[str, int]],
    first: str | None,
    header: Any,
    feature_dim: int | None,
) -> _Spec:
    if spec.label_column is not None:
        raise BadInputError(
            "LIBSVM labels are the first token of each line; label_column must be None. "
            f"Got {spec.label_column!r} instead."
        )
    hint = _peek_lines(first)[1] if first else 128
    if feature_dim is None and first is not None:
        total = sum(size for _, size in files)
        if total > _LIBSVM_SCAN_LIMIT:
            raise BadInputError(
                f"the LIBSVM input is {total / 2**20:.0f} MiB, too large to scan for its "
                f"largest feature index (limit {_LIBSVM_SCAN_LIMIT >> 20} MiB); pass "
                "feature_dim (the number of features)."
            )
        largest = -1
        for path in _first_nonempty(files):
            with _open(path) as f:  # in 16 MiB chunks: bulk tokenizing needs ~10x memory
                reader = _ChunkReader(f, 0, path)
                reader.skip_bom()
                line = 1
                for _, chunk in reader.chunks(_UNBOUNDED, lambda: 16 * 2**20):
                    top, problem = formats.libsvm_check_indices(chunk, zero_based=spec.zero_based)
                    if problem is not None:
                        i, text, reason = problem
                        raise BadInputError(
                            f"cannot infer feature_dim: {path}, line {line + i}: {reason}; "
                            f"record: {text[:200].decode('utf-8', 'replace')!r}"
                        )
                    largest = max(largest, top)
                    line += chunk.count(b"\n")
        if largest < 0:
            raise BadInputError(
                f"the LIBSVM input ({first}{', ...' if len(files) > 1 else ''}) has no "
                "feature index to infer feature_dim from; pass feature_dim (--feature_dim)."
            )
        feature_dim = largest + 1
    return replace(spec, n_features=feature_dim, row_bytes_hint=hint)


def _json_records(lines: list[bytes]) -> tuple[list[Any], str | None]:
    """The lines that are valid JSON, decoded, and the first decoding error."""
    items, error = [], None
    for line in lines:
        try:
            items.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            error = error or str(exc) or type(exc).__name__
    return items, error


def _plan_jsonl(
    spec: _Spec, files: list[tuple[str, int]], first: str | None, header: Any, _: Any
) -> _Spec:
    label = spec.label_column
    for path in _first_nonempty(files):
        lines, hint = _peek_lines(path)
        records = [ln for ln in lines if ln.strip()]
        if not records:
            continue
        items, error = _json_records(records[:_PLAN_RECORDS])
        if not items:
            raise BadInputError(
                f"the first record of {path} is not valid JSON ({error}); is this the right format?"
            )
        item = items[0]
        if isinstance(item, list):
            if isinstance(label, str):
                raise BadInputError(
                    f"label_column {label!r} is a key, but the records of {path} are "
                    "JSON arrays; give the label's index instead."
                )
            width = _usual_width(len(x) for x in items if isinstance(x, list))
            if label is not None:
                label = _normalize_index(label, width, path)
            n_features = width - (label is not None)
        elif isinstance(item, dict):
            key = spec.features_key
            if not isinstance(item.get(key), list):
                raise BadInputError(
                    f"the first record of {path} has no {key!r} array; its keys are "
                    f"{sorted(item)}. Set features_key to the key of the features."
                )
            if label is None and "label" in item:
                label = "label"  # the default label key, used when present
            elif isinstance(label, int):
                raise BadInputError(
                    f"label_column {label!r} is an index, but the records of {path} are "
                    "JSON objects; give the label's key instead."
                )
            elif label is not None and label not in item:
                raise BadInputError(
                    f"label_column {label!r} is not a key of the first record of {path}; "
                    f"its keys are {sorted(item)}."
                )
            n_features = _usual_width(
                len(x[key]) for x in items if isinstance(x, dict) and isinstance(x.get(key), list)
            )
        else:
            raise BadInputError(
                f"the first record of {path} is a JSON {type(item).__name__}; expected "
                f"an array of numbers or an object with a {spec.features_key!r} array."
            )
        categorical = spec.categorical
        if categorical:  # arrays: element indices; objects: keys or features indices
            array = isinstance(item, list)
            categorical = _resolve_categorical(
                categorical,
                n_features + (array and label is not None),
                None,
                label,
                f"the records of {path}",
                keys_allowed=not array,
            )
        return replace(
            spec,
            n_features=n_features,
            label_column=label,
            row_bytes_hint=hint,
            categorical=categorical,
        )
    return spec


def _plan_npy(
    spec: _Spec, files: list[tuple[str, int]], first: str | None, header: Any, _: Any
) -> _Spec:
    if first is None:
        return spec
    label = spec.label_column
    with _open(first, seekable=True) as f:
        head = formats.read_npy_header(f, first, dict(files)[first])
    if isinstance(label, str):
        raise BadInputError(
            f"label_column {label!r} is a name, but .npy columns have none; give the "
            "label's index instead."
        )
    if label is not None:
        label = _normalize_index(label, head.n_columns, first)
    return replace(
        spec,
        n_columns=head.n_columns,
        n_features=head.n_columns - (label is not None),
        label_column=label,
        row_bytes_hint=head.row_bytes,
    )


def _plan_parquet(
    spec: _Spec, files: list[tuple[str, int]], first: str | None, header: Any, _: Any
) -> _Spec:
    if first is None:
        return spec
    with _open(first, seekable=True) as f:
        try:
            schema = pq.ParquetFile(f).schema_arrow
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise BadInputError(f"{first} is not a readable Parquet file: {exc}") from None
    feature_names, label = formats.arrow_feature_columns(schema, spec.label_column, first)
    return replace(
        spec,
        n_columns=len(schema.names),
        n_features=len(feature_names),
        label_column=label,
        column_names=tuple(feature_names),
    )


def check_encoding_options(
    format: str, categorical_columns: Any, missing: Any, owner: str = "ReadBlocks"
) -> tuple[int | str, ...]:
    """The categorical columns as a tuple (a comma-separated str is split), checked;
    and ``missing`` checked: both for CSV and JSON lines only."""
    formats.check_missing(missing, owner)
    if categorical_columns is None:
        columns: tuple[Any, ...] = ()
    elif isinstance(categorical_columns, str):
        parts = [c.strip() for c in categorical_columns.split(",") if c.strip()]
        columns = tuple(int(c) if c.lstrip("-").isdigit() else c for c in parts)
    else:
        columns = tuple(categorical_columns)
    if any(isinstance(c, bool) or not isinstance(c, (int, str)) for c in columns):
        raise BadInputError(
            f"The 'categorical_columns' parameter of {owner} must be column indices or "
            f"names (a list, or one comma-separated str). Got {categorical_columns!r} instead."
        )
    if len(set(columns)) != len(columns):
        raise BadInputError(f"categorical_columns {list(columns)} names a column twice.")
    if columns and format not in ("csv", "jsonl"):
        raise BadInputError(
            f"categorical_columns apply to CSV and JSON lines, not {format!r} "
            "(LIBSVM is sparse already: hash its features upstream)."
        )
    if missing != "error" and format not in ("csv", "jsonl", "libsvm"):
        raise BadInputError(
            f"missing={missing!r} applies to CSV and JSON lines (LIBSVM has no empty "
            f"fields: an absent index is 0), not {format!r}."
        )
    return columns


def _resolve_categorical(
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


def _hashed(spec: _Spec, feature_dim: int | None) -> _Spec:
    """The planned spec of an input with categorical columns: rows of ``feature_dim``
    (default 2^20) columns, the numeric fields first."""
    if not spec.categorical or spec.n_features is None:
        return spec
    dim = formats.DEFAULT_HASHED_FEATURE_DIM if feature_dim is None else feature_dim
    n_numeric = spec.n_features - sum(not isinstance(c, str) for c in spec.categorical)
    formats.check_hashed_feature_dim(dim, n_numeric)
    return replace(spec, n_values=spec.n_features, n_features=dim)


def _build(
    file_pattern: str | Sequence[str], format: str, **options: Any
) -> tuple[list[tuple[str, int]], _Spec]:
    """Check the options, then match the files (only then), then plan."""
    header = options["header"]
    if isinstance(header, str) and header.lower() in ("auto", "true", "false"):
        options["header"] = {"auto": "auto", "true": True, "false": False}[header.lower()]
    _check_options(
        format,
        options["label_column"],
        options["header"],
        options["delimiter"],
        options["feature_dim"],
        options["block_size"],
        options["split_bytes"],
    )
    max_bad_fraction = options.pop("max_bad_fraction")
    check_bad_fraction_option(max_bad_fraction, "ReadBlocks")
    missing = options.pop("missing")
    categorical = check_encoding_options(format, options.pop("categorical_columns"), missing)
    files = _match_files(file_pattern)
    spec = _plan(files, format, categorical=categorical, **options)
    spec = replace(
        _hashed(spec, options["feature_dim"]),
        max_bad_fraction=float(max_bad_fraction),
        missing=missing,
    )
    if spec.n_features == 0:
        raise BadInputError(
            f"the {format} input has no feature columns"
            + (" (only the label)" if spec.label_column is not None else "")
            + f" ({files[0][0]}); there is nothing to train on."
        )
    wanted = options["feature_dim"]
    dense = format != "libsvm" and not categorical
    if dense and None not in (wanted, spec.n_features) and wanted != spec.n_features:
        raise BadInputError(
            f"feature_dim={wanted} was given, but the {format} input has "
            f"{spec.n_features} feature columns (label excluded)."
        )
    return files, spec


# ------------------------------------------------------------------- splitting files


def _split_file(file: tuple[str, int], spec: _Spec) -> list[_Range]:
    """The ranges of one file (runs on a worker: .npy/Parquet open their metadata)."""
    path, size = file
    if size == 0:
        return []
    if spec.format in _TEXT_FORMATS:
        if _is_compressed(path):
            return [_Range(path, 0, _UNBOUNDED)]  # not splittable: one worker
        step = spec.split_bytes
        return [_Range(path, s, min(s + step, size)) for s in range(0, size, step)]
    if spec.format == "npy":
        with _open(path, seekable=True) as f:
            head = formats.read_npy_header(f, path, size)
        rows = max(1, spec.split_bytes // max(1, head.row_bytes))
        n = head.n_rows
        return [_Range(path, r, min(r + rows, n)) for r in range(0, n, rows)]
    with _open(path, seekable=True) as f, _corrupt_parquet(path):
        meta = pq.ParquetFile(f).metadata
    group_rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    if min(group_rows, default=0) < 0 or sum(group_rows) != meta.num_rows:
        raise BadInputError(
            f"{path} is corrupt: its metadata says {meta.num_rows:,} rows, but its row "
            f"groups {group_rows[:10]}{'...' if len(group_rows) > 10 else ''} do not add up."
        )
    ranges = []
    first, acc = 0, 0
    for g in range(meta.num_row_groups):
        acc += _row_group_bytes(meta, g)
        if acc >= spec.split_bytes:
            ranges.append(_Range(path, first, g + 1))
            first, acc = g + 1, 0
    if first < meta.num_row_groups:
        ranges.append(_Range(path, first, meta.num_row_groups))
    return ranges


def _row_group_bytes(meta: Any, g: int) -> int:
    """A row group's size (uncompressed). Not the sum of its column chunks' compressed
    sizes: on some damaged column metadata, pyarrow 25's ``RowGroupMetaData.column``
    aborts the process (an uncaught C++ exception) instead of raising."""
    return max(0, int(meta.row_group(g).total_byte_size))


# ----------------------------------------------------------------- reading one range


class _ChunkReader:
    """Cuts a byte stream into chunks of whole lines, carrying the partial last line.

    ``pos`` is the file offset of ``buf[0]``.
    """

    def __init__(self, f: BinaryIO, pos: int, path: str = ""):
        self.f = f
        self.path = path
        self.pos = pos
        self.buf = b""
        self.eof = False

    def _fill(self, n: int) -> None:
        """Append n bytes (at least 64 KiB), fewer only at the end of the stream.

        Reading until full (remote files may return short reads) means a short read
        *is* the end, so the last record is parsed with the chunk before it.
        """
        n = max(n, _MIN_CHUNK)
        pieces = [self.buf]
        while n > 0:
            data = self.f.read(n)
            if not data:
                self.eof = True
                break
            pieces.append(data)
            n -= len(data)
        self.buf = b"".join(pieces)

    def skip_bom(self) -> None:
        """At the start of a file: drop a UTF-8 byte order mark (it is not data)."""
        if len(self.buf) < len(formats.BOM) and not self.eof:
            self._fill(len(formats.BOM))
        if self.buf.startswith(formats.BOM):
            self.buf = self.buf[len(formats.BOM) :]
            self.pos += len(formats.BOM)

    def first_line(self) -> bytes:
        """The line at ``pos`` (without its newline), not consumed."""
        while b"\n" not in self.buf and not self.eof:
            self._fill(len(self.buf))
        return self.buf.split(b"\n", 1)[0]

    def skip_line(self) -> None:
        """Consume through the first newline (or to the end of the stream)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                self.pos += i + 1
                self.buf = self.buf[i + 1 :]
                return
            if self.eof:
                self.pos += len(self.buf)
                self.buf = b""
                return
            self._fill(len(self.buf))

    def chunks(self, end: int, target: Any) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of chunks of whole records that *start* before ``end``.

        The range owns a record iff its first byte is in it, so the last record may
        run past ``end``; the next range skips it (it starts after a newline at or
        after its ``start - 1``).
        """
        while self.pos < end and (self.buf or not self.eof):
            want = target()
            if len(self.buf) < want and not self.eof:
                self._fill(want - len(self.buf))
            if not self.buf:
                return
            if self.eof and len(self.buf) <= want:
                cut = len(self.buf) - 1  # all that is left; may lack its last newline
            else:
                # the last newline within ``want`` bytes: about block_size rows, even
                # when reads are larger than that
                cut = self.buf.rfind(b"\n", 0, want)
                if cut < 0:
                    cut = self.buf.find(b"\n", want)  # a record longer than want
                    # it starts the buffer: memory must not follow a runaway record
                    if max(cut + 1, len(self.buf) if cut < 0 else 0) > _MAX_RECORD_BYTES:
                        raise BadInputError(
                            f"the record of {self.path} at byte offset {self.pos:,} is "
                            f"longer than {_MAX_RECORD_BYTES >> 20} MiB; is this the right "
                            "format?"
                        )
                if cut < 0:
                    if not self.eof:
                        self._fill(len(self.buf))
                        continue
                    cut = len(self.buf) - 1
            stop = False
            boundary = end - 1 - self.pos  # a newline here or later ends our last record
            if boundary <= cut:
                j = self.buf.find(b"\n", max(boundary, 0), cut + 1)
                cut = cut if j < 0 else j
                stop = True
            chunk = self.buf[: cut + 1]
            self.buf = self.buf[cut + 1 :]
            offset = self.pos
            self.pos += len(chunk)
            yield offset, chunk
            if stop:
                return


def _count_newlines(path: str, upto: int) -> int:
    count = 0
    with _open(path, seekable=True) as f:
        left = upto
        while left > 0:
            piece = f.read(min(left, 16 * 2**20))
            if not piece:
                break
            count += piece.count(b"\n")
            left -= len(piece)
    return count


def _parse_text(
    spec: _Spec, chunk: bytes, path: str, offset: int, line: int | None, records: int
) -> formats.ParseResult:
    # the plan resolved these for the format at hand (None only for empty input)
    n_features = cast(int, spec.n_features)
    if spec.format == "csv":
        return formats.parse_csv(
            chunk,
            n_columns=cast(int, spec.n_columns),
            label_column=cast("int | None", spec.label_column),
            delimiter=spec.delimiter,
            column_names=spec.column_names,
            file=path,
            offset=offset,
            line=line,
            n_records=records,
            missing=spec.missing,
            categorical=cast("tuple[int, ...]", spec.categorical),
            feature_dim=spec.n_features if spec.categorical else None,
        )
    if spec.format == "libsvm":
        return formats.parse_libsvm(
            chunk,
            feature_dim=n_features,
            zero_based=spec.zero_based,
            file=path,
            offset=offset,
            line=line,
        )
    return formats.parse_jsonl(
        chunk,
        n_features=cast(int, spec.n_values) if spec.categorical else n_features,
        label_column=spec.label_column,
        features_key=spec.features_key,
        file=path,
        offset=offset,
        line=line,
        missing=spec.missing,
        categorical=spec.categorical,
        feature_dim=n_features if spec.categorical else None,
    )


#: (block of the good rows, bad records, bytes read, records read).
_Chunk = tuple[Block | None, list[dict[str, Any]], int, int]


def _read_text_range(spec: _Spec, rng: _Range) -> Iterator[_Chunk]:
    if spec.n_features is None:
        return  # planned on empty input; this file was empty at construction too
    compressed = _is_compressed(rng.path)
    with _open(rng.path) as f:
        reader = _ChunkReader(f, rng.start, rng.path)
        if rng.start > 0:
            f.seek(rng.start - 1)
            reader.pos = rng.start - 1
            reader.skip_line()  # that record belongs to the previous range
        else:
            reader.skip_bom()
        skipped_header = False
        if rng.start == 0 and spec.format == "csv" and spec.header:
            first = reader.first_line()
            if not spec.header_auto or formats.is_header_line(
                first,
                spec.delimiter,
                spec.column_names,
                cast("tuple[int, ...]", spec.categorical),
            ):
                reader.skip_line()
                skipped_header = True
        # Line numbers only matter for bad records, so newlines are counted lazily:
        # at the first bad record, the file's prefix is re-read and counted once (up
        # to a limit), then each chunk's newlines are added. A compressed file cannot
        # be re-read cheaply, so it is counted as it goes.
        newlines: int | None = None  # newlines before the current chunk, if known
        if compressed:
            newlines = int(skipped_header)
        counted_prefix = compressed
        seen_bytes, seen_rows = 0, 0
        row_bytes = max(1, spec.row_bytes_hint)

        def target() -> int:
            return int(min(max(spec.block_size * row_bytes, 1), _MAX_CHUNK))

        for offset, chunk in reader.chunks(rng.end, target):
            line = None if newlines is None else newlines + 1
            records = formats.count_records(chunk, spec.format)
            block, bad = _parse_text(spec, chunk, rng.path, offset, line, records)
            if bad and newlines is None and not counted_prefix:
                counted_prefix = True
                if offset <= _LINE_COUNT_LIMIT:
                    newlines = _count_newlines(rng.path, offset)
                    formats.fill_line_numbers(bad, chunk, offset, newlines + 1)
            if newlines is not None:
                newlines += chunk.count(b"\n")
            seen_bytes += len(chunk)
            seen_rows += records
            if seen_rows:
                row_bytes = max(1, seen_bytes // seen_rows)
            yield block, bad, len(chunk), records


def _read_exact(f: BinaryIO, n: int, path: str) -> bytearray:
    """n bytes into a bytearray, so numpy views of it are writable without a copy."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:]) if hasattr(f, "readinto") else None
        if k is None:
            piece = f.read(n - got)
            k = len(piece)
            view[got : got + k] = piece
        if not k:
            raise BadInputError(f"{path} is truncated: expected {n - got} more bytes.")
        got += k
    return buf


def _read_npy_range(spec: _Spec, rng: _Range) -> Iterator[_Chunk]:
    with _open(rng.path, seekable=True) as f:
        head = formats.read_npy_header(f, rng.path)
        if head.n_columns != spec.n_columns:
            raise BadInputError(
                f"{rng.path} has {head.n_columns} columns, but the first .npy file of "
                f"this input has {spec.n_columns}."
            )
        f.seek(head.header_len + rng.start * head.row_bytes)
        row = rng.start
        while row < rng.end:
            n = min(spec.block_size, rng.end - row)
            raw = _read_exact(f, n * head.row_bytes, rng.path)
            block, bad = formats.parse_npy_rows(
                raw,
                head,
                label_column=cast("int | None", spec.label_column),
                file=rng.path,
                row0=row,
            )
            yield block, bad, len(raw), n
            row += n


@contextlib.contextmanager
def _corrupt_parquet(path: str) -> Iterator[None]:
    """pyarrow's errors on a damaged Parquet file (OSError, ArrowInvalid, ...) as one
    BadInputError naming the file."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path} is not a readable Parquet file: {message[:300]}") from None


def _read_parquet_range(spec: _Spec, rng: _Range) -> Iterator[_Chunk]:
    with _open(rng.path, seekable=True) as f, _corrupt_parquet(rng.path):
        pf = pq.ParquetFile(f)
        names, label = formats.arrow_feature_columns(pf.schema_arrow, spec.label_column, rng.path)
        if len(names) != spec.n_features:
            raise BadInputError(
                f"{rng.path} has {len(names)} feature columns, but the first Parquet "
                f"file of this input has {spec.n_features}."
            )
        meta = pf.metadata
        groups = list(range(rng.start, rng.end))
        row = sum(meta.row_group(g).num_rows for g in range(rng.start))
        rows = sum(meta.row_group(g).num_rows for g in groups)
        nbytes = sum(_row_group_bytes(meta, g) for g in groups)
        columns = names + ([label] if label is not None else [])
        for batch in pf.iter_batches(
            batch_size=spec.block_size, row_groups=groups, columns=columns, use_threads=True
        ):
            block, bad = formats.arrow_to_block(batch, names, label, file=rng.path, row0=row)
            yield block, bad, nbytes * batch.num_rows // max(1, rows), batch.num_rows
            row += batch.num_rows
        first_row = sum(meta.row_group(g).num_rows for g in range(rng.start))
        if row - first_row != rows:  # damaged pages: fewer rows than the metadata says
            raise BadInputError(
                f"{rng.path} is corrupt: its row groups {rng.start}-{rng.end - 1} hold "
                f"{rows:,} rows by their metadata, but {row - first_row:,} could be read."
            )


def _read_range(spec: _Spec, rng: _Range) -> Iterator[_Chunk]:
    """The chunks of one range, every record accounted for (and not mostly bad)."""
    if spec.format in _TEXT_FORMATS:
        chunks = _read_text_range(spec, rng)
    elif spec.format == "npy":
        chunks = _read_npy_range(spec, rng)
    else:
        chunks = _read_parquet_range(spec, rng)
    return _accounted(chunks, spec.format, rng.path, spec.max_bad_fraction)


def _accounted(
    chunks: Iterable[_Chunk], fmt: str, path: str, max_bad_fraction: float
) -> Iterator[_Chunk]:
    """``chunks``, checked: in each, rows used + bad records == records read (a parser
    that loses records is a bug, stopped here rather than silent), and at the end no
    more than ``max_bad_fraction`` of the records bad (see :func:`check_bad_fraction`)."""
    records = bad_records = 0
    first_bad = None
    for block, bad, nbytes, n in chunks:
        rows = block.n_rows if block is not None else 0
        if rows + len(bad) != n:
            where = f" at {block.origin}" if block is not None and block.origin else ""
            raise RuntimeError(
                f"beam_ml lost records of {path}{where}: {n} records read, but {rows} "
                f"rows used and {len(bad)} set aside. This is a bug; please report it "
                "with the file."
            )
        records += n
        bad_records += len(bad)
        if first_bad is None and bad:
            first_bad = bad[0]
        yield block, bad, nbytes, n
    check_bad_fraction(bad_records, records, max_bad_fraction, first_bad, fmt, path)


def check_bad_fraction(
    bad: int,
    records: int,
    max_bad_fraction: float,
    first_bad: dict[str, Any] | None,
    fmt: str,
    where: str,
) -> None:
    """Stop when more than ``max_bad_fraction`` of the records read from ``where`` (a
    file, a range of one, a query range) were bad, and at least 10: a wrong format,
    delimiter, header or width rejects most of a file, and that must not pass as dead
    letters. (A few bad records of a tiny file or range do not decide it.)"""
    if bad >= _MIN_BAD_TO_STOP and bad > max_bad_fraction * records:
        raise BadInputError(
            f"{bad:,} of the {records:,} records read from {where} are malformed, more "
            f"than max_bad_fraction={max_bad_fraction:g} allows: check the format, "
            "delimiter, header, label column and feature_dim. The first: "
            f"{_describe(cast(dict, first_bad), fmt)}. To set them aside and go on, "
            "pass --max_bad_fraction 1 (max_bad_fraction=1.0)." + _missing_hint(first_bad)
        )


def _missing_hint(first_bad: dict[str, Any] | None) -> str:
    """A pointer to ``missing='zero'`` when the first bad record has an empty field."""
    reason = "" if first_bad is None else str(first_bad.get("reason", ""))
    if not (reason.endswith(" is empty") or " is null" in reason):
        return ""
    return " Empty numeric fields (not labels) read as 0 with --missing zero (missing='zero')."


# ------------------------------------------------------- bad records, progress, DoFn


def _describe(record: dict[str, Any], fmt: str) -> str:
    if fmt in ("npy", "parquet", "sql"):
        where = f"row {record['offset']}"
    elif fmt == "kafka":
        where = f"offset {record['offset']}"
    elif record["line"] is not None:
        where = f"line {record['line']} (byte offset {record['offset']})"
    else:
        where = f"byte offset {record['offset']}"
    return (
        f"bad record in {record['file']}, {where}: {record['reason']}; "
        f"record: {record['record'][:200]!r}"
    )


class _Progress:
    """Logs rows read, rows/s and the current file at most every few seconds."""

    def __init__(self) -> None:
        self.rows = 0
        self.bad = 0
        self.started = self.logged = time.monotonic()

    def update(self, rows: int, bad: int, path: str) -> None:
        self.rows += rows
        self.bad += bad
        now = time.monotonic()
        if now - self.logged >= _PROGRESS_SECONDS:
            self.logged = now
            _log.info(
                "read %d rows (%.0f rows/s), %d bad records; reading %s",
                self.rows,
                self.rows / max(now - self.started, 1e-9),
                self.bad,
                path,
            )


class _DroppedLog:
    """Logs the first few dropped bad records, then only counts them."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self.count <= _LOGGED_BAD_RECORDS:
            _log.warning(
                "dropped %s (ReadBlocks(...).with_dead_letters() keeps them, "
                "strict=True stops at the first)",
                _describe(record, self.fmt),
            )
        elif self.count == _LOGGED_BAD_RECORDS + 1:
            _log.warning(
                "more bad records are being dropped; see the %s/bad_records counter",
                METRICS_NAMESPACE,
            )


def no_dead_letters_when_strict(strict: bool) -> None:
    """The check every reader's ``with_dead_letters()`` makes first."""
    if strict:
        raise BadInputError(
            "strict=True stops at the first bad record, so there are no dead letters to "
            "return; use one or the other."
        )


def route_bad_records(
    bad: list[dict[str, Any]], fmt: str, strict: bool, counter: Any, dropped: _DroppedLog | None
) -> Iterator[TaggedOutput]:
    """What every reader does with bad records: count them, then stop at the first
    (``strict``), or yield them to the dead-letter output, or (``dropped``) log and drop."""
    counter.inc(len(bad))
    if strict:
        raise BadInputError(_describe(bad[0], fmt))
    for record in bad:
        if dropped is None:
            yield TaggedOutput(DEAD_LETTERS, record)
        else:
            dropped.add(record)


_END = object()


def read_ahead(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``items``, produced by a thread that keeps up to ``depth`` of them ready.

    A fused Beam stage alternates reading+parsing a chunk and training on it on one
    core; read ahead, the next chunk is parsed (numpy, mostly outside the GIL) while
    this one trains. Memory stays bounded (``depth`` + 2 items alive). An exception of
    the producer is raised here, in order; closing this generator stops the producer.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="beam_ml-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = ready.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _ReadRangesFn(beam.DoFn):
    """Reads each range descriptor into blocks (main output) and bad records."""

    def __init__(self, spec: _Spec, dead_letters: bool):
        self._spec = spec
        self._dead_letters = dead_letters
        self._records = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self._rows = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._bad = Metrics.counter(METRICS_NAMESPACE, "bad_records")
        self._bytes = Metrics.counter(METRICS_NAMESPACE, "bytes_read")

    def setup(self) -> None:
        self._progress = _Progress()
        self._dropped = None if self._dead_letters else _DroppedLog(self._spec.format)

    def process(self, rng: _Range) -> Iterator[Any]:
        for block, bad, nbytes, records in read_ahead(_read_range(self._spec, rng)):
            rows = block.n_rows if block is not None else 0
            self._records.inc(records)
            self._rows.inc(rows)
            self._bytes.inc(nbytes)
            if bad:
                yield from route_bad_records(
                    bad, self._spec.format, self._spec.strict, self._bad, self._dropped
                )
            self._progress.update(rows, len(bad), rng.path)
            if block is not None:
                yield block


# ------------------------------------------------------------------------ public API


class ReadBlocks(beam.PTransform):
    """Read files into a PCollection of :class:`~beam_ml.core.block.Block`.

    Apply it to the pipeline: ``blocks = p | ReadBlocks("gs://b/train-*.csv", "csv")``.

    Parameters
    ----------
    file_pattern : str or list of str
        Globs, resolved with Beam's ``FileSystems`` (local, ``gs://``, ``s3://``, ...).
        Every pattern must match at least one file. ``.gz``/``.bz2``/... text files are
        decompressed, each by one worker (they cannot be split).
    format : {'csv', 'libsvm', 'jsonl', 'npy', 'parquet'}
        ``csv``: dense numbers, one row per line. ``libsvm``: ``label idx:val ...``
        (sparse; blocks hold ``csr_matrix``). ``jsonl``: one JSON array of numbers per
        line, or one object with a ``features_key`` array (and a label key). ``npy``: a
        2-D numeric array (C order). ``parquet``: numeric columns.
    label_column : int or str, optional
        The label: a field index (csv, jsonl arrays, npy, parquet; negative counts from
        the end) or a name (csv header, jsonl key, parquet column). It is excluded
        from the features and returned as ``Block.labels`` (float64). LIBSVM labels are
        always the first token; JSON objects use the key ``'label'`` when present.
    header : {'auto', True, False}, default 'auto'
        CSV only ('true' and 'false' as strings too). 'auto': the first line of the
        first non-empty file is a header if it has a non-numeric field; if so, each
        file's first line is skipped when it looks like a header (any non-numeric
        field). True: every file's first line is skipped. False: none is.
    delimiter : str, default ','
        CSV field delimiter.
    feature_dim : int, optional
        LIBSVM number of features. If None, the files are scanned for the largest
        index (only if they total at most 256 MiB, and only up to
        ``formats.MAX_INFERRED_FEATURE_DIM`` = 2**20 features; an index 0 in a 1-based
        file is an error too). For dense formats, if given, it must equal the number
        of feature columns found (CSV and JSON lines: the usual width among the first
        1,000 records, so that one truncated first row does not set it).
    zero_based : bool, default False
        LIBSVM indices start at 0 (otherwise 1, as LIBSVM's own tools write them).
    block_size : int, default 10_000
        About how many rows each emitted block holds.
    split_bytes : int, default 64 MiB
        Work unit: text files are read as byte ranges of this size, ``.npy`` files as
        row ranges and Parquet files as runs of row groups of about this size.
    strict : bool, default False
        Raise :class:`BadInputError` at the first bad record (naming file, line or
        offset and reason) instead of dropping it.
    features_key : str, default 'features'
        JSON lines: key of the features array in object records.
    max_bad_fraction : float, default 0.5
        A file (or a ``split_bytes`` range of one) whose bad records are more than this
        fraction of its records, and at least 10, stops the pipeline with a
        :class:`BadInputError` naming the first: a wrong format, delimiter or width
        must not pass as dead letters. 1.0 never stops.
    categorical_columns : list of int or str, or a comma-separated str, optional
        CSV and JSON lines: columns whose values are labels (strings, or numbers taken
        as their text), not numbers. CSV: field indices (the label's counted, negative
        from the end) or header names; JSON arrays: element indices; JSON objects:
        top-level keys, or indices into the features array. Blocks then hold CSR rows
        of ``feature_dim`` columns (default ``formats.DEFAULT_HASHED_FEATURE_DIM`` =
        2**20): the numeric fields first, in order, then one 1.0 per non-empty
        categorical value (trimmed of white space), in a column of the remaining
        range chosen by a stable 64-bit hash of the column (its field index, or JSON
        key) and the value (``formats.hash_values``: a MurmurHash3-style mix of the
        value's bytes seeded by BLAKE2b of the column; ``formats.hashed_column``): the
        same value of the same column lands in the same column in every file, run and
        process. An empty value (or JSON null, or
        absent key) sets no feature; two values that collide add up.
    missing : {'error', 'zero'}, default 'error'
        An empty numeric field (CSV ``,,``, JSON ``null``): ``'error'`` makes the
        record a bad record; ``'zero'`` reads it as 0 (in hashed rows it is absent,
        which is the same). An empty label is always a bad record. (No mean: a
        one-pass reader cannot know it before the rows it would fill.)

    Attributes
    ----------
    n_features : int or None
        Feature columns per row (label excluded), known at construction; None only if
        every matched file is empty.
    files : list of str
        The matched files.
    has_header : bool
        CSV: whether a header was found (or declared).

    Raises
    ------
    BadInputError
        At construction: unknown format, a pattern that matches no files, a label column
        that is out of range or not in the header, a non-numeric Parquet column, an
        unreadable first file, LIBSVM input over 256 MiB without ``feature_dim``.

    Notes
    -----
    Pipeline shape: ``Create`` (file paths and sizes) -> ``FlatMap`` (split into range
    descriptors) -> ``Reshuffle`` -> ``ParDo`` reading each range in chunks of about
    ``block_size`` rows, one chunk ahead in a thread (:func:`read_ahead`: the next chunk
    is read and parsed while the stage trains on this one). Only descriptors are
    shuffled, never data. Counters in the ``beam_ml`` namespace: ``records_read``,
    ``rows_read`` (rows used), ``bad_records`` (set aside; records_read == rows_read +
    bad_records: a reader that loses a record stops with an error) and ``bytes_read``.
    A UTF-8 byte order mark at the start of a text file is dropped; blank lines are no
    records. A truncated or corrupt ``.gz``/``.bz2``/``.xz`` file stops the reading
    with an error (what follows the damage cannot be counted).
    The reading DoFn logs progress to the ``beam_ml.io`` logger at INFO at most every
    5 seconds.
    """

    def __init__(
        self,
        file_pattern: str | Sequence[str],
        format: str,
        *,
        label_column: int | str | None = None,
        header: bool | str = "auto",
        delimiter: str = ",",
        feature_dim: int | None = None,
        zero_based: bool = False,
        block_size: int = 10_000,
        split_bytes: int = 64 * 2**20,
        strict: bool = False,
        features_key: str = "features",
        max_bad_fraction: float = MAX_BAD_FRACTION,
        categorical_columns: Sequence[int | str] | str | None = None,
        missing: str = "error",
    ):
        super().__init__()
        self._files, self._spec = _build(
            file_pattern,
            format,
            label_column=label_column,
            header=header,
            delimiter=delimiter,
            feature_dim=feature_dim,
            zero_based=zero_based,
            block_size=block_size,
            split_bytes=split_bytes,
            strict=strict,
            features_key=features_key,
            max_bad_fraction=max_bad_fraction,
            categorical_columns=categorical_columns,
            missing=missing,
        )
        self._with_dead_letters = False

    @property
    def n_features(self) -> int | None:
        return self._spec.n_features

    @property
    def files(self) -> list[str]:
        return [path for path, _ in self._files]

    @property
    def has_header(self) -> bool:
        return self._spec.header

    def with_dead_letters(self) -> ReadBlocks:
        """Make the transform return ``(blocks, dead_letters)``.

        ``dead_letters`` is a PCollection of bad-record dicts with keys ``file``,
        ``offset``, ``line``, ``record`` (at most 1,000 characters) and ``reason``.
        """
        no_dead_letters_when_strict(self._spec.strict)
        self._with_dead_letters = True
        return self

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        outputs = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "SplitFiles" >> beam.FlatMap(_split_file, self._spec)
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadRanges"
            >> beam.ParDo(_ReadRangesFn(self._spec, self._with_dead_letters)).with_outputs(
                DEAD_LETTERS, main="blocks"
            )
        )
        if self._with_dead_letters:
            return outputs.blocks, outputs[DEAD_LETTERS]
        return outputs.blocks


def read_blocks_local(
    path_or_pattern: str | Sequence[str],
    format: str,
    *,
    label_column: int | str | None = None,
    header: bool | str = "auto",
    delimiter: str = ",",
    feature_dim: int | None = None,
    zero_based: bool = False,
    block_size: int = 10_000,
    split_bytes: int = 64 * 2**20,
    strict: bool = False,
    features_key: str = "features",
    dead_letters: list[dict[str, Any]] | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    counts: ReadCounts | None = None,
    categorical_columns: Sequence[int | str] | str | None = None,
    missing: str = "error",
) -> Iterator[Block]:
    """Read files into blocks in this process, without Beam.

    Same options, checks (raised here, before the first block) and parsing as
    :class:`ReadBlocks`; blocks come in file order, then range order, so rows keep
    their order. Bad records are appended to ``dead_letters`` when a list is given,
    else logged and dropped; ``strict=True`` raises at the first. ``counts``, if given,
    is updated as records are read.
    """
    files, spec = _build(
        path_or_pattern,
        format,
        label_column=label_column,
        header=header,
        delimiter=delimiter,
        feature_dim=feature_dim,
        zero_based=zero_based,
        block_size=block_size,
        split_bytes=split_bytes,
        strict=strict,
        features_key=features_key,
        max_bad_fraction=max_bad_fraction,
        categorical_columns=categorical_columns,
        missing=missing,
    )
    return _iter_local(spec, files, dead_letters, counts)


@dataclass
class ReadCounts:
    """What a reader did with the records it read (``read_blocks_local(counts=...)``).

    ``records_read == rows_used + rows_set_aside`` always holds: every record (a
    non-blank line, a row of a ``.npy`` or Parquet file or of a query's result) is
    either a row of a block or a bad record.
    """

    records_read: int = 0
    rows_used: int = 0
    rows_set_aside: int = 0
    files: list[str] = field(default_factory=list)


def _iter_local(
    spec: _Spec,
    files: Iterable[tuple[str, int]],
    dead_letters: list | None,
    counts: ReadCounts | None = None,
) -> Iterator[Block]:
    progress = _Progress()
    dropped = _DroppedLog(spec.format)
    counts = ReadCounts() if counts is None else counts
    for file in files:
        counts.files.append(file[0])
        for rng in _split_file(file, spec):
            for block, bad, _, records in _read_range(spec, rng):
                counts.records_read += records
                counts.rows_used += block.n_rows if block is not None else 0
                counts.rows_set_aside += len(bad)
                if bad:
                    if spec.strict:
                        raise BadInputError(_describe(bad[0], spec.format))
                    for record in bad:
                        if dead_letters is not None:
                            dead_letters.append(record)
                        else:
                            dropped.add(record)
                progress.update(block.n_rows if block else 0, len(bad), rng.path)
                if block is not None:
                    yield block
