"""LIBSVM / SVMlight: ``label idx:val idx:val ...`` per line, read into float32 CSR
blocks with float64 labels.

Fast path: a chunk is tokenized in bulk (numpy over the raw bytes, one Arrow cast for
the numbers) and its pairs checked with vectorized masks; only the bad lines go through
the per-token reference check (:func:`_libsvm_line`), and a chunk the bulk tokenizer
cannot take (comments, ``qid:``, malformed lines) is parsed line by line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    WHITESPACE,
    ParseResult,
    bad_record,
    count_line_records,
    csr_of_lists,
    line_of,
    make_block,
    pair_indices,
    repeated_pairs,
    short_repr,
    token_bounds,
)

__all__ = ["FORMAT", "MAX_INFERRED_FEATURE_DIM", "libsvm_check_indices", "parse_libsvm"]

# LIBSVM files are scanned for their largest index only up to this size; beyond it a
# construction-time pass over the data costs too much, so feature_dim must be given.
_LIBSVM_SCAN_LIMIT = 256 * 2**20


def _libsvm_tokens(line: bytes) -> list[bytes]:
    """Tokens of one LIBSVM line: comment stripped, ``qid:`` dropped."""
    if b"#" in line:
        line = line.split(b"#", 1)[0]
    tokens = line.split()
    if len(tokens) > 1 and tokens[1].startswith(b"qid:"):
        del tokens[1]
    return tokens


def _libsvm_line(
    tokens: list[bytes], feature_dim: int | None, zero_based: bool
) -> tuple[str | None, float, list[int], list[float]]:
    """Reference check and parse of one LIBSVM line: (reason, label, indices, values)."""
    label_text = tokens[0].decode("utf-8", "replace")
    try:
        label = float(label_text)
    except ValueError:
        return f"label ({short_repr(label_text)}) is not a number", 0.0, [], []
    if not math.isfinite(label):
        return f"label is {label_text}", 0.0, [], []
    shift = 0 if zero_based else 1
    indices: list[int] = []
    values: list[float] = []
    seen: set[int] = set()
    for token in tokens[1:]:
        text = token.decode("utf-8", "replace")
        key, colon, value_text = text.partition(":")
        if not colon or not key or not value_text or ":" in value_text:
            return f"{short_repr(text)} is not an index:value pair", label, [], []
        try:
            raw_index = int(key)
        except ValueError:
            return f"index {short_repr(key)} is not an integer", label, [], []
        try:
            value = float(value_text)
        except ValueError:
            return (
                f"value of index {raw_index} ({short_repr(value_text)}) is not a number",
                label,
                [],
                [],
            )
        if not math.isfinite(value):
            return f"value of index {raw_index} is {value_text}", label, [], []
        if abs(value) > FLOAT32_MAX:
            return f"value of index {raw_index} is too large for float32", label, [], []
        index = raw_index - shift
        if raw_index == 0 and not zero_based:
            return _INDEX_0_REASON, label, [], []
        if index < 0:
            base = "0-based" if zero_based else "1-based (zero_based=False)"
            return f"index {raw_index} is out of range: indices are {base}", label, [], []
        if feature_dim is not None and index >= feature_dim:
            return (
                f"index {raw_index} is out of range for feature_dim={feature_dim}",
                label,
                [],
                [],
            )
        if index in seen:
            return f"duplicate index {raw_index}", label, [], []
        seen.add(index)
        indices.append(index)
        values.append(value)
    return None, label, indices, values


def _floats_exact_blob(blob: bytes, expected: int) -> np.ndarray | None:
    """The ``expected`` whitespace-separated numbers of ``blob``, or None.

    ``np.fromstring`` stops at the first unparsable text; the trailing sentinel makes a
    token with a bad suffix (``'2x'``) at the end detectable too, and a token that reads
    as two numbers (``'1-2'``) makes the count too large.
    """
    blob += b" 0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not be read to its end"
        try:
            values = np.fromstring(blob, dtype=np.float64, sep=" ")  # noqa: NPY201
        except ValueError:
            return None
    if len(values) != expected + 1:
        return None
    return values[:-1]


# Byte classes of the numpy tokenizer: 0 whitespace, 1 colon, 2 a character of a plain
# decimal number (digits, sign, point, exponent), 3 anything else.
_LIBSVM_CLASS = np.full(256, 3, dtype=np.uint8)
_LIBSVM_CLASS[WHITESPACE] = 0
_LIBSVM_CLASS[COLON] = 1
_LIBSVM_CLASS[list(b"0123456789+-.eE")] = 2
_LIBSVM_CLASS_TABLE = _LIBSVM_CLASS.tobytes()  # for bytes.translate: 2x numpy's lookup
_LIBSVM_SEPARATORS = bytes(np.flatnonzero(_LIBSVM_CLASS < 2).tolist())


@dataclass
class _LibsvmTokens:
    """A chunk of LIBSVM lines, tokenized in bulk: one entry per row or per pair."""

    row_start: np.ndarray  # (rows,) byte offset of each row's label in the chunk
    labels: np.ndarray  # (rows,)
    counts: np.ndarray  # (rows,) pairs per row
    raw_index: np.ndarray  # (pairs,) index as written, as float
    values: np.ndarray  # (pairs,)

    def row_lines(self, data: bytes) -> np.ndarray:
        """0-based line of each row in ``data`` (only needed to report bad rows)."""
        nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
        return np.searchsorted(nl, self.row_start)


def _libsvm_bulk(data: bytes) -> _LibsvmTokens | None:
    """Tokenize a whole chunk with numpy; None if any line needs the careful path.

    Fields (runs of bytes that are neither whitespace nor ``:``) come from one pass over
    a byte-class table. A field followed by ``:`` is an index, one preceded by ``:`` a
    value, one with neither a label; each colon must join exactly one index to one value,
    and the labels must be exactly the first field of each line. All fields are then
    converted at once: concatenated into one Arrow string array cast to float64 (C++,
    correctly rounded like ``float()``). A chunk with other characters (``nan``, ``inf``,
    ...) takes :func:`_libsvm_bulk_text`.
    """
    if b"#" in data or (b"q" in data and b"qid:" in data):  # memchr first: 100x faster
        return None  # comments and qids are rare: the line path handles them
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    if n == 0:
        return None
    cls = np.frombuffer(data.translate(_LIBSVM_CLASS_TABLE), dtype=np.uint8)
    if (cls == 3).any():
        return _libsvm_bulk_text(data)
    separator = np.flatnonzero(cls < 2)
    gaps = np.diff(separator)
    if len(separator) and cls[0] > 1 and separator[-1] == n - 1 and (gaps > 1).all():
        # The usual layout: every field is followed by exactly one separator byte.
        end = separator
        start = np.empty_like(end)
        start[0] = 0
        np.add(separator[:-1], 1, out=start[1:])
        after = buf[separator]
        before = np.empty_like(after)
        before[0] = NEWLINE
        before[1:] = after[:-1]
        long_gap = None
    else:
        in_field = np.empty(n + 2, dtype=bool)
        in_field[0] = in_field[-1] = False
        np.greater(cls, 1, out=in_field[1:-1])
        edges = np.flatnonzero(in_field[1:] != in_field[:-1])
        start, end = edges[0::2], edges[1::2]  # [start, end) of each field
        if len(start) == 0:
            return None
        after = buf[np.minimum(end, n - 1)]  # the byte after each field (end < n but the last)
        if end[-1] == n:
            after[-1] = NEWLINE
        before = buf[start - 1]  # start > 0 but the first
        if start[0] == 0:
            before[0] = NEWLINE
        gap = np.empty(len(start), dtype=np.int64)
        gap[0] = 1
        np.subtract(start[1:], end[:-1], out=gap[1:])
        long_gap = np.flatnonzero(gap > 1)
    n_fields = len(start)
    is_index = after == COLON
    is_value = before == COLON
    n_colons = int(np.count_nonzero(cls == 1))
    n_pairs = int(np.count_nonzero(is_index))
    if (
        n_colons != n_pairs
        or is_index[-1]
        or not np.array_equal(is_index[:-1], is_value[1:])
        or (is_index & is_value).any()
    ):
        return None  # a colon not between exactly one index and one value
    is_label = ~(is_index | is_value)
    # a field starts its line iff a newline lies in the gap before it (usually 1 byte)
    first = before == NEWLINE
    if long_gap is not None and len(long_gap):
        nl = np.flatnonzero(buf == NEWLINE)
        first[long_gap] = np.searchsorted(nl, end[long_gap - 1]) < np.searchsorted(
            nl, start[long_gap]
        )
    first[0] = True
    if not np.array_equal(first, is_label):
        return None  # a line not made of a label then index:value pairs
    # where each field starts once the separators are dropped
    offsets = np.empty(n_fields + 1, dtype=np.int32 if n < 2**31 else np.int64)
    if long_gap is None:  # one separator after each field: k of them before field k
        np.subtract(start, np.arange(n_fields), out=offsets[:-1])
        offsets[-1] = n - n_fields
    else:
        offsets[0] = 0
        np.cumsum(end - start, out=offsets[1:])
    text = data.translate(None, _LIBSVM_SEPARATORS)  # the fields, end to end
    kind = pa.string() if n < 2**31 else pa.large_string()
    strings = pa.Array.from_buffers(
        kind, n_fields, [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )
    numbers = None
    if not (b"." in data or b"e" in data or b"E" in data or b"+" in data or b"-" in data):
        # Only unsigned integers (0/1 labels, one-hot data): Arrow's int64 parse is faster,
        # and int64 -> float64 rounds like float() does. ('-0' would lose its sign, so
        # no '-' at all.) Too large for int64: the float cast below.
        try:
            numbers = pc.cast(strings, pa.int64()).to_numpy(zero_copy_only=False)
            numbers = numbers.astype(np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            numbers = None
    try:
        if numbers is None:
            numbers = pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # A malformed number ('1-2', '--1', ...): the general tokenizer decides, as before
        # (it rejects the chunk, whose lines are then checked one by one).
        return _libsvm_bulk_text(data)
    label_at = np.flatnonzero(is_label)
    pairs = numbers[~is_label]
    counts = np.diff(label_at, append=n_fields)
    counts -= 1
    counts //= 2
    return _LibsvmTokens(
        row_start=start[label_at],
        labels=numbers[label_at],
        counts=counts,
        raw_index=pairs[0::2],
        values=pairs[1::2],
    )


def _libsvm_bulk_text(data: bytes) -> _LibsvmTokens | None:
    """The general bulk tokenizer: whitespace tokens, numbers read by ``np.fromstring``.

    Token boundaries come from a whitespace mask, rows from the line each token is on;
    a label must have no colon, a pair exactly one, neither at its ends. All numbers
    are then read by one ``np.fromstring`` over the chunk with colons made spaces,
    which must yield exactly one number per label and two per pair.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    tok_start, tok_end = token_bounds(buf)
    if len(tok_start) == 0:
        return None
    nl = np.flatnonzero(buf == NEWLINE)
    tok_line = np.searchsorted(nl, tok_start)
    first = np.concatenate(([True], tok_line[1:] != tok_line[:-1]))
    colon = np.flatnonzero(buf == COLON)
    owner = np.searchsorted(tok_start, colon, side="right") - 1
    n_colons = np.bincount(owner, minlength=len(tok_start))
    if (n_colons[first] != 0).any() or (n_colons[~first] != 1).any():
        return None
    if len(colon) and ((colon == tok_start[owner]).any() or (colon == tok_end[owner]).any()):
        return None
    numbers = _floats_exact_blob(data.replace(b":", b" "), len(tok_start) + len(colon))
    if numbers is None:
        return None
    per_token = 1 + (~first)  # a label is one number, a pair two
    position = np.cumsum(per_token) - per_token
    pair_pos = position[~first]
    row_of_token = np.cumsum(first) - 1
    return _LibsvmTokens(
        row_start=tok_start[first],
        labels=numbers[position[first]],
        counts=np.bincount(row_of_token[~first], minlength=int(first.sum())),
        raw_index=numbers[pair_pos],
        values=numbers[pair_pos + 1],
    )


