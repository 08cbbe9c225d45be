"""SageMaker's ``application/x-recordio-protobuf``: MXNet RecordIO frames, each holding
one ``aialgs.data.Record`` protobuf (:mod:`~beam_ml.io.formats.recordio_schema`).

A record's features are ``features['values']``, a Float32Tensor (or Float64Tensor,
Int32Tensor): dense (``values`` only, possibly a ``shape``) or sparse (``keys`` are the
flat indices of ``values`` in a tensor of ``shape``); its label, if any, is the one value
of ``label['values']``. This is what SageMaker's built-in algorithms read (the SDK's
``write_numpy_to_dense_tensor`` / ``write_spmatrix_to_sparse_tensor`` write it).

The framing (dmlc-core's RecordIO): each frame is ``uint32 magic 0xced7230a``, ``uint32
lrecord`` (top 3 bits: continuation flag, low 29: length), the bytes, zero padding to 4
bytes. MXNet's own writer splits a record where its bytes hold the magic number
(flags 1 = first part, 2 = middle, 3 = last; the magic goes back in between the parts).

Blocks, not rows: runs of records with one layout (the usual dense file: same width, same
label type) are decoded together, as a 2-D byte array whose value columns are viewed as
floats; only records that differ from their neighbours' layout (sparse ones, uids ...)
are parsed one by one by the protobuf runtime.

The first record of the input settles the plan: the feature count (its tensor's
``shape``, or its number of values), dense or sparse blocks (``Plan.n_columns`` is the
width of a dense record, None for sparse) and whether there are labels
(``label_column`` is ``'values'`` then). A record that does not fit is a bad record
whose reason names the record (its index in the file and byte offset) and the field;
``offset`` in a bad record and ``Block.origin`` count records, as for ``.npy``. Broken
framing (no magic number where a frame should start, a truncated file) cannot be
skipped safely: it stops the reading with an error naming the file and byte offset.

A file is one range (frames cannot be told from data at an arbitrary byte offset: the
SDK's writer does not escape the magic number in the payload), so large inputs should
be many files, as SageMaker's own channels are.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import Chunk, Format, Plan, Range
from beam_ml.io.formats.common import FLOAT32_MAX, bad_record, make_block
from beam_ml.io.formats.recordio_schema import record_class

__all__ = ["FORMAT", "MAGIC", "RecordIOError", "decode_records", "iter_payloads"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
#: The tensor fields a feature or label value may be, and their value dtypes.
_TENSORS = {"float32_tensor": "<f4", "float64_tensor": "<f8", "int32_tensor": "<i4"}
#: Records to parse one by one after a run of same-layout records ends, before the
#: vectorized path is tried again (a file that never repeats a layout costs no more).
_RETRY_AFTER = 64
_READ_PIECE = 4 * 2**20


class RecordIOError(BadInputError):
    """Broken framing: the reading of the file cannot go on."""


def _padded(length: int) -> int:
    return (length + 3) & ~3


# ----------------------------------------------------------------------------- framing


def _next_payload(
    buf: bytes | bytearray, pos: int, eof: bool, path: str, base: int
) -> tuple[bytes, int] | None:
    """The record starting at ``buf[pos]`` (its parts joined) and the position after it;
    None if ``buf`` ends inside it (and more may come). ``base`` is the file offset of
    ``buf[0]``, for errors."""
    parts = []
    start = pos
    while True:
        if pos + 8 > len(buf):
            break
        magic, lrec = struct.unpack_from("<II", buf, pos)
        if magic != MAGIC:
            raise RecordIOError(
                f"{path}: no RecordIO magic number at byte offset {base + pos:,} (found "
                f"0x{magic:08x}, expected 0x{MAGIC:08x}): the file is corrupt or not "
                "recordio-protobuf."
            )
        flag, length = lrec >> 29, lrec & _LENGTH_MASK
        if flag > 3 or (flag in (0, 1)) != (not parts):
            raise RecordIOError(
                f"{path}: RecordIO frame at byte offset {base + pos:,} has continuation flag "
                f"{flag} {'after' if parts else 'at'} the start of a record: the file is corrupt."
            )
        end = pos + 8 + length
        if end > len(buf):
            break
        parts.append(bytes(buf[pos + 8 : end]))
        pos = min(pos + 8 + _padded(length), len(buf)) if eof else pos + 8 + _padded(length)
        if pos > len(buf):
            break
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts), pos
    if eof:
        raise RecordIOError(
            f"{path} is truncated: its last RecordIO record (at byte offset {base + start:,}) "
            "ends early."
        )
    return None


def iter_payloads(data: bytes, path: str = "") -> Iterator[bytes]:
    """The records (protobuf bytes) of a whole RecordIO byte string."""
    pos = 0
    while pos < len(data):
        found = _next_payload(data, pos, True, path, 0)
        assert found is not None  # at eof it returns or raises
        payload, pos = found
        yield payload


# ------------------------------------------------------------------- one record, parsed


class _Rows:
    """Decoded rows of a chunk, in order: dense pieces, or sparse (indices, values)."""

    def __init__(self, n_features: int, sparse: bool, labelled: bool):
        self.n_features, self.sparse, self.labelled = n_features, sparse, labelled
        self.pieces: list[Any] = []  # matrices (dense or CSR) in row order
        self.labels: list[np.ndarray] = []
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # sparse rows not yet joined
        self.pending_labels: list[float] = []

    def add_matrix(self, features: Any, labels: np.ndarray | None) -> None:
        self._flush()
        if self.sparse and not sp.issparse(features):
            features = sp.csr_matrix(features)
        self.pieces.append(features)
        if self.labelled:
            self.labels.append(np.asarray(labels, dtype=np.float64))

    def add_row(self, indices: np.ndarray | None, values: np.ndarray, label: float | None) -> None:
        if indices is None:  # dense values
            if self.sparse:
                nz = np.flatnonzero(values)
                indices, values = nz, values[nz]
            else:
                self.add_matrix(values[None, :], None if label is None else np.array([label]))
                return
        self.pending.append((indices, values))
        self.pending_labels.append(0.0 if label is None else label)

    def _flush(self) -> None:
        if not self.pending:
            return
        rows, labels = self.pending, self.pending_labels
        self.pending, self.pending_labels = [], []
        counts = np.array([len(i) for i, _ in rows], dtype=np.int64)
        indptr = np.concatenate(([0], np.cumsum(counts)))
        features: Any = sp.csr_matrix(
            (
                np.concatenate([v for _, v in rows]).astype(np.float32),
                np.concatenate([i for i, _ in rows]).astype(np.int64),
                indptr,
            ),
            shape=(len(rows), self.n_features),
        )
        features.sort_indices()
        if not self.sparse:
            features = features.toarray()
        self.pieces.append(features)
        if self.labelled:
            self.labels.append(np.asarray(labels, dtype=np.float64))

    def block(self, file: str, row0: int) -> Any:
        self._flush()
        if not self.pieces:
            return None
        if self.sparse:
            features = (
                sp.vstack(self.pieces, format="csr") if len(self.pieces) > 1 else self.pieces[0]
            )
            features = sp.csr_matrix(features, dtype=np.float32)
        else:
            features = np.ascontiguousarray(np.concatenate(self.pieces), dtype=np.float32)
        labels = np.concatenate(self.labels) if self.labelled else None
        return make_block(features, labels, file, row0)


def _tensor(value: Any) -> tuple[str | None, Any]:
    kind = value.WhichOneof("value")
    return kind, (getattr(value, kind) if kind in _TENSORS else None)


def _parse_one(message: Any, payload: bytes, rows: _Rows) -> str | None:
    """Add one record's row to ``rows``; or the reason it is bad."""
    try:
        message.ParseFromString(payload)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        return f"not a SageMaker Record protobuf ({str(exc)[:200] or type(exc).__name__})"
    if "values" not in message.features:
        keys = sorted(message.features.keys())
        return f"field features['values'] is missing (features has {keys[:10]}); SageMaker algorithms read that key"
    kind, tensor = _tensor(message.features["values"])
    if tensor is None:
        return f"field features['values'] holds {kind or 'nothing'}, expected a Float32Tensor (or Float64Tensor, Int32Tensor)"
    values = np.asarray(tensor.values, dtype=np.float64)
    shape = [int(s) for s in tensor.shape]
    sparse = len(tensor.keys) or (shape and not len(values))  # an empty sparse row has no keys
    keys = np.asarray(tensor.keys, dtype=np.uint64) if sparse else None
    n = rows.n_features
    if shape and int(np.prod(shape)) != n:
        return f"field features['values'].shape {shape} holds {int(np.prod(shape))} features, expected {n} (the first record's)"
    if keys is None:
        if len(values) != n:
            return f"field features['values'] has {len(values)} values, expected {n} (the first record's)"
    else:
        if len(keys) != len(values):
            return f"field features['values'] has {len(keys)} keys but {len(values)} values"
        if len(keys) and int(keys.max()) >= n:
            return f"field features['values'].keys holds {int(keys.max())}, out of range for {n} features"
        increasing = len(keys) < 2 or bool((keys[1:] > keys[:-1]).all())  # the usual case
        if not increasing and len(np.unique(keys)) != len(keys):
            return "field features['values'].keys holds an index twice"
    bad = ~(np.abs(values) <= FLOAT32_MAX)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        what = (
            "NaN"
            if np.isnan(values[j])
            else "inf"
            if np.isinf(values[j])
            else f"{values[j]:g}, too large for float32"
        )
        return f"field features['values'] value {j} is {what}"
    label = None
    if rows.labelled:
        if "values" not in message.label:
            return "field label['values'] is missing (the first record has a label)"
        kind, tensor = _tensor(message.label["values"])
        if tensor is None or len(tensor.values) != 1:
            count = "no tensor" if tensor is None else f"{len(tensor.values)} values"
            return f"field label['values'] holds {count}, expected one value"
        label = float(tensor.values[0])
        if not np.isfinite(label):
            return f"field label['values'] is {label}"
    rows.add_row(None if keys is None else keys.astype(np.int64), values.astype(np.float32), label)
    return None


