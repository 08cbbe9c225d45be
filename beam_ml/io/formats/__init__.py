"""The input formats, a registry: one module each (CSV, LIBSVM, JSON lines, ``.npy``,
Parquet), each a :class:`~beam_ml.io.formats.base.Format` that plans an input, splits
a file into ranges, reads a range in chunks and parses a chunk (or a batch of stream
records) into one :class:`~beam_ml.core.block.Block` plus a list of bad records.

``get(name)`` is the format a reader dispatches to, once per file, range or chunk;
``names()`` lists them. Adding a format is one module implementing ``Format`` (its
instance named ``FORMAT``) and one line in ``_MODULES`` below.

Rows travel in blocks (DESIGN.md §2), so the parsers are vectorized: ``pyarrow.csv``
for CSV, bulk tokenizing and ``numpy`` conversion for LIBSVM, ``numpy.frombuffer`` for
``.npy``. The slow, per-line paths run only on a chunk that failed the fast path, to
name the bad records; the good records of that chunk still become a block. Labels
always come out as float64 (regression targets keep their precision); features as
float32, dense (C order) or ``scipy.sparse.csr_matrix``. ``Block.origin`` is ``(file,
offset)`` of the bytes (or first row) the block was parsed from, so outputs can be put
back in input order; it is None when ``file`` is empty.

Every record is either a row of the block or a bad record
(:func:`~beam_ml.io.formats.common.bad_record`): no input makes a parser raise anything
but :class:`BadInputError` or drop a record. A record is a non-blank line
(:func:`count_records`, which the readers use to check that rows + bad records add up);
a UTF-8 byte order mark (:data:`BOM`) is the reader's to drop.

The parsing functions are importable from here as before (``formats.parse_csv``, ...),
each loaded with its module on first use (PEP 562): listing the names costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from beam_ml._exports import export
from beam_ml.core.errors import BadInputError

if TYPE_CHECKING:
    from beam_ml.io.formats.base import Format

# The registry: format name -> its module (which defines ``FORMAT``). The order is the
# order error messages and ``--format`` list them in.
_MODULES = {
    "csv": "beam_ml.io.formats.csv",
    "libsvm": "beam_ml.io.formats.libsvm",
    "jsonl": "beam_ml.io.formats.jsonl",
    "npy": "beam_ml.io.formats.npy",
    "parquet": "beam_ml.io.formats.parquet",
    "recordio": "beam_ml.io.formats.recordio",  # SageMaker's application/x-recordio-protobuf
    "bow": "beam_ml.io.formats.bow",
    "bow1": "beam_ml.io.formats.bow1",
    "docword": "beam_ml.io.formats.docword",
    "text": "beam_ml.io.formats.text",
    "text_jsonl": "beam_ml.io.formats.text_jsonl",
    # series formats (SeriesBlock chunks; read with series_common.SeriesReadOptions)
    "deepar_jsonl": "beam_ml.io.formats.deepar_jsonl",
    "deepar_parquet": "beam_ml.io.formats.deepar_parquet",
    "series_csv": "beam_ml.io.formats.series_csv",
    "points_csv": "beam_ml.io.formats.points_csv",
    "points_jsonl": "beam_ml.io.formats.points_jsonl",
}
_LOADED: dict[str, Format] = {}


def names() -> tuple[str, ...]:
    """The registered format names, in registry order."""
    return tuple(_MODULES)


def get(name: str) -> Format:
    """The format registered as ``name``.

    Raises
    ------
    BadInputError
        No format has that name (readers check their ``format`` option first, with
        their own message).
    """
    found = _LOADED.get(name)
    if found is None:
        if name not in _MODULES:
            raise BadInputError(f"unknown format {name!r}; the formats are {list(_MODULES)}.")
        found = _LOADED[name] = importlib.import_module(_MODULES[name]).FORMAT
    return found


def record_names() -> tuple[str, ...]:
    """The formats a stream record (Kafka, Pub/Sub value) may hold, sorted."""
    return tuple(sorted(name for name in _MODULES if get(name).decodes_records))


def count_records(data: bytes, format: str) -> int:
    """How many records the complete lines ``data`` of ``format`` hold, counted apart
    from parsing: the lines that are not blank (nor, in LIBSVM, only a comment)."""
    return get(format).count_records(data)


_COMMON = "beam_ml.io.formats.common"
_HASHING = "beam_ml.io.formats.hashing"
_BASE = "beam_ml.io.formats.base"
_WHERE = {
    "Format": _BASE,
    "Plan": _BASE,
    "Range": _BASE,
    "ReadOptions": _BASE,
    "BOM": _COMMON,
    "MAX_RECORD_CHARS": _COMMON,
    "MISSING": _COMMON,
    "ParseResult": _COMMON,
    "bad_record": _COMMON,
    "check_missing": _COMMON,
    "fill_line_numbers": _COMMON,
    "is_number": _COMMON,
    "DEFAULT_HASHED_FEATURE_DIM": _HASHING,
    "check_hashed_feature_dim": _HASHING,
    "hash_value": _HASHING,
    "hash_values": _HASHING,
    "hashed_column": _HASHING,
    "hashed_rows": _HASHING,
    "is_header_line": _MODULES["csv"],
    "looks_like_header": _MODULES["csv"],
    "parse_csv": _MODULES["csv"],
    "split_csv_line": _MODULES["csv"],
    "MAX_INFERRED_FEATURE_DIM": _MODULES["libsvm"],
    "libsvm_check_indices": _MODULES["libsvm"],
    "parse_libsvm": _MODULES["libsvm"],
    "_libsvm_bulk": _MODULES["libsvm"],  # tests compare the bulk and line paths
    "_parse_libsvm_lines": _MODULES["libsvm"],
    "parse_jsonl": _MODULES["jsonl"],
    "NpyHeader": _MODULES["npy"],
    "parse_npy_rows": _MODULES["npy"],
    "read_npy_header": _MODULES["npy"],
    "arrow_feature_columns": _MODULES["parquet"],
    "arrow_to_block": _MODULES["parquet"],
}

__all__ = ["count_records", "get", "names", "record_names"] + [
    name for name in _WHERE if not name.startswith("_")
]


def __getattr__(name: str) -> Any:
    return export(globals(), _WHERE, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
