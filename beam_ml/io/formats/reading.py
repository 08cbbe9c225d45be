"""Input files as bytes: opening (decompressing ``.gz`` & co), peeking at their first
lines, and cutting a byte range into chunks of whole lines.

Shared by every format's planning and reading (:mod:`beam_ml.io.formats`); no parsing
here.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats.common import BOM

__all__ = [
    "MAX_RECORD_BYTES",
    "UNBOUNDED",
    "ChunkReader",
    "count_newlines",
    "first_nonempty",
    "first_text",
    "is_compressed",
    "open_file",
    "peek_lines",
    "read_exact",
]

# The longest record (line) read: parsing one costs ~20x its size in memory, so a
# file without line breaks (or a runaway line) must not decide how much is allocated.
MAX_RECORD_BYTES = 16 * 2**20
MIN_CHUNK = 64 * 2**10
#: The end of a range that runs to the end of its file (a compressed one: not split).
UNBOUNDED = 2**62


def is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def open_file(path: str, *, seekable: bool = False) -> BinaryIO:
    """Open raw bytes for range reads, or decompressed bytes for .gz & co."""
    if seekable or not is_compressed(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return cast(BinaryIO, Decompressed(path))


# Python's own decompressors raise on a stream that ends early (Beam's return what
# they have, so a truncated .gz would lose its tail without a word).
_DECOMPRESSORS: dict[str, Any] = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: bz2.BZ2File,
    CompressionTypes.LZMA: lzma.LZMAFile,
}


class Decompressed:
    """The decompressed bytes of a file; truncated or corrupt data is a BadInputError."""

    def __init__(self, path: str):
        self.path = path
        kind = CompressionTypes.detect_compression_type(path)
        self.raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        make = _DECOMPRESSORS.get(kind)
        self.inner = make(self.raw) if make else FileSystems.open(path, compression_type=kind)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.inner.read(n)
        except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise BadInputError(
                f"{self.path} is truncated or corrupt: it cannot be decompressed to its "
                f"end ({exc}); repair or remove it."
            ) from None
        return data

    def close(self) -> None:
        self.inner.close()
        self.raw.close()

    def __enter__(self) -> Decompressed:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def peek_lines(path: str) -> tuple[list[bytes], int]:
    """First lines of a (decompressed) text file: at least one complete non-blank line
    and about 64 KiB, for the header, the column count and a bytes-per-row estimate.
    Returns (complete lines, bytes per line)."""
    pieces: list[bytes] = []
    size, first_text, last_newline = 0, -1, -1
    with open_file(path) as f:
        while True:
            piece = f.read(2**16)
            if not piece:
                break
            if first_text < 0 and piece.strip():
                first_text = size + len(piece) - len(piece.lstrip())
            newline = piece.rfind(b"\n")
            if newline >= 0:
                last_newline = size + newline
            pieces.append(piece)
            size += len(piece)
            if 0 <= first_text < last_newline and size >= 2**16:
                break
            if size > MAX_RECORD_BYTES:
                raise BadInputError(
                    f"the first line of {path} is longer than {MAX_RECORD_BYTES >> 20} MiB; "
                    "is this the right format?"
                )
    data = b"".join(pieces)
    if piece:  # stopped early: keep complete lines only
        data = data[: last_newline + 1]
    if data.startswith(BOM):
        data = data[len(BOM) :]
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines, max(1, len(data) // max(1, data.count(b"\n")))


def first_nonempty(files: list[tuple[str, int]]) -> Iterator[str]:
    return (path for path, size in files if size > 0)


def first_text(files: list[tuple[str, int]]) -> tuple[str, list[bytes], int] | None:
    """The first of ``files`` with a non-blank line: (path, its first lines, bytes per
    line) as :func:`peek_lines` gives them; None if every file is blank."""
    for path in first_nonempty(files):
        lines, hint = peek_lines(path)
        if any(line.strip() for line in lines):
            return path, lines, hint
    return None


class ChunkReader:
    """Cuts a byte stream into chunks of whole lines, carrying the partial last line.

    ``pos`` is the file offset of ``buf[0]``.
    """

    def __init__(self, f: BinaryIO, pos: int, path: str = ""):
        self.f = f
        self.path = path
        self.pos = pos
        self.buf = b""
        self.eof = False

    def _fill(self, n: int) -> None:
        """Append n bytes (at least 64 KiB), fewer only at the end of the stream.

        Reading until full (remote files may return short reads) means a short read
        *is* the end, so the last record is parsed with the chunk before it.
        """
        n = max(n, MIN_CHUNK)
        pieces = [self.buf]
        while n > 0:
            data = self.f.read(n)
            if not data:
                self.eof = True
                break
            pieces.append(data)
            n -= len(data)
        self.buf = b"".join(pieces)

    def skip_bom(self) -> None:
        """At the start of a file: drop a UTF-8 byte order mark (it is not data)."""
        if len(self.buf) < len(BOM) and not self.eof:
            self._fill(len(BOM))
        if self.buf.startswith(BOM):
            self.buf = self.buf[len(BOM) :]
            self.pos += len(BOM)

    def first_line(self) -> bytes:
        """The line at ``pos`` (without its newline), not consumed."""
        while b"\n" not in self.buf and not self.eof:
            self._fill(len(self.buf))
        return self.buf.split(b"\n", 1)[0]

    def skip_line(self) -> None:
        """Consume through the first newline (or to the end of the stream)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                self.pos += i + 1
                self.buf = self.buf[i + 1 :]
                return
            if self.eof:
                self.pos += len(self.buf)
                self.buf = b""
                return
            self._fill(len(self.buf))

    def chunks(self, end: int, target: Any) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of chunks of whole records that *start* before ``end``.

        The range owns a record iff its first byte is in it, so the last record may
        run past ``end``; the next range skips it (it starts after a newline at or
        after its ``start - 1``).
        """
        while self.pos < end and (self.buf or not self.eof):
            want = target()
            if len(self.buf) < want and not self.eof:
                self._fill(want - len(self.buf))
            if not self.buf:
                return
            if self.eof and len(self.buf) <= want:
                cut = len(self.buf) - 1  # all that is left; may lack its last newline
            else:
                # the last newline within ``want`` bytes: about block_size rows, even
                # when reads are larger than that
                cut = self.buf.rfind(b"\n", 0, want)
                if cut < 0:
                    cut = self.buf.find(b"\n", want)  # a record longer than want
                    # it starts the buffer: memory must not follow a runaway record
                    if max(cut + 1, len(self.buf) if cut < 0 else 0) > MAX_RECORD_BYTES:
                        raise BadInputError(
                            f"the record of {self.path} at byte offset {self.pos:,} is "
                            f"longer than {MAX_RECORD_BYTES >> 20} MiB; is this the right "
                            "format?"
                        )
                if cut < 0:
                    if not self.eof:
                        self._fill(len(self.buf))
                        continue
                    cut = len(self.buf) - 1
            stop = False
            boundary = end - 1 - self.pos  # a newline here or later ends our last record
            if boundary <= cut:
                j = self.buf.find(b"\n", max(boundary, 0), cut + 1)
                cut = cut if j < 0 else j
                stop = True
            chunk = self.buf[: cut + 1]
            self.buf = self.buf[cut + 1 :]
            offset = self.pos
            self.pos += len(chunk)
            yield offset, chunk
            if stop:
                return


def count_newlines(path: str, upto: int) -> int:
    count = 0
    with open_file(path, seekable=True) as f:
        left = upto
        while left > 0:
            piece = f.read(min(left, 16 * 2**20))
            if not piece:
                break
            count += piece.count(b"\n")
            left -= len(piece)
    return count


def read_exact(f: BinaryIO, n: int, path: str) -> bytearray:
    """n bytes into a bytearray, so numpy views of it are writable without a copy."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:]) if hasattr(f, "readinto") else None
        if k is None:
            piece = f.read(n - got)
            k = len(piece)
            view[got : got + k] = piece
        if not k:
            raise BadInputError(f"{path} is truncated: expected {n - got} more bytes.")
        got += k
    return buf
