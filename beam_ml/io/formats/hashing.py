"""Categorical values hashed into feature columns: stable 64-bit hashes (the same in
every process, run and machine), and the hashed CSR rows built from them.

Used by the CSV and JSON lines formats (``categorical_columns``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats.common import ASCII_SPACE

__all__ = [
    "DEFAULT_HASHED_FEATURE_DIM",
    "check_hashed_feature_dim",
    "hash_codes",
    "hash_value",
    "hash_values",
    "hashed_column",
    "hashed_rows",
]

#: ``feature_dim`` of hashed rows when none is given.
DEFAULT_HASHED_FEATURE_DIM = 2**20

_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place on a uint64 array (wrapping)."""
    h ^= h >> _S33
    h *= _MIX1
    h ^= h >> _S33
    h *= _MIX2
    h ^= h >> _S33
    return h


def _column_seed(column: str | int) -> np.uint64:
    """The hash state a column starts from: BLAKE2b of its key (field index or JSON
    key), so equal values of different columns hash apart."""
    key = str(column).encode("utf-8", "surrogatepass")
    return np.uint64(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def hash_values(column: str | int, values: pa.Array | Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes (uint64) of categorical ``values`` of ``column``.

    Each value's UTF-8 bytes are read as little-endian 64-bit words (the last one
    zero-padded); the state starts at the column's seed and takes each word by
    ``h = fmix64((h ^ word) * golden)``, then ``h = fmix64(h ^ length)``. All values
    are hashed together, one numpy step per word position (a loop over the longest
    value's words, not over values), and the result is the same in every process,
    run and machine (Python's own ``hash`` of a str is salted per process).
    """
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(list(values), pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[values.offset : values.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    )
    lengths = np.diff(offsets)
    n_words = (lengths + 7) // 8
    # every value's bytes, each value padded with zeros to whole words
    word_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_words, out=word_start[1:])
    padded = np.zeros(int(word_start[-1]) * 8, dtype=np.uint8)
    total = int(offsets[-1] - offsets[0])  # the values' bytes are contiguous
    if total:
        shift = np.repeat(word_start[:-1] * 8 - (offsets[:-1] - offsets[0]), lengths)
        shift += np.arange(total)
        padded[shift] = data[offsets[0] : offsets[-1]]
    words = padded.view("<u8")
    h = np.full(n, _column_seed(column), dtype=np.uint64)
    for k in range(int(n_words.max(initial=0))):
        active = np.flatnonzero(n_words > k)
        state = h[active] ^ words[word_start[active] + k]
        state *= _GOLDEN
        h[active] = _fmix64(state)
    h ^= lengths.astype(np.uint64)
    return _fmix64(h)


def hash_value(column: str | int, value: str) -> int:
    """:func:`hash_values` of one value."""
    return int(hash_values(column, [value])[0])


def hashed_column(column: str | int, value: str, n_numeric: int, feature_dim: int) -> int:
    """The feature column that ``value`` of a categorical ``column`` sets to 1.0 in rows
    of ``feature_dim`` columns whose first ``n_numeric`` hold the numeric fields."""
    return n_numeric + hash_value(column, value) % (feature_dim - n_numeric)


def hash_codes(
    column: str | int, values: pa.Array | pa.ChunkedArray, n_numeric: int, feature_dim: int
) -> np.ndarray:
    """The hashed column of each value (int64, -1 for an empty value or a null).

    Values are dictionary-encoded, then the distinct values of the block trimmed of
    ASCII white space and hashed (:func:`hash_values`, vectorized); the rows take
    theirs by one numpy lookup.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    encoded = pc.dictionary_encode(values)
    # trimmed after encoding: ' a' and 'a' are two codes of one hashed column
    words = pc.utf8_trim(encoded.dictionary, characters=ASCII_SPACE)
    width = np.uint64(feature_dim - n_numeric)
    lookup = np.empty(len(words) + 1, dtype=np.int64)  # the last: nulls
    lookup[:-1] = (hash_values(column, words) % width).astype(np.int64) + n_numeric
    lookup[:-1][pc.utf8_length(words).to_numpy(zero_copy_only=False) == 0] = -1
    lookup[-1] = -1
    codes = pc.fill_null(encoded.indices, len(words)).to_numpy(zero_copy_only=False)
    return lookup[codes]


def hashed_rows(
    numeric: np.ndarray, codes: Sequence[np.ndarray], feature_dim: int
) -> sp.csr_matrix:
    """Rows of ``feature_dim`` columns: ``numeric`` (rows, n_numeric; NaN = missing,
    left out like zeros) in the first columns, then a 1.0 at each code >= 0 of each
    categorical column. Two values of a row that hash to one column add up (the
    hashing trick's collisions). float32, sorted indices, no explicit zeros."""
    n_rows = numeric.shape[0]
    present = (numeric != 0) & ~np.isnan(numeric)
    num_rows, num_cols = np.nonzero(present)
    parts_rows, parts_cols = [num_rows], [num_cols]
    parts_vals = [numeric[num_rows, num_cols].astype(np.float32)]
    for code in codes:
        rows = np.flatnonzero(code >= 0)
        parts_rows.append(rows)
        parts_cols.append(code[rows])
        parts_vals.append(np.ones(len(rows), dtype=np.float32))
    index_dtype = np.int32 if feature_dim < 2**31 else np.int64
    matrix = sp.csr_matrix(
        (
            np.concatenate(parts_vals),
            (np.concatenate(parts_rows), np.concatenate(parts_cols).astype(index_dtype)),
        ),
        shape=(n_rows, feature_dim),
        dtype=np.float32,
    )
    matrix.sum_duplicates()  # sorts the indices too
    return matrix


def check_hashed_feature_dim(feature_dim: Any, n_numeric: int) -> None:
    """Hashed rows need room for the numeric columns and at least one hashed one."""
    if (
        isinstance(feature_dim, bool)
        or not isinstance(feature_dim, int)
        or feature_dim <= n_numeric
    ):
        raise BadInputError(
            f"rows with categorical columns need a feature_dim larger than their "
            f"{n_numeric} numeric columns (the rest is the range values are hashed "
            f"into; default {DEFAULT_HASHED_FEATURE_DIM:,}); got {feature_dim!r}."
        )
