"""Continuous training: one state follows a stream, snapshotted every few seconds.

:class:`TrainContinuously` runs *cycles*. A feed gathers what arrived past the
positions stored in the last checkpoint; a cycle is one bounded Beam pipeline that
decodes it into blocks, trains on from that checkpoint (``Train(resume_from=...)``:
statistics states merge, SGD states continue), and writes the new state *and* the new
source positions in one atomic checkpoint (keeping the last K). Then the model is
derived from the state, written atomically, and announced (optionally on a Kafka or
Pub/Sub topic).

Why cycles of bounded pipelines rather than one endless streaming pipeline:

- state and positions commit together, so a crash at any moment (``kill -9``
  included) loses nothing and counts nothing twice: a restart reads the last
  checkpoint and goes on from its positions;
- the Python DirectRunner cannot keep an endless splittable-DoFn source running while
  a later stage emits (its portable runner runs stages one after another).

On a runner with durable streaming of its own (Flink, Dataflow), ``TrainStreaming``
over an unbounded source is the one-pipeline alternative. A cycle adds Beam's fixed
start-up (a few tenths of a second) to the work, so snapshots every few seconds are
practical; a record is in a published model at most one interval plus one cycle
after it arrives (BENCHMARKS.md measures it).

Bad records never stop the stream. Those the decoder cannot read are dead letters of
the cycle's pipeline; those the state's update refuses (a label of 2 for a binary
classifier) fail the pipeline, so the trainer finds them (a fresh state's update of
the cycle's records, halving the blocks it refuses down to single rows), sets them
aside as dead letters naming the reason, and runs the cycle again without them.

Feeds (where cycles read from; each holds at most a configured number of records):

- :class:`KafkaFeed`: a background consumer fetches records as they arrive; positions
  are the next offset of every partition.
- :class:`PipeFeed`: a background thread reads lines from a pipe (``tail -F``) into a
  bounded queue (a full queue stops reading: back-pressure, not memory growth). A pipe
  cannot be replayed: on a crash, the lines read but not yet checkpointed are lost
  (the checkpoint says how many were kept, a sidecar file how many were read: the
  restart reports the difference).
- :class:`PubSubFeed`: pulls messages and acknowledges them only after the checkpoint
  that includes them is written; the checkpoint also names the recent message ids,
  so a message redelivered after a crash between the checkpoint and the ack is
  acknowledged and skipped, not counted twice.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import json
import logging
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

import apache_beam as beam

from beam_ml.core.errors import BadInputError, NotEnoughDataError
from beam_ml.core.state import TrainingState, config_from_dict, state_class_for
from beam_ml.io.pipes import pipeline_in, temp_dir

__all__ = ["Feed", "KafkaFeed", "PipeFeed", "PubSubFeed", "Take", "TrainContinuously"]

_log = logging.getLogger("beam_ml.continuous")


@dataclass
class Take:
    """What one cycle reads: a read transform returning ``(blocks, dead_letters)``,
    the positions after it, and the feed's bookkeeping for :meth:`Feed.commit`."""

    read: beam.PTransform
    positions: dict[str, Any]
    n_features: int | None = None
    receipt: Any = None


class Feed(abc.ABC):
    """A source read in cycles, each from where the last checkpoint left it."""

    name: str = "feed"

    @abc.abstractmethod
    def take(self, positions: dict[str, Any]) -> Take | None:
        """The next cycle's read, or None when nothing new has arrived."""

    def waiting(self, positions: dict[str, Any]) -> int:
        """Records waiting past ``positions`` (for ``snapshot_every_rows``); 0 if unknown."""
        return 0

    def commit(self, take: Take) -> None:  # noqa: B027 (most feeds have nothing to do)
        """Called once the checkpoint holding ``take.positions`` is written."""

    def ended(self) -> bool:
        """True when the source can never deliver more (a closed pipe)."""
        return False

    def drained(self) -> bool:
        """True once the source has ended, so that what waits is all there will be
        (the last cycle need not wait for the interval)."""
        return False

    def close(self) -> None:  # noqa: B027
        """Release connections, threads and temporary files."""

    def attach(self, output: str, positions: dict[str, Any]) -> str | None:
        """Called once by :class:`TrainContinuously` with its output and the stored
        positions; returns what an earlier run read but could not keep (a sentence), if
        the feed knows (a pipe does)."""
        return None

    # What the trainer needs to set aside the records a state rejects (a label of 2 for
    # a binary classifier is found by the state's update, not by the decoder).
    def records(self, take: Take) -> tuple[Any, list[tuple[str, list, list[bytes]]]] | None:
        """``(RecordSpec, [(source, ids, values), ...])``: the take's records, for
        :func:`~beam_ml.io.records.decode_records`; None if the feed cannot say."""
        return None

    def without(self, take: Take, rejected: set[tuple[str, Any]]) -> Take | None:
        """``take`` less the ``(source, id)`` records in ``rejected`` (same positions);
        None when nothing is left."""
        raise NotImplementedError

    def dead_letter(self, source: str, record_id: Any, value: bytes, reason: str) -> dict:
        """The dead-letter dict of a record the state rejected."""
        from beam_ml.io import formats

        record = formats.bad_record(source, 0, None, value, reason)
        record["offset"] = record_id  # a Kafka offset or a Pub/Sub message id
        return record


