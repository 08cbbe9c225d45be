"""Reading a pipe (standard input) into blocks: ``ReadPipe``.

``cat x.csv | beam-ml train pca --input - --format csv ...`` feeds a pipeline from a
pipe. A pipe can be read once, by one process, from the start: it has no byte ranges
to hand to workers and no way to seek back. So the driver copies it, in 1 MiB chunks
(memory stays bounded however long the pipe is), to a *spill file*, and the pipeline
reads that file with :class:`~beam_ml.io.sources.ReadBlocks`: the same planning (header,
label column and feature count found from the first lines), the same vectorized parsers,
byte-range splits read in parallel, and the same dead letters. Byte offsets and line
numbers of bad records are those of the pipe, because the spill file is a byte-exact
copy; their ``file`` is ``'<stdin>'`` (or the ``name`` given).

The copy happens at construction, which returns after the pipe's end (EOF): this is the
bounded case. An endless pipe (``tail -F log.csv``) needs a streaming source that groups
records into blocks by size and time; that is not what this transform does.

Examples
--------
>>> import io
>>> read = ReadPipe("csv", stream=io.BytesIO(b"a,b\\n1,2\\n3,4\\n"))
>>> read.n_features
2
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.dead_letters import Reader
from beam_ml.io.feeds import Feed, Take
from beam_ml.io.scratch import temp_dir
from beam_ml.io.sources import FORMATS, ReadBlocks

__all__ = ["PipeFeed", "ReadPipe"]

_COPY_CHUNK = 1 << 20
_log = logging.getLogger("beam_ml.io")


def pipeline_in(folder: str, options: Any) -> beam.Pipeline:
    """A Beam pipeline whose own local folder (``beam-pipeline-temp*``, made when it is
    built and removed at the end of ``run``) goes inside ``folder``, a :func:`temp_dir`:
    when a ``kill -9`` skips Beam's clean-up, the next run's sweep removes it too."""
    saved, tempfile.tempdir = tempfile.tempdir, folder
    try:
        return beam.Pipeline(options=options)
    finally:
        tempfile.tempdir = saved


def _spill(stream: BinaryIO, spill_dir: str | None, format: str) -> tuple[str, int]:
    """Copy ``stream`` to a new file in ``spill_dir`` (a local temporary folder, removed
    when this process exits, if None); returns (path, bytes copied)."""
    if spill_dir is None:
        spill_dir = temp_dir("pipe")
        atexit.register(shutil.rmtree, spill_dir, ignore_errors=True)
    # The extension tells ReadBlocks the data is not compressed (a '.gz' name would not).
    path = FileSystems.join(spill_dir, f"pipe-{uuid.uuid4().hex[:12]}.{format}")
    copied = 0
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        while chunk := stream.read(_COPY_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    return path, copied


def _rename_source(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {**record, "file": name}


class ReadPipe(Reader):
    """Read a pipe (by default standard input) into a PCollection of blocks.

    Parameters
    ----------
    format : {'csv', 'libsvm', 'jsonl', 'npy', 'parquet'}
        The record format, as for :class:`~beam_ml.io.sources.ReadBlocks`.
    stream : binary file object, optional
        What to read, up to its end; default ``sys.stdin.buffer``.
    spill_dir : str, optional
        Folder of the spill file (any Beam file system: a ``gs://`` folder lets remote
        workers read it). Default: a local temporary folder deleted when the process
        exits (after a ``kill -9``, by the next run that reads a pipe), which suits
        the DirectRunner.
    name : str, default '<stdin>'
        What bad records name as their ``file``.
    **options
        ``label_column``, ``header``, ``delimiter``, ``feature_dim``, ``zero_based``,
        ``block_size``, ``split_bytes``, ``strict``, ``features_key``: as for
        :class:`~beam_ml.io.sources.ReadBlocks`.

    Attributes
    ----------
    n_features : int or None
        Feature columns per row, found from the first records; None if the pipe was
        empty.
    spill_path : str
        The copy of the pipe the pipeline reads.
    n_bytes : int
        Bytes read from the pipe.

    Raises
    ------
    BadInputError
        At construction, for the reasons ``ReadBlocks`` gives (unknown format, a label
        column that is not in the header, ...).

    Notes
    -----
    Construction blocks until the pipe ends; memory is one 1 MiB chunk, disk the size of
    the input. Pipeline shape and counters are those of ``ReadBlocks``.
    """

    def __init__(
        self,
        format: str,
        *,
        stream: BinaryIO | None = None,
        spill_dir: str | None = None,
        name: str = "<stdin>",
        **options: Any,
    ):
        super().__init__()
        if format not in FORMATS:
            raise BadInputError(
                f"The 'format' parameter of ReadPipe must be one of {list(FORMATS)}. "
                f"Got {format!r} instead."
            )
        if stream is None:
            stream = sys.stdin.buffer
        self.spill_path, self.n_bytes = _spill(stream, spill_dir, format)
        self._name = name
        _log.info("read %d bytes from %s into %s", self.n_bytes, name, self.spill_path)
        self._inner = ReadBlocks(self.spill_path, format, **options)

    @property
    def n_features(self) -> int | None:
        return self._inner.n_features

    @property
    def strict(self) -> bool:
        return self._inner.strict

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        if not self._with_dead_letters:
            return pbegin | "ReadSpill" >> self._inner
        # dead letters: bad-record dicts whose ``file`` is the pipe's ``name``
        blocks, dead = pbegin | "ReadSpill" >> self._inner.with_dead_letters()
        return blocks, dead | "NameSource" >> beam.Map(_rename_source, self._name)


# --------------------------------------------------------------------------- PipeFeed
# Continuous training's feed of an endless pipe (beam_ml.transforms.continuous).


_feed_log = logging.getLogger("beam_ml.continuous")


class PipeFeed(Feed):
    """Lines of an endless pipe (``tail -F log.csv | beam-ml train ... --input -``).

    A thread reads lines into a queue of at most ``max_lines``; each cycle writes what
    is queued to a spill file and reads it with :class:`~beam_ml.io.sources.ReadBlocks`
    (same parsers and dead letters as files; ``line`` numbers are the pipe's).
    Positions are ``{'lines': N}``, the lines consumed so far (a pipe is not replayed).

    A spill file is deleted once its cycle's checkpoint is written, the spill folder
    when the feed is closed (a killed run's by the next run). Standard input (or any
    stream with a file descriptor) is read with ``os.read``, not through its buffered
    reader: a thread blocked in a read then holds no lock that the interpreter needs at
    exit. Attached to an output (:meth:`attach`), the feed keeps a sidecar
    ``<output>.pipe_read.json`` of how many lines it has read (updated within 0.1 s),
    so that a restart after a crash says how many lines read after the last snapshot
    were lost.
    """

    SIDECAR = ".pipe_read.json"

    def __init__(
        self,
        format: str,
        stream: BinaryIO | None = None,
        *,
        header: str | bool = "auto",
        max_lines: int = 200_000,
        name: str = "<stdin>",
        **reader_options: Any,
    ):
        import io
        import sys

        self.name, self.format, self._options = name, format, reader_options
        # What the format does, settled once (an unknown one fails at the first read, in
        # ReadBlocks): a header line to look for; a feature count from the first record.
        known = format in FORMATS
        self._has_header = known and formats.get(format).has_header
        self._dense = not known or formats.get(format).dense
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._fd: int | None = None
        if self._stream is sys.stdin.buffer or isinstance(self._stream, io.FileIO):
            try:
                self._fd = self._stream.fileno()
            except (OSError, ValueError):
                self._fd = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_lines)
        self._max_lines = max_lines
        self._header_option = header
        self._header: bytes | None = None
        self._header_known = not self._has_header or header is False
        self._eof = False
        self._consumed = self._bytes = 0  # lines and bytes of the pipe consumed so far
        self._offset: int | None = None
        self._read = 0  # lines the thread has read (queued or consumed)
        self._accounted: int | None = None  # lines committed or skipped as blank
        self._sidecar: str | None = None
        self._sidecar_written = -1
        self._sidecar_at = 0.0
        self._sidecar_lock = threading.Lock()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._done = False  # the thread has read the pipe to its end
        self._spill_dir = temp_dir("pipe")
        self._thread = threading.Thread(target=self._pump, name="beam_ml-pipe", daemon=True)
        self._thread.start()

    # -- the reading thread
    def _pump(self) -> None:
        try:
            if self._fd is not None:
                self._pump_fd(self._fd)
            else:
                for line in iter(self._stream.readline, b""):
                    if not self._put(line if line.endswith(b"\n") else line + b"\n"):
                        return
                    self._note_read(False)
        except BaseException as exc:  # reported by the next take()
            self._error = exc
        finally:
            self._note_read(True)
            self._put(None)
            self._done = True

    def _pump_fd(self, fd: int) -> None:
        import select

        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                self._note_read(True)
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not self._put(line + b"\n"):
                    return
            self._note_read(False)
        if pending and not self._stop.is_set():
            self._put(pending + b"\n")

    def _put(self, line: bytes | None) -> bool:
        """Queue ``line`` (waiting while the queue is full); False once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(line, timeout=0.1)
            except queue.Full:
                self._note_read(True)
                continue
            self._read += line is not None
            return True
        return False

    def _note_read(self, now: bool) -> None:
        """Update the sidecar: at once if ``now``, else at most every 0.05 s."""
        if self._sidecar is None or self._offset is None:
            return
        with self._sidecar_lock:
            read = self._offset + self._read
            stamp = time.monotonic()
            if read == self._sidecar_written or (not now and stamp - self._sidecar_at < 0.05):
                return
            self._sidecar_at = stamp
            tmp = f"{self._sidecar}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump({"lines_read": read, "pid": os.getpid()}, f)
                os.replace(tmp, self._sidecar)
                self._sidecar_written = read
            except OSError as exc:  # a full disk must not stop the training
                _feed_log.debug("cannot write %s: %s", self._sidecar, exc)

    # -- the feed
    def attach(self, output: str, positions: dict[str, Any]) -> str | None:
        committed = int(positions.get("lines", 0))
        if self._offset is None:
            self._offset = committed
        self._accounted = self._offset
        if "://" in output:  # no sidecar beside a remote checkpoint
            return None
        path = output.rstrip("/") + self.SIDECAR
        lost = None
        try:
            with open(path) as f:
                read = int(json.load(f)["lines_read"])
            if read > committed:
                lost = (
                    f"{read - committed:,} lines an earlier run read from its pipe after "
                    f"{'that snapshot' if committed else 'it started'} were lost (lines "
                    f"{committed + 1:,} to {read:,}; a pipe cannot be replayed)"
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._sidecar = path
        self._sidecar_written = -1
        self._note_read(True)  # this run has read nothing past ``committed`` yet
        return lost

    def _drain(self) -> list[bytes]:
        lines: list[bytes] = []
        while len(lines) < self._max_lines:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                break
            lines.append(line)
        return lines

    def take(self, positions: dict[str, Any]) -> Take | None:
        if self._offset is None:  # lines counted by the checkpoint, before this process
            self._offset = int(positions.get("lines", 0))
        if self._error is not None:
            raise BadInputError(f"cannot read {self.name}: {self._error}")
        lines = self._drain()
        base, base_bytes = self._consumed, self._bytes  # consumed by earlier cycles
        if not self._header_known and lines:
            delimiter = self._options.get("delimiter", ",")
            fields = formats.split_csv_line(lines[0].rstrip(b"\r\n"), delimiter)
            if self._header_option is True or formats.looks_like_header(fields):
                self._header = lines.pop(0)
                base, base_bytes = base + 1, base_bytes + len(self._header)
            self._header_known = True
        self._consumed = base + len(lines)
        self._bytes = base_bytes + sum(len(line) for line in lines)
        if not any(line.strip() for line in lines):
            self._accounted = self._offset + self._consumed  # blank lines: nothing to keep
            return None
        path = os.path.join(self._spill_dir, f"cycle-{uuid.uuid4().hex[:8]}.{self.format}")
        with open(path, "wb") as f:
            f.write((self._header or b"") + b"".join(lines))
        return self._take(path, _PipeLines(base, base_bytes), self._offset + self._consumed)

    def _take(self, path: str, where: _PipeLines, lines: int) -> Take:
        from beam_ml.io.sources import ReadBlocks

        options = dict(self._options)
        if self._has_header:
            options["header"] = self._header is not None
        read = ReadBlocks(path, self.format, **options).with_dead_letters()
        head = self._header is not None
        return Take(
            _Renamed(read, self.name, where, head, len(self._header or b"")),
            {"lines": lines},
            read.n_features,
            (path, where),
        )

    def records(self, take: Take) -> tuple[Any, list[tuple[str, list, list[bytes]]]]:
        """The take's lines as records whose ids are the pipe's line numbers."""
        from beam_ml.io.records import record_spec

        path, where = take.receipt
        with open(path, "rb") as f:
            joined = _pipe_lines(f.read()[len(self._header or b"") :])
        ids, offsets, offset = [], {}, where.bytes
        for j, value in enumerate(joined):
            line = where.line_of(j)
            ids.append(line)
            offsets[line] = offset + where.removed_bytes_before(j)
            offset += len(value)
        self._offsets = offsets
        label = self._options.get("label_column")
        if isinstance(label, str) and self._header is not None:
            header = self._header.rstrip(b"\r\n")
            fields = [
                f.strip()
                for f in formats.split_csv_line(header, self._options.get("delimiter", ","))
            ]
            label = fields.index(label) if label in fields else label
        first = next((v for v in joined if v.strip()), None)
        spec = record_spec(
            self.format,
            first,
            label_column=label,
            delimiter=self._options.get("delimiter", ","),
            feature_dim=None if self._dense else self._options.get("feature_dim"),
            zero_based=self._options.get("zero_based", False),
            block_size=self._options.get("block_size", 10_000),
        )
        return spec, [(self.name, ids, joined)]

    def dead_letter(self, source: str, record_id: Any, value: bytes, reason: str) -> dict:
        offset = getattr(self, "_offsets", {}).get(record_id, 0)
        return formats.bad_record(source, offset, record_id, value, reason)

    def without(self, take: Take, rejected: set[tuple[str, Any]]) -> Take | None:
        """The take less the ``rejected`` lines (``(name, line number)``)."""
        path, where = take.receipt
        with open(path, "rb") as f:
            data = f.read()
        head = len(self._header or b"")
        kept, removed = [], []
        for j, value in enumerate(_pipe_lines(data[head:])):
            if (self.name, where.line_of(j)) in rejected:
                removed.append((where.original(j), len(value)))
            else:
                kept.append(value)
        os.remove(path)
        if not any(v.strip() for v in kept):
            return None
        new = os.path.join(self._spill_dir, f"cycle-{uuid.uuid4().hex[:8]}.{self.format}")
        with open(new, "wb") as f:
            f.write(data[:head] + b"".join(kept))
        return self._take(new, where.without(removed), take.positions["lines"])

    def commit(self, take: Take) -> None:
        self._accounted = take.positions["lines"]
        try:
            os.remove(take.receipt[0])
        except OSError:
            pass

    def waiting(self, positions: dict[str, Any]) -> int:
        return self._queue.qsize()

    def ended(self) -> bool:
        return self._eof and self._queue.empty()

    def drained(self) -> bool:
        return self._done

    def close(self) -> None:
        import shutil

        self._stop.set()
        self._thread.join(1.0)
        shutil.rmtree(self._spill_dir, ignore_errors=True)
        if self._sidecar is None or self._offset is None or self._accounted is None:
            return
        read = self._offset + self._read
        if read > self._accounted:
            _feed_log.warning(
                "%s lines read from %s after the last snapshot are not in it (lines %s to %s)",
                f"{read - self._accounted:,}",
                self.name,
                f"{self._accounted + 1:,}",
                f"{read:,}",
            )
            self._note_read(True)
        else:
            try:
                os.remove(self._sidecar)
            except OSError:
                pass


def _pipe_lines(data: bytes) -> list[bytes]:
    """``data`` cut after each LF (a bare CR stays inside its line)."""
    lines = data.split(b"\n")
    tail = lines.pop()
    out = [line + b"\n" for line in lines]
    if tail:
        out.append(tail)
    return out


@dataclass(frozen=True)
class _PipeLines:
    """Where a spill file's data lines are in the pipe: the pipe lines and bytes before
    its first, and the lines taken out of it (``(index, bytes)`` in the first spill)."""

    lines: int
    bytes: int
    removed: tuple[tuple[int, int], ...] = ()

    def original(self, j: int) -> int:
        """Data line ``j`` of this spill -> its index in the cycle's first spill."""
        for index, _ in self.removed:  # sorted
            if index <= j:
                j += 1
            else:
                break
        return j

    def line_of(self, j: int) -> int:
        """Data line ``j`` (from 0) of this spill -> the pipe's line number (from 1)."""
        return self.lines + self.original(j) + 1

    def removed_bytes_before(self, j: int) -> int:
        first = self.original(j)
        return sum(n for index, n in self.removed if index < first)

    def without(self, removed: list[tuple[int, int]]) -> _PipeLines:
        return dataclasses.replace(self, removed=tuple(sorted({*self.removed, *removed})))


class _Renamed(beam.PTransform):
    """A spill file's read whose dead letters name the pipe and its line numbers."""

    def __init__(
        self, read: beam.PTransform, name: str, where: _PipeLines, header: bool, head: int
    ):
        super().__init__()
        self._read, self._name = read, name
        self._where, self._header, self._head = where, header, head

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        blocks, dead = pbegin | "ReadSpill" >> self._read
        name, where, header, head = self._name, self._where, self._header, self._head

        def rename(record: dict[str, Any]) -> dict[str, Any]:
            line, offset = record.get("line"), record.get("offset")
            j = None if line is None else line - 1 - header  # data line of the spill
            return {
                **record,
                "file": name,
                "line": None if j is None else where.line_of(j),
                "offset": None
                if offset is None
                else offset
                - head
                + where.bytes
                + (where.removed_bytes_before(j) if j is not None else 0),
            }

        return blocks, dead | "NamePipe" >> beam.Map(rename)
