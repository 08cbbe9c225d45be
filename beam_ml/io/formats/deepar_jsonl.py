"""SageMaker DeepAR's JSON lines: one series per line, ``.gz`` & co too.

``{"start": "2012-01-01 00:00:00", "target": [1.0, "NaN", null, ...], "cat": [0, 3],
"dynamic_feat": [[...], ...]}``: ``target`` with NaN (the string, JSON's ``NaN`` or
null) for a missing value, optional ``cat`` and ``dynamic_feat`` (in every record if in
the first), and optionally ``item_id``. Read with :class:`SeriesReadOptions` (the
frequency); chunks become :class:`~beam_ml.core.series.SeriesBlock` s.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, cast

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import ParseResult, content_lines
from beam_ml.io.formats.series_common import (
    SeriesPlan,
    first_json,
    records_to_block,
    series_plan,
    where_of_lines,
)

__all__ = ["FORMAT", "parse_deepar_jsonl", "plan_from_record"]


def plan_from_record(plan: Plan, item: Any, where: str) -> Plan:
    """The series plan the first record ``item`` (a decoded DeepAR record) sets."""
    if not isinstance(item, dict) or "start" not in item or "target" not in item:
        raise BadInputError(
            f"the first record of {where} is not a DeepAR series (a JSON object with "
            "'start' and 'target'); is this the right format?"
        )
    optional = tuple(f for f in ("cat", "dynamic_feat", "item_id") if f in item)
    cat, dyn = item.get("cat", []), item.get("dynamic_feat", [])
    if not isinstance(cat, list) or not isinstance(dyn, list):
        raise BadInputError(
            f"the first record of {where} has a 'cat' or 'dynamic_feat' that is not a list."
        )
    return series_plan(plan, optional=optional, n_cat=len(cat), n_features=len(dyn))


def parse_deepar_jsonl(data: bytes, plan: Plan, at: Where = START) -> ParseResult:
    """Complete lines of DeepAR JSON -> one SeriesBlock and the bad records."""
    keep, starts, ends = content_lines(data)
    texts = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    items: list[Any] = []
    for text in texts:
        try:
            item = json.loads(text)
            # a str item is a reason for records_to_block: a JSON string is no series
            items.append("expected a JSON object with 'start' and 'target', found str" if isinstance(item, str) else item)  # fmt: skip
        except (ValueError, RecursionError) as exc:
            items.append(f"invalid JSON: {exc}")
    where = where_of_lines(at.offset, at.line, starts, keep)
    return records_to_block(items, texts, where, cast(SeriesPlan, plan), at.file)


class DeeparJsonlFormat(TextFormat):
    name = "deepar_jsonl"
    series = True
    # Stream records (Kafka, Pub/Sub) decode to matrix blocks for now: not offered there.
    decodes_records = False

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        found = first_json(files)
        if found is None:
            return series_plan(plan)
        path, item, hint = found
        return replace(plan_from_record(plan, item, path), row_bytes_hint=hint)

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_deepar_jsonl(data, plan, at)


FORMAT: Format = DeeparJsonlFormat()