def parse_libsvm(
    data: bytes,
    *,
    feature_dim: int,
    zero_based: bool = False,
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
) -> ParseResult:
    """Parse complete LIBSVM/SVMlight lines into a float32 CSR block with labels.

    Lines are ``label idx:val idx:val ...``; a ``qid:`` token is ignored, ``#`` starts a
    comment, empty lines are skipped. Indices are 1-based unless ``zero_based``.

    Returns
    -------
    block : Block or None
        ``features`` is a ``csr_matrix`` of shape (rows, feature_dim), float32, sorted
        indices; ``labels`` float64.
    bad : list of dict
        A non-numeric label or value, a malformed pair, a non-integer, negative or
        ``>= feature_dim`` index, a duplicate index, NaN or inf.

    Notes
    -----
    The chunk is tokenized in pieces of about 64 KiB of whole lines by
    :func:`_libsvm_bulk` (numpy over the raw bytes, one Arrow cast for the numbers);
    small pieces keep numpy's temporaries in memory the allocator reuses, where
    chunk-sized ones cost a page fault per 4 KiB each time (2x the whole parse). The
    pairs are checked in bulk, rows with a problem found with vectorized masks; only
    the bad lines go through the per-token reference check. A chunk that the bulk
    tokenizer cannot take (comments, ``qid:``, malformed lines) is parsed line by line.
    """
    if not data or data.isspace():
        return None, []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    bad: list[dict[str, Any]] = []
    index_dtype = np.int32 if feature_dim < 2**31 else np.int64
    start, piece_line = 0, line  # piece_line: the line number of the piece's first line
    while start < len(data):
        stop = data.find(b"\n", start + _LIBSVM_PIECE) + 1 or len(data)
        piece = data[start:stop] if start or stop < len(data) else data
        tokens = _libsvm_bulk(piece)
        if tokens is None:
            if piece.isspace():
                if piece_line is not None:
                    piece_line += piece.count(b"\n")
                start = stop
                continue
            return _parse_libsvm_lines(data, feature_dim, zero_based, file, offset, line)
        parts.append(
            _libsvm_rows(
                tokens,
                piece,
                feature_dim,
                zero_based,
                index_dtype,
                file,
                offset + start,
                piece_line,
                bad,
            )
        )
        if piece_line is not None:
            piece_line += piece.count(b"\n")
        start = stop
    labels = np.concatenate([part[0] for part in parts])
    if not len(labels):
        return None, bad
    counts = np.concatenate([part[3] for part in parts])
    indptr = np.empty(len(labels) + 1, dtype=index_dtype)
    indptr[0] = 0
    np.cumsum(counts, out=indptr[1:])
    features = sp.csr_matrix(
        (
            np.concatenate([part[2] for part in parts]),
            np.concatenate([part[1] for part in parts]),
            indptr,
        ),
        shape=(len(labels), feature_dim),
    )
    if not features.has_sorted_indices:
        features.sort_indices()
    return make_block(features, labels, file, offset), bad


