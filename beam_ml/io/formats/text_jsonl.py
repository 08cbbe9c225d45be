"""Raw text in JSON lines: one object per line whose ``text`` field (or
``features_key``, when given) is the document; read into :class:`DocumentBlock` blocks
like format ``text`` (:mod:`beam_ml.io.formats.text`).

Arrow's JSON reader parses a chunk at once; only a chunk it refuses is read line by
line, to name the bad records: a line that is not a JSON object, or whose field is
absent, null or not a string.
"""

from __future__ import annotations

import io
import json
from functools import partial

import pyarrow as pa
import pyarrow.json as pj

from beam_ml.io.formats.base import START, Format, Plan, Where
from beam_ml.io.formats.common import ParseResult, content_lines
from beam_ml.io.formats.text import DocumentsFormat, document_block, documents_by_line

__all__ = ["FORMAT", "parse_text_jsonl"]

#: The field read when ``features_key`` is left at the readers' default.
TEXT_KEY = "text"


def parse_text_jsonl(
    data: bytes, *, key: str = TEXT_KEY, file: str = "", offset: int = 0, line: int | None = 1
) -> ParseResult:
    """Complete JSON lines -> one document per non-blank line (its ``key`` field)."""
    index, starts, ends = content_lines(data)
    if not len(index):
        return None, []
    schema = pa.schema([(key, pa.string())])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        texts = pj.read_json(io.BytesIO(data), parse_options=options).column(key)
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
        if len(texts) == len(index) and not texts.null_count:
            return document_block(texts, file, offset + int(starts[0])), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    document = partial(_text_field, key=key)
    return documents_by_line(data, index, starts, ends, file, offset, line, document)


def _text_field(raw: bytes, key: str) -> tuple[str | None, str | None]:
    """A line's document (its ``key`` field), or None and why the line has none."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not a JSON object ({exc})"
    value = record.get(key) if isinstance(record, dict) else None
    if isinstance(value, str):
        return value, None
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object with a {key!r} field"
    if value is None:
        return None, f"no {key!r} field" + (" (null)" if key in record else "")
    return None, f"field {key!r} is a {type(value).__name__}, not a string"


class TextJsonlFormat(DocumentsFormat):
    name = "text_jsonl"

    @staticmethod
    def key(plan: Plan) -> str:
        return TEXT_KEY if plan.features_key == "features" else plan.features_key

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_text_jsonl(
            data, key=self.key(plan), file=at.file, offset=at.offset, line=at.line
        )


FORMAT: Format = TextJsonlFormat()
