"""Wide CSV of series, the M4 layout: one series per line, its id then its values.

``"H1","605","586",...,"",""``: the first field is the series' id (``item_id``), the
others its values in time order; trailing empty fields pad shorter series (they are no
values), an empty field before the last value is a missing value (NaN). An optional
header line (M4's ``"V1","V2",...``) is skipped. The files give no start: every series
starts at :class:`~beam_ml.io.formats.series_common.SeriesReadOptions` ``start``
(default 1750-01-01 00:00, GluonTS's convention for M4) with its ``freq``.

Fast path: ``pyarrow.csv`` over the whole chunk (lines of one width); a chunk it
rejects (ragged lines, a non-number) is read line by line to name the bad records.
"""

from __future__ import annotations

import io
import math
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import ParseResult, bad_record, content_lines, short_repr
from beam_ml.io.formats.csv import looks_like_header, split_csv_line
from beam_ml.io.formats.series_common import (
    SeriesPlan,
    SkipsCsvHeader,
    series_plan,
    where_of_lines,
)

__all__ = ["FORMAT", "parse_series_csv"]


def _fast(data: bytes, plan: SeriesPlan, starts: Any, origin: Any) -> SeriesBlock:
    """The chunk as one block through pyarrow.csv; raises on anything amiss."""
    width = cast(int, plan.n_columns)
    names = [f"c{j}" for j in range(width)]
    types = {name: pa.float64() for name in names[1:]}
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(delimiter=plan.delimiter),
        convert_options=pa_csv.ConvertOptions(
            column_types={"c0": pa.string(), **types}, strings_can_be_null=False
        ),
    )
    n = table.num_rows
    if n != len(starts) or table.column("c0").null_count:
        raise ValueError("lines")
    matrix = np.empty((n, width - 1))
    for j, name in enumerate(names[1:]):
        matrix[:, j] = table.column(name).to_numpy()
    present = ~np.isnan(matrix)
    lengths = (width - 1) - np.argmax(present[:, ::-1], axis=1)
    lengths[~present.any(axis=1)] = 0
    keep = np.arange(width - 1) < lengths[:, None]
    start = np.full(n, np.datetime64(plan.options.start, "s"))  # type: ignore[attr-defined]
    block = SeriesBlock(
        matrix[keep],
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        start,
        plan.freq,
        origin=origin,
        item_id=table.column("c0").to_numpy(zero_copy_only=False).astype(str),
    )
    return SeriesBlock.validate(block, owner="SeriesBlock")


def _line(fields: list[str]) -> tuple[str | None, np.ndarray]:
    """(reason it is bad or None, values) of one line's fields."""
    values = fields[1:]
    while values and not values[-1].strip():
        values.pop()
    if not fields or not fields[0].strip():
        return "no series id in the first field", np.zeros(0)
    if not values:
        return "no values after the series id", np.zeros(0)
    out = np.empty(len(values))
    for j, text in enumerate(values, start=1):
        text = text.strip()
        try:
            out[j - 1] = float(text) if text else math.nan
        except ValueError:
            return f"field {j} ({short_repr(text)}) is not a number", np.zeros(0)
        if math.isinf(out[j - 1]):
            return f"field {j} ({short_repr(text)}) is infinite", np.zeros(0)
    return None, out


def parse_series_csv(data: bytes, plan: Plan, at: Where = START) -> ParseResult:
    """Complete lines of a wide series CSV -> one SeriesBlock and the bad records."""
    splan = cast(SeriesPlan, plan)
    index, starts, ends = content_lines(data)
    if not index.shape[0]:
        return None, []
    where = where_of_lines(at.offset, at.line, starts, index)
    origin = (at.file, where[0][0]) if at.file else None
    try:
        return _fast(data, splan, starts, origin), []
    except (ValueError, TypeError, BadInputError, pa.ArrowException):
        pass
    bad, ids, targets, firsts = [], [], [], []
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        text = data[s:e]
        fields = split_csv_line(text, plan.delimiter)
        reason, values = _line(fields)
        if reason is not None:
            bad.append(bad_record(at.file, where[k][0], where[k][1], text, reason))
            continue
        ids.append(fields[0].strip())
        targets.append(values)
        firsts.append(where[k][0])
    if not targets:
        return None, bad
    block = SeriesBlock.from_series(
        targets,
        [splan.options.start] * len(targets),  # type: ignore[attr-defined]
        splan.freq,
        origin=(at.file, firsts[0]) if at.file else None,
        item_id=ids,
    )
    return block, bad


class SeriesCsvFormat(SkipsCsvHeader, TextFormat):
    name = "series_csv"
    series = True
    has_header = True
    decodes_records = False

    def is_header(self, fields: list[str]) -> bool:
        return looks_like_header(fields[1:])

    def check_first(self, path: str, fields: list[str]) -> None:
        if len(fields) < 2:
            raise BadInputError(
                f"the first line of {path} has {len(fields)} field; a wide series CSV has "
                "the series id then its values. Is the delimiter right?"
            )

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        start = plan.options.start  # type: ignore[attr-defined]
        try:
            np.datetime64(start, "s")
        except (TypeError, ValueError):
            raise BadInputError(
                f"start must be a timestamp ('YYYY-MM-DD HH:MM:SS'); got {start!r}."
            ) from None
        return self.plan_csv(series_plan(plan, optional=("item_id",)), files)

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_series_csv(data, plan, at)


FORMAT: Format = SeriesCsvFormat()