class _RecordsFeed(Feed):
    """Kafka and Pub/Sub: a take reads ``_FromRecords`` spills."""

    _spec: Any

    def records(self, take: Take) -> tuple[Any, list[tuple[str, list, list[bytes]]]] | None:
        groups = []
        for path, source in zip(take.read.paths, take.read.sources, strict=True):
            pairs = list(_spilled_records(path))
            groups.append((source, [i for i, _ in pairs], [v for _, v in pairs]))
        return self._spec, groups

    def without(self, take: Take, rejected: set[tuple[str, Any]]) -> Take | None:
        _, groups = self.records(take)  # type: ignore[misc]
        kept = []
        for source, ids, values in groups:
            pairs = [
                (i, v) for i, v in zip(ids, values, strict=True) if (source, i) not in rejected
            ]
            if pairs:
                kept.append((source, [i for i, _ in pairs], [v for _, v in pairs]))
        take.read.remove()
        if not kept:
            return None
        return dataclasses.replace(take, read=_FromRecords(kept, self._spec, self._spill_dir))


# --------------------------------------------------------------------------- Kafka
class KafkaFeed(_RecordsFeed):
    """Kafka topics read in cycles; positions are ``{'topic:partition': offset}``.

    A background consumer fetches new records as they arrive (kafka-python decodes
    them in Python, ~30 µs a record: done between cycles, not inside them) into a
    buffer of at most ``max_records`` (then it waits: back-pressure, bounded memory);
    each cycle trains on what was fetched and stores the next offset of every
    partition with the state.

    Parameters
    ----------
    url : str
        ``kafka://host:port/topic[?start=...&api_version=...]``: ``start`` applies to
        the first cycle only; later cycles, and restarts, go on from the checkpoint.
    format : {'csv', 'jsonl', 'libsvm'}
    max_records : int
        Records fetched ahead of the next cycle, at most.
    **decode_options
        label_column, delimiter, feature_dim, zero_based, features_key, block_size
        (see :func:`~beam_ml.io.records.record_spec`).
    """

    def __init__(self, url: str, format: str, *, max_records: int = 200_000, **decode_options):
        from beam_ml.io.kafka import parse_kafka_url
        from beam_ml.io.records import check_record_options

        self.name, self.format = url, format
        self._url = parse_kafka_url(url)
        self._options = decode_options
        check_record_options(
            format,
            decode_options.get("label_column"),
            decode_options.get("delimiter", ","),
            decode_options.get("feature_dim"),
            decode_options.get("block_size", 10_000),
            "KafkaFeed",
        )
        self._max = max_records
        self._lock = threading.Lock()
        self._buffer: dict[tuple[str, int], list[tuple[int, bytes | None]]] = {}
        self._count = 0
        self._starts: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._spec: Any = None
        self._spill_dir = temp_dir("kafka")

    def _consumer(self) -> Any:
        from beam_ml.io.kafka import _consumer, _Spec

        api_version = self._url.get("api_version")
        # A broker may hold a fetch up to fetch_max_wait_ms waiting for data (500 ms by
        # default): that would add to every record's latency.
        return _consumer(
            _Spec(
                tuple(self._url["bootstrap_servers"]),
                api_version,
                (("fetch_max_wait_ms", 100),),
                None,
            )
        )

    def _start(self, positions: dict[str, Any]) -> None:
        """Resolve the partitions and where each starts; start the fetching thread."""
        from kafka import TopicPartition

        from beam_ml.core.errors import BadInputError
        from beam_ml.io.kafka import _resolve_partitions

        try:
            consumer = self._consumer()
        except Exception as exc:  # NoBrokersAvailable and friends
            raise BadInputError(f"cannot reach the Kafka brokers {self.name}: {exc}") from None
        start: Any = self._url.get("start", "earliest")
        stamp = self._url.get("start_timestamp_ms")
        if positions:
            start = {
                (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1])): o for k, o in positions.items()
            }
            stamp = None
        parts = _resolve_partitions(
            consumer, self._url["topics"], self._url.get("partitions"), start, stamp
        )
        self._starts = {f"{p.topic}:{p.partition}": p.start for p in parts}
        tps = [TopicPartition(p.topic, p.partition) for p in parts]
        consumer.assign(tps)
        for part, tp in zip(parts, tps, strict=True):
            consumer.seek(tp, part.start)
        self._thread = threading.Thread(
            target=self._fetch, args=(consumer,), name="beam_ml-kafka-feed", daemon=True
        )
        self._thread.start()

    def _fetch(self, consumer: Any) -> None:
        try:
            while not self._stop.is_set():
                if self._count >= self._max:
                    time.sleep(0.05)
                    continue
                batch = consumer.poll(timeout_ms=200, max_records=10_000)
                if not batch:
                    continue
                with self._lock:
                    for tp, records in batch.items():
                        held = self._buffer.setdefault((tp.topic, tp.partition), [])
                        held.extend((r.offset, r.value) for r in records)
                        self._count += len(records)
        except BaseException as exc:  # reported by the next take()
            self._error = exc
        finally:
            consumer.close()

    def take(self, positions: dict[str, Any]) -> Take | None:
        from beam_ml.io.records import record_spec

        if self._thread is None:
            self._start(positions)
        if self._error is not None:
            raise self._error
        with self._lock:
            buffer, self._buffer, self._count = self._buffer, {}, 0
        after = {**self._starts, **positions}
        if not buffer:
            return None
        groups = []
        for (topic, partition), records in sorted(buffer.items()):
            after[f"{topic}:{partition}"] = records[-1][0] + 1
            groups.append(
                (
                    f"kafka://{topic}/{partition}",
                    [o for o, _ in records],
                    [v or b"" for _, v in records],
                )
            )
        if self._spec is None:
            first = next((v for g in groups for v in g[2] if v.strip()), None)
            self._spec = record_spec(self.format, first, **self._options)
        return Take(_FromRecords(groups, self._spec, self._spill_dir), after, self._spec.n_features)

    def commit(self, take: Take) -> None:
        take.read.remove()

    def waiting(self, positions: dict[str, Any]) -> int:
        return self._count

    def close(self) -> None:
        import shutil

        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        shutil.rmtree(self._spill_dir, ignore_errors=True)


