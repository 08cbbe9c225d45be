"""``.npy``: a 2-D numeric array in C order, read by row ranges straight into blocks
(``numpy.frombuffer`` of whole rows)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, cast

import numpy as np

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import Chunk, Format, Plan, Range
from beam_ml.io.formats.common import ParseResult, drop_nonfinite, normalize_index, split_label

__all__ = ["FORMAT", "NpyHeader", "parse_npy_rows", "read_npy_header"]


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says, and where its data starts.

    Attributes
    ----------
    shape : tuple of int
        ``(n_rows, n_columns)``.
    dtype : numpy.dtype
    header_len : int
        Byte offset of row 0; row ``r`` starts at ``header_len + r * row_bytes``.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    header_len: int

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_columns(self) -> int:
        return self.shape[1]

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize


#: Longest ``.npy`` header read (numpy >= 1.24 refuses more than 10,000 bytes too).
_NPY_MAX_HEADER = 64 * 2**10


def read_npy_header(f: BinaryIO, path: str = "", size: int | None = None) -> NpyHeader:
    """Read the header of a ``.npy`` stream positioned at its start.

    ``size``, the file's length in bytes, if given, must hold the rows the header
    declares: nothing is allocated from a header before it is checked against it.

    Raises
    ------
    BadInputError
        Not a ``.npy`` file (or a header numpy cannot parse), not 2-D, Fortran order
        (rows are not contiguous, so they cannot be read by range), a non-numeric dtype
        (pickled object arrays included), or a shape the file is too short for.
    """
    fmt = np.lib.format
    start = f.tell()
    prefix = f.read(12)
    if len(prefix) < 10 or prefix[:6] != fmt.MAGIC_PREFIX:
        raise BadInputError(f"{path} is not a .npy file (it does not start with \\x93NUMPY).")
    major = prefix[6]
    header_size = (
        struct.unpack("<H", prefix[8:10])[0]
        if major == 1
        else struct.unpack("<I", prefix[8:12].ljust(4, b"\0"))[0]
    )
    if header_size > _NPY_MAX_HEADER:
        raise BadInputError(
            f"{path} declares a .npy header of {header_size:,} bytes (at most "
            f"{_NPY_MAX_HEADER:,} are read); it is corrupt or not written by numpy."
        )
    f.seek(start)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(f)
        else:  # (3, 0): utf-8 header, same layout; numpy has no public reader for it
            shape, fortran_order, dtype = fmt._read_array_header(f, version)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - numpy's parser raises ValueError,
        # SyntaxError, tokenize.TokenError, TypeError ... on a damaged header
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path} is not a readable .npy file: {message[:300]}") from None
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise BadInputError(f"{path} has an invalid .npy shape {shape!r:.100}.")
    if len(shape) != 2:
        raise BadInputError(
            f"{path} holds an array of shape {shape}; ReadBlocks reads 2-D arrays "
            "(rows, columns). Save a single column with x.reshape(-1, 1)."
        )
    if fortran_order and shape[0] > 1 and shape[1] > 1:
        raise BadInputError(
            f"{path} is in Fortran order, so its rows are not contiguous; save it with "
            "np.save(path, np.ascontiguousarray(x))."
        )
    if dtype.kind not in "fiub" or dtype.itemsize == 0:
        raise BadInputError(
            f"{path} has dtype {dtype}; ReadBlocks needs a real numeric .npy array."
        )
    head = NpyHeader((int(shape[0]), int(shape[1])), dtype, int(f.tell()))
    if size is not None and head.header_len + head.n_rows * head.row_bytes > size:
        raise BadInputError(
            f"{path} declares {head.n_rows:,} rows of {head.n_columns:,} {dtype} values "
            f"({head.n_rows * head.row_bytes:,} bytes), but the file holds only "
            f"{max(0, size - head.header_len):,} bytes of data: it is truncated or corrupt."
        )
    return head


def parse_npy_rows(
    raw: bytes | bytearray | memoryview,
    header: NpyHeader,
    *,
    label_column: int | None = None,
    file: str = "",
    row0: int = 0,
) -> ParseResult:
    """Rows of a ``.npy`` file (raw bytes of whole rows) -> float32 block.

    Rows with NaN or inf become bad records (``offset`` is the row index, ``row0`` the
    index of the first row in ``raw``).
    """
    values = np.frombuffer(raw, dtype=header.dtype).reshape(-1, header.n_columns)
    if len(values) == 0:
        return None, []
    features, labels = split_label(values, label_column)
    return drop_nonfinite(features, labels, values, label_column, file, row0)


# ---------------------------------------------------------------------------- format


class NpyFormat(Format):
    name = "npy"

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if first is None:
            return plan
        label = plan.label_column
        with reading.open_file(first, seekable=True) as f:
            head = read_npy_header(f, first, dict(files)[first])
        if isinstance(label, str):
            raise BadInputError(
                f"label_column {label!r} is a name, but .npy columns have none; give the "
                "label's index instead."
            )
        if label is not None:
            label = normalize_index(label, head.n_columns, first)
        return replace(
            plan,
            n_columns=head.n_columns,
            n_features=head.n_columns - (label is not None),
            label_column=label,
            row_bytes_hint=head.row_bytes,
        )

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        path, size = file
        with reading.open_file(path, seekable=True) as f:
            head = read_npy_header(f, path, size)
        rows = max(1, plan.split_bytes // max(1, head.row_bytes))
        n = head.n_rows
        return [Range(path, r, min(r + rows, n)) for r in range(0, n, rows)]

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        with reading.open_file(rng.path, seekable=True) as f:
            head = read_npy_header(f, rng.path)
            if head.n_columns != plan.n_columns:
                raise BadInputError(
                    f"{rng.path} has {head.n_columns} columns, but the first .npy file of "
                    f"this input has {plan.n_columns}."
                )
            f.seek(head.header_len + rng.start * head.row_bytes)
            row = rng.start
            while row < rng.end:
                n = min(plan.block_size, rng.end - row)
                raw = reading.read_exact(f, n * head.row_bytes, rng.path)
                block, bad = parse_npy_rows(
                    raw,
                    head,
                    label_column=cast("int | None", plan.label_column),
                    file=rng.path,
                    row0=row,
                )
                yield block, bad, len(raw), n
                row += n


FORMAT: Format = NpyFormat()
