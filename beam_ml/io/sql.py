"""Reading database query results into blocks through SQLAlchemy: ``ReadSql``.

Any database SQLAlchemy reaches (a URL such as ``postgresql://user@host/db``); a plain
path is a SQLite file, the embedded default. The query's numeric columns become float32
feature blocks, one column (by name or index) can be the label (float64), and NULL,
NaN, inf or text values send their row to the dead letters, in the bad-record shape of
:mod:`beam_ml.io.formats` (``file`` is the URL without its password, ``offset`` the
row's ``split_column`` value or its row number in the result).

Large results are read in parallel by key ranges: with ``split_column`` (an integer
column of the result, such as a primary key), the driver asks for its ``MIN``, ``MAX``
and ``COUNT``, cuts ``[min, max]`` into ranges of about ``split_rows`` rows (assuming
keys spread evenly) and every worker runs ``SELECT * FROM (query) AS q WHERE key >= a
AND key < b ORDER BY key`` for its ranges, fetching ``block_size`` rows at a time from
a streaming cursor. Without it, one worker reads the whole result. Every range opens
its own connection: it is a separate query, so the ranges see the table as of their
own start (run against a snapshot or a quiet table for a consistent read).

Examples
--------
>>> import sqlite3, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with sqlite3.connect(path) as db:
...     _ = db.execute("CREATE TABLE t (id INTEGER, x REAL, y REAL, label REAL)")
...     _ = db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(1, 1., 2., 0.), (2, 3., 4., 1.)])
>>> read = ReadSql(path, "SELECT id, x, y, label FROM t", label_column="label",
...                split_column="id")
>>> read.n_features, read.feature_columns
(2, ['x', 'y'])
"""

from __future__ import annotations

import decimal
import itertools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
import numpy as np

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.dead_letters import Reader
from beam_ml.io.formats.base import MAX_BAD_FRACTION
from beam_ml.io.ranges import Chunk, RangeSource, ReadRangesFn, accounted, read_ranges
from beam_ml.io.sources import check_bad_fraction_option, check_label_column, check_positive_ints

