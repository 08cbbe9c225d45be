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
import math
import re
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
_MAX_NDIM = 32
# Numeric dtypes only, spelled as ``pack`` writes them (``<f8``, ``|b1``, ...).
_DTYPE = re.compile(r"^[<>|=][biuf][1248]$")
_HEADER_FIELDS: dict[str, type] = {
    "kind": str,
    "family": str,
    "serial_version": int,
    "config": dict,
    "fingerprint": str,
    "meta": dict,
    "arrays": list,
    "payload_bytes": int,
    "payload_crc32": int,
}


def fingerprint(family: str, config: dict[str, Any]) -> str:
    """A short hash of everything that must match before two states can merge."""
    canonical = json.dumps({"family": family, "config": config}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(value: Any, expected: type) -> bool:
    return _is_int(value) if expected is int else isinstance(value, expected)


def _non_finite(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinite number inside a JSON value, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}")
        if found:
            return found
    return None


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


def unpack(data: bytes, *, expected_kind: str, source: str | None = None) -> Packed:
    """Decode bytes written by :func:`pack`; raise a clear one-line error for anything else.

    Every header field is checked for presence and type, and every array's dtype,
    shape, offset and size against the payload's length, before any array is built:
    a damaged or hostile header cannot make this allocate more than the bytes given.
    ``source`` (a file name) starts every error message.

    Raises
    ------
    IncompatibleStateError
        Foreign bytes, or a model where a state is expected (and vice versa).
    CorruptStateError
        Truncated, padded or damaged bytes, or a header that ``pack`` cannot have written.
    """
    data = memoryview(data).cast("B")
    what = source or f"The beam_ml {expected_kind}"

    def damaged(reason: str) -> CorruptStateError:
        return CorruptStateError(f"{what}: {reason}".replace("\n", " "))

    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise IncompatibleStateError(
            f"{what}: these bytes are not a beam_ml {expected_kind}: "
            "they do not start with the beam_ml header."
        )
    start = len(MAGIC) + _LEN.size
    if len(data) < start:
        raise damaged(f"truncated: {len(data)} bytes.")
    (head_len,) = _LEN.unpack(data[len(MAGIC) : start])
    if len(data) < start + head_len:
        raise damaged(
            f"truncated: its header needs {head_len} bytes, {len(data) - start} are present."
        )
    try:
        header = json.loads(bytes(data[start : start + head_len]))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise damaged(f"the header is not valid JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise damaged("the header is not a JSON object.")
    for field, expected in _HEADER_FIELDS.items():
        if field not in header:
            raise damaged(f"the header has no field {field!r}.")
        if not _type_ok(header[field], expected):
            raise damaged(f"the header field {field!r} has a wrong type: {header[field]!r:.60}.")
    kind, family = header["kind"], header["family"]
    if kind != expected_kind:
        raise IncompatibleStateError(f"{what}: expected a beam_ml {expected_kind}, found a {kind}.")
    if header["fingerprint"] != fingerprint(family, header["config"]):
        raise damaged("the header field 'config' does not match its 'fingerprint'.")
    meta = header["meta"]
    n_seen = meta.get("n_seen")
    if (kind == "state" or n_seen is not None) and not (_is_int(n_seen) and n_seen >= 0):
        raise damaged(f"the header field 'meta.n_seen' must be an int >= 0; got {n_seen!r:.60}.")
    if kind == "state":  # a model may hold NaN (no loss measured yet) or inf (a threshold)
        bad = _non_finite(meta, "meta")
        if bad:
            raise damaged(f"the header field {bad!r} is not a finite number.")
    payload = data[start + head_len :]
    if header["payload_bytes"] != len(payload):
        raise damaged(
            f"truncated or padded: its header field 'payload_bytes' says "
            f"{header['payload_bytes']} bytes, {len(payload)} follow the header."
        )
    entries, offset, names = [], 0, set()
    for i, entry in enumerate(header["arrays"]):
        entries.append(_check_entry(entry, i, offset, names, damaged))
        offset += entry["nbytes"]
    if offset != len(payload):
        raise damaged(f"its arrays hold {offset} bytes; the payload has {len(payload)}.")
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise damaged(f"the {family} payload is damaged: checksum mismatch.")
    arrays = {}
    for entry, dtype in entries:
        lo, hi = entry["offset"], entry["offset"] + entry["nbytes"]
        array = np.frombuffer(payload[lo:hi], dtype=dtype)
        arrays[entry["name"]] = array.reshape(entry["shape"]).copy()
    return Packed(
        kind=kind,
        family=family,
        serial_version=header["serial_version"],
        config=header["config"],
        meta=meta,
        arrays=arrays,
        header=header,
    )


def _check_entry(
    entry: Any, i: int, offset: int, names: set[str], damaged: Any
) -> tuple[dict[str, Any], np.dtype]:
    """Check one array entry of a header against the bytes before it (``offset``):
    arrays lie back to back, in order, each exactly ``prod(shape) * itemsize`` bytes."""
    field = f"arrays[{i}]"
    if not isinstance(entry, dict):
        raise damaged(f"the header field {field!r} is not an object.")
    for key, expected in (("name", str), ("dtype", str), ("shape", list), ("offset", int),
                          ("nbytes", int)):
        if key not in entry:
            raise damaged(f"the header field {field!r} has no {key!r}.")
        if not _type_ok(entry[key], expected):
            raise damaged(f"the header field '{field}.{key}' has a wrong type: {entry[key]!r:.60}.")
    name, shape = entry["name"], entry["shape"]
    field = f"arrays[{i}] ({name!r:.40})"
    if name in names:
        raise damaged(f"the header names the array {name!r:.40} twice.")
    names.add(name)
    if not _DTYPE.match(entry["dtype"]):
        raise damaged(f"the header field '{field}.dtype' is not a number type: {entry['dtype']!r:.40}.")
    dtype = np.dtype(entry["dtype"])
    if len(shape) > _MAX_NDIM or not all(_is_int(n) and n >= 0 for n in shape):
        raise damaged(f"the header field '{field}.shape' is not a shape: {shape!r:.60}.")
    if entry["offset"] != offset:
        raise damaged(f"the header field '{field}.offset' is {entry['offset']}; expected {offset}.")
    if entry["nbytes"] != math.prod(shape) * dtype.itemsize:
        raise damaged(
            f"the header field '{field}.nbytes' ({entry['nbytes']}) does not match its "
            f"shape {shape} of {dtype}."
        )
    return entry, dtype
