"""Raw text, one document per line, read into :class:`DocumentBlock` blocks.

The vocabulary stage trains on these blocks directly (``beam-ml train vocabulary
--input docs.txt --format text``); a bag-of-words algorithm takes them through a
vocabulary model, which maps each document to a CSR row of word counts
(:func:`beam_ml.algorithms.vocabulary.encode_documents`, ``--vocabulary DIR``).

A document is a non-blank line without its trailing white space; it must be UTF-8 (a
line that is not is a bad record naming its line). Files split into byte ranges like
the other line formats (gzip & co are read whole). Documents have no feature count:
the vocabulary sets it, so ``feature_dim`` and ``label_column`` do not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import START, Chunk, Format, Plan, Range, TextFormat, Where
from beam_ml.io.formats.common import ParseResult, bad_record, content_lines, line_of
from beam_ml.io.formats.documents import DocumentBlock

__all__ = ["FORMAT", "DocumentsFormat", "document_block", "documents_by_line", "parse_text"]


def document_block(texts: pa.Array, file: str, offset: int) -> DocumentBlock:
    """The documents of a chunk, their first at byte ``offset`` of ``file``."""
    return DocumentBlock(texts, (file, int(offset)) if file else None)


def parse_text(
    data: bytes, *, file: str = "", offset: int = 0, line: int | None = 1
) -> ParseResult:
    """Complete lines -> one document per non-blank line (trailing white space dropped).

    One Arrow array over the chunk's bytes (offsets at the lines' starts), trimmed and
    checked as UTF-8 by Arrow; only a chunk with invalid UTF-8 is looked at line by line.
    """
    index, starts, ends = content_lines(data)
    if not len(index):
        return None, []
    # each document runs from its line's start to the next document's: its newline and
    # any blank lines after it are trailing white space, trimmed below
    bounds = np.append(starts, len(data)).astype(np.int32 if len(data) < 2**31 else np.int64)
    kind = pa.string() if len(data) < 2**31 else pa.large_string()
    texts = pa.Array.from_buffers(
        kind, len(starts), [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )
    try:
        texts.validate(full=True)
    except pa.ArrowInvalid:
        # some invalid UTF-8: line by line, to name the bad records
        return documents_by_line(data, index, starts, ends, file, offset, line, _utf8_line)
    return document_block(pc.utf8_rtrim_whitespace(texts), file, offset + int(starts[0])), []


def _utf8_line(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8").rstrip(), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text: byte {exc.start} of the line is {raw[exc.start]:#04x}"


def documents_by_line(
    data: bytes,
    index: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    file: str,
    offset: int,
    line: int | None,
    document: Callable[[bytes], tuple[str | None, str | None]],
) -> ParseResult:
    """The documents of a chunk's lines (``index``, ``starts``, ``ends`` of
    :func:`~beam_ml.io.formats.common.content_lines`), one at a time: ``document(raw)``
    gives a line's text, or None and why the line is a bad record."""
    texts: list[str] = []
    bad = []
    first = None
    for i, start, end in zip(index, starts, ends, strict=True):
        raw = data[start:end]
        text, reason = document(raw)
        if text is None:
            bad.append(bad_record(file, offset + int(start), line_of(line, int(i)), raw, reason))
        else:
            texts.append(text)
            first = start if first is None else first
    if not texts:
        return None, bad
    return document_block(pa.array(texts, type=pa.string()), file, offset + int(first)), bad


class DocumentsFormat(TextFormat):
    """A text format whose records are documents: no feature count, no label."""

    dense = False  # documents have no width: a vocabulary gives it
    decodes_records = False  # files only, for now: stream readers expect a width

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if plan.label_column is not None:
            raise BadInputError(
                f"{self.name!r} documents have no label; label_column must be None. "
                f"Got {plan.label_column!r} instead."
            )
        if plan.options.feature_dim is not None:
            raise BadInputError(
                f"feature_dim does not apply to {self.name!r} documents: the vocabulary "
                "they are encoded with sets it."
            )
        hint = reading.peek_lines(first)[1] if first else 1024
        return replace(plan, row_bytes_hint=hint)

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        # Documents have no feature count (None); the line reader reads a range once
        # one is known, so it is given a stand-in.
        return super().read_range(replace(plan, n_features=0), rng)


class TextLinesFormat(DocumentsFormat):
    name = "text"

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_text(data, file=at.file, offset=at.offset, line=at.line)


FORMAT: Format = TextLinesFormat()
