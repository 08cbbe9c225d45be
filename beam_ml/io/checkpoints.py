"""Checkpoints: a directory (or object-store prefix) holding a state or a model.

Layout, readable by a person and by any tool that reads JSON::

    <path>/manifest.json        what is inside: kind, algorithm, versions, config,
                                n_seen, created, the payload's name, size and sha256,
                                the kept snapshots (``history``)
    <path>/<kind>-<UTC time>-<16 hex>.bin
                                the payload: beam_ml's versioned byte format

Writes are atomic: the payload goes to a new name first, then the manifest is written
to a temporary name and renamed over ``manifest.json`` (an atomic replace on local
disks); on object stores (``s3://``, ``gs://``), which have no rename, the manifest is
written in place once the payload is there: an object is visible only when its upload
completed, so the manifest is the commit marker. A crash at any point leaves the
previous checkpoint readable. Only then are files deleted, and only beam_ml's own:
payloads an earlier manifest named that the new one no longer keeps, and leftovers of
crashed writes (payloads and temporary manifests of beam_ml's naming that no manifest
names). A user's file in the folder is never touched.

On a local disk a write holds an exclusive lock (``.beam_ml.lock``, an ``flock`` the
kernel drops when its process dies, even by ``kill -9``, holding the writer's pid and
host): a second writer waits for it, or fails with :class:`CheckpointLockedError`
naming the holder. Object stores (``gs://``, ``s3://``) have no lock through Beam's
``FileSystems``: there, leftovers are removed only once an hour old, so a concurrent
writer's payload is never taken before its manifest lands, and the last manifest
written wins.

Reading parses JSON and numpy buffers only: loading a file never runs code. The
manifest is checked field by field; the payload must be a plain file name inside the
checkpoint's folder (no path, no symlink, no device), of the size and sha256 the
manifest gives, and is read with that size as the bound. Every problem is one
:class:`~beam_ml.core.errors.BeamMLError` line naming the file and the field.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from beam_ml.core import serial
from beam_ml.core.errors import BeamMLError, CorruptStateError, IncompatibleStateError
from beam_ml.core.state import Model, TrainingState, load_model, load_state
from beam_ml.io.files import CompressionTypes, FileSystems, is_local
from beam_ml.version import __version__

if TYPE_CHECKING:  # imported on first use (module __getattr__): no Apache Beam import here
    from beam_ml.io.checkpoint_transforms import ReadCheckpoint, WriteCheckpoint

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "write_checkpoint",
    "read_checkpoint",
    "read_manifest",
    "WriteCheckpoint",
    "ReadCheckpoint",
]

_log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".beam_ml.lock"
FORMAT = "beam_ml.checkpoint"
FORMAT_VERSION = 1
#: A manifest larger than this is not one (source positions included, they are KiBs).
MAX_MANIFEST_BYTES = 64 << 20
#: How long a write waits for another process's write to the same checkpoint.
LOCK_TIMEOUT_SECONDS = 60.0
#: On object stores (no lock), leftovers younger than this may be a concurrent write.
LEFTOVER_GRACE_SECONDS = 3600.0

# The files beam_ml owns in a checkpoint folder, and the only ones it ever deletes.
# Payloads: "state-20261204T061500Z-0123456789abcdef.bin" (the time makes a leftover's
# age known on any filesystem). Payloads of before 2026-12-04 ("state-<12 hex>.bin")
# are deleted only when an earlier manifest names them.
_PAYLOAD = re.compile(r"^(?:state|model)-(\d{8}T\d{6}Z)-[0-9a-f]{16}\.bin$")
_OLD_PAYLOAD = re.compile(r"^(?:state|model)-[0-9a-f]{12}\.bin$")
_TEMPORARY = re.compile(r"^\.manifest\.json\.(?:(\d{8}T\d{6}Z)-)?[0-9a-f]{8}\.tmp$")
_OWNED = {"payloads": _PAYLOAD.pattern, "temporaries": _TEMPORARY.pattern}
# What a manifest may name as its payload: one plain file name, no path, not hidden.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointNotFoundError(BeamMLError, FileNotFoundError):
    """No checkpoint (no manifest.json) at the given path."""


class CheckpointLockedError(BeamMLError, RuntimeError):
    """Another process is writing the same checkpoint (and did not finish in time)."""


# --- files ---------------------------------------------------------------------------------------
def _join(path: str, name: str) -> str:
    return FileSystems.join(path.rstrip("/"), name)


def _is_local(path: str) -> bool:
    return is_local(path)


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def _read_bounded(location: str, size: int | None, limit: int, what: str) -> bytes:
    """The bytes of ``location``: exactly ``size`` of them when given, else at most
    ``limit``. A local file must be a regular file, and not a symlink when ``size`` is
    given (a payload); it is opened before it is checked, so it cannot be swapped."""
    if _is_local(location):
        flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if size is not None else 0)
        try:
            fd = os.open(location, flags | os.O_NONBLOCK)  # a FIFO must not block the open
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptStateError(
                    f"{location}: {what} is a symlink; a checkpoint's payload must be a "
                    "plain file in its folder."
                ) from None
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(location) from None
            raise CorruptStateError(f"{location}: {what} cannot be opened: {exc}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a folder, a device (/dev/zero), a FIFO
            os.close(fd)
            raise CorruptStateError(f"{location}: {what} is not a regular file.")
        with os.fdopen(fd, "rb") as handle:
            _check_size(location, info.st_size, size, limit, what)
            os.set_blocking(fd, True)
            # One byte more than expected tells a file that grew meanwhile.
            data = handle.read((info.st_size if size is None else size) + 1)
    else:
        matched = FileSystems.match([location])[0].metadata_list
        if not matched:
            raise FileNotFoundError(location)
        listed = matched[0].size_in_bytes
        _check_size(location, listed, size, limit, what)
        with FileSystems.open(
            location, compression_type=CompressionTypes.UNCOMPRESSED
        ) as handle:
            data = handle.read((listed if size is None else size) + 1)
    _check_size(location, len(data), size, limit, what)
    return data


def _check_size(location: str, found: int, size: int | None, limit: int, what: str) -> None:
    if size is not None and found != size:
        raise CorruptStateError(
            f"{location}: {what} does not match its manifest: {found} bytes, the field "
            f"'payload_bytes' says {size}: the file is damaged or was replaced."
        )
    if size is None and found > limit:
        raise CorruptStateError(f"{location}: {what} is larger than {limit} bytes.")


def _listing(path: str) -> dict[str, int]:
    """The plain files directly in ``path`` (symlinks and folders left out): name -> size."""
    if _is_local(path):
        try:
            with os.scandir(path) as entries:
                return {
                    e.name: e.stat(follow_symlinks=False).st_size
                    for e in entries
                    if e.is_file(follow_symlinks=False)
                }
        except (FileNotFoundError, NotADirectoryError):
            return {}
    prefix = path.rstrip("/") + "/"
    try:
        matched = FileSystems.match([prefix + "*"])[0].metadata_list
    except Exception:  # noqa: BLE001 - a prefix that does not exist yet holds nothing
        return {}
    files = {m.path[len(prefix) :]: m.size_in_bytes for m in matched if m.path.startswith(prefix)}
    return {name: size for name, size in files.items() if "/" not in name}


def _delete(path: str, names: list[str]) -> None:
    """Delete files of a checkpoint folder, each by its own name (never a glob, never a
    folder), tolerating those already gone."""
    for name in names:
        location = _join(path, name)
        try:
            if _is_local(location):
                os.remove(location)
            else:
                FileSystems.delete([location])
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - a leftover that stays is harmless
            _log.warning("could not delete %s: %s", location, exc)


# --- the write lock ------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: str, timeout: float) -> Iterator[None]:
    """Hold the exclusive write lock of the local checkpoint ``path``; nothing for
    object stores (see the module docstring)."""
    if not _is_local(path):
        yield
        return
    os.makedirs(path, exist_ok=True)
    location = os.path.join(path, LOCK)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(location, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # a symlink or a folder in its place
            raise CheckpointLockedError(f"{location}: cannot open the lock file: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            if time.monotonic() >= deadline:
                raise CheckpointLockedError(
                    f"{location}: another beam_ml process is writing this checkpoint "
                    f"({owner or 'owner not recorded yet'}); waited {timeout:g} s. Use "
                    "another output, or let that process finish."
                ) from None
            time.sleep(0.05)
            continue
        # The holder before us may have deleted the file as it released it: then our
        # lock is on a file nobody else sees, and we start again on the current one.
        try:
            current = os.stat(location, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        break
    try:
        # A lock file left by a writer that died (kill -9) is taken over here: the
        # kernel released its flock with the process, whatever the file still says.
        owner = f"pid {os.getpid()} on {socket.gethostname()} since {_now()}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(location)
        os.close(fd)  # releases the flock


# --- writing -------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_checkpoint(
    path: str,
    obj: TrainingState | Model,
    extra: dict[str, Any] | None = None,
    keep: int = 1,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Atomically write a state or model to ``path``; return the manifest.

    ``extra`` is stored in the manifest as is (JSON): derive defaults, source
    positions, anything a resume needs. ``keep`` > 1 keeps that many committed
    snapshots (newest first in the manifest's ``history``), e.g. the last K stream
    snapshots. On a local disk a concurrent write to ``path`` is waited for, at most
    ``lock_timeout`` seconds, then :class:`CheckpointLockedError`.
    """
    if keep < 1:
        raise ValueError(f"The 'keep' parameter of write_checkpoint must be >= 1. Got {keep}.")
    kind = "state" if isinstance(obj, TrainingState) else "model"
    payload = obj.to_bytes()
    header = serial.unpack(payload, expected_kind=kind).header
    with _locked(path, lock_timeout):
        return _write_locked(path, kind, obj, payload, header, extra, keep)


