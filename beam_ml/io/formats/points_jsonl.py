"""Point records in JSON lines: ``{"series_id": "a", "timestamp": "2020-01-01 00:00:00",
"value": 1.5}``, one observation per line (``value`` null: missing).

As :mod:`~beam_ml.io.formats.points_csv`: each chunk becomes one SeriesBlock with a
series per id seen in it (``item_id``). ``series_id`` may be a string or an integer.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, cast

import numpy as np

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import ParseResult, bad_record, content_lines
from beam_ml.io.formats.points_csv import point_problem
from beam_ml.io.formats.series_common import (
    SeriesPlan,
    first_json,
    points_to_block,
    series_plan,
    where_of_lines,
)

__all__ = ["FORMAT", "parse_points_jsonl"]


def _problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"expected a JSON object with series_id, timestamp and value, found {type(item).__name__}"  # fmt: skip
    for key in ("series_id", "timestamp", "value"):
        if key not in item:
            return f"no {key!r}"
    return point_problem(item["series_id"], item["timestamp"], item["value"])


def parse_points_jsonl(data: bytes, plan: Plan, at: Where = START) -> ParseResult:
    """Complete JSON lines of point records -> one SeriesBlock and the bad records."""
    index, starts, ends = content_lines(data)
    if not index.shape[0]:
        return None, []
    where = where_of_lines(at.offset, at.line, starts, index)
    texts = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    bad, good, items = [], [], []
    for k, text in enumerate(texts):
        try:
            item = json.loads(text)
            reason = _problem(item)
        except (ValueError, RecursionError) as exc:
            reason = f"invalid JSON: {exc}"
        if reason is None:
            good.append(k)
            items.append(item)
        else:
            bad.append(bad_record(at.file, where[k][0], where[k][1], text, reason))
    if not good:
        return None, bad
    block, more = points_to_block(
        np.array([str(item["series_id"]) for item in items]),
        np.array([item["timestamp"] for item in items], dtype="datetime64[s]"),
        np.array([item["value"] for item in items], dtype=np.float64),
        [where[k] for k in good],
        [texts[k] for k in good],
        cast(SeriesPlan, plan),
        at.file,
    )
    return block, sorted(bad + more, key=lambda record: record["offset"])


class PointsJsonlFormat(TextFormat):
    name = "points_jsonl"
    series = True
    records_are_rows = False

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        splan = series_plan(plan, optional=("item_id",))
        found = first_json(files)
        if found is None:
            return splan
        path, item, hint = found
        if not isinstance(item, dict) or "series_id" not in item or "timestamp" not in item:
            raise BadInputError(
                f"the first record of {path} is not a point record (a JSON object with "
                "'series_id', 'timestamp' and 'value'); is this the right format?"
            )
        return replace(splan, n_features=0, row_bytes_hint=hint)

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_points_jsonl(data, plan, at)


FORMAT: Format = PointsJsonlFormat()
