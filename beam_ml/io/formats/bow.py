"""Bag of words: ``word_id:count word_id:count ...`` per line (LIBSVM without the
label), one document per line, read into float32 CSR blocks without labels.

Word ids are 0-based by default, as SageMaker NTM's RecordIO-protobuf keys are; format
``bow1`` (:mod:`beam_ml.io.formats.bow1`) reads 1-based ids (LIBSVM tools, UCI ids).
The base is the format's, not the reader's ``zero_based`` option: that option's default
(False, LIBSVM's) cannot be told from a choice, so ``bow`` takes either value and
``bow1`` refuses ``zero_based=True``. The feature count is ``feature_dim``
(the vocabulary size), or the largest id + 1 scanned as LIBSVM's (up to 256 MiB).

Counts must be finite and >= 0 (fractional weights such as tf-idf pass); an id must be
an integer in range and appear once per line. A line that breaks a rule is a bad record
naming its line and the pair; blank lines are no records (an empty document has no
words to learn from).

The parse is vectorized over a chunk: tokens from a whitespace mask, every number read
by one ``np.fromstring``; only bad lines are re-checked one by one, by LIBSVM's per-line
reference check (:func:`~beam_ml.io.formats.libsvm._libsvm_line`) for their reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import (
    COLON,
    FLOAT32_MAX,
    NEWLINE,
    ParseResult,
    bad_record,
    csr_of_lists,
    line_bounds,
    line_of,
    make_block,
    pair_indices,
    repeated_pairs,
    token_bounds,
)
from beam_ml.io.formats.libsvm import (
    _INDEX_0_REASON,
    _LIBSVM_SCAN_LIMIT,
    MAX_INFERRED_FEATURE_DIM,
    _floats_exact_blob,
    _libsvm_line,
    plan_sparse_lines,
)

__all__ = ["FORMAT", "BowFormat", "parse_bow"]

_SEPARATORS = b" \t\n\v\f\r:"


def _bow_tokens(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Tokenize whole lines of ``id:count`` pairs in bulk: (byte offset of each line's
    first pair, pairs per line, ids as written, counts), or None if some token is not
    one number, a colon, one number (those lines are then checked one by one)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    tok_start, tok_end = token_bounds(buf)
    if len(tok_start) == 0:
        return None
    colon = np.flatnonzero(buf == COLON)
    # as many colons as tokens, the i-th strictly inside the i-th token: one each
    if len(colon) != len(tok_start) or not ((tok_start < colon) & (colon < tok_end)).all():
        return None
    numbers = _arrow_numbers(data, tok_start, tok_end, colon)
    if numbers is None:  # not all plain numbers Arrow reads: numpy's reader decides
        numbers = _floats_exact_blob(data.replace(b":", b" "), 2 * len(tok_start))
    if numbers is None:
        return None
    tok_line = np.cumsum(buf == NEWLINE, dtype=np.int64)[tok_start]
    first = np.concatenate(([True], tok_line[1:] != tok_line[:-1]))
    counts = np.diff(np.append(np.flatnonzero(first), len(tok_start)))
    return tok_start[first], counts, numbers[0::2], numbers[1::2]


def _arrow_numbers(
    data: bytes, tok_start: np.ndarray, tok_end: np.ndarray, colon: np.ndarray
) -> np.ndarray | None:
    """Each pair's id and count, interleaved, read by one Arrow cast (10x
    ``np.fromstring``): the fields are the bytes left once white space and colons are
    dropped, cut by their lengths. None if Arrow refuses a field."""
    n = 2 * len(tok_start)
    lengths = np.empty(n, dtype=np.int64)
    lengths[0::2] = colon - tok_start
    lengths[1::2] = tok_end - colon
    big = len(data) >= 2**31
    offsets = np.zeros(n + 1, dtype=np.int64 if big else np.int32)
    np.cumsum(lengths, out=offsets[1:])
    text = data.translate(None, _SEPARATORS)
    if len(text) != offsets[-1]:
        return None
    kind = pa.large_string() if big else pa.string()
    strings = pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    # only unsigned integers: Arrow's int64 parse (exact, and faster than its float one)
    integral = not any(c in data for c in (b".", b"e", b"E", b"+", b"-"))
    try:
        numbers = pc.cast(strings, pa.int64() if integral else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return numbers.to_numpy(zero_copy_only=False).astype(np.float64)


def _bow_line(text: bytes, feature_dim: int, zero_based: bool) -> tuple[str | None, list, list]:
    """The per-line reference check and parse: (why the line is bad or None, ids, counts)."""
    tokens = text.split()
    reason, _, indices, values = _libsvm_line([b"0", *tokens], feature_dim, zero_based)
    if reason == _INDEX_0_REASON:  # LIBSVM's advice (--zero_based) is not bow1's
        reason = "word id 0 in a 1-based file: format 'bow' reads 0-based ids"
    elif reason is None:
        negative = next((i for i, v in zip(indices, values, strict=True) if v < 0), None)
        if negative is not None:
            shown = negative + (0 if zero_based else 1)
            reason = f"count of word id {shown} is negative: counts must be >= 0"
    return reason, indices, values


def _line_reason(text: bytes, feature_dim: int, zero_based: bool) -> str:
    """Why one line is not a bag of words."""
    return _bow_line(text, feature_dim, zero_based)[0] or "not a valid bag-of-words line"


def parse_bow(
    data: bytes,
    *,
    feature_dim: int,
    zero_based: bool = True,
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
) -> ParseResult:
    """Parse complete ``id:count ...`` lines into a float32 CSR block (no labels).

    Returns
    -------
    block : Block or None
        ``features``: ``csr_matrix`` of shape (documents, feature_dim), float32, sorted
        indices; ``labels`` None.
    bad : list of dict
        A malformed pair, a non-integer or out-of-range id, a duplicate id, a count
        that is negative, NaN or inf.
    """
    if not data or data.isspace():
        return None, []
    tokens = _bow_tokens(data)
    if tokens is None:
        return _parse_bow_lines(data, feature_dim, zero_based, file, offset, line)
    row_start, counts, raw_index, values = tokens
    n_rows = len(row_start)
    index, pair_bad = pair_indices(raw_index, zero_based, feature_dim)
    pair_bad |= ~((values >= 0) & (values <= FLOAT32_MAX))  # negative, too large, NaN or inf
    index[pair_bad] = 0
    index_dtype = np.int32 if feature_dim < 2**31 else np.int64
    index = index.astype(index_dtype)
    row_of_pair = np.repeat(np.arange(n_rows), counts)
    dup = repeated_pairs(row_of_pair, index, feature_dim)  # a duplicate id
    row_bad = np.zeros(n_rows, dtype=bool)
    row_bad[row_of_pair[pair_bad | dup]] = True
    bad: list[dict[str, Any]] = []
    if row_bad.any():
        starts, ends = line_bounds(data)
        nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
        for r in np.flatnonzero(row_bad):
            i = int(np.searchsorted(nl, row_start[r]))
            text = data[starts[i] : ends[i]]
            reason = _line_reason(text, feature_dim, zero_based)
            bad.append(bad_record(file, offset + int(starts[i]), line_of(line, i), text, reason))
    good = ~row_bad
    if not good.any():
        return None, bad
    keep = good[row_of_pair]
    counts = counts[good]
    indptr = np.zeros(int(good.sum()) + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    features = sp.csr_matrix(
        (values[keep].astype(np.float32), index[keep], indptr),
        shape=(len(counts), feature_dim),
    )
    if not features.has_sorted_indices:
        features.sort_indices()
    return make_block(features, None, file, offset), bad


def _parse_bow_lines(
    data: bytes, feature_dim: int, zero_based: bool, file: str, offset: int, line: int | None
) -> ParseResult:
    """Line by line: a chunk with a line the bulk tokenizer does not take."""
    indices: list[int] = []
    values: list[float] = []
    indptr = [0]
    bad = []
    starts, ends = line_bounds(data)
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        text = data[start:end]
        if not text.strip():
            continue
        reason, ids, counts = _bow_line(text, feature_dim, zero_based)
        if reason is not None:
            bad.append(bad_record(file, offset + int(start), line_of(line, i), text, reason))
            continue
        indices.extend(ids)
        values.extend(counts)
        indptr.append(len(indices))
    if len(indptr) == 1:
        return None, bad
    features = csr_of_lists(values, indices, indptr, feature_dim)
    features.sort_indices()
    return make_block(features, None, file, offset), bad


def _largest_id(plan: Plan, files: list[tuple[str, int]], zero_based: bool) -> int:
    """The largest 0-based word id of the input, scanned (at most 256 MiB)."""
    total = sum(size for _, size in files)
    if total > _LIBSVM_SCAN_LIMIT:
        raise BadInputError(
            f"the {plan.format} input is {total / 2**20:.0f} MiB, too large to scan for its "
            f"largest word id (limit {_LIBSVM_SCAN_LIMIT >> 20} MiB); pass feature_dim "
            "(the vocabulary size)."
        )
    largest = -1
    shift = 0 if zero_based else 1
    for path in reading.first_nonempty(files):
        with reading.open_file(path) as f:
            reader = reading.ChunkReader(f, 0, path)
            reader.skip_bom()
            for _, chunk in reader.chunks(reading.UNBOUNDED, lambda: 16 * 2**20):
                tokens = _bow_tokens(chunk)
                if tokens is not None:
                    raw = tokens[2]
                else:  # malformed lines: their ids that read as integers
                    pairs = [t.partition(b":")[0] for t in chunk.split()]
                    raw = np.array([int(p) for p in pairs if p.lstrip(b"-").isdigit()] or [0])
                raw = raw[np.isfinite(raw) & (raw == np.floor(raw))]
                if len(raw):
                    largest = max(largest, int(raw.max()) - shift)
    if largest < 0:
        raise BadInputError(
            f"the {plan.format} input has no word id to infer feature_dim from; pass "
            "feature_dim (the vocabulary size)."
        )
    if largest >= MAX_INFERRED_FEATURE_DIM:
        raise BadInputError(
            f"word id {largest + shift} would make the inferred feature_dim larger than "
            f"{MAX_INFERRED_FEATURE_DIM:,}; pass feature_dim (the vocabulary size)."
        )
    return largest


class BowFormat(TextFormat):
    """``word_id:count`` lines; ``zero_based`` is the id base this name reads."""

    dense = False  # the feature count is feature_dim (or the largest id + 1)

    def __init__(self, name: str, zero_based: bool):
        self.name = name
        self.zero_based = zero_based

    def _check_base(self, zero_based: bool) -> None:
        if zero_based and not self.zero_based:
            raise BadInputError(
                f"{self.name!r} word ids are 1-based; for 0-based ids use format 'bow'."
            )

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if plan.label_column is not None:
            raise BadInputError(
                f"{self.name!r} lines have no label; label_column must be None. "
                f"Got {plan.label_column!r} instead."
            )
        self._check_base(plan.zero_based)
        return plan_sparse_lines(plan, first, lambda: _largest_id(plan, files, self.zero_based))

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_bow(
            data,
            feature_dim=plan.n_features,  # type: ignore[arg-type]
            zero_based=self.zero_based,
            file=at.file,
            offset=at.offset,
            line=at.line,
        )

    def check_record_options(self, label_column: Any, feature_dim: Any) -> None:
        if label_column is not None:
            raise BadInputError(f"{self.name!r} lines have no label; label_column must be None.")
        if feature_dim is None:
            raise BadInputError(
                f"a {self.name!r} stream cannot be scanned for its largest word id: give "
                "feature_dim (the vocabulary size)."
            )


FORMAT: Format = BowFormat("bow", zero_based=True)