def _write_locked(
    path: str,
    kind: str,
    obj: TrainingState | Model,
    payload: bytes,
    header: dict[str, Any],
    extra: dict[str, Any] | None,
    keep: int,
) -> dict[str, Any]:
    stamp = _stamp()
    name = f"{kind}-{stamp}-{uuid.uuid4().hex[:16]}.bin"
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "algorithm": obj.FAMILY,
        "serial_version": obj.SERIAL_VERSION,
        "library_version": __version__,
        "config": header["config"],
        "fingerprint": header["fingerprint"],
        "n_seen": int(obj.n_seen),
        "created": _now(),
        "payload": name,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "meta": header["meta"],
        "extra": extra or {},
        "owned_files": _OWNED,
    }
    files = _listing(path)
    previous = _previous_history(path, files)
    current = {k: manifest[k] for k in _HISTORY_FIELDS}
    manifest["history"] = ([current] + previous)[:keep]
    _write_bytes(_join(path, name), payload)
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if _is_local(path):
        temporary = _join(path, f".{MANIFEST}.{stamp}-{uuid.uuid4().hex[:8]}.tmp")
        _write_bytes(temporary, text)
        FileSystems.rename([temporary], [_join(path, MANIFEST)])
    else:
        # An object store has no rename (Beam's is a copy and a delete), but an object
        # appears only once its upload completes, whole: the manifest, written after
        # the payload landed, is the commit marker. A writer killed before it leaves
        # the previous manifest, which names only payloads that are there.
        _write_bytes(_join(path, MANIFEST), text)
    kept = {entry["payload"] for entry in manifest["history"]}
    dropped = [e["payload"] for e in previous if e["payload"] not in kept]
    _delete(path, dropped + _leftovers(path, files, kept | set(dropped)))
    return manifest


