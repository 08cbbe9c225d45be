"""CSV: dense numbers, one row per line, an optional header; categorical fields hashed.

Fast path: ``pyarrow.csv`` over a whole chunk (multithreaded); a chunk it rejects is
re-read line by line with the reference check (:func:`_csv_problem`) to name its bad
records, and its good records still become a block.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import (
    ASCII_SPACE,
    FLOAT32_MAX,
    PLAN_RECORDS,
    ParseResult,
    bad_record,
    check_missing,
    columns_to_float32,
    content_lines,
    count_line_records,
    is_number,
    line_of,
    make_block,
    normalize_index,
    resolve_categorical,
    short_repr,
    split_label,
    to_float64,
    usual_width,
)
from beam_ml.io.formats.hashing import check_hashed_feature_dim, hash_codes, hashed_rows

__all__ = ["FORMAT", "is_header_line", "looks_like_header", "parse_csv", "split_csv_line"]


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
    return any(f.strip() and not is_number(f.strip()) for f in _numeric_fields(fields, categorical))


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
    return names is None or not any(map(is_number, numeric))


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


def _csv_field_name(j: int, column_names: Sequence[str] | None) -> str:
    if column_names is not None and j < len(column_names):
        return f"field {j} [{column_names[j]}]"
    return f"field {j}"


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
        text = field.strip(ASCII_SPACE)
        name = _csv_field_name(j, column_names)
        if not text:
            if missing == "zero" and j != label_column:
                continue
            return f"{name} is empty"
        try:
            value = float(text)
        except ValueError:
            return f"{name} ({short_repr(field)}) is not a number"
        if math.isnan(value):
            return f"{name} is NaN"
        if math.isinf(value):
            return f"{name} is inf"
        if j != label_column and abs(value) > FLOAT32_MAX:  # features are float32
            return f"{name} ({short_repr(field)}) is too large for float32"
    return None


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
    if n_rows != (count_line_records(data) if n_records is None else n_records):
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
        features = columns_to_float32(columns, n_rows)
        labels = None
        row_ok = np.isfinite(features).all(axis=1)
    else:
        features = columns_to_float32(
            [c for j, c in enumerate(columns) if j != label_column], n_rows
        )
        labels = to_float64(columns[label_column])
        row_ok = np.isfinite(features).all(axis=1) & np.isfinite(labels)
    if row_ok.all():
        return (make_block(features, labels, file, offset) if n_rows else None), []
    # Some NaN/inf/empty fields: map rows back to their lines to report them (rows are
    # the non-blank lines in order: their count was checked above).
    line_index, starts, ends = content_lines(data)
    bad = []
    for r in np.flatnonzero(~row_ok):
        text = data[starts[r] : ends[r]]
        fields, error = _csv_fields(text, delimiter)
        reason = _csv_problem(fields, n_columns, column_names, label_column, error, missing=missing)
        bad.append(
            bad_record(
                file,
                offset + int(starts[r]),
                line_of(line, int(line_index[r])),
                text,
                reason or "a field is not a finite number",
            )
        )
    good = row_ok
    block = None
    if good.any():
        block = make_block(
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
    keep, starts, ends = content_lines(data)
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
            bad_record(file, offset + int(starts[k]), line_of(line, int(i)), texts[k], reason)
        )
    if not good_rows:
        return None, bad
    if hashing is not None:
        # the reference check passed: numeric fields are finite numbers or empty
        numeric = np.array(
            [
                [float(row[j].strip(ASCII_SPACE) or "nan") for j in hashing.numeric]
                for row in good_rows
            ],
            dtype=np.float32,
        ).reshape(len(good_rows), len(hashing.numeric))
        text = [pa.array([row[j] for row in good_rows], pa.string()) for j in hashing.categorical]
        labels = None
        if label_column is not None:
            labels = np.array(
                [float(row[label_column].strip(ASCII_SPACE)) for row in good_rows],
                dtype=np.float64,
            )
        return _hashed_csv_block(numeric, text, labels, hashing, file, offset), bad
    # the reference check passed: every field is a finite number (or empty: missing)
    values = np.array(
        [[float(f.strip(ASCII_SPACE) or 0.0) for f in row] for row in good_rows],
        dtype=np.float64,
    )
    features, labels = split_label(values, label_column)
    return make_block(features, labels, file, offset), bad


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
        hash_codes(j, column, len(hashing.numeric), hashing.feature_dim)
        for j, column in zip(hashing.categorical, categorical, strict=True)
    ]
    return make_block(hashed_rows(numeric, codes, hashing.feature_dim), labels, file, offset)


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
        row_ok &= np.isfinite(to_float64(columns[hashing.label_column]))
    bad: list[dict[str, Any]] = []
    if not row_ok.all():
        line_index, starts, ends = content_lines(data)
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
                    line_of(line, int(line_index[r])),
                    text,
                    reason or "a field is not a finite number",
                )
            )
        if not row_ok.any():
            return None, bad
    numeric = columns_to_float32([columns[j] for j in hashing.numeric], n_rows)
    labels = None
    if hashing.label_column is not None:
        labels = to_float64(columns[hashing.label_column])
    text = [columns[j] for j in hashing.categorical]
    if not row_ok.all():
        mask = pa.array(row_ok)
        numeric = numeric[row_ok]
        labels = None if labels is None else labels[row_ok]
        text = [pc.filter(c, mask) for c in text]
    return _hashed_csv_block(numeric, text, labels, hashing, file, offset), bad


# ---------------------------------------------------------------------------- format


class CsvFormat(TextFormat):
    name = "csv"
    has_header = True
    takes_categorical = True
    takes_missing = True

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        label = plan.label_column
        header = plan.options.header
        peeked = reading.first_text(files)
        if peeked is None:
            # No data anywhere: nothing will be read, so nothing to validate against.
            return replace(plan, header=header is not False)
        path, lines, hint = peeked
        data_lines = [ln for ln in lines if ln.strip()]
        first_fields = split_csv_line(lines[0], plan.delimiter)
        first_blank = not lines[0].strip()  # then data_lines[0] is not lines[0]
        widths = [
            len(split_csv_line(line, plan.delimiter))
            for line in data_lines[int(not first_blank) : PLAN_RECORDS]
        ]
        # 'auto': a first line with a non-number, as wide as the rows under it (a
        # malformed first row of data is no header: it is a bad record); categorical
        # fields given by index hold text in data rows too, so they do not count
        guess = usual_width(widths if first_blank else [len(first_fields), *widths])
        text_fields: tuple[int, ...] = ()
        if plan.categorical and not any(isinstance(c, str) for c in plan.categorical):
            text_fields = tuple(c % guess for c in plan.categorical if -guess <= c < guess)  # type: ignore[operator]
        has_header = not first_blank and (
            header is True
            or (
                header == "auto"
                and is_header_line(lines[0], plan.delimiter, categorical=text_fields)
                and (not widths or len(first_fields) == usual_width(widths))
            )
        )
        if has_header:
            names = tuple(f.strip() for f in first_fields)
            n_columns = len(names)
        else:
            names = None
            n_columns = usual_width(widths if first_blank else [len(first_fields), *widths])
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
            label = normalize_index(label, n_columns, path)
        categorical = resolve_categorical(plan.categorical, n_columns, names, label, path)
        return replace(
            plan,
            categorical=tuple(sorted(categorical)),  # type: ignore[type-var]
            n_columns=n_columns,
            n_features=n_columns - (label is not None),
            label_column=label,
            header=has_header,
            column_names=names,
            row_bytes_hint=hint,
        )

    def skip_header(self, reader: reading.ChunkReader, plan: Plan) -> bool:
        if not plan.header:
            return False
        first = reader.first_line()
        if plan.header_auto and not is_header_line(
            first, plan.delimiter, plan.column_names, cast("tuple[int, ...]", plan.categorical)
        ):
            return False
        reader.skip_line()
        return True

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_csv(
            data,
            n_columns=cast(int, plan.n_columns),
            label_column=cast("int | None", plan.label_column),
            delimiter=plan.delimiter,
            column_names=plan.column_names,
            file=at.file,
            offset=at.offset,
            line=at.line,
            n_records=at.n_records,
            missing=plan.missing,
            categorical=cast("tuple[int, ...]", plan.categorical),
            feature_dim=plan.n_features if plan.categorical else None,
        )

    def check_record_options(self, label_column: Any, feature_dim: Any) -> None:
        if isinstance(label_column, str):
            raise BadInputError(
                f"CSV records have no header: give label_column {label_column!r} as an index."
            )

    def record_layout(
        self, value: bytes | None, plan: Plan
    ) -> tuple[int | None, int | None, int | str | None]:
        label_column = plan.label_column
        if value is not None:
            n = len(split_csv_line(value, plan.delimiter))
            label = _record_label(label_column, n)  # type: ignore[arg-type]
            return n, n - (label is not None), label
        feature_dim = plan.options.feature_dim
        if feature_dim is None:
            return None, None, label_column
        if isinstance(label_column, int) and label_column < 0:
            raise BadInputError(
                "without a first record, a CSV label_column must be a non-negative index; "
                f"got {label_column}."
            )
        n_columns = feature_dim + (label_column is not None)
        return n_columns, feature_dim, _record_label(label_column, n_columns)  # type: ignore[arg-type]

    def record_categorical(self, value: bytes, plan: Plan) -> tuple[int | str, ...]:
        n_values = cast(int, plan.n_features) + (plan.label_column is not None)
        columns = resolve_categorical(
            plan.categorical, n_values, None, plan.label_column, "the records"
        )
        return tuple(sorted(columns))  # type: ignore[type-var]


def _record_label(label_column: int | None, n: int) -> int | None:
    if label_column is None:
        return None
    if not -n <= label_column < n:
        raise BadInputError(
            f"label_column must be in [{-n}, {n}) for records of {n} fields; got {label_column}."
        )
    return label_column % n


FORMAT: Format = CsvFormat()
