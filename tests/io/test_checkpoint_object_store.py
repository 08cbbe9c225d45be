"""Checkpoints on an object store (through Beam's FileSystems): no lock, so writes
delete only what their previous manifest named, and leftovers once an hour old.

``memtest://`` is an in-memory Beam filesystem defined here (Beam finds filesystems
by their scheme among ``FileSystem`` subclasses); object names are flat, like GCS/S3.
"""

from __future__ import annotations

import io
import time

import pytest
from apache_beam.io.filesystem import FileMetadata, FileSystem

from beam_ml import PCAConfig, PCAState
from beam_ml.core.errors import BeamMLError
from beam_ml.io import checkpoints
from beam_ml.io.checkpoints import read_checkpoint, read_manifest, write_checkpoint

_OBJECTS: dict[str, tuple[bytes, float]] = {}


class _Upload(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self) -> None:
        if not self.closed:
            _OBJECTS[self.path] = (self.getvalue(), time.time())
        super().close()


class _MemoryFileSystem(FileSystem):
    @classmethod
    def scheme(cls) -> str:
        return "memtest"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, (data, mtime) in sorted(_OBJECTS.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), mtime)

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return _Upload(path)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return io.BytesIO(_OBJECTS[path][0])

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            _OBJECTS[destination] = _OBJECTS[source]

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            _OBJECTS[destination] = _OBJECTS.pop(source)

    def exists(self, path):
        return path in _OBJECTS

    def size(self, path):
        return len(_OBJECTS[path][0])

    def last_updated(self, path):
        return _OBJECTS[path][1]

    def checksum(self, path):
        return str(hash(_OBJECTS[path][0]))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:
            del _OBJECTS[path]


@pytest.fixture
def store():
    _OBJECTS.clear()
    yield "memtest://bucket/ckpt"
    _OBJECTS.clear()


def _names() -> list[str]:
    """The objects directly under the checkpoint's prefix."""
    prefix = "memtest://bucket/ckpt/"
    names = [p[len(prefix) :] for p in _OBJECTS if p.startswith(prefix)]
    return sorted(n for n in names if "/" not in n)


def _state(rng, n):
    return PCAState(PCAConfig(num_components=2)).update(rng.normal(size=(n, 5)))


def test_object_store_write_read_keep_and_foreign_objects(store, rng):
    _OBJECTS[f"{store}/mydata.bin"] = (b"user", time.time())
    _OBJECTS[f"{store}/sub/x.bin"] = (b"nested", time.time())
    for n in (10, 20, 30, 40):
        manifest = write_checkpoint(store, _state(rng, n), keep=2)
    assert [e["n_seen"] for e in manifest["history"]] == [40, 30]
    assert read_checkpoint(store)[0].n_seen == 40
    payloads = sorted(e["payload"] for e in manifest["history"])
    assert _names() == sorted(["manifest.json", "mydata.bin", *payloads])
    assert _OBJECTS[f"{store}/sub/x.bin"][0] == b"nested"


def test_object_store_leftovers_go_once_an_hour_old(store, rng):
    write_checkpoint(store, _state(rng, 10))
    fresh = f"state-{checkpoints._stamp()}-0123456789abcdef.bin"  # a write under way?
    old = "state-20200101T000000Z-fedcba9876543210.bin"  # a crash, long ago
    stale_tmp = ".manifest.json.20200101T000000Z-0123abcd.tmp"
    for name in (fresh, old, stale_tmp):
        _OBJECTS[f"{store}/{name}"] = (b"partial", time.time())
    write_checkpoint(store, _state(rng, 20))
    names = _names()
    assert fresh in names and old not in names and stale_tmp not in names
    assert read_checkpoint(store)[0].n_seen == 20


def test_object_store_payload_size_bound_and_names(store, rng):
    manifest = write_checkpoint(store, _state(rng, 10))
    location = f"{store}/{manifest['payload']}"
    data, mtime = _OBJECTS[location]
    _OBJECTS[location] = (data + bytes(10**6), mtime)  # grown: refused before reading
    with pytest.raises(BeamMLError, match="does not match its manifest") as info:
        read_checkpoint(store)
    assert location in str(info.value)
    _OBJECTS[location] = (data, mtime)
    read_manifest(store)
    raw = _OBJECTS[f"{store}/manifest.json"][0].replace(
        manifest["payload"].encode(), b"../other/" + manifest["payload"].encode()
    )
    _OBJECTS[f"{store}/manifest.json"] = (raw, mtime)
    with pytest.raises(BeamMLError, match="plain file name"):
        read_checkpoint(store)