__all__ = ["ReadSql", "sql_url"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_TYPES = (int, float, decimal.Decimal, bool, np.number)
# Types of values the bulk conversion takes as they are (any other goes row by row).
_BULK_TYPES = {int, float, decimal.Decimal, bool, type(None), np.float64, np.int64}
_log = logging.getLogger("beam_ml.io")


def sql_url(target: str) -> str:
    """An SQLAlchemy URL for ``target``: itself if it has a scheme, else a SQLite file.

    Raises
    ------
    BadInputError
        A SQLite file that does not exist (SQLite would silently create an empty one).
    """
    if "://" in target:
        url = target
        path = target.split(":///", 1)[1].split("?", 1)[0] if target.startswith("sqlite") else ""
    else:
        path = target
        url = "sqlite:///" + os.path.abspath(target)
    if url.startswith("sqlite") and path not in ("", ":memory:") and not os.path.exists(path):
        raise BadInputError(f"the SQLite database {path!r} does not exist.")
    return url


@dataclass(frozen=True)
class _Spec:
    url: str
    display: str  # the URL without its password, for messages and dead letters
    query: str
    columns: tuple[str, ...]  # the result's columns
    feature_index: tuple[int, ...]
    label_index: int | None
    split_column: str | None
    block_size: int
    strict: bool
    max_bad_fraction: float = MAX_BAD_FRACTION


@dataclass(frozen=True)
class _Range:
    """Rows with ``lo <= split_column < hi`` (the whole result when lo is None), or
    with a NULL ``split_column`` (``null``): they belong to no key range."""

    index: int
    lo: int | None
    hi: int | None
    null: bool = False


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    try:
        return sa.create_engine(url)
    except Exception as exc:  # unknown dialect, missing driver, malformed URL
        raise BadInputError(
            f"cannot open the database {url.split('://')[0]}://...: {exc}"
        ) from None


def _display(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _check_options(label_column: Any, split_column: Any, block_size: Any, split_rows: Any) -> None:
    check_label_column(label_column, "ReadSql")
    if split_column is not None and not isinstance(split_column, str):
        raise BadInputError(
            "The 'split_column' parameter of ReadSql must be a column name or None. "
            f"Got {split_column!r} instead."
        )
    check_positive_ints("ReadSql", block_size=block_size, split_rows=split_rows)


def _plan(
    url: str,
    query: str,
    label_column: int | str | None,
    split_column: str | None,
    block_size: int,
    strict: bool,
) -> tuple[_Spec, Any]:
    """Columns and first row of the result: the checks that need the database."""
    import sqlalchemy as sa

    display = _display(url)
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(sa.text(query))
            columns = tuple(result.keys())
            first = result.fetchone()
            result.close()
    except sa.exc.SQLAlchemyError as exc:
        raise BadInputError(f"the query failed on {display}: {exc.args[0]}") from None
    if isinstance(label_column, int):
        if not -len(columns) <= label_column < len(columns):
            raise BadInputError(
                f"label_column must be in [{-len(columns)}, {len(columns)}) for the "
                f"query's {len(columns)} columns; got {label_column}."
            )
        label_index: int | None = label_column % len(columns)
    elif label_column is not None:
        if label_column not in columns:
            raise BadInputError(
                f"label_column {label_column!r} is not a column of the query; its columns "
                f"are {list(columns)}."
            )
        label_index = columns.index(label_column)
    else:
        label_index = None
    if split_column is not None and split_column not in columns:
        raise BadInputError(
            f"split_column {split_column!r} is not a column of the query; its columns are "
            f"{list(columns)}."
        )
    # The split key is a row id, not a measurement: it is not a feature.
    skip = {label_index, None if split_column is None else columns.index(split_column)}
    features = tuple(i for i in range(len(columns)) if i not in skip)
    if not features:
        raise BadInputError(f"the query has no feature columns (its columns are {list(columns)}).")
    if first is not None:
        for i in features:
            value = first[i]
            if value is not None and not isinstance(value, _NUMBER_TYPES):
                raise BadInputError(
                    f"column {columns[i]!r} of the query holds {type(value).__name__} values "
                    f"(first row: {value!r:.40}); ReadSql reads numeric columns only (cast "
                    "or leave it out of the SELECT)."
                )
    spec = _Spec(
        url=url,
        display=display,
        query=query,
        columns=columns,
        feature_index=features,
        label_index=label_index,
        split_column=split_column,
        block_size=block_size,
        strict=strict,
    )
    return spec, engine


def _split(spec: _Spec, engine: Any, n_splits: int | None, split_rows: int) -> list[_Range]:
    import sqlalchemy as sa

    if spec.split_column is None:
        return [_Range(0, None, None)]
    key = engine.dialect.identifier_preparer.quote(spec.split_column)
    bounds = (
        f"SELECT MIN({key}), MAX({key}), COUNT(*), COUNT({key}) FROM ({spec.query}) AS beam_ml_q"
    )
    try:
        with engine.connect() as conn:
            low, high, count, count_keys = conn.execute(sa.text(bounds)).one()
    except sa.exc.SQLAlchemyError as exc:
        raise BadInputError(
            f"cannot find the range of {spec.split_column!r}: {exc.args[0]}"
        ) from None
    # Rows whose key is NULL fall in no key range: one more range reads them.
    nulls = [_Range(0, None, None, null=True)] if count > count_keys else []
    if count_keys == 0 or low is None:
        return nulls
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (low, high)):
        raise BadInputError(
            f"split_column {spec.split_column!r} must be an integer column; its values "
            f"run from {low!r} to {high!r}."
        )
    low, high = int(low), int(high)
    n = n_splits if n_splits is not None else math.ceil(count / split_rows)
    n = max(1, min(n, high - low + 1))
    edges = [low + (high + 1 - low) * i // n for i in range(n + 1)]
    ranges = [_Range(i, edges[i], edges[i + 1]) for i in range(n)]
    return ranges + [replace(r, index=n) for r in nulls]


def _range_query(spec: _Spec, engine: Any, rng: _Range) -> tuple[str, dict[str, Any]]:
    if rng.lo is None and not rng.null:
        return spec.query, {}
    key = engine.dialect.identifier_preparer.quote(spec.split_column)
    if rng.null:
        return f"SELECT * FROM ({spec.query}) AS beam_ml_q WHERE {key} IS NULL", {}
    return (
        f"SELECT * FROM ({spec.query}) AS beam_ml_q "
        f"WHERE {key} >= :beam_ml_lo AND {key} < :beam_ml_hi ORDER BY {key}",
        {"beam_ml_lo": rng.lo, "beam_ml_hi": rng.hi},
    )


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of a value for a reason, cut so one huge text stays readable."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _row_problem(spec: _Spec, row: Sequence[Any]) -> str | None:
    """Why a row cannot be a training row (the reference check, run on bad rows only)."""
    indices = list(spec.feature_index) + (
        [spec.label_index] if spec.label_index is not None else []
    )
    for i in indices:
        value = row[i]
        name = spec.columns[i]
        if value is None:
            return f"column {name!r} is NULL"
        if isinstance(value, str) and formats.is_number(value):
            return f"column {name!r} ({_short(value)}) is text, not a number (cast it)"
        if not isinstance(value, _NUMBER_TYPES):  # text, bytes, dates ...
            return f"column {name!r} ({_short(value)}) is not a number"
        try:
            number = float(value)
        except OverflowError:
            return f"column {name!r} ({_short(value)}) is too large for a float"
        except (TypeError, ValueError):
            return f"column {name!r} ({_short(value)}) is not a number"
        if math.isnan(number):
            return f"column {name!r} is NaN"
        if math.isinf(number):
            return f"column {name!r} is inf"
        if i != spec.label_index and abs(number) > _FLOAT32_MAX:
            return f"column {name!r} ({number:g}) is too large for float32"
    return None


def _rows_to_block(
    spec: _Spec, rows: list[Sequence[Any]], origin: tuple[str, int], offsets: list[int]
) -> tuple[Block | None, list[dict[str, Any]]]:
    """Rows of the result -> one float32 block and the bad rows."""
    try:
        # numpy would read the text '3.5' as a number: text takes the careful path
        if not set(map(type, itertools.chain.from_iterable(rows))) <= _BULK_TYPES:
            raise TypeError("not only numbers")
        values = np.array(rows, dtype=np.float64)  # NULL becomes NaN here
        ok = np.isfinite(values[:, list(spec.feature_index)]).all(axis=1)
        ok &= (np.abs(values[:, list(spec.feature_index)]) <= _FLOAT32_MAX).all(axis=1)
        if spec.label_index is not None:
            ok &= np.isfinite(values[:, spec.label_index])
    except (TypeError, ValueError, OverflowError):  # text: find the bad rows one by one
        ok = np.array([_row_problem(spec, row) is None for row in rows], dtype=bool)
        wanted = set(spec.feature_index) | {spec.label_index}
        values = np.array(
            [
                [float(v) if good and i in wanted else 0.0 for i, v in enumerate(row)]
                for row, good in zip(rows, ok, strict=True)
            ],
            dtype=np.float64,
        ).reshape(len(rows), len(spec.columns))
    bad = [
        formats.bad_record(
            spec.display,
            offsets[r],
            None,
            repr(dict(zip(spec.columns, rows[r], strict=True))),
            _row_problem(spec, rows[r]) or "not a finite number",
        )
        for r in np.flatnonzero(~ok)
    ]
    if not ok.any():
        return None, bad
    good = values[ok]
    features = np.ascontiguousarray(good[:, list(spec.feature_index)], dtype=np.float32)
    labels = None if spec.label_index is None else good[:, spec.label_index].copy()
    return Block(features, labels, origin=origin), bad


def _fetch(spec: _Spec, engine: Any, rng: _Range) -> Iterator[Chunk]:
    """(block, bad rows, None, rows fetched) per fetch of one range's query."""
    import sqlalchemy as sa

    query, params = _range_query(spec, engine, rng)
    # A bad row's offset is its key, or its row number in the range (NULL keys).
    key = None if spec.split_column is None or rng.null else spec.columns.index(spec.split_column)
    # Origins sort like the result: by range, then by row within the range.
    source = f"{spec.display}#{rng.index:06d}"
    row = 0
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(sa.text(query), params)
        while rows := result.fetchmany(spec.block_size):
            rows = [tuple(r) for r in rows]
            offsets = (
                [row + r for r in range(len(rows))] if key is None else [int(r[key]) for r in rows]
            )
            block, bad = _rows_to_block(spec, rows, (source, row), offsets)
            yield block, bad, None, len(rows)
            row += len(rows)


def _read_chunks(spec: _Spec, engine: Any, rng: _Range) -> Iterator[Chunk]:
    """The fetches of one range, every row accounted for; stops when more than
    ``spec.max_bad_fraction`` of the range's rows were bad."""
    where = spec.display
    if rng.lo is not None or rng.null:
        where += f" ({_describe_range(spec, rng)})"
    return accounted(_fetch(spec, engine, rng), "sql", where, spec.max_bad_fraction)


def _read_range(spec: _Spec, engine: Any, rng: _Range) -> Iterator[tuple[Block | None, list, int]]:
    """(block, bad rows, rows fetched) per fetch (see :func:`_read_chunks`)."""
    for block, bad, _, fetched in _read_chunks(spec, engine, rng):
        yield block, bad, fetched


def _describe_range(spec: _Spec, rng: _Range) -> str:
    if rng.null:
        return f"rows with a NULL {spec.split_column}"
    return f"{rng.lo} <= {spec.split_column} < {rng.hi}"


class _QueryRanges(RangeSource):
    """The key ranges of a query, as :class:`~beam_ml.io.ranges.ReadRangesFn` reads them:
    one engine per worker."""

    fmt = "sql"

    def __init__(self, spec: _Spec):
        self.spec = spec
        self.strict = spec.strict

    def setup(self) -> None:
        self._engine = _engine(self.spec.url)

    def teardown(self) -> None:
        self._engine.dispose()

    def read(self, rng: _Range) -> Iterator[Chunk]:
        return _read_chunks(self.spec, self._engine, rng)


class ReadSql(Reader):
    """Read the result of a SQL query into a PCollection of blocks.

    Parameters
    ----------
    url : str
        An SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user:pw@host/db``, ...)
        or the path of a SQLite file.
    query : str
        A ``SELECT``; every column it returns is a feature, except the label and the
        split column. Columns must be numeric (cast text in the query).
    label_column : int or str, optional
        The label column, by name or index in the result; float64 ``Block.labels``.
    split_column : str, optional
        An integer column of the result (a key) to read it in parallel by ranges of
        values; it is not a feature.
    n_splits : int, optional
        How many ranges; default one per ``split_rows`` rows.
    split_rows : int, default 100_000
        About how many rows each range holds, when ``n_splits`` is not given.
    block_size : int, default 10_000
        Rows fetched and emitted per block.
    strict : bool, default False
        Stop at the first bad row instead of setting it aside.
    max_bad_fraction : float, default 0.5
        Stop with an error when more than this fraction of a range's rows are bad (as
        :class:`~beam_ml.io.sources.ReadBlocks`); 1.0 never stops.

    Attributes
    ----------
    n_features : int
    feature_columns : list of str
    n_ranges : int
        Ranges the result is read in.

    Raises
    ------
    BadInputError
        At construction: the database cannot be opened, the query fails, a column named
        is not in the result, a feature column holds text, the split column is not an
        integer column.

    Notes
    -----
    Pipeline shape: ``Create`` (range descriptors) -> ``Reshuffle`` -> ``ParDo`` running one
    query per range; rows whose ``split_column`` is NULL are read by one more range
    (``WHERE key IS NULL``). Counters ``beam_ml/records_read`` (rows of the result),
    ``beam_ml/rows_read`` (used) and ``beam_ml/bad_records`` (set aside): the first is
    the sum of the others. Any value that is not a number (text such as ``'3.5'``
    included: SQLite stores what it is given) sends its row to the dead letters.
    """

    def __init__(
        self,
        url: str,
        query: str,
        *,
        label_column: int | str | None = None,
        split_column: str | None = None,
        n_splits: int | None = None,
        split_rows: int = 100_000,
        block_size: int = 10_000,
        strict: bool = False,
        max_bad_fraction: float = MAX_BAD_FRACTION,
    ):
        super().__init__()
        _check_options(label_column, split_column, block_size, split_rows)
        check_bad_fraction_option(max_bad_fraction, "ReadSql")
        if n_splits is not None and (
            isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1
        ):
            raise BadInputError(
                f"The 'n_splits' parameter of ReadSql must be an int >= 1. Got {n_splits!r} instead."
            )
        if not isinstance(query, str) or not query.strip():
            raise BadInputError(
                f"The 'query' parameter of ReadSql must be a SELECT. Got {query!r}."
            )
        self._spec, engine = _plan(
            sql_url(url), query.strip().rstrip(";"), label_column, split_column, block_size, strict
        )
        self._spec = replace(self._spec, max_bad_fraction=float(max_bad_fraction))
        try:
            self._ranges = _split(self._spec, engine, n_splits, split_rows)
        finally:
            engine.dispose()

    @property
    def n_features(self) -> int:
        return len(self._spec.feature_index)

    @property
    def feature_columns(self) -> list[str]:
        return [self._spec.columns[i] for i in self._spec.feature_index]

    @property
    def n_ranges(self) -> int:
        return len(self._ranges)

    @property
    def strict(self) -> bool:
        return self._spec.strict

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        reading = ReadRangesFn(_QueryRanges(self._spec), self._with_dead_letters)
        return self._outputs(read_ranges(pbegin, "ListRanges", self._ranges, reading))
