"""Point records in CSV: ``series_id,timestamp,value``, one observation per line.

Series that grow on a stream arrive as points. Each chunk becomes one
:class:`~beam_ml.core.series.SeriesBlock` with one series per id seen in it (``item_id``),
from its earliest to its latest timestamp of the chunk, steps without a record missing
(:func:`~beam_ml.io.formats.series_common.points_to_block`). An empty value is a
missing value (NaN). An optional header line is skipped. Note: a block holds fewer
series than the chunk's records, so it is the series readers (``read_series``), not
the matrix readers' row accounting, that take these formats.

Fast path: ``pyarrow.csv`` over the whole chunk; a chunk it rejects is read line by
line to name the bad records.
"""

from __future__ import annotations

import io
import math
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import (
    ParseResult,
    bad_record,
    content_lines,
    is_number,
    short_repr,
)
from beam_ml.io.formats.csv import split_csv_line
from beam_ml.io.formats.series_common import (
    SeriesPlan,
    SkipsCsvHeader,
    points_to_block,
    series_plan,
    where_of_lines,
)

__all__ = ["FORMAT", "parse_points_csv"]

_NAMES = ["series_id", "timestamp", "value"]


def point_problem(series_id: object, timestamp: object, value: object) -> str | None:
    """Why one point record's fields are not an id, a timestamp and a number, or None."""
    if series_id is None or (isinstance(series_id, str) and not series_id.strip()):
        return "no series_id"
    if isinstance(series_id, (bool, float, list, dict)):
        return f"series_id ({short_repr(series_id)}) is not a string or an integer"
    try:
        if isinstance(timestamp, (bool, int, float)) or np.isnat(np.datetime64(timestamp, "s")):
            raise ValueError
    except (TypeError, ValueError):
        return f"timestamp ({short_repr(timestamp)}) is not a timestamp ('YYYY-MM-DD HH:MM:SS')"
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) or (isinstance(value, str) and is_number(value))
    ):
        return f"value ({short_repr(value)}) is not a number"
    if math.isinf(float(value)):
        return f"value ({short_repr(value)}) is infinite"
    return None


def parse_points_csv(data: bytes, plan: Plan, at: Where = START) -> ParseResult:
    """Complete lines of point records -> one SeriesBlock (a series per id) and the bad
    records."""
    splan = cast(SeriesPlan, plan)
    index, starts, ends = content_lines(data)
    if not index.shape[0]:
        return None, []
    where = where_of_lines(at.offset, at.line, starts, index)
    texts = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=_NAMES),
            parse_options=pa_csv.ParseOptions(delimiter=plan.delimiter),
            convert_options=pa_csv.ConvertOptions(
                column_types={
                    "series_id": pa.string(),
                    "timestamp": pa.timestamp("s"),
                    "value": pa.float64(),
                },
                strings_can_be_null=False,
            ),
        )
        ids = table.column("series_id")
        times = table.column("timestamp")
        if table.num_rows != len(texts) or times.null_count or (pa.compute.utf8_length(ids).to_numpy() == 0).any():  # fmt: skip
            raise ValueError("a missing id or timestamp")
        return points_to_block(
            ids.to_numpy(zero_copy_only=False),
            times.to_numpy(zero_copy_only=False),
            table.column("value").to_numpy(zero_copy_only=False),
            where,
            texts,
            splan,
            at.file,
        )
    except (ValueError, TypeError, pa.ArrowException):
        pass
    bad, good = [], []
    fields_of = [split_csv_line(text, plan.delimiter) for text in texts]
    for k, fields in enumerate(fields_of):
        fields = [f.strip() for f in fields]
        if len(fields) != 3:
            reason: str | None = f"expected 3 fields (series_id, timestamp, value), found {len(fields)}"  # fmt: skip
        else:
            reason = point_problem(*fields)
        if reason is None:
            good.append(k)
        else:
            bad.append(bad_record(at.file, where[k][0], where[k][1], texts[k], reason))
    if not good:
        return None, bad
    block, more = points_to_block(
        np.array([fields_of[k][0].strip() for k in good]),
        np.array([fields_of[k][1].strip() for k in good], dtype="datetime64[s]"),
        np.array([float(fields_of[k][2] or "nan") for k in good]),
        [where[k] for k in good],
        [texts[k] for k in good],
        splan,
        at.file,
    )
    return block, sorted(bad + more, key=lambda record: record["offset"])


class PointsCsvFormat(SkipsCsvHeader, TextFormat):
    name = "points_csv"
    series = True
    records_are_rows = False
    has_header = True

    def is_header(self, fields: list[str]) -> bool:
        return len(fields) == 3 and point_problem(*[f.strip() for f in fields]) is not None

    def check_first(self, path: str, fields: list[str]) -> None:
        if len(fields) != 3:
            raise BadInputError(
                f"the first line of {path} has {len(fields)} fields; point records are "
                "'series_id,timestamp,value'. Is the delimiter right?"
            )

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        return self.plan_csv(series_plan(plan, optional=("item_id",)), files)

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_points_csv(data, plan, at)


FORMAT: Format = PointsCsvFormat()