# ------------------------------------------------------------- runs of one layout, fast


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("varint runs past the end")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, payload start, payload end) of a message's fields."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, after = _varint(data, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if after > end:
            raise ValueError("field runs past the end")
        yield number, wire, pos, after
        pos = after


_TENSOR_FIELDS = {2: "<f4", 3: "<f8", 7: "<i4"}


def _values_slice(data: bytes, start: int, end: int) -> tuple[int, int, str] | None:
    """Where map entry ``data[start:end]`` (key 'values' only) keeps its tensor's packed
    values: (start, end, dtype); None if not a dense tensor entry named 'values'."""
    key, found = None, None
    for number, wire, a, b in _fields(data, start, end):
        if number == 1 and wire == 2:
            key = data[a:b]
        elif number == 2 and wire == 2:
            for n2, w2, c, d in _fields(data, a, b):
                if n2 in _TENSOR_FIELDS and w2 == 2:
                    for n3, w3, e, f in _fields(data, c, d):
                        if n3 == 1 and w3 == 2:
                            found = (e, f, _TENSOR_FIELDS[n2])
                        elif n3 == 2:  # keys: sparse
                            return None
    return found if key == b"values" else None


class _Layout:
    """The byte layout shared by a run of records: everything but the feature (and
    label) values is the same bytes as in the record it was taken from."""

    def __init__(
        self, payload: bytes, features: tuple[int, int, str], label: tuple[int, int, str] | None
    ):
        self.payload = np.frombuffer(payload, dtype=np.uint8)
        self.length = len(payload)
        self.stride = 8 + _padded(len(payload))
        self.features, self.label = features, label
        fixed = np.ones(len(payload), dtype=bool)
        for part in (features, label):
            if part is not None:
                fixed[part[0] : part[1]] = False
        self.fixed = np.flatnonzero(fixed)

    @classmethod
    def of(cls, payload: bytes, rows: _Rows) -> _Layout | None:
        """The layout of ``payload`` if it is a dense record the fast path can take."""
        features = label = None
        try:
            for number, wire, a, b in _fields(payload, 0, len(payload)):
                if number in (1, 2) and wire == 2:
                    found = _values_slice(payload, a, b)
                    if found is not None:
                        if number == 1:
                            features = found
                        else:
                            label = found
        except (ValueError, IndexError):
            return None
        if features is None or features[2] == "<i4":  # int32 values are varints
            return None
        width = (features[1] - features[0]) // np.dtype(features[2]).itemsize
        if width != rows.n_features or rows.sparse:
            return None
        if rows.labelled:
            if label is None:
                return None
            size = label[1] - label[0]
            # one float, one double, or an int32 of one varint byte (0..127)
            if (label[2], size) not in (("<f4", 4), ("<f8", 8), ("<i4", 1)):
                return None
        else:
            label = None
        return cls(payload, features, label)

    def run(self, buf: Any, pos: int, limit: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(features, labels, n) of the records at ``buf[pos:]`` that share this layout,
        at most ``limit``; n == 0 if the first does not."""
        n = min((len(buf) - pos) // self.stride, limit)
        if n <= 0:
            return np.empty((0, 0), np.float32), None, 0
        probe = min(n, 16)  # a run that ends at once costs no more than its first frames
        if n > probe and self.run(buf, pos, probe)[2] < probe:
            n = probe
        frames = np.frombuffer(buf, dtype=np.uint8, count=n * self.stride, offset=pos)
        frames = frames.reshape(n, self.stride)
        head = frames[:, :8].copy().view("<u4")
        ok = (head[:, 0] == MAGIC) & (head[:, 1] == self.length)
        body = frames[:, 8 : 8 + self.length]
        ok &= (body[:, self.fixed] == self.payload[self.fixed]).all(axis=1)
        k = n if ok.all() else int(np.argmin(ok))
        start, end, dtype = self.features
        features = body[:k, start:end].copy().view(dtype)
        labels = None
        if self.label is not None:
            a, b, ldtype = self.label
            raw = body[:k, a:b]
            labels = (raw[:, 0] if ldtype == "<i4" else raw.copy().view(ldtype)[:, 0]).astype(
                np.float64
            )
        return features, labels, k


def _check_finite(
    features: np.ndarray,
    labels: np.ndarray | None,
    file: str,
    row0: int,
    first_byte: int,
    stride: int,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows whose values are NaN, inf or too large for float32 (as bad records); the
    mask of the good rows."""
    good = (np.abs(features) <= FLOAT32_MAX).all(axis=1)
    if labels is not None:
        good &= np.isfinite(labels)
    bad = []
    for r in np.flatnonzero(~good):
        row = features[r]
        j = np.flatnonzero(~(np.abs(row) <= FLOAT32_MAX))
        if len(j):
            v = float(row[j[0]])
            what = (
                "NaN" if np.isnan(v) else "inf" if np.isinf(v) else f"{v:g}, too large for float32"
            )
            reason = f"field features['values'] value {int(j[0])} is {what}"
        else:
            reason = f"field label['values'] is {labels[r]}"  # type: ignore[index]
        bad.append(_bad(file, row0 + int(r), first_byte + int(r) * stride, reason))
    return good, bad


def _bad(file: str, index: int, byte_offset: int, reason: str) -> dict[str, Any]:
    return bad_record(
        file,
        index,
        None,
        f"<RecordIO record {index} at byte offset {byte_offset:,}>",
        f"record {index} (byte offset {byte_offset:,}): {reason}",
    )


# ------------------------------------------------------------------------------ chunks


def decode_records(
    buf: Any,
    pos: int,
    eof: bool,
    plan: Plan,
    file: str,
    index0: int,
    base: int,
    layout: list[_Layout | None],
) -> tuple[Any, list[dict[str, Any]], int, int]:
    """Decode up to ``plan.block_size`` records from ``buf[pos:]``: (block, bad records,
    position after the last record taken, records taken). ``index0`` is the index of
    the first record in the file, ``base`` the file offset of ``buf[0]``; ``layout`` a
    one-item list holding the fast path's layout, kept from chunk to chunk."""
    rows = _Rows(plan.n_features or 0, plan.n_columns is None, plan.label_column is not None)
    message = record_class()()
    bad: list[dict[str, Any]] = []
    taken, retry, tries = 0, 0, 0
    while taken < plan.block_size and pos < len(buf):
        if layout[0] is not None and retry <= 0:
            features, labels, k = layout[0].run(buf, pos, plan.block_size - taken)
            if k:
                stride = layout[0].stride
                good, more = _check_finite(
                    features, labels, file, index0 + taken, base + pos, stride
                )
                bad += more
                if more:
                    features, labels = features[good], None if labels is None else labels[good]
                rows.add_matrix(features, labels)
                taken += k
                pos += k * stride
                continue
            retry = _RETRY_AFTER
        found = _next_payload(buf, pos, eof, file, base)
        if found is None:
            break
        payload, after = found
        reason = _parse_one(message, payload, rows)
        if reason is not None:
            bad.append(_bad(file, index0 + taken, base + pos, reason))
        elif not rows.sparse and (retry == 1 or (layout[0] is None and tries < _RETRY_AFTER)):
            # a layout to try on the records that follow: this record's, if it is one
            tries += 1
            single_frame = after - pos == 8 + _padded(len(payload))
            candidate = _Layout.of(payload, rows) if single_frame else None
            if candidate is not None:
                layout[0], retry = candidate, 1
        retry -= 1
        taken += 1
        pos = after
    return rows.block(file, index0), bad, pos, taken


def _read_file(plan: Plan, path: str) -> Iterator[Chunk]:
    with reading.open_file(path) as f:
        buf, pos, base, index, eof = b"", 0, 0, 0, False
        layout: list[_Layout | None] = [None]
        want = max(plan.block_size * max(plan.row_bytes_hint, 16), 2**16)
        while True:
            if not eof and len(buf) - pos < want:
                piece = f.read(max(want, _READ_PIECE))
                eof = not piece
                buf, base, pos = buf[pos:] + piece, base + pos, 0
                continue
            if pos >= len(buf):
                return
            block, bad, after, n = decode_records(buf, pos, eof, plan, path, index, base, layout)
            if n == 0:  # a record longer than what is buffered: read more
                want = 2 * max(want, len(buf) - pos)
                if eof:
                    return
                continue
            yield block, bad, after - pos, n
            index += n
            pos = after


def _first_record(path: str) -> bytes | None:
    with reading.open_file(path) as f:
        buf = b""
        while True:
            piece = f.read(2**16)
            buf += piece
            found = _next_payload(buf, 0, not piece, path, 0) if buf else None
            if found is not None:
                return found[0]
            if not piece:
                return None
            if len(buf) > reading.MAX_RECORD_BYTES:
                raise BadInputError(
                    f"the first record of {path} is longer than "
                    f"{reading.MAX_RECORD_BYTES >> 20} MiB; is this recordio-protobuf?"
                )


# ---------------------------------------------------------------------------- format


class RecordIOFormat(Format):
    name = "recordio"

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        if plan.label_column is not None:
            raise BadInputError(
                "recordio-protobuf labels are each record's label['values']; label_column "
                f"must be None. Got {plan.label_column!r} instead."
            )
        if first is None:
            return plan
        payload = _first_record(first)
        if payload is None:
            return plan
        message = record_class()()
        where = f"{first}, record 0"
        try:
            message.ParseFromString(payload)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise BadInputError(f"{where} is not a SageMaker Record protobuf: {exc}") from None
        if "values" not in message.features:
            raise BadInputError(
                f"{where} has no field features['values'] (features has "
                f"{sorted(message.features.keys())[:10]}); SageMaker algorithms read that key."
            )
        kind, tensor = _tensor(message.features["values"])
        if tensor is None:
            raise BadInputError(
                f"{where}: field features['values'] holds {kind or 'nothing'}, expected a "
                "Float32Tensor (or Float64Tensor, Int32Tensor)."
            )
        sparse = len(tensor.keys) > 0 or (len(tensor.shape) > 0 and not len(tensor.values))
        if tensor.shape:
            n_features = int(np.prod([int(s) for s in tensor.shape]))
        elif sparse:
            n_features = plan.options.feature_dim
            if n_features is None:
                raise BadInputError(
                    f"{where}: field features['values'] is a sparse tensor without a shape; "
                    "give feature_dim (--feature_dim)."
                )
        else:
            n_features = len(tensor.values)
        labelled = "values" in message.label
        return replace(
            plan,
            n_columns=None if sparse else n_features,
            n_features=n_features,
            label_column="values" if labelled else None,
            row_bytes_hint=8 + _padded(len(payload)),
        )

    def split(self, file: tuple[str, int], plan: Plan) -> list[Range]:
        path, size = file
        return [Range(path, 0, size)]

    def read_range(self, plan: Plan, rng: Range) -> Iterator[Chunk]:
        return _read_file(plan, rng.path)


FORMAT: Format = RecordIOFormat()