# --------------------------------------------------------------------------- pipes
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

        from beam_ml.io.pipes import temp_dir

        self.name, self.format, self._options = name, format, reader_options
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
        self._header_known = format != "csv" or header is False
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
                _log.debug("cannot write %s: %s", self._sidecar, exc)

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
        from beam_ml.io import formats

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
        if self.format == "csv":
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
            from beam_ml.io import formats

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
            feature_dim=self._options.get("feature_dim") if self.format == "libsvm" else None,
            zero_based=self._options.get("zero_based", False),
            block_size=self._options.get("block_size", 10_000),
        )
        return spec, [(self.name, ids, joined)]

    def dead_letter(self, source: str, record_id: Any, value: bytes, reason: str) -> dict:
        from beam_ml.io import formats

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
            _log.warning(
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


# --------------------------------------------------------------------------- Pub/Sub
class PubSubFeed(_RecordsFeed):
    """A Pub/Sub subscription read in cycles; acknowledged after each checkpoint.

    Pulled messages are leased for ``lease_seconds`` (a crashed trainer's messages
    come back that long after it pulled them) and acknowledged once the checkpoint
    that includes them is written. Positions are ``{'recent': [[id, time], ...]}``:
    the ids checkpointed in the last two leases, so a message redelivered after a
    crash between a checkpoint and its ack is acknowledged and skipped, not counted
    twice.
    """

    def __init__(
        self,
        subscription: str,
        format: str,
        *,
        max_messages: int = 50_000,
        pull_seconds: float = 0.5,
        lease_seconds: float = 60.0,
        **decode_options: Any,
    ):
        from beam_ml.io.pubsub import PubSubPuller

        self.name, self.format = subscription, format
        self._puller = PubSubPuller(subscription)
        self._max, self._pull_seconds, self._lease = max_messages, pull_seconds, lease_seconds
        self._options = decode_options
        self._spec: Any = None
        self._spill_dir = temp_dir("pubsub")

    def take(self, positions: dict[str, Any]) -> Take | None:
        from beam_ml.io.records import record_spec

        now = time.time()
        recent = [[i, t] for i, t in positions.get("recent", ()) if t >= now - 2 * self._lease]
        done = {i for i, _ in recent}
        messages, stale = [], []
        deadline = time.monotonic() + self._pull_seconds
        while len(messages) < self._max:
            wait = max(0.05, deadline - time.monotonic())
            got = self._puller.pull(min(1000, self._max - len(messages)), timeout=wait)
            if not got:
                break
            for m in got:
                (stale if m.message_id in done else messages).append(m)
            if time.monotonic() >= deadline:
                break
        if stale:  # checkpointed before a crash, but never acknowledged
            self._puller.ack([m.ack_id for m in stale])
        if not messages:
            return None
        self._puller.extend([m.ack_id for m in messages], int(round(self._lease)))
        if self._spec is None:
            first = next((m.data for m in messages if m.data.strip()), None)
            self._spec = record_spec(self.format, first, **self._options)
        group = (self.name, [m.message_id for m in messages], [m.data for m in messages])
        read = _FromRecords([group], self._spec, self._spill_dir)
        return Take(
            read,
            {"recent": recent + [[m.message_id, now] for m in messages]},
            self._spec.n_features,
            [m.ack_id for m in messages],
        )

    def commit(self, take: Take) -> None:
        self._puller.ack(take.receipt)
        take.read.remove()

    def close(self) -> None:
        import shutil

        self._puller.close()
        shutil.rmtree(self._spill_dir, ignore_errors=True)


class _FromRecords(beam.PTransform):
    """Records fetched by the driver, spilled to one ``.npz`` per source (ids, bytes,
    ends: no pickle), then decoded in the pipeline. ``beam.Create`` of the records
    themselves would pickle them into the pipeline, ~0.4 s per MB.

    ``groups``: ``(source, ids, values)``, e.g. one per Kafka partition."""

    def __init__(self, groups: list[tuple[str, list, list[bytes]]], spec: Any, spill_dir: str):
        super().__init__()
        import numpy as np

        self.paths: list[str] = []
        self.sources: list[str] = []
        for source, ids, values in groups:
            path = os.path.join(spill_dir, f"records-{uuid.uuid4().hex[:8]}.npz")
            np.savez(
                path,
                ids=np.array(ids),
                data=np.frombuffer(b"".join(values), dtype=np.uint8),
                ends=np.cumsum([len(v) for v in values], dtype=np.int64),
            )
            self.paths.append(path)
            self.sources.append(source)
        self._spec = spec

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        from beam_ml.io.records import DecodeRecords

        blocks, dead = [], []
        for i, (path, source) in enumerate(zip(self.paths, self.sources, strict=True)):
            b, d = (
                pbegin
                | f"Spill{i}" >> beam.Create([path], reshuffle=False)
                | f"Records{i}" >> beam.FlatMap(_spilled_records)
                | f"Decode{i}" >> DecodeRecords(self._spec, source).with_dead_letters()
            )
            blocks.append(b)
            dead.append(d)
        return blocks | "Blocks" >> beam.Flatten(), dead | "DeadLetters" >> beam.Flatten()

    def remove(self) -> None:
        for path in self.paths:
            try:
                os.remove(path)
            except FileNotFoundError:  # removed already (set aside, then committed)
                pass


def _spilled_records(path: str) -> Any:
    import numpy as np

    with np.load(path, allow_pickle=False) as spill:
        ids, data, ends = spill["ids"], spill["data"].tobytes(), spill["ends"]
    start = 0
    for record_id, end in zip(ids.tolist(), ends.tolist(), strict=True):
        yield record_id, data[start:end]
        start = end


# --------------------------------------------------------------------------- the loop
@dataclass
class Snapshot:
    """One cycle's outcome (also logged and announced)."""

    snapshot: int
    rows: int
    bad_records: int
    n_seen: int
    seconds: float
    positions: dict[str, Any]
    model: str | None


class _WriteLines(beam.DoFn):
    """Each bundle's records as one JSON-lines file in ``directory`` (lighter than
    ``WriteToText``, whose extra stages cost a cycle ~0.15 s); the driver joins them."""

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self) -> None:
        self._lines: list[str] = []

    def process(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record, default=str) + "\n")

    def finish_bundle(self) -> None:
        if self._lines:
            from apache_beam.io.filesystems import FileSystems

            path = FileSystems.join(self._directory, f"part-{uuid.uuid4().hex}.jsonl")
            with FileSystems.create(path) as f:
                f.write("".join(self._lines).encode())
        self._lines = []


