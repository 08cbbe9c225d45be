"""What every format implements (:class:`Format`), the options a reader is given
(:class:`ReadOptions`) and the plan it settles from them and a first look at the data
(:class:`Plan`).

A reader dispatches once per file, range or chunk to its format (``formats.get(name)``),
never per row: the parsers behind :meth:`Format.parse` are vectorized over a chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.common import ParseResult, count_line_records, fill_line_numbers
from beam_ml.io.formats.hashing import DEFAULT_HASHED_FEATURE_DIM, check_hashed_feature_dim

__all__ = [
    "START",
    "Chunk",
    "Format",
    "Plan",
    "Range",
    "ReadOptions",
    "TextFormat",
    "Where",
    "with_hashing",
]

#: Default ``max_bad_fraction``: a file (or range) with more bad records than this
#: fraction of its records (and at least 10) stops the reading.
MAX_BAD_FRACTION = 0.5
# Line numbers of bad records come from counting the newlines before their chunk, a
# re-read of the file's prefix done once per range, and only this far into a file.
_LINE_COUNT_LIMIT = 256 * 2**20
_MAX_CHUNK = 1 * 2**30


@dataclass(frozen=True)
class ReadOptions:
    """The reading options as given (checked by the reader that takes them), built once
    and passed whole instead of keyword by keyword.

    See :class:`~beam_ml.io.sources.ReadBlocks` for each; ``categorical`` is its
    ``categorical_columns`` as a tuple.
    """

    label_column: int | str | None = None
    header: bool | str = "auto"
    delimiter: str = ","
    feature_dim: int | None = None
    zero_based: bool = False
    features_key: str = "features"
    block_size: int = 10_000
    split_bytes: int = 64 * 2**20
    strict: bool = False
    max_bad_fraction: float = MAX_BAD_FRACTION
    categorical: tuple[int | str, ...] = ()
    missing: str = "error"


@dataclass(frozen=True)
class Plan:
    """How to read an input, settled once: small, picklable, all a worker needs.

    Built by a format's :meth:`Format.plan` (files) or by
    :func:`~beam_ml.io.records.record_spec` (stream records, where it is called a
    ``RecordSpec``).

    Attributes
    ----------
    format : str
    options : ReadOptions
    n_columns : int or None
        CSV fields / ``.npy`` columns per row, the label included; None for others.
    n_features : int or None
        Features per row; None when nothing told it (empty input, no first record).
    label_column : int, str or None
        Resolved: CSV and ``.npy``: index in ``[0, n_columns)``; JSON: element index or
        key; Parquet: column name.
    header : bool
        CSV: the first line of a file may be a header (found, or declared).
    column_names : tuple of str, optional
        CSV header names; Parquet feature columns.
    row_bytes_hint : int
        About how many bytes a row takes (sizes the first chunk).
    categorical : tuple of int or str
        Resolved hashed columns (CSV: field indices; JSON: element indices, keys or
        indices into the features array); rows are then CSR rows of ``n_features``.
    n_values : int or None
        With ``categorical``: the record's dense width (features without hashing).
    """

    format: str
    options: ReadOptions = ReadOptions()
    n_columns: int | None = None
    n_features: int | None = None
    label_column: int | str | None = None
    header: bool = False
    column_names: tuple[str, ...] | None = None
    row_bytes_hint: int = 128
    categorical: tuple[int | str, ...] = ()
    n_values: int | None = None

    @classmethod
    def start(cls, format: str, options: ReadOptions) -> Plan:
        """The plan before a first look at the data: the options as given."""
        return cls(
            format, options, label_column=options.label_column, categorical=options.categorical
        )

    # The options the parsers and readers read, by their usual names.
    @property
    def delimiter(self) -> str:
        return self.options.delimiter

    @property
    def zero_based(self) -> bool:
        return self.options.zero_based

    @property
    def features_key(self) -> str:
        return self.options.features_key

    @property
    def block_size(self) -> int:
        return self.options.block_size

    @property
    def split_bytes(self) -> int:
        return self.options.split_bytes

    @property
    def strict(self) -> bool:
        return self.options.strict

    @property
    def max_bad_fraction(self) -> float:
        return self.options.max_bad_fraction

    @property
    def missing(self) -> str:
        return self.options.missing

    @property
    def header_auto(self) -> bool:
        """CSV: a first line is skipped only if it looks like a header."""
        return self.options.header == "auto"


def with_hashing(plan: Plan) -> Plan:
    """The plan of an input with categorical columns: rows of ``feature_dim`` (default
    2^20) columns, the numeric fields first; the dense width kept as ``n_values``."""
    if not plan.categorical or plan.n_features is None:
        return plan
    feature_dim = plan.options.feature_dim
    dim = DEFAULT_HASHED_FEATURE_DIM if feature_dim is None else feature_dim
    n_numeric = plan.n_features - sum(not isinstance(c, str) for c in plan.categorical)
    check_hashed_feature_dim(dim, n_numeric)
    return replace(plan, n_values=plan.n_features, n_features=dim)


@dataclass(frozen=True)
class Range:
    """One unit of work: bytes [start, end) of a text file, rows of a ``.npy`` file or
    row groups of a Parquet file."""

    path: str
    start: int
    end: int


class Where(NamedTuple):
    """Where a chunk of records starts: its file, the byte offset of its first byte, the
    line number of its first line (None if unknown) and, if counted already, how many
    records it holds."""

    file: str = ""
    offset: int = 0
    line: int | None = 1
    n_records: int | None = None


#: A chunk that comes from nowhere in particular (stream records joined).
START = Where()

#: (block of the good rows, bad records, bytes read, records read).
Chunk = tuple[Block | None, list[dict[str, Any]], int, int]


class Format:
    """One input format. A subclass per module of this package; one instance each is
    registered under its :attr:`name` (``formats.get(name)``)."""

    #: The name readers take (``ReadBlocks(path, name)``, ``--format name``).
    name = ""
    #: Records are lines: files are read by byte ranges, in chunks of whole lines.
    text = False
    #: The feature count comes from the records' width (a ``feature_dim`` given must
    #: match it); LIBSVM's comes from its indices instead.
    dense = True
    #: ``header=True`` applies.
    has_header = False
    #: ``categorical_columns`` apply.
    takes_categorical = False
    #: ``missing='zero'`` applies.
    takes_missing = False
    #: A stream value (Kafka, Pub/Sub) may hold one record of this format.
    decodes_records = False
    #: ``#`` starts a comment: a line of only a comment is no record.
    has_comments = False
    #: A stream record may span lines (their breaks are white space, as in JSON).
    multiline_records = False
    #: Chunks become :class:`~beam_ml.core.series.SeriesBlock` s; read with
    #: :class:`~beam_ml.io.formats.series_common.SeriesReadOptions` (the frequency).
    series = False
    #: Each record is one row of its block (point records add up to fewer series).
    records_are_rows = True

    # ----------------------------------------------------------------- files
    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        """Check ``plan`` (options as given) against the input's first non-empty file
        (``first``; None if all are empty) and resolve it: the feature count, label,
        header ..."""
        raise NotImplementedError

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        """The ranges of one ``(path, size)`` file (runs on a worker)."""
        raise NotImplementedError

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        """The chunks of one range, about ``plan.block_size`` rows each."""
        raise NotImplementedError

    # ----------------------------------------------------------- text records
    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        """Complete records (lines) -> one block and the bad records; ``at`` says where
        ``data`` starts (for bad records and ``Block.origin``)."""
        raise NotImplementedError(f"{self.name} records are not lines of text")

    def count_records(self, data: bytes) -> int:
        """How many records the complete lines ``data`` hold, counted apart from parsing."""
        return count_line_records(data)

    # ---------------------------------------------------------------- streams
    def check_record_options(self, label_column: Any, feature_dim: Any) -> None:
        """The format's own checks of a stream reader's options."""

    def record_layout(
        self, value: bytes | None, plan: Plan
    ) -> tuple[int | None, int | None, int | str | None]:
        """(n_columns, n_features, label_column) of stream records, from a first
        record's value (stripped; None if none is known) or the options alone."""
        return None, plan.options.feature_dim, plan.label_column

    def record_categorical(self, value: bytes, plan: Plan) -> tuple[int | str, ...]:
        """The categorical columns of stream records, resolved against a first value."""
        raise BadInputError(f"categorical_columns do not apply to {self.name!r} records.")