_HISTORY_FIELDS = ("payload", "payload_bytes", "payload_sha256", "n_seen", "created")


def _previous_history(path: str, files: dict[str, int]) -> list[dict[str, Any]]:
    """The committed snapshots of the checkpoint at ``path`` whose payload is still
    there, whole: what ``keep`` counts. Only payloads of beam_ml's naming count (and
    may later be deleted): a manifest naming a user's file cannot make us delete it."""
    try:
        history = read_manifest(path)["history"]
    except (FileNotFoundError, IncompatibleStateError):
        return []
    return [
        entry
        for entry in history
        if (_PAYLOAD.match(entry["payload"]) or _OLD_PAYLOAD.match(entry["payload"]))
        and files.get(entry["payload"]) == entry["payload_bytes"]
    ]


def _leftovers(path: str, files: dict[str, int], named: set[str]) -> list[str]:
    """Files of beam_ml's naming that crashed writes left behind: payloads no manifest
    names and temporary manifests. On object stores only those an hour old (a younger
    one may belong to a write under way elsewhere); locally the lock rules that out."""
    local = _is_local(path)
    now = datetime.datetime.now(datetime.timezone.utc)
    out = []
    for name in files:
        match = _PAYLOAD.match(name) or _TEMPORARY.match(name)
        if not match or name in named:
            continue
        if not local:
            if not match.group(1):
                continue
            made = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
            age = now - made.replace(tzinfo=datetime.timezone.utc)
            if age.total_seconds() < LEFTOVER_GRACE_SECONDS:
                continue
        out.append(name)
    return out


# --- reading -------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(entry: Any, field: str, location: str) -> None:
    """A manifest's payload description (its top level or one ``history`` entry)."""

    def bad(key: str, reason: str) -> CorruptStateError:
        return CorruptStateError(f"{location}: the field '{field}{key}' {reason}.")

    if not isinstance(entry, dict):
        raise bad("", "is not an object")
    for key in ("payload", "payload_bytes", "payload_sha256", "n_seen"):
        if key not in entry:
            raise bad(key, "is missing")
    name = entry["payload"]
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise bad(
            "payload",
            f"must be a plain file name inside the checkpoint's folder; got {name!r:.80}",
        )
    for key in ("payload_bytes", "n_seen"):
        if not _is_int(entry[key]) or entry[key] < 0:
            raise bad(key, f"must be an int >= 0; got {entry[key]!r:.40}")
    if not isinstance(entry["payload_sha256"], str) or not _SHA256.match(entry["payload_sha256"]):
        raise bad("payload_sha256", "is not a sha256 in hex")


