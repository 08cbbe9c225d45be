"""Files by path, without importing Apache Beam for local ones.

Checkpoints are read and written by commands that run no pipeline (``beam-ml derive``,
``beam-ml inspect``), for which importing Beam to reach its ``FileSystems`` was the
whole of their time (about 1.4 s; see BENCHMARKS.md, "Command latency").
:class:`FileSystems` has the signatures of the part of Beam's ``FileSystems`` that
beam_ml's checkpoints use: a local path goes through the standard library, a path with
a scheme (``gs://``, ``s3://``, ``hdfs://`` ...) or a compressed stream through Beam's,
imported at that moment.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = FileSystems.join(folder, "sub", "a.bin")
>>> with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
...     _ = f.write(b"abc")
>>> FileSystems.rename([path], [path + ".2"])
>>> [os.path.basename(m.path) for m in FileSystems.match([folder + "/sub/*"])[0].metadata_list]
['a.bin.2']
>>> FileSystems.delete([folder]); FileSystems.exists(folder)
False
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Sequence
from typing import IO, Any, NamedTuple

from beam_ml.core.errors import BadInputError

__all__ = ["CompressionTypes", "FileSystems", "is_local", "match_files"]

# Beam's rule for a path's scheme (apache_beam.io.filesystems.FileSystems.get_scheme).
_SCHEME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9+.]*://")


class CompressionTypes:
    """Beam's compression names (its ``CompressionTypes`` values are these strings)."""

    AUTO = "auto"
    UNCOMPRESSED = "uncompressed"


class FileMetadata(NamedTuple):
    path: str
    size_in_bytes: int


class MatchResult(NamedTuple):
    pattern: str
    metadata_list: list[FileMetadata]


def is_local(path: str) -> bool:
    """True for a path on this machine's file system (no ``scheme://``)."""
    return not _SCHEME.match(path)


def _beam() -> Any:
    from apache_beam.io.filesystems import FileSystems as BeamFileSystems

    return BeamFileSystems


def _plain(path: str, compression_type: str) -> bool:
    """A local file read or written as is (no codec chosen from the extension)."""
    return is_local(path) and compression_type == CompressionTypes.UNCOMPRESSED


class FileSystems:
    """Beam's ``FileSystems`` calls, Beam-free on local paths (see the module docstring)."""

    @staticmethod
    def join(basepath: str, *paths: str) -> str:
        if is_local(basepath):
            return os.path.join(basepath, *paths)
        return _beam().join(basepath, *paths)

    @staticmethod
    def create(
        path: str,
        mime_type: str = "application/octet-stream",
        compression_type: str = CompressionTypes.AUTO,
    ) -> IO[bytes]:
        if not _plain(path, compression_type):
            return _beam().create(path, mime_type, compression_type)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")

    @staticmethod
    def open(
        path: str,
        mime_type: str = "application/octet-stream",
        compression_type: str = CompressionTypes.AUTO,
    ) -> IO[bytes]:
        if not _plain(path, compression_type):
            return _beam().open(path, mime_type, compression_type)
        return open(path, "rb")

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.exists(path) if is_local(path) else _beam().exists(path)

    @staticmethod
    def rename(source_file_names: list[str], destination_file_names: list[str]) -> None:
        """Move each source onto its destination (an atomic replace on a local disk)."""
        if not all(map(is_local, [*source_file_names, *destination_file_names])):
            return _beam().rename(source_file_names, destination_file_names)
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            os.replace(source, destination)
        return None

    @staticmethod
    def delete(paths: list[str]) -> None:
        """Delete files, and directories with what they hold."""
        if not all(map(is_local, paths)):
            return _beam().delete(paths)
        for path in paths:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        return None

    @staticmethod
    def match(patterns: list[str], limits: list[int] | None = None) -> list[Any]:
        """One result per glob pattern, its files in ``metadata_list``."""
        if limits is not None or not all(map(is_local, patterns)):
            return _beam().match(patterns, limits)
        return [
            MatchResult(
                pattern,
                [
                    FileMetadata(path, os.path.getsize(path))
                    for path in sorted(glob.glob(pattern))
                    if os.path.isfile(path)
                ],
            )
            for pattern in patterns
        ]


def _patterns(file_pattern: str | Sequence[str]) -> list[str]:
    if isinstance(file_pattern, str):
        return [file_pattern]
    patterns = list(file_pattern)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise BadInputError(
            f"file_pattern must be a glob or a non-empty list of globs; got {file_pattern!r}."
        )
    return patterns


def match_files(file_pattern: str | Sequence[str]) -> list[tuple[str, int]]:
    """(path, size) of every matched file, sorted and without duplicates."""
    from apache_beam.io.filesystem import BeamIOError

    patterns = _patterns(file_pattern)
    try:
        results = _beam().match(patterns)  # Beam's matching on every path, local ones too
    except BeamIOError as exc:
        raise BadInputError(f"cannot list input {patterns}: {exc}") from None
    files: dict[str, int] = {}
    for pattern, result in zip(patterns, results, strict=True):
        if not result.metadata_list:
            raise BadInputError(f"input pattern {pattern!r} matched no files")
        for meta in result.metadata_list:
            files[meta.path] = int(meta.size_in_bytes)
    return sorted(files.items())