def _has_rows(state: TrainingState) -> bool:
    return state.n_seen > 0


class TrainContinuously:
    """Train ``config`` on ``feed`` in cycles, snapshotting into ``output`` (see module).

    Parameters
    ----------
    config : an algorithm config; replaced by the checkpoint's when ``output`` exists
        (a restart continues where the last snapshot ended).
    feed : Feed
    output : str
        Checkpoint directory of the state (and the source positions).
    snapshot_every_seconds : float
        Start a cycle this long after the previous one started.
    snapshot_every_rows : int, optional
        Also start one as soon as this many records wait.
    keep : int
        Snapshots kept in ``output`` (``read_checkpoint(output, payload=...)``).
    window : int, optional
        A sliding window for states that keep everything (PCA, K-Means, exact
        statistics): each cycle trains a state of its own rows, ``output`` keeps the
        last ``window`` of them (with the positions, atomically), and the model is
        derived from their merge: it forgets a cycle's rows ``window`` cycles later.
    model_output : str, optional
        Where each snapshot's model is written; None: no model.
    derive_params : dict
        Parameters of ``state.derive``.
    publish : str, optional
        ``kafka://host:port/topic`` or ``pubsub://projects/P/topics/T``: a JSON message
        announcing each new model (snapshot number, paths, rows, positions).
    stop_after_seconds, stop_when_idle_seconds : float, optional
        Stop after this long in all, or once no record arrived for this long.
    pipeline_args : list of str
        Beam pipeline options of each cycle.
    dead_letters : str, optional
        JSON-lines file the malformed records are appended to.
    extra : dict
        Stored in every checkpoint's manifest (e.g. derive defaults).
    """

    HISTORY = 1000  # cycle outcomes run() keeps

    def __init__(
        self,
        config: Any,
        feed: Feed,
        output: str,
        *,
        snapshot_every_seconds: float = 30.0,
        snapshot_every_rows: int | None = None,
        keep: int = 5,
        window: int | None = None,
        model_output: str | None = None,
        derive_params: dict[str, Any] | None = None,
        publish: str | None = None,
        stop_after_seconds: float | None = None,
        stop_when_idle_seconds: float | None = None,
        pipeline_args: list[str] | None = None,
        dead_letters: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        from beam_ml.io.checkpoints import CheckpointNotFoundError, read_manifest

        if snapshot_every_seconds <= 0:
            raise BadInputError(
                f"snapshot_every must be > 0 seconds; got {snapshot_every_seconds}."
            )
        if state_class_for(config).PLAN.epochs_of(config) > 1:
            raise BadInputError(
                f"epochs={config.epochs}: continuous training reads a stream once; use epochs=1."
            )
        self.state_class = state_class_for(config)
        if window is not None and window < 1:
            raise BadInputError(f"window must be >= 1 snapshots; got {window}.")
        if window is not None and self.state_class.PLAN.epochs is not None:  # SGD families
            raise BadInputError(
                "window applies to states that keep all their data (PCA, K-Means); "
                f"{self.state_class.FAMILY} models forget old data as they learn on."
            )
        self.window = window
        self.config, self.feed, self.output = config, feed, output
        self.every_seconds, self.every_rows = float(snapshot_every_seconds), snapshot_every_rows
        self.keep, self.model_output = keep, model_output
        self.derive_params = dict(derive_params or {})
        self.publish, self.pipeline_args = publish, list(pipeline_args or [])
        self.stop_after, self.stop_when_idle = stop_after_seconds, stop_when_idle_seconds
        self.dead_letters, self.extra = dead_letters, dict(extra or {})
        self.positions: dict[str, Any] = {}
        self.snapshot = 0
        self.rows_read = self.bad_records = self.snapshots_written = 0
        self.n_seen: int | None = None
        self._stopping = False
        try:
            manifest = read_manifest(output)
        except CheckpointNotFoundError:
            manifest = None
        self.resumed = manifest is not None
        if manifest is not None:
            if manifest["algorithm"] != self.state_class.FAMILY:
                raise BadInputError(
                    f"{output!r} holds a {manifest['algorithm']} state, not "
                    f"{self.state_class.FAMILY}."
                )
            self.config = config_from_dict(self.state_class.CONFIG, manifest["config"])
            stored = manifest.get("extra", {})
            self.positions = dict(stored.get("source_positions") or {})
            self.snapshot = int(stored.get("snapshot", 0))
            _log.info(
                "continuing %s from snapshot %d of %s (%s rows)",
                self.state_class.FAMILY,
                self.snapshot,
                output,
                f"{manifest['n_seen']:,}",
            )
        #: What an earlier run read but could not keep (a pipe's lines after its last
        #: snapshot), as a sentence; None if nothing or unknown.
        self.lost = feed.attach(output, self.positions)
        if self.lost:
            _log.warning("%s", self.lost)

    def stop(self, *_: Any) -> None:
        """Finish the running cycle, then return from :meth:`run` (SIGTERM, Ctrl-C);
        a second Ctrl-C interrupts at once (the last checkpoint stays whole)."""
        if self._stopping and _:
            raise KeyboardInterrupt
        self._stopping = True

    def run(self) -> list[Snapshot]:
        """Cycle until stopped; return the last ``HISTORY`` cycles' outcomes (totals in
        ``rows_read``, ``bad_records``, ``snapshots_written``: a run may last months)."""
        from beam_ml.core.runner import pipeline_options

        options = pipeline_options(self.pipeline_args)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self.stop)
        started = time.monotonic()
        last_data = started
        done: collections.deque[Snapshot] = collections.deque(maxlen=self.HISTORY)
        next_at = started
        try:
            while not self._stopping:
                self._wait(next_at, started)
                if self._stopping:
                    break
                cycle_start = time.monotonic()
                take = self.feed.take(self.positions)
                if take is None:
                    now = time.monotonic()
                    if self.feed.ended() or (
                        self.stop_when_idle is not None and now - last_data >= self.stop_when_idle
                    ):
                        break
                    next_at = now + min(self.every_seconds, 0.25)
                    continue
                last_data = cycle_start
                snap = self._cycle(take, options, cycle_start)
                done.append(snap)
                self.rows_read += snap.rows
                self.bad_records += snap.bad_records
                self.snapshots_written += bool(snap.snapshot)
                self.n_seen = snap.n_seen or self.n_seen
                next_at = cycle_start + self.every_seconds
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.feed.close()
        return list(done)

    def _wait(self, until: float, started: float) -> None:
        while not self._stopping:
            now = time.monotonic()
            if self.stop_after is not None and now - started >= self.stop_after:
                self._stopping = True
                return
            if now >= until or self.feed.drained():
                return
            if self.every_rows and self.feed.waiting(self.positions) >= self.every_rows:
                return
            time.sleep(min(0.05 if self.every_rows else 0.25, until - now))

    def _cycle(self, take: Take, options: Any, cycle_start: float) -> Snapshot:
        from beam_ml.io.checkpoints import read_manifest

        if getattr(self.config, "feature_dim", 0) is None and take.n_features and not self.resumed:
            self.config = dataclasses.replace(self.config, feature_dim=take.n_features)
        version = self.snapshot + 1
        extra = {
            **self.extra,
            "source_positions": take.positions,
            "snapshot": version,
            "trained_on": self.feed.name,
        }
        rejected: list[dict[str, Any]] = []  # records the state's update refused
        current: Take | None = take
        rows = bad = 0
        for attempt in range(self.ATTEMPTS):
            if current is None:  # the state refused every record of the take
                break
            try:
                rows, bad = self._run_cycle(current, options, extra)
                break
            except Exception as exc:
                refused = self._refused(current, exc) if attempt + 1 < self.ATTEMPTS else []
                if not refused:
                    raise
                rejected += [letter for _, _, letter in refused]
                keys = {(source, record_id) for source, record_id, _ in refused}
                current = self.feed.without(current, keys)
        if rejected:
            self._append_dead_letters(rejected)
            _log.warning(
                "snapshot %d: %s record(s) set aside%s; the first: %s",
                version,
                f"{len(rejected):,}",
                f" in {self.dead_letters}" if self.dead_letters else "",
                rejected[0]["reason"],
            )
            bad += len(rejected)
        try:
            manifest = read_manifest(self.output)
        except FileNotFoundError:
            manifest = None
        done = current if current is not None else take
        if manifest is None or manifest.get("extra", {}).get("snapshot") != version:
            # Nothing trainable yet (every record malformed): go on past them.
            self.positions = take.positions
            self.feed.commit(done)
            return Snapshot(0, rows, bad, 0, time.monotonic() - cycle_start, take.positions, None)
        self.resumed, self.snapshot, self.positions = True, version, take.positions
        self.feed.commit(done)
        model = self._derive(manifest)
        seconds = time.monotonic() - cycle_start
        snap = Snapshot(version, rows, bad, manifest["n_seen"], seconds, take.positions, model)
        _log.info(
            "snapshot %d: +%s rows (%s in all)%s in %.2f s%s",
            version,
            f"{rows:,}",
            f"{manifest['n_seen']:,}",
            f", {bad:,} malformed" if bad else "",
            seconds,
            f"; model in {model}" if model else "",
        )
        if self.publish:
            self._announce(snap)
        return snap

    #: Runs of one cycle at most: the first, and reruns without the refused records.
    ATTEMPTS = 3
    #: State updates spent finding the refused rows of one cycle; past it, a refused
    #: range of rows is set aside whole.
    SCREEN_BUDGET = 2_000

    def _run_cycle(self, take: Take, options: Any, extra: dict[str, Any]) -> tuple[int, int]:
        """One bounded pipeline: decode, train on, checkpoint. Returns (rows, bad)."""
        from beam_ml.core.runner import counter
        from beam_ml.io.checkpoints import ReadCheckpoint, WriteCheckpoint
        from beam_ml.transforms.train import Train

        dead_dir = temp_dir("dead")
        try:
            p = pipeline_in(dead_dir, options)  # Beam's own folder goes with the letters
            blocks, dead = p | "Read" >> take.read
            _ = dead | "WriteDeadLetters" >> beam.ParDo(_WriteLines(dead_dir))
            resume = self.resumed and not self.window  # a window keeps each cycle's own state
            resumed = p | "Resume" >> ReadCheckpoint(self.output) if resume else None
            (
                blocks
                | Train(self.config, resume_from=resumed)
                | "SkipEmpty" >> beam.Filter(_has_rows)
                | WriteCheckpoint(self.output, extra, keep=self.window or self.keep)
            )
            result = p.run()
            result.wait_until_finish()
            rows, bad = counter(result, "rows_read"), counter(result, "bad_records")
            self._keep_dead_letters(dead_dir)  # only a pipeline that ran keeps its letters
        finally:
            import shutil

            shutil.rmtree(dead_dir, ignore_errors=True)
        return rows, bad

    def _refused(self, take: Take, error: BaseException) -> list[tuple[str, Any, dict]]:
        """After a failed cycle: the take's records that a fresh state's update refuses,
        as ``(source, id, dead letter)``; [] if none (the failure was something else)."""
        from beam_ml.io.records import decode_records

        try:
            found = self.feed.records(take)
        except Exception as exc:  # the original failure is the one to report
            _log.debug("cannot screen the records after %r: %s", error, exc)
            return []
        if found is None:
            return []
        spec, groups = found
        budget = [self.SCREEN_BUDGET]
        refused = []
        for source, ids, values in groups:
            for start in range(0, len(ids), spec.block_size):
                chunk_ids = ids[start : start + spec.block_size]
                block, bad = decode_records(
                    spec, source, chunk_ids, values[start : start + spec.block_size]
                )
                if block is None:
                    continue
                bad_ids = {b["offset"] for b in bad}
                good = [
                    (i, v)
                    for i, v in zip(chunk_ids, values[start : start + spec.block_size], strict=True)
                    if i not in bad_ids
                ]
                for row, reason in self._refused_rows(block, budget):
                    record_id, value = good[row]
                    letter = self.feed.dead_letter(source, record_id, value, reason)
                    refused.append((source, record_id, letter))
        return refused

    def _refused_rows(self, block: Any, budget: list[int]) -> list[tuple[int, str]]:
        """Rows of ``block`` that a fresh state refuses, with the reason, found by
        halving (a few updates per refused row); past the budget, a refused range of
        rows is refused whole."""
        from beam_ml.core.block import Block

        def refusal(lo: int, hi: int) -> str | None:
            budget[0] -= 1
            labels = None if block.labels is None else block.labels[lo:hi]
            try:
                self.state_class.empty(self.config).update(Block(block.features[lo:hi], labels))
            except ValueError as exc:  # BadInputError and the like: this data is refused
                return f"refused by the {self.state_class.FAMILY} state: {exc}"
            return None

        out: list[tuple[int, str]] = []
        pending = [(0, block.n_rows)]
        while pending:
            lo, hi = pending.pop()
            reason = refusal(lo, hi)
            if reason is None:
                continue
            if hi - lo == 1:
                out.append((lo, reason))
            elif budget[0] <= 0:
                n = hi - lo
                out += [
                    (i, f"{reason} (set aside with its range of {n} rows)") for i in range(lo, hi)
                ]
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
        return sorted(out)

    def _append_dead_letters(self, letters: list[dict[str, Any]]) -> None:
        if self.dead_letters:
            with open(self.dead_letters, "a") as f:
                f.writelines(json.dumps(r, default=str) + "\n" for r in letters)

    def _keep_dead_letters(self, directory: str) -> None:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if self.dead_letters:
                with open(path, "rb") as src, open(self.dead_letters, "ab") as dst:
                    dst.write(src.read())
            os.remove(path)

    def _derive(self, manifest: dict[str, Any]) -> str | None:
        from beam_ml.io.checkpoints import read_checkpoint, write_checkpoint

        if self.model_output is None:
            return None
        if self.window:
            payloads = [h["payload"] for h in manifest["history"]]
            states = [read_checkpoint(self.output, "state", name)[0] for name in payloads]
            state = functools.reduce(lambda a, b: a.merge(b), states)
        else:
            state, _ = read_checkpoint(self.output, "state")
        try:
            model = state.derive(**self.derive_params)
        except NotEnoughDataError as exc:  # e.g. fewer rows than k so far
            _log.warning("snapshot %d: no model yet: %s", self.snapshot, exc)
            return None
        write_checkpoint(
            self.model_output,
            model,
            {
                "derived_from": self.output,
                "snapshot": self.snapshot,
                "params": self.derive_params,
                "n_seen": state.n_seen,
                "source_positions": manifest["extra"]["source_positions"],
            },
        )
        return self.model_output

    def _announce(self, snap: Snapshot) -> None:
        message = json.dumps(
            {
                "algorithm": self.state_class.FAMILY,
                "snapshot": snap.snapshot,
                "state": self.output,
                "model": snap.model,
                "n_seen": snap.n_seen,
                "rows": snap.rows,
                "source_positions": snap.positions,
                "published": time.time(),
            }
        ).encode()
        announce(self.publish, message)


def announce(url: str, message: bytes) -> None:
    """Send ``message`` to ``kafka://host:port/topic`` or ``pubsub://projects/P/topics/T``."""
    if url.startswith("kafka://"):
        from kafka import KafkaProducer

        from beam_ml.io.kafka import parse_kafka_url

        target = parse_kafka_url(url)
        options: dict[str, Any] = {"bootstrap_servers": target["bootstrap_servers"]}
        if "api_version" in target:
            options["api_version"] = target["api_version"]
        producer = KafkaProducer(**options)
        try:
            for topic in target["topics"]:
                producer.send(topic, message)
            producer.flush(30)
        finally:
            producer.close()
    elif url.startswith("pubsub://"):
        from beam_ml.io.pubsub import parse_pubsub_url, publish

        publish(parse_pubsub_url(url, expect="topic"), message)
    else:
        raise BadInputError(
            f"--publish takes kafka://host:port/topic or pubsub://projects/P/topics/T; got {url!r}."
        )
