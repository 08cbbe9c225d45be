"""DeepAR series in Parquet: one series per row, the JSON lines' fields as columns.

``start`` (a timestamp, or a string as in the JSON), ``target`` (a list of numbers, null
for a missing value), optional ``cat`` (a list of integers), ``dynamic_feat`` (a list of
lists of numbers) and ``item_id``. Read by runs of row groups (as
:mod:`~beam_ml.io.formats.parquet`), each Arrow batch converted with array operations
(list offsets become the block's offsets); a batch that fails that is converted record
by record, to name its bad rows (``offset`` = row index).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import Chunk, Format, Plan, Range
from beam_ml.io.formats.common import ParseResult
from beam_ml.io.formats.deepar_jsonl import plan_from_record
from beam_ml.io.formats.parquet import ParquetFormat, _corrupt_parquet
from beam_ml.io.formats.series_common import SeriesPlan, records_to_block, series_plan

__all__ = ["FORMAT", "arrow_to_series"]

_COLUMNS = ("start", "target", "cat", "dynamic_feat", "item_id")


def _starts(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return pc.cast(column, pa.timestamp("s"), safe=False).to_numpy(zero_copy_only=False)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype="datetime64[s]")


def _fast(batch: pa.RecordBatch, plan: SeriesPlan, origin: tuple[str, int] | None) -> SeriesBlock:
    """The batch as one block, with array operations only; raises on anything amiss."""
    n = batch.num_rows
    target = batch.column("target")
    if target.null_count:
        raise ValueError("a null target")
    lengths = pc.list_value_length(target).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = pc.cast(target.flatten(), pa.float64()).to_numpy(zero_copy_only=False)
    cat = dynamic = item_id = None
    if "cat" in plan.optional:
        column = batch.column("cat")
        flat = column.flatten().to_numpy(zero_copy_only=False)
        if column.null_count or flat.shape[0] != n * plan.n_cat or flat.dtype.kind not in "iu":
            raise ValueError("cat")
        if (pc.list_value_length(column).to_numpy(zero_copy_only=False) != plan.n_cat).any():
            raise ValueError("cat")
        cat = flat.astype(np.int64).reshape(n, plan.n_cat)
    if "dynamic_feat" in plan.optional:
        dynamic = _dynamic(batch.column("dynamic_feat"), plan.n_features or 0, lengths, offsets)
    if "item_id" in plan.optional:
        column = batch.column("item_id")
        if column.null_count:
            raise ValueError("item_id")
        item_id = column.to_numpy(zero_copy_only=False).astype(str)
    block = SeriesBlock(
        values, offsets, _starts(batch.column("start")), plan.freq, cat, dynamic, origin, item_id
    )
    return SeriesBlock.validate(block, owner="SeriesBlock")


def _dynamic(
    column: pa.Array, n_dynamic: int, lengths: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """list<list<number>> (per row: n_dynamic features of the target's length) ->
    (n_dynamic, n_observations), by index arithmetic over the flattened values."""
    n = lengths.shape[0]
    if column.null_count:
        raise ValueError("dynamic_feat")
    per_row = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    inner = column.flatten()
    inner_lengths = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
    if (per_row != n_dynamic).any() or inner.null_count:
        raise ValueError("dynamic_feat")
    if (inner_lengths != np.repeat(lengths, n_dynamic)).any():
        raise ValueError("dynamic_feat")
    flat = pc.cast(inner.flatten(), pa.float64()).to_numpy(zero_copy_only=False)
    lists = np.repeat(np.arange(n * n_dynamic), inner_lengths)
    inner_starts = np.concatenate([[0], np.cumsum(inner_lengths)])[:-1]
    time = np.arange(flat.shape[0]) - inner_starts[lists]
    out = np.empty((n_dynamic, int(offsets[-1])))
    out[lists % n_dynamic, offsets[lists // n_dynamic] + time] = flat
    return out


def arrow_to_series(
    batch: pa.RecordBatch, plan: SeriesPlan, file: str = "", row0: int = 0
) -> ParseResult:
    """An Arrow batch of DeepAR columns -> one SeriesBlock and the bad rows."""
    if batch.num_rows == 0:
        return None, []
    origin = (file, row0) if file else None
    try:
        return _fast(batch, plan, origin), []
    except (BadInputError, ValueError, TypeError, pa.ArrowException):
        pass
    rows = batch.to_pylist()
    for row in rows:  # Arrow's nulls are absent fields, as in the JSON
        for field in ("cat", "dynamic_feat", "item_id"):
            if field in row and row[field] is None:
                del row[field]
    texts = [json.dumps(row, default=str)[:2000] for row in rows]
    where = [(row0 + i, None) for i in range(len(rows))]
    return records_to_block(rows, texts, where, plan, file)


class DeeparParquetFormat(ParquetFormat):
    name = "deepar_parquet"
    series = True

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if first is None:
            return series_plan(plan)
        with reading.open_file(first, seekable=True) as f, _corrupt_parquet(first):
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            missing = [c for c in ("start", "target") if c not in names]
            if missing:
                raise BadInputError(
                    f"{first} has no column {missing[0]!r}; DeepAR Parquet has the columns "
                    f"{list(_COLUMNS)} (start and target required); its columns are {names}."
                )
            columns = [c for c in _COLUMNS if c in names]
            batch = next(pf.iter_batches(batch_size=1, columns=columns), None)
        row = batch.to_pylist()[0] if batch is not None and batch.num_rows else None
        if row is None:
            raise BadInputError(f"{first} holds no rows.")
        row = {k: v for k, v in row.items() if v is not None or k in ("start", "target")}
        return plan_from_record(plan, row, first)

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        splan = cast(SeriesPlan, plan)
        with reading.open_file(rng.path, seekable=True) as f, _corrupt_parquet(rng.path):
            pf = pq.ParquetFile(f)
            meta = pf.metadata
            groups = list(range(rng.start, rng.end))
            row = sum(meta.row_group(g).num_rows for g in range(rng.start))
            nbytes = sum(max(0, int(meta.row_group(g).total_byte_size)) for g in groups)
            rows = sum(meta.row_group(g).num_rows for g in groups)
            columns = [c for c in _COLUMNS if c in ("start", "target") or c in splan.optional]
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise BadInputError(
                    f"{rng.path} has no column {missing[0]!r}, unlike the first file of the input."
                )
            for batch in pf.iter_batches(
                batch_size=plan.block_size, row_groups=groups, columns=columns
            ):
                block, bad = arrow_to_series(batch, splan, rng.path, row)
                yield block, bad, nbytes * batch.num_rows // max(1, rows), batch.num_rows
                row += batch.num_rows


FORMAT: Format = DeeparParquetFormat()