class TextFormat(Format):
    """A format whose records are lines: byte-range splits, chunked reading, line
    numbers for bad records. Subclasses implement :meth:`plan` and :meth:`parse`."""

    text = True
    decodes_records = True

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        path, size = file
        if reading.is_compressed(path):
            return [Range(path, 0, reading.UNBOUNDED)]  # not splittable: one worker
        step = plan.split_bytes
        return [Range(path, s, min(s + step, size)) for s in range(0, size, step)]

    def skip_header(self, reader: reading.ChunkReader, plan: Plan) -> bool:
        """At the start of a file: consume its header line if it has one."""
        return False

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        if plan.n_features is None:
            return  # planned on empty input; this file was empty at construction too
        compressed = reading.is_compressed(rng.path)
        with reading.open_file(rng.path) as f:
            reader = reading.ChunkReader(f, rng.start, rng.path)
            if rng.start > 0:
                f.seek(rng.start - 1)
                reader.pos = rng.start - 1
                reader.skip_line()  # that record belongs to the previous range
            else:
                reader.skip_bom()
            skipped_header = rng.start == 0 and self.skip_header(reader, plan)
            # Line numbers only matter for bad records, so newlines are counted lazily:
            # at the first bad record, the file's prefix is re-read and counted once (up
            # to a limit), then each chunk's newlines are added. A compressed file cannot
            # be re-read cheaply, so it is counted as it goes.
            newlines: int | None = None  # newlines before the current chunk, if known
            if compressed:
                newlines = int(skipped_header)
            counted_prefix = compressed
            seen_bytes, seen_rows = 0, 0
            row_bytes = max(1, plan.row_bytes_hint)

            def target() -> int:
                return int(min(max(plan.block_size * row_bytes, 1), _MAX_CHUNK))

            for offset, chunk in reader.chunks(rng.end, target):
                line = None if newlines is None else newlines + 1
                records = self.count_records(chunk)
                block, bad = self.parse(plan, chunk, Where(rng.path, offset, line, records))
                if bad and newlines is None and not counted_prefix:
                    counted_prefix = True
                    if offset <= _LINE_COUNT_LIMIT:
                        newlines = reading.count_newlines(rng.path, offset)
                        fill_line_numbers(bad, chunk, offset, newlines + 1)
                if newlines is not None:
                    newlines += chunk.count(b"\n")
                seen_bytes += len(chunk)
                seen_rows += records
                if seen_rows:
                    row_bytes = max(1, seen_bytes // seen_rows)
                yield block, bad, len(chunk), records
