"""Parquet: numeric columns, read by runs of row groups through Arrow record batches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import Chunk, Format, Plan, Range
from beam_ml.io.formats.common import (
    ParseResult,
    columns_to_float32,
    drop_nonfinite,
    make_block,
    to_float64,
)

__all__ = ["FORMAT", "arrow_feature_columns", "arrow_to_block"]


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
    features = columns_to_float32([batch.column(n) for n in feature_names], n_rows)
    labels = None if label_name is None else to_float64(batch.column(label_name))
    if np.isfinite(features).all() and (labels is None or np.isfinite(labels).all()):
        return make_block(features, labels, file, row0), []
    names = list(feature_names) + ([label_name] if label_name else [])
    # the columns as float64, so a reason can tell overflow from inf
    raw = np.column_stack([to_float64(batch.column(n)) for n in names])
    label_index = len(feature_names) if label_name else None
    return drop_nonfinite(features, labels, raw, label_index, file, row0, names, "null or NaN")


# ---------------------------------------------------------------------------- format


@contextlib.contextmanager
def _corrupt_parquet(path: str) -> Iterator[None]:
    """pyarrow's errors on a damaged Parquet file (OSError, ArrowInvalid, ...) as one
    BadInputError naming the file."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path} is not a readable Parquet file: {message[:300]}") from None


def _row_group_bytes(meta: Any, g: int) -> int:
    """A row group's size (uncompressed). Not the sum of its column chunks' compressed
    sizes: on some damaged column metadata, pyarrow 25's ``RowGroupMetaData.column``
    aborts the process (an uncaught C++ exception) instead of raising."""
    return max(0, int(meta.row_group(g).total_byte_size))


class ParquetFormat(Format):
    name = "parquet"

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if first is None:
            return plan
        with reading.open_file(first, seekable=True) as f:
            try:
                schema = pq.ParquetFile(f).schema_arrow
            except Exception as exc:  # pyarrow raises several types for a non-Parquet file
                raise BadInputError(f"{first} is not a readable Parquet file: {exc}") from None
        feature_names, label = arrow_feature_columns(schema, plan.label_column, first)
        return replace(
            plan,
            n_columns=len(schema.names),
            n_features=len(feature_names),
            label_column=label,
            column_names=tuple(feature_names),
        )

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        path, size = file
        with reading.open_file(path, seekable=True) as f, _corrupt_parquet(path):
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
            if acc >= plan.split_bytes:
                ranges.append(Range(path, first, g + 1))
                first, acc = g + 1, 0
        if first < meta.num_row_groups:
            ranges.append(Range(path, first, meta.num_row_groups))
        return ranges

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        with reading.open_file(rng.path, seekable=True) as f, _corrupt_parquet(rng.path):
            pf = pq.ParquetFile(f)
            names, label = arrow_feature_columns(pf.schema_arrow, plan.label_column, rng.path)
            if len(names) != plan.n_features:
                raise BadInputError(
                    f"{rng.path} has {len(names)} feature columns, but the first Parquet "
                    f"file of this input has {plan.n_features}."
                )
            meta = pf.metadata
            groups = list(range(rng.start, rng.end))
            row = sum(meta.row_group(g).num_rows for g in range(rng.start))
            rows = sum(meta.row_group(g).num_rows for g in groups)
            nbytes = sum(_row_group_bytes(meta, g) for g in groups)
            columns = names + ([label] if label is not None else [])
            for batch in pf.iter_batches(
                batch_size=plan.block_size, row_groups=groups, columns=columns, use_threads=True
            ):
                block, bad = arrow_to_block(batch, names, label, file=rng.path, row0=row)
                yield block, bad, nbytes * batch.num_rows // max(1, rows), batch.num_rows
                row += batch.num_rows
            first_row = sum(meta.row_group(g).num_rows for g in range(rng.start))
            if row - first_row != rows:  # damaged pages: fewer rows than the metadata says
                raise BadInputError(
                    f"{rng.path} is corrupt: its row groups {rng.start}-{rng.end - 1} hold "
                    f"{rows:,} rows by their metadata, but {row - first_row:,} could be read."
                )


FORMAT: Format = ParquetFormat()
