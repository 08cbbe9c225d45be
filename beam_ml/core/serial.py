"""The byte format of states and models: a JSON header followed by raw numpy payloads.

Layout::

    b"BEAMML\\x01\\n"            8 bytes of magic
    <uint32 little-endian>      length of the header
    header (UTF-8 JSON)         kind, family, serial_version, config, fingerprint,
                                meta (scalars), arrays (name, dtype, shape, offset),
                                payload_bytes and payload_crc32
    payload                     the arrays' bytes, little-endian, back to back

Reading never runs code: the header is parsed by ``json`` and every array is rebuilt by
``numpy.frombuffer`` with a dtype restricted to booleans, integers and floats (no
object arrays, no pickle) [STYLE §1.6, DataSketches ``check_serial_version``].
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from beam_ml.core.errors import CorruptStateError, IncompatibleStateError
from beam_ml.version import __version__

__all__ = ["MAGIC", "Packed", "pack", "unpack", "fingerprint"]

MAGIC = b"BEAMML\x01\n"
_LEN = struct.Struct("<I")
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: nothing that can hold code


def fingerprint(family: str, config: dict[str, Any]) -> str:
    """A short hash of everything that must match before two states can merge."""
    canonical = json.dumps({"family": family, "config": config}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Packed:
    """The decoded content of a state or model."""

    kind: str
    family: str
    serial_version: int
    config: dict[str, Any]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    header: dict[str, Any]


def pack(
    kind: str,
    family: str,
    serial_version: int,
    config: dict[str, Any],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> bytes:
    entries, chunks, offset = [], [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {array.dtype}; only numbers are stored")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        raw = array.tobytes()
        entries.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": len(raw),
            }
        )
        chunks.append(raw)
        offset += len(raw)
    payload = b"".join(chunks)
    header = {
        "kind": kind,
        "family": family,
        "serial_version": serial_version,
        "library_version": __version__,
        "config": config,
        "fingerprint": fingerprint(family, config),
        "meta": meta,
        "arrays": entries,
        "payload_bytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
    }
    head = json.dumps(header, sort_keys=True, allow_nan=True).encode()
    return MAGIC + _LEN.pack(len(head)) + head + payload


def unpack(data: bytes, *, expected_kind: str) -> Packed:
    """Decode bytes written by :func:`pack`; raise a clear error for anything else."""
    data = memoryview(data).cast("B")
    what = f"beam_ml {expected_kind}"
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise IncompatibleStateError(
            f"These bytes are not a {what}: they do not start with the beam_ml header."
        )
    start = len(MAGIC) + _LEN.size
    if len(data) < start:
        raise CorruptStateError(f"The {what} is truncated: {len(data)} bytes.")
    (head_len,) = _LEN.unpack(data[len(MAGIC) : start])
    if len(data) < start + head_len:
        raise CorruptStateError(
            f"The {what} is truncated: its header needs {head_len} bytes, "
            f"{len(data) - start} are present."
        )
    try:
        header = json.loads(bytes(data[start : start + head_len]))
        kind, family = header["kind"], header["family"]
        version, entries = int(header["serial_version"]), header["arrays"]
        size, crc = int(header["payload_bytes"]), int(header["payload_crc32"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptStateError(f"The {what} has a damaged header ({exc}).") from None
    if kind != expected_kind:
        raise IncompatibleStateError(f"Expected a {what}, found a beam_ml {kind}.")
    payload = data[start + head_len :]
    if len(payload) != size:
        raise CorruptStateError(
            f"The {what} ({family}) is truncated or padded: {size} payload bytes "
            f"expected, {len(payload)} found."
        )
    if zlib.crc32(payload) != crc:
        raise CorruptStateError(f"The {what} ({family}) is damaged: checksum mismatch.")
    arrays = {}
    for entry in entries:
        dtype = np.dtype(entry["dtype"])
        if dtype.kind not in _ALLOWED_KINDS:
            raise CorruptStateError(f"Array {entry['name']!r} has a forbidden dtype {dtype}.")
        lo, hi = entry["offset"], entry["offset"] + entry["nbytes"]
        array = np.frombuffer(payload[lo:hi], dtype=dtype)
        arrays[entry["name"]] = array.reshape(entry["shape"]).copy()
    return Packed(
        kind=kind,
        family=family,
        serial_version=version,
        config=header.get("config", {}),
        meta=header.get("meta", {}),
        arrays=arrays,
        header=header,
    )
