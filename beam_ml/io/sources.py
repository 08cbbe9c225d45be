"""Beam sources that read files straight into blocks: ``ReadBlocks``.

Training data flows as blocks, never as rows (DESIGN.md §2): a per-row PCollection costs
microseconds per element, a parsed 10,000-row block costs the same once. So the reader
does not use ``ReadFromText``; it splits each file into byte ranges (row ranges for
``.npy``, row groups for Parquet), shuffles only those small range descriptors to the
workers, and each worker parses its range in chunks of about ``block_size`` rows with the
format of the registry :mod:`beam_ml.io.formats`, emitting one :class:`Block` per chunk.

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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.dead_letters import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    DroppedLog,
    Reader,
    describe,
)

# What every reader shares, importable from here as before.
from beam_ml.io.dead_letters import check_bad_fraction as check_bad_fraction
from beam_ml.io.dead_letters import no_dead_letters_when_strict as no_dead_letters_when_strict
from beam_ml.io.dead_letters import route_bad_records as route_bad_records
from beam_ml.io.files import match_files
from beam_ml.io.formats.base import (
    MAX_BAD_FRACTION,
    Chunk,
    Plan,
    Range,
    ReadOptions,
    with_hashing,
)
from beam_ml.io.formats.common import check_missing
from beam_ml.io.formats.reading import first_nonempty
from beam_ml.io.formats.series_common import SeriesReadOptions
from beam_ml.io.ranges import (
    Progress,
    RangeSource,
    ReadRangesFn,
    accounted,
    read_ranges,
)
from beam_ml.io.ranges import read_ahead as read_ahead

__all__ = [
    "FORMATS",
    "DEAD_LETTERS",
    "METRICS_NAMESPACE",
    "ReadBlocks",
    "ReadCounts",
    "read_blocks_local",
]

#: The formats ``ReadBlocks`` reads (the registry's).
FORMATS = formats.names()
_PROGRESS_SECONDS = 5.0

# The plan of a ReadBlocks and its ranges (the names of before the formats registry).
_Spec = Plan
_Range = Range


# ----------------------------------------------------------------- plan (construction)


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
    if header is True and not formats.get(format).has_header:
        raise BadInputError(f"header=True only applies to CSV, not {format!r}.")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
        raise BadInputError(
            "The 'delimiter' parameter of ReadBlocks must be one character (not a quote "
            f"or newline). Got {delimiter!r} instead."
        )
    check_feature_dim(feature_dim, "ReadBlocks")
    check_positive_ints("ReadBlocks", block_size=block_size, split_bytes=split_bytes)


def check_encoding_options(
    format: str, categorical_columns: Any, missing: Any, owner: str = "ReadBlocks"
) -> tuple[int | str, ...]:
    """The categorical columns as a tuple (a comma-separated str is split), checked;
    and ``missing`` checked: both for CSV and JSON lines only."""
    check_missing(missing, owner)
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
    fmt = formats.get(format)
    if columns and not fmt.takes_categorical:
        raise BadInputError(
            f"categorical_columns apply to CSV and JSON lines, not {format!r} "
            "(LIBSVM is sparse already: hash its features upstream)."
        )
    if missing != "error" and not fmt.takes_missing:
        raise BadInputError(
            f"missing={missing!r} applies to CSV and JSON lines (LIBSVM has no empty "
            f"fields: an absent index is 0), not {format!r}."
        )
    return columns


def _build(
    file_pattern: str | Sequence[str], format: str, **options: Any
) -> tuple[list[tuple[str, int]], Plan]:
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
    check_bad_fraction_option(options["max_bad_fraction"], "ReadBlocks")
    categorical = check_encoding_options(
        format, options.pop("categorical_columns"), options["missing"]
    )
    fmt = formats.get(format)
    series = _series_options(fmt, options.pop("freq", None), options.pop("series_start", None))
    read_options = (SeriesReadOptions if fmt.series else ReadOptions)(
        **{
            **options,
            "zero_based": bool(options["zero_based"]),
            "strict": bool(options["strict"]),
            "max_bad_fraction": float(options["max_bad_fraction"]),
        },
        categorical=categorical,
        **series,
    )
    files = match_files(file_pattern)
    plan = fmt.plan(Plan.start(format, read_options), files, next(first_nonempty(files), None))
    if fmt.series:  # no features to count: their dynamic features may be none
        return files, plan
    plan = with_hashing(plan)
    if plan.n_features == 0:
        raise BadInputError(
            f"the {format} input has no feature columns"
            + (" (only the label)" if plan.label_column is not None else "")
            + f" ({files[0][0]}); there is nothing to train on."
        )
    wanted = read_options.feature_dim
    dense = fmt.dense and not categorical
    if dense and None not in (wanted, plan.n_features) and wanted != plan.n_features:
        raise BadInputError(
            f"feature_dim={wanted} was given, but the {format} input has "
            f"{plan.n_features} feature columns (label excluded)."
        )
    return files, plan


def _series_options(fmt: Any, freq: Any, series_start: Any) -> dict[str, Any]:
    """The series formats' own options (their frequency, a wide CSV's start), checked."""
    if not fmt.series:
        if freq is not None or series_start is not None:
            raise BadInputError(
                f"freq and series_start apply to the series formats, not {fmt.name!r}."
            )
        return {}
    if freq is None:
        raise BadInputError(
            f"the {fmt.name} format reads time series: give their frequency (freq, DeepAR's "
            "time_freq: 'H', 'D', '5min' ...)."
        )
    return {"freq": freq} if series_start is None else {"freq": freq, "start": series_start}


# ---------------------------------------------------------------- reading the ranges


def _split_file(file: tuple[str, int], spec: Plan) -> list[Range]:
    """The ranges of one file (runs on a worker: .npy/Parquet open their metadata)."""
    if file[1] == 0:
        return []
    return formats.get(spec.format).split(file, spec)


def _read_range(spec: Plan, rng: Range) -> Iterator[Chunk]:
    """The chunks of one range, every record accounted for (and not mostly bad)."""
    fmt = formats.get(spec.format)
    chunks = fmt.read_range(spec, rng)
    return accounted(chunks, spec.format, rng.path, spec.max_bad_fraction, fmt.records_are_rows)


class _FileRanges(RangeSource):
    """The ranges of files, as :class:`~beam_ml.io.ranges.ReadRangesFn` reads them."""

    def __init__(self, spec: Plan):
        self.spec = spec
        self.fmt = spec.format
        self.strict = spec.strict
        self.progress_every = _PROGRESS_SECONDS

    def read(self, rng: Range) -> Iterator[Chunk]:
        return _read_range(self.spec, rng)

    def name(self, rng: Range) -> str:
        return rng.path


# ------------------------------------------------------------------------ public API


class ReadBlocks(Reader):
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
    freq : str, optional
        The series formats (``deepar_jsonl``, ``deepar_parquet``, ``series_csv``,
        ``points_csv``, ``points_jsonl``; blocks are then
        :class:`~beam_ml.core.series.SeriesBlock` s, one series per record, or per id
        of a chunk's point records): the series' frequency, DeepAR's ``time_freq``
        ('H', 'D', '5min' ...); required for them, refused for the others.
    series_start : str, optional
        ``series_csv``: the start of every series (default '1750-01-01 00:00:00').

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
        freq: str | None = None,
        series_start: str | None = None,
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
            freq=freq,
            series_start=series_start,
        )

    @property
    def n_features(self) -> int | None:
        return self._spec.n_features

    @property
    def files(self) -> list[str]:
        return [path for path, _ in self._files]

    @property
    def has_header(self) -> bool:
        return self._spec.header

    @property
    def strict(self) -> bool:
        return self._spec.strict

    def blocks_local(self) -> Iterator[Block]:
        """The same blocks, read in this process (bad records dropped quietly: the
        pipeline's read reports them); for a look at the data before the pipeline."""
        return _iter_local(self._spec, self._files, [])

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        reading = ReadRangesFn(_FileRanges(self._spec), self._with_dead_letters)
        outputs = read_ranges(pbegin, "ListFiles", self._files, reading, _split_file, self._spec)
        return self._outputs(outputs)


def read_blocks_local(
    path_or_pattern: str | Sequence[str],
    format: str,
    *,
    dead_letters: list[dict[str, Any]] | None = None,
    counts: ReadCounts | None = None,
    **options: Any,
) -> Iterator[Block]:
    """Read files into blocks in this process, without Beam.

    Same options (``options``: the keyword arguments of :class:`ReadBlocks`), checks
    (raised here, before the first block) and parsing as :class:`ReadBlocks`; blocks
    come in file order, then range order, so rows keep their order. Bad records are
    appended to ``dead_letters`` when a list is given, else logged and dropped;
    ``strict=True`` raises at the first. ``counts``, if given, is updated as records
    are read.
    """
    reader = ReadBlocks(path_or_pattern, format, **options)  # checks, matches and plans
    files, spec = reader._files, reader._spec
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
    spec: Plan,
    files: Iterable[tuple[str, int]],
    dead_letters: list | None,
    counts: ReadCounts | None = None,
) -> Iterator[Block]:
    progress = Progress(_PROGRESS_SECONDS)
    dropped = DroppedLog(spec.format)
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
                        raise BadInputError(describe(bad[0], spec.format))
                    for record in bad:
                        if dead_letters is not None:
                            dead_letters.append(record)
                        else:
                            dropped.add(record)
                progress.update(block.n_rows if block else 0, len(bad), rng.path)
                if block is not None:
                    yield block
