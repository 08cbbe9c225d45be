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

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from beam_ml.io.formats.base import START, Format, Plan, Where
from beam_ml.io.formats.common import ParseResult, bad_record, content_lines, line_of
from beam_ml.io.formats.documents import DocumentBlock
from beam_ml.io.formats.text import DocumentsFormat

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
    origin = (file, offset + int(starts[0])) if file else None
    schema = pa.schema([(key, pa.string())])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        texts = pj.read_json(io.BytesIO(data), parse_options=options).column(key)
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
        if len(texts) == len(index) and not texts.null_count:
            return DocumentBlock(texts, origin), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return _parse_lines(data, key, index, starts, ends, file, offset, line)


def _parse_lines(
    data: bytes,
    key: str,
    index: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    texts: list[str] = []
    bad = []
    first = None
    for i, start, end in zip(index, starts, ends, strict=True):
        raw = data[start:end]
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = f"not a JSON object ({exc})"
        else:
            value = record.get(key) if isinstance(record, dict) else None
            if isinstance(value, str):
                texts.append(value)
                first = start if first is None else first
                continue
            if not isinstance(record, dict):
                reason = f"a JSON {type(record).__name__}, not an object with a {key!r} field"
            elif value is None:
                reason = f"no {key!r} field" + (" (null)" if key in record else "")
            else:
                reason = f"field {key!r} is a {type(value).__name__}, not a string"
        bad.append(bad_record(file, offset + int(start), line_of(line, int(i)), raw, reason))
    if not texts:
        return None, bad
    origin = (file, offset + int(first)) if file else None
    return DocumentBlock(pa.array(texts, type=pa.string()), origin), bad


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