#: Bytes of whole lines tokenized at a time by :func:`parse_libsvm`.
_LIBSVM_PIECE = 64 * 2**10


def _libsvm_rows(
    tokens: _LibsvmTokens,
    data: bytes,
    feature_dim: int,
    zero_based: bool,
    index_dtype: type,
    file: str,
    offset: int,
    line: int | None,
    bad: list[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the tokenized rows of ``data``: (labels, indices, float32 values, pairs per
    row) of the good rows, each row's indices in the order written; bad rows are
    appended to ``bad`` (their reasons from the per-token reference check)."""
    labels, counts = tokens.labels, tokens.counts
    raw_index, values = tokens.raw_index, tokens.values
    n_rows = len(labels)
    index, pair_bad = pair_indices(raw_index, zero_based, feature_dim)
    pair_bad |= ~(np.abs(values) <= FLOAT32_MAX)  # too large for float32, NaN or inf
    any_pair_bad = bool(pair_bad.any())
    if any_pair_bad:
        index[pair_bad] = 0
    index = index.astype(index_dtype)
    # Indices that increase within each row (the usual case) hold no duplicate; else
    # look for one among the sorted (row, index) keys.
    step_down = index[1:] <= index[:-1]
    row_first = np.cumsum(counts[:-1])[counts[1:] > 0]
    step_down[row_first[row_first > 0] - 1] = False  # a new row may start lower
    row_bad = ~np.isfinite(labels)
    if step_down.any():
        row_of_pair = np.repeat(np.arange(n_rows), counts)
        dup = repeated_pairs(row_of_pair, index, feature_dim)
        row_bad[row_of_pair[pair_bad | dup]] = True
    elif any_pair_bad:
        row_bad[np.repeat(np.arange(n_rows), counts)[pair_bad]] = True
    values = values.astype(np.float32)
    if not row_bad.any():
        return labels, index, values, counts
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
    line_start = np.concatenate(([0], nl + 1))
    line_end = np.concatenate((nl, [len(data)]))
    row_lines = tokens.row_lines(data)
    for r in np.flatnonzero(row_bad):
        i = int(row_lines[r])
        text = data[line_start[i] : line_end[i]]
        reason = _libsvm_line(_libsvm_tokens(text), feature_dim, zero_based)[0]
        bad.append(
            bad_record(
                file,
                offset + int(line_start[i]),
                line_of(line, i),
                text,
                reason or "not a valid LIBSVM line",
            )
        )
    good = ~row_bad
    keep = np.repeat(good, counts)
    return labels[good], index[keep], values[keep], counts[good]


def _parse_libsvm_lines(
    data: bytes,
    feature_dim: int,
    zero_based: bool,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    """Line-by-line LIBSVM parse of one chunk that failed the bulk path."""
    labels: list[float] = []
    indices: list[int] = []
    values: list[float] = []
    indptr = [0]
    bad = []
    position = 0
    for i, text in enumerate(data.split(b"\n")):
        start = position
        position += len(text) + 1
        tokens = _libsvm_tokens(text)
        if not tokens:
            continue
        reason, label, idx, vals = _libsvm_line(tokens, feature_dim, zero_based)
        if reason is not None:
            bad.append(bad_record(file, offset + start, line_of(line, i), text, reason))
            continue
        order = np.argsort(idx, kind="stable")
        labels.append(label)
        indices.extend(np.asarray(idx, dtype=np.int64)[order].tolist())
        values.extend(np.asarray(vals, dtype=np.float64)[order].tolist())
        indptr.append(len(indices))
    if not labels:
        return None, bad
    features = csr_of_lists(values, indices, indptr, feature_dim)
    return make_block(features, np.asarray(labels, dtype=np.float64), file, offset), bad


#: The largest ``feature_dim`` a reader infers from the data (LIBSVM's largest index);
#: a larger one must be given: one stray index must not make a model of 10^12 features.
MAX_INFERRED_FEATURE_DIM = 2**20

_INDEX_0_REASON = "index 0 in a 1-based file: pass --zero_based true (zero_based=True)"


def _inferred_index_problem(raw_index: int, zero_based: bool, limit: int) -> str | None:
    if raw_index == 0 and not zero_based:
        return _INDEX_0_REASON
    if raw_index - (0 if zero_based else 1) >= limit:
        return (
            f"index {raw_index} would make the inferred feature_dim larger than "
            f"{limit:,}; if the input really has that many features, pass "
            "--feature_dim (feature_dim=...)"
        )
    return None


def libsvm_check_indices(
    data: bytes, *, zero_based: bool = False, limit: int = MAX_INFERRED_FEATURE_DIM
) -> tuple[int, tuple[int, bytes, str] | None]:
    """Largest feature index in ``data`` (0-based; -1 if none), and the first record
    that forbids inferring ``feature_dim`` from it, as (line index in ``data``, line,
    reason): index 0 in a 1-based file, or an index that would make ``feature_dim``
    exceed ``limit``.

    Malformed lines are ignored here; the reader reports them as bad records later.
    """
    shift = 0 if zero_based else 1
    tokens = _libsvm_bulk(data)
    if tokens is not None:
        raw = tokens.raw_index
        raw = raw[np.isfinite(raw) & (raw == np.floor(raw))]
        if not len(raw):
            return -1, None
        if raw.max() - shift < limit and (zero_based or raw.min() != 0):
            return int(raw.max()) - shift, None
    # a problem to locate, or lines the bulk tokenizer does not take: line by line
    largest = -1
    for i, text in enumerate(data.split(b"\n")):
        for token in _libsvm_tokens(text)[1:]:
            try:
                raw_index = int(token.partition(b":")[0])
            except ValueError:
                continue
            problem = _inferred_index_problem(raw_index, zero_based, limit)
            if problem is not None:
                return largest, (i, text, problem)
            largest = max(largest, raw_index - shift)
    return largest, None


# ---------------------------------------------------------------------------- format


def plan_sparse_lines(plan: Plan, first: str | None, largest: Callable[[], int]) -> Plan:
    """The plan of a format of ``index:value`` lines (LIBSVM, bag of words): the feature
    count as given, else ``largest()`` + 1 (a scan of the input for its largest 0-based
    index), and a line's usual width."""
    feature_dim = plan.options.feature_dim
    hint = reading.peek_lines(first)[1] if first else 128
    if feature_dim is None and first is not None:
        feature_dim = largest() + 1
    return replace(plan, n_features=feature_dim, row_bytes_hint=hint)


class LibsvmFormat(TextFormat):
    name = "libsvm"
    dense = False  # the feature count is the largest index + 1 (or feature_dim)
    takes_missing = True  # no empty fields: an absent index is 0 already
    has_comments = True

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if plan.label_column is not None:
            raise BadInputError(
                "LIBSVM labels are the first token of each line; label_column must be None. "
                f"Got {plan.label_column!r} instead."
            )
        return plan_sparse_lines(plan, first, lambda: _largest_index(plan, files, first))

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_libsvm(
            data,
            feature_dim=plan.n_features,  # type: ignore[arg-type]
            zero_based=plan.zero_based,
            file=at.file,
            offset=at.offset,
            line=at.line,
        )

    def count_records(self, data: bytes) -> int:
        """Lines that are not blank nor only a comment."""
        if b"#" in data:
            return sum(1 for line in data.split(b"\n") if _libsvm_tokens(line))
        return count_line_records(data)

    def check_record_options(self, label_column: Any, feature_dim: Any) -> None:
        if label_column is not None:
            raise BadInputError("LIBSVM labels are the first token; label_column must be None.")
        if feature_dim is None:
            raise BadInputError(
                "a LIBSVM stream cannot be scanned for its largest index: give feature_dim."
            )


def _largest_index(plan: Plan, files: list[tuple[str, int]], first: str) -> int:
    """The largest 0-based feature index of the input, scanned (at most 256 MiB)."""
    total = sum(size for _, size in files)
    if total > _LIBSVM_SCAN_LIMIT:
        raise BadInputError(
            f"the LIBSVM input is {total / 2**20:.0f} MiB, too large to scan for its "
            f"largest feature index (limit {_LIBSVM_SCAN_LIMIT >> 20} MiB); pass "
            "feature_dim (the number of features)."
        )
    largest = -1
    for path in reading.first_nonempty(files):
        with reading.open_file(path) as f:  # in 16 MiB chunks: bulk tokenizing needs ~10x memory
            reader = reading.ChunkReader(f, 0, path)
            reader.skip_bom()
            line = 1
            for _, chunk in reader.chunks(reading.UNBOUNDED, lambda: 16 * 2**20):
                top, problem = libsvm_check_indices(chunk, zero_based=plan.zero_based)
                if problem is not None:
                    i, text, reason = problem
                    raise BadInputError(
                        f"cannot infer feature_dim: {path}, line {line + i}: {reason}; "
                        f"record: {text[:200].decode('utf-8', 'replace')!r}"
                    )
                largest = max(largest, top)
                line += chunk.count(b"\n")
    if largest < 0:
        raise BadInputError(
            f"the LIBSVM input ({first}{', ...' if len(files) > 1 else ''}) has no "
            "feature index to infer feature_dim from; pass feature_dim (--feature_dim)."
        )
    return largest


FORMAT: Format = LibsvmFormat()
