"""UCI bag of words (``docword.*.txt``, gzip too): three header lines D (documents), W
(words) and NNZ (triples), then ``docID wordID count`` lines, 1-based ids, grouped by
document in increasing docID order (as the UCI files are).

Blocks are CSR rows of whole documents: at most ``block_size`` documents each, of W
columns (the header's; a ``feature_dim`` given must equal it). A document's triples may
cross chunk boundaries: the last document of a chunk waits for the next one. Documents
without a triple (absent ids) make no row, as an empty line makes none in ``bow``.

A file is one range, read by one worker from its start: the header must be read first,
a document must not be cut between workers, and the UCI files are mostly gzip, which
cannot be split anyway. Inputs of many files read in parallel, one file each.

Records are documents and malformed lines. A malformed line (not three integers, an id
out of range, a zero or negative count... see :func:`_line_reason`), a triple whose
docID goes back to an earlier document, or a word repeated in a document is a bad record
naming file, line and field; the document it belongs to (if its docID reads) is set
aside with it rather than trained on with a word missing. Triples are parsed in bulk
(``np.fromstring`` over a chunk); only bad lines are looked at one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import Chunk, Format, Plan, Range
from beam_ml.io.formats.common import NEWLINE, bad_record, line_bounds, make_block, short_repr
from beam_ml.io.formats.libsvm import _floats_exact_blob

__all__ = ["FORMAT", "DocwordFormat", "read_header"]

_log = logging.getLogger("beam_ml.io")

_HEADER = ("D (documents)", "W (words)", "NNZ (triples)")
_FIELDS = ("docID", "wordID", "count")
# Bytes of triples parsed at a time (~1.4M triples: arrays of ~60 MB).
_CHUNK_BYTES = 16 * 2**20
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_SEPARATORS = b" \t\n\v\f\r"


def read_header(lines: list[bytes], path: str) -> tuple[int, int, int]:
    """(D, W, NNZ) from a docword file's first three lines, or a BadInputError naming
    the file, line and value."""
    values = []
    for i, name in enumerate(_HEADER):
        if i >= len(lines):
            raise BadInputError(
                f"{path} ends before its docword header: line {i + 1} should hold {name}."
            )
        text = lines[i].strip()
        if not text.isdigit() or (i < 2 and int(text) == 0):
            raise BadInputError(
                f"{path}, line {i + 1}: the docword header's {name} must be one integer "
                f">= {0 if i == 2 else 1}; got {short_repr(text.decode('utf-8', 'replace'))}. "
                "Is this a UCI docword file?"
            )
        values.append(int(text))
    return values[0], values[1], values[2]


def _line_reason(text: bytes, n_docs: int, n_words: int) -> str | None:
    """Why one line is not a valid triple (None if it is): the per-line reference."""
    fields = text.split()
    if len(fields) != 3:
        return f"expected 3 fields (docID wordID count), got {len(fields)}"
    for j, (field, name, top) in enumerate(
        zip(fields, _FIELDS, (n_docs, n_words, None), strict=True)
    ):
        shown = short_repr(field.decode("utf-8", "replace"))
        try:
            value = int(field)
        except ValueError:
            return f"field {j + 1} ({name}) {shown} is not an integer"
        if value < 1:
            return f"field {j + 1} ({name}) is {value}: it must be >= 1"
        if top is not None and value > top:
            what = "D" if j == 0 else "W"
            return (
                f"field {j + 1} ({name}) is {value}, out of range [1, {top}] ({what} in the header)"
            )
    return None


def _triples(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Whole lines of three numbers each, in bulk: ((lines, 3) float64, index of each
    in ``data``'s lines), or None if some non-blank line has another number of fields or
    a field that is no number."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ws = _WHITESPACE[buf]
    starts = np.flatnonzero(~ws & np.concatenate(([True], ws[:-1])))
    if len(starts) == 0 or len(starts) % 3:
        return None
    line = np.cumsum(buf == NEWLINE, dtype=np.int64)[starts]
    first = line[0::3]
    if not (np.array_equal(first, line[1::3]) and np.array_equal(first, line[2::3])):
        return None
    if len(first) > 1 and (np.diff(first) == 0).any():
        return None
    ends = np.flatnonzero(~ws & np.concatenate((ws[1:], [True]))) + 1
    numbers = _integers(data, ends - starts)
    if numbers is None:  # not plain integers: numpy's reader decides
        numbers = _floats_exact_blob(data, len(starts))
    if numbers is None:
        return None
    return numbers.reshape(-1, 3), first


def _integers(data: bytes, lengths: np.ndarray) -> np.ndarray | None:
    """The fields of ``data`` (runs of non-white space of these lengths, in order) as
    integers, by one Arrow cast (5x ``np.fromstring``); None if one is not a plain
    unsigned integer."""
    if any(c in data for c in (b".", b"e", b"E", b"+", b"-")):
        return None
    big = len(data) >= 2**31
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64 if big else np.int32)
    np.cumsum(lengths, out=offsets[1:])
    text = data.translate(None, _SEPARATORS)
    if len(text) != offsets[-1]:
        return None
    kind = pa.large_string() if big else pa.string()
    strings = pa.Array.from_buffers(
        kind, len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )
    try:
        return pc.cast(strings, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


class _Documents:
    """Good triples not yet emitted, and the docIDs set aside, across chunks."""

    def __init__(self) -> None:
        self.doc = np.empty(0, dtype=np.int64)
        self.word = np.empty(0, dtype=np.int64)
        self.count = np.empty(0, dtype=np.float64)
        self.offset = np.empty(0, dtype=np.int64)
        self.line = np.empty(0, dtype=np.int64)
        self.last_doc = 0  # the largest docID of a good triple so far
        self.tainted: set[int] = set()

    def add(self, doc, word, count, offset, line) -> None:  # type: ignore[no-untyped-def]
        self.doc = np.concatenate((self.doc, doc))
        self.word = np.concatenate((self.word, word))
        self.count = np.concatenate((self.count, count))
        self.offset = np.concatenate((self.offset, offset))
        self.line = np.concatenate((self.line, line))

    def take_complete(self, at_end: bool) -> tuple[np.ndarray, ...]:
        """The triples of documents that no later line can add to (all of them at the
        end of the file), removed from the pending ones."""
        n = len(self.doc) if at_end else int(np.searchsorted(self.doc, self.last_doc))
        taken = self.doc[:n], self.word[:n], self.count[:n], self.offset[:n], self.line[:n]
        self.doc, self.word, self.count = self.doc[n:], self.word[n:], self.count[n:]
        self.offset, self.line = self.offset[n:], self.line[n:]
        return taken


def _rows(
    docs: _Documents, n_words: int, path: str, at_end: bool, bad: list[dict[str, Any]]
) -> tuple[sp.csr_matrix, np.ndarray] | None:
    """The complete documents as CSR rows (and each row's byte offset), without those
    set aside; a word repeated in a document is a bad record here."""
    doc, word, count, offset, line = docs.take_complete(at_end)
    if not len(doc):
        return None
    key = doc * (n_words + 1) + word  # doc is sorted: a repeat is a key seen before
    order = np.argsort(key, kind="stable")
    repeat = np.zeros(len(key), dtype=bool)
    repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
    for i in np.flatnonzero(repeat):
        text = f"{doc[i]} {word[i]} {count[i]:g}"
        reason = f"wordID {word[i]} appears twice in document {doc[i]}"
        bad.append(_set_aside(path, int(offset[i]), int(line[i]), text, reason, int(doc[i])))
        docs.tainted.add(int(doc[i]))
    if docs.tainted:
        keep = ~np.isin(doc, np.fromiter(docs.tainted, dtype=np.int64))
        doc, word, count, offset = doc[keep], word[keep], count[keep], offset[keep]
        # documents emitted can be forgotten: memory stays bounded
        docs.tainted = set() if at_end else {d for d in docs.tainted if d >= docs.last_doc}
    if not len(doc):
        return None
    first = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
    indptr = np.append(first, len(doc))
    features = sp.csr_matrix(
        (count.astype(np.float32), (word - 1).astype(np.int32), indptr),
        shape=(len(first), n_words),
    )
    features.sort_indices()
    return features, offset[first]


def _set_aside(path: str, offset: int, line: int, text: Any, reason: str, doc: int | None):
    note = "" if doc is None else f"; document {doc} is set aside"
    return bad_record(path, offset, line, text, reason + note)


class DocwordFormat(Format):
    name = "docword"
    text = False  # records are documents of many lines, read from a file's start
    dense = True  # the feature count is the header's W (a feature_dim given must match)

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if plan.label_column is not None:
            raise BadInputError(
                "docword triples have no label; label_column must be None. "
                f"Got {plan.label_column!r} instead."
            )
        if first is None:
            return plan
        lines, hint = reading.peek_lines(first)
        _, n_words, _ = read_header(lines, first)
        wanted = plan.options.feature_dim
        if wanted is not None and wanted != n_words:
            raise BadInputError(
                f"feature_dim={wanted} was given, but the docword header of {first} says "
                f"W={n_words} words."
            )
        return replace(plan, n_features=n_words, row_bytes_hint=hint)

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        return [Range(file[0], 0, reading.UNBOUNDED)]  # one worker reads a file whole

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        if plan.n_features is None:
            return
        path = rng.path
        with reading.open_file(path) as f:
            reader = reading.ChunkReader(f, 0, path)
            reader.skip_bom()
            header = []
            for _ in range(3):
                header.append(reader.first_line())
                reader.skip_line()
            n_docs, n_words, nnz = read_header(header, path)
            if n_words != plan.n_features:
                raise BadInputError(
                    f"{path} has W={n_words} words in its docword header, but the input's "
                    f"first file has {plan.n_features}: the files must share a vocabulary."
                )
            docs = _Documents()
            pending_rows: list[tuple[sp.csr_matrix, np.ndarray]] = []
            n_pending = 0
            n_lines, line_no = 0, 4
            chunks = reader.chunks(reading.UNBOUNDED, lambda: _CHUNK_BYTES)
            while True:
                piece = next(chunks, None)
                at_end = piece is None
                bad: list[dict[str, Any]] = []
                nbytes = 0
                if piece is not None:
                    offset, data = piece
                    nbytes = len(data)
                    n_lines += self._add_chunk(
                        docs, path, data, offset, line_no, n_docs, n_words, bad
                    )
                    line_no += data.count(b"\n")
                rows = _rows(docs, n_words, path, at_end, bad)
                if rows is not None:
                    pending_rows.append(rows)
                    n_pending += rows[0].shape[0]
                while n_pending >= plan.block_size or (at_end and n_pending):
                    block, pending_rows, n_pending = _take(pending_rows, plan.block_size, path)
                    yield block, bad, nbytes, block.n_rows + len(bad)
                    bad, nbytes = [], 0
                if bad or nbytes:
                    yield None, bad, nbytes, len(bad)
                if at_end:
                    break
        if n_lines != nnz:
            _log.warning(
                "%s: the docword header says NNZ=%d triples, but the file has %d lines of them.",
                path,
                nnz,
                n_lines,
            )

    def _add_chunk(
        self,
        docs: _Documents,
        path: str,
        data: bytes,
        offset: int,
        line_no: int,
        n_docs: int,
        n_words: int,
        bad: list[dict[str, Any]],
    ) -> int:
        """Parse one chunk of whole lines into ``docs``; bad lines into ``bad``. Returns
        how many non-blank lines it holds."""
        starts, ends = line_bounds(data)
        parsed = _triples(data)
        if parsed is None:  # some line is malformed: every line on its own
            nonblank = [i for i in range(len(starts)) if data[starts[i] : ends[i]].strip()]
            index = np.array(nonblank, dtype=np.int64)
            table = np.zeros((len(index), 3))
            ok = np.zeros(len(index), dtype=bool)
            for k, i in enumerate(index):
                text = data[starts[i] : ends[i]]
                if _line_reason(text, n_docs, n_words) is None:
                    table[k] = [int(x) for x in text.split()]
                    ok[k] = True
        else:
            table, index = parsed
            ok = np.ones(len(index), dtype=bool)
        doc, word, count = table[:, 0], table[:, 1], table[:, 2]
        ok &= (table == np.floor(table)).all(axis=1) & (table >= 1).all(axis=1)
        ok &= (doc <= n_docs) & (word <= n_words)
        # docIDs must not go back: a good line is one whose docID is at least every
        # earlier good line's (so each document's triples come together)
        before = np.maximum.accumulate(np.concatenate(([docs.last_doc], np.where(ok, doc, 0))))
        back = ok & (doc < before[:-1])
        ok &= ~back
        for k in np.flatnonzero(~ok):
            i = int(index[k])
            text = data[starts[i] : ends[i]]
            reason = _line_reason(text, n_docs, n_words)
            owner = None
            if reason is None:
                reason = (
                    f"field 1 (docID) is {int(doc[k])} after document {int(before[k])}: triples "
                    "must be grouped by document, in increasing docID order"
                )
            else:
                first = text.split()[:1]
                if first and first[0].isdigit() and 1 <= int(first[0]) <= n_docs:
                    owner = int(first[0])
            if owner is not None and owner >= docs.last_doc:
                docs.tainted.add(owner)
            else:
                owner = None  # a document already emitted, or none that reads
            bad.append(_set_aside(path, offset + int(starts[i]), line_no + i, text, reason, owner))
        good = np.flatnonzero(ok)
        docs.add(
            doc[good].astype(np.int64),
            word[good].astype(np.int64),
            count[good],
            offset + starts[index[good]],
            line_no + index[good],
        )
        if len(good):
            docs.last_doc = max(docs.last_doc, int(doc[good].max()))
        return len(index)


def _take(
    pending: list[tuple[sp.csr_matrix, np.ndarray]], size: int, path: str
) -> tuple[Any, list[tuple[sp.csr_matrix, np.ndarray]], int]:
    """The first ``size`` pending rows as a block, and what is left."""
    features = sp.vstack([rows for rows, _ in pending], format="csr")
    offsets = np.concatenate([o for _, o in pending])
    block = make_block(features[:size], None, path, int(offsets[0]))
    rest = [(features[size:], offsets[size:])] if features.shape[0] > size else []
    return block, rest, max(0, features.shape[0] - size)


FORMAT: Format = DocwordFormat()