_MANIFEST_FIELDS: dict[str, type] = {
    "kind": str,
    "algorithm": str,
    "serial_version": int,
    "config": dict,
    "meta": dict,
    "extra": dict,
    "history": list,
}


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the checkpoint at ``path``, checked for format, version and the
    presence and type of every field a reader uses."""
    location = _join(path, MANIFEST)
    try:
        raw = _read_bounded(location, None, MAX_MANIFEST_BYTES, "the manifest")
    except FileNotFoundError:
        raise CheckpointNotFoundError(
            f"No beam_ml checkpoint at {path!r} (no {MANIFEST})."
        ) from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CorruptStateError(
            f"The checkpoint manifest {location!r} is not valid JSON: {exc}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IncompatibleStateError(f"{location!r} is not a beam_ml checkpoint manifest.")
    if not _is_int(manifest.get("format_version")) or manifest["format_version"] != FORMAT_VERSION:
        raise IncompatibleStateError(
            f"{location}: the checkpoint has format version "
            f"{manifest.get('format_version')!r:.40}; this beam_ml reads version {FORMAT_VERSION}."
        )
    _check_entry(manifest, "", location)
    manifest.setdefault("extra", {})
    manifest.setdefault("history", [{k: manifest.get(k) for k in _HISTORY_FIELDS}])
    for field, expected in _MANIFEST_FIELDS.items():
        if field not in manifest:
            raise CorruptStateError(f"{location}: the field {field!r} is missing.")
        value = manifest[field]
        if not (_is_int(value) if expected is int else isinstance(value, expected)):
            raise CorruptStateError(
                f"{location}: the field {field!r} has a wrong type: {value!r:.60}."
            )
    if manifest["kind"] not in ("state", "model"):
        raise CorruptStateError(
            f"{location}: the field 'kind' must be 'state' or 'model'; got {manifest['kind']!r:.40}."
        )
    if not manifest["history"]:
        raise CorruptStateError(f"{location}: the field 'history' is empty.")
    for i, entry in enumerate(manifest["history"]):
        _check_entry(entry, f"history[{i}].", location)
    return manifest


def read_checkpoint(
    path: str, kind: str | None = None, payload: str | None = None
) -> tuple[TrainingState | Model, dict[str, Any]]:
    """Read and verify the state or model at ``path``: returns (object, manifest).

    ``payload`` names an older snapshot kept in the manifest's ``history``. A payload
    deleted under our feet by a concurrent write is retried with the new manifest.
    """
    for attempt in range(3):
        manifest = read_manifest(path)
        try:
            return _read_payload(path, manifest, kind, payload)
        except _PayloadMissing as missing:
            if attempt == 2 or read_manifest(path) == manifest:
                raise CorruptStateError(str(missing)) from None
    raise AssertionError("unreachable")


class _PayloadMissing(Exception):
    pass


def _read_payload(
    path: str, manifest: dict[str, Any], kind: str | None, payload: str | None
) -> tuple[TrainingState | Model, dict[str, Any]]:
    if payload is not None:
        entry = next((e for e in manifest["history"] if e["payload"] == payload), None)
        if entry is None:
            raise CheckpointNotFoundError(f"{path!r} keeps no snapshot {payload!r}.")
        manifest = {**manifest, **entry}
    if kind is not None and manifest["kind"] != kind:
        raise IncompatibleStateError(
            f"{path!r} holds a {manifest['kind']} checkpoint; a {kind} is needed here."
        )
    location = _join(path, manifest["payload"])
    try:
        data = _read_bounded(location, manifest["payload_bytes"], 0, "the payload")
    except FileNotFoundError:
        raise _PayloadMissing(
            f"The checkpoint at {path!r} is missing its payload {location!r}."
        ) from None
    if hashlib.sha256(data).hexdigest() != manifest["payload_sha256"]:
        raise CorruptStateError(
            f"{location}: the payload does not match its manifest (size or sha256): "
            "the file is damaged or was replaced."
        )
    load = load_state if manifest["kind"] == "state" else load_model
    obj = load(data, source=location)
    if isinstance(obj, TrainingState) and obj.fingerprint != serial.fingerprint(
        obj.FAMILY, manifest["config"]
    ):
        raise CorruptStateError(
            f"{location}: the manifest field 'config' is not the config of the payload's state."
        )
    for field, found in (("algorithm", obj.FAMILY), ("n_seen", obj.n_seen)):
        if manifest[field] != found:
            raise CorruptStateError(
                f"{location}: the manifest field {field!r} says {manifest[field]!r:.40} "
                f"but the payload holds {found!r:.40}."
            )
    return obj, manifest


def __getattr__(name: str) -> Any:
    # The Beam transforms are imported on first use: reading or writing a checkpoint
    # outside a pipeline (beam-ml derive, inspect) does not import Apache Beam.
    if name in ("WriteCheckpoint", "ReadCheckpoint"):
        from beam_ml.io import checkpoint_transforms

        return getattr(checkpoint_transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
