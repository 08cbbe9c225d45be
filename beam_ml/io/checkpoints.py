"""Checkpoints: a directory (or object-store prefix) holding a state or a model.

Layout, readable by a person and by any tool that reads JSON::

    <path>/manifest.json        what is inside: kind, algorithm, versions, config,
                                n_seen, created, the payload's name, size and sha256
    <path>/<kind>-<id>.bin      the payload: beam_ml's versioned byte format

Writes are atomic: the payload goes to a new name first, then the manifest is written
to a temporary name and renamed over ``manifest.json`` (an atomic replace on local
disks; a single-object write on object stores), and only then are payloads that the
manifest no longer names deleted. A crash at any point leaves the previous checkpoint
readable. Reading parses JSON and numpy buffers only: loading a file never runs code.
All paths go through Beam's ``FileSystems``, so ``gs://`` and ``s3://`` work too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_ml.core import serial
from beam_ml.core.errors import BeamMLError, CorruptStateError, IncompatibleStateError
from beam_ml.core.state import Model, TrainingState, load_model, load_state
from beam_ml.version import __version__

__all__ = [
    "CheckpointNotFoundError",
    "write_checkpoint",
    "read_checkpoint",
    "read_manifest",
    "WriteCheckpoint",
    "ReadCheckpoint",
]

MANIFEST = "manifest.json"
FORMAT = "beam_ml.checkpoint"
FORMAT_VERSION = 1


class CheckpointNotFoundError(BeamMLError, FileNotFoundError):
    """No checkpoint (no manifest.json) at the given path."""


def _join(path: str, name: str) -> str:
    return FileSystems.join(path.rstrip("/"), name)


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def write_checkpoint(
    path: str, obj: TrainingState | Model, extra: dict[str, Any] | None = None, keep: int = 1
) -> dict[str, Any]:
    """Atomically write a state or model to ``path``; return the manifest.

    ``extra`` is stored in the manifest as is (JSON): derive defaults, source
    positions, anything a resume needs. ``keep`` > 1 keeps that many payloads
    (newest first in the manifest's ``history``), e.g. the last K stream snapshots.
    """
    kind = "state" if isinstance(obj, TrainingState) else "model"
    payload = obj.to_bytes()
    header = serial.unpack(payload, expected_kind=kind).header
    name = f"{kind}-{uuid.uuid4().hex[:12]}.bin"
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
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "payload": name,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "meta": header["meta"],
        "extra": extra or {},
    }
    previous = _previous_history(path)
    current = {
        k: manifest[k] for k in ("payload", "payload_bytes", "payload_sha256", "n_seen", "created")
    }
    manifest["history"] = ([current] + previous)[:keep]
    kept = {entry["payload"] for entry in manifest["history"]}
    old = _payload_names(path)
    _write_bytes(_join(path, name), payload)
    temporary = _join(path, f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp")
    _write_bytes(temporary, json.dumps(manifest, indent=2, sort_keys=True).encode())
    FileSystems.rename([temporary], [_join(path, MANIFEST)])
    stale = [_join(path, n) for n in old if n not in kept]
    if stale:
        FileSystems.delete(stale)
    return manifest


def _previous_history(path: str) -> list[dict[str, Any]]:
    try:
        return list(read_manifest(path).get("history", []))
    except (CheckpointNotFoundError, IncompatibleStateError):
        return []


def _payload_names(path: str) -> list[str]:
    pattern = _join(path, "*.bin")
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # a directory that does not exist yet holds nothing
        return []
    return [m.path.rstrip("/").rsplit("/", 1)[-1] for m in matched]


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the checkpoint at ``path``, checked for format and version."""
    location = _join(path, MANIFEST)
    if not FileSystems.exists(location):
        raise CheckpointNotFoundError(f"No beam_ml checkpoint at {path!r} (no {MANIFEST}).")
    try:
        manifest = json.loads(_read_bytes(location))
    except ValueError as exc:
        raise CorruptStateError(
            f"The checkpoint manifest {location!r} is not valid JSON: {exc}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IncompatibleStateError(f"{location!r} is not a beam_ml checkpoint manifest.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IncompatibleStateError(
            f"The checkpoint at {path!r} has format version {manifest.get('format_version')}; "
            f"this beam_ml reads version {FORMAT_VERSION}."
        )
    return manifest


def read_checkpoint(
    path: str, kind: str | None = None, payload: str | None = None
) -> tuple[TrainingState | Model, dict[str, Any]]:
    """Read and verify the state or model at ``path``: returns (object, manifest).

    ``payload`` names an older snapshot kept in the manifest's ``history``.
    """
    manifest = read_manifest(path)
    if payload is not None:
        entry = next((e for e in manifest.get("history", []) if e["payload"] == payload), None)
        if entry is None:
            raise CheckpointNotFoundError(f"{path!r} keeps no snapshot {payload!r}.")
        manifest = {**manifest, **entry}
    if kind is not None and manifest["kind"] != kind:
        raise IncompatibleStateError(
            f"{path!r} holds a {manifest['kind']} checkpoint; a {kind} is needed here."
        )
    location = _join(path, manifest["payload"])
    if not FileSystems.exists(location):
        raise CorruptStateError(
            f"The checkpoint at {path!r} is missing its payload {manifest['payload']!r}."
        )
    payload = _read_bytes(location)
    if (
        len(payload) != manifest["payload_bytes"]
        or hashlib.sha256(payload).hexdigest() != manifest["payload_sha256"]
    ):
        raise CorruptStateError(
            f"The checkpoint payload {location!r} does not match its manifest "
            "(size or sha256): the file is damaged or was replaced."
        )
    obj = load_state(payload) if manifest["kind"] == "state" else load_model(payload)
    if obj.FAMILY != manifest["algorithm"]:
        raise CorruptStateError(
            f"The checkpoint at {path!r} names {manifest['algorithm']!r} but holds {obj.FAMILY!r}."
        )
    return obj, manifest


class WriteCheckpoint(beam.PTransform):
    """Write each incoming state (or model) to ``path``; outputs the manifests.

    Meant for a PCollection holding one state (``Train``'s output) or a stream of
    snapshots (``TrainStreaming``'s): each write replaces the last, atomically, and
    ``keep`` > 1 keeps that many previous payloads listed in the manifest.
    """

    def __init__(self, path: str, extra: dict[str, Any] | None = None, keep: int = 1):
        super().__init__()
        self.path, self.extra, self.keep = path, extra, keep

    def expand(self, states):
        path, extra, keep = self.path, self.extra, self.keep
        return states | "BeamML_WriteCheckpoint" >> beam.Map(
            lambda s: write_checkpoint(path, s, extra, keep)
        )


class ReadCheckpoint(beam.PTransform):
    """Read the state at ``path`` into a one-element PCollection (applied to the pipeline)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        read_manifest(path)  # fail at construction, not on the workers

    def expand(self, pbegin):
        path = self.path
        read = beam.Map(lambda p: read_checkpoint(p, "state")[0]).with_output_types(TrainingState)
        return (
            pbegin
            | "BeamML_CheckpointPath" >> beam.Create([path])
            | "BeamML_ReadCheckpoint" >> read
        )
