"""Reading an input in parallel by ranges: what the file reader (byte, row or row-group
ranges of files) and the SQL reader (key ranges of a query) share.

Only small range descriptors are shuffled to the workers, never data; each worker reads
its ranges into blocks, one chunk ahead in a thread (:func:`read_ahead`), counts what it
read in the ``beam_ml`` metrics and routes bad records (:mod:`beam_ml.io.dead_letters`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_ml.core.block import Block
from beam_ml.io.dead_letters import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    DroppedLog,
    check_bad_fraction,
    route_bad_records,
)

__all__ = ["Progress", "RangeSource", "ReadRangesFn", "accounted", "read_ahead", "read_ranges"]

#: (block of the good rows, bad records, bytes read or None if unknown, records read).
Chunk = tuple[Block | None, list[dict[str, Any]], int | None, int]

_log = logging.getLogger("beam_ml.io")
_END = object()


def read_ahead(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``items``, produced by a thread that keeps up to ``depth`` of them ready.

    A fused Beam stage alternates reading+parsing a chunk and training on it on one
    core; read ahead, the next chunk is parsed (numpy, mostly outside the GIL) while
    this one trains. Memory stays bounded (``depth`` + 2 items alive). An exception of
    the producer is raised here, in order; closing this generator stops the producer.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="beam_ml-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = ready.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def accounted(
    chunks: Iterable[Any],
    fmt: str,
    path: str,
    max_bad_fraction: float,
    records_are_rows: bool = True,
) -> Iterator[Any]:
    """``chunks`` (:data:`Chunk`), checked: in each, rows used + bad records == records
    read (a parser that loses records is a bug, stopped here rather than silent; not
    checked where records add up to fewer rows: point records to series), and
    at the end no more than ``max_bad_fraction`` of the records bad (see
    :func:`~beam_ml.io.dead_letters.check_bad_fraction`)."""
    records = bad_records = 0
    first_bad = None
    for block, bad, nbytes, n in chunks:
        rows = block.n_rows if block is not None else 0
        if records_are_rows and rows + len(bad) != n:
            where = f" at {block.origin}" if block is not None and block.origin else ""
            raise RuntimeError(
                f"beam_ml lost records of {path}{where}: {n} records read, but {rows} "
                f"rows used and {len(bad)} set aside. This is a bug; please report it "
                "with the file."
            )
        records += n
        bad_records += len(bad)
        if first_bad is None and bad:
            first_bad = bad[0]
        yield block, bad, nbytes, n
    check_bad_fraction(bad_records, records, max_bad_fraction, first_bad, fmt, path)


class Progress:
    """Logs rows read, rows/s and the current input at most every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.rows = 0
        self.bad = 0
        self.started = self.logged = time.monotonic()

    def update(self, rows: int, bad: int, path: str) -> None:
        self.rows += rows
        self.bad += bad
        now = time.monotonic()
        if now - self.logged >= self.every:
            self.logged = now
            _log.info(
                "read %d rows (%.0f rows/s), %d bad records; reading %s",
                self.rows,
                self.rows / max(now - self.started, 1e-9),
                self.bad,
                path,
            )


class RangeSource:
    """What a reader tells :class:`ReadRangesFn`: how to read one range (on a worker)."""

    #: How bad records are described (``dead_letters.describe``).
    fmt = ""
    strict = False
    #: Seconds between progress lines; None logs none.
    progress_every: float | None = None

    def setup(self) -> None:
        """Open what the ranges share on a worker (a database engine ...)."""

    def teardown(self) -> None:
        pass

    def read(self, rng: Any) -> Iterator[Chunk]:
        raise NotImplementedError

    def name(self, rng: Any) -> str:
        """The range's input, for progress lines."""
        return ""


class ReadRangesFn(beam.DoFn):
    """Reads each range descriptor into blocks (main output) and bad records, counting
    ``records_read``, ``rows_read``, ``bad_records`` and (when known) ``bytes_read``."""

    def __init__(self, source: RangeSource, dead_letters: bool):
        self._source = source
        self._dead_letters = dead_letters
        self._records = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self._rows = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._bad = Metrics.counter(METRICS_NAMESPACE, "bad_records")
        self._bytes = Metrics.counter(METRICS_NAMESPACE, "bytes_read")

    def setup(self) -> None:
        self._source.setup()
        every = self._source.progress_every
        self._progress = None if every is None else Progress(every)
        self._dropped = None if self._dead_letters else DroppedLog(self._source.fmt)

    def teardown(self) -> None:
        self._source.teardown()

    def process(self, rng: Any) -> Iterator[Any]:
        source = self._source
        for block, bad, nbytes, records in read_ahead(source.read(rng)):
            rows = block.n_rows if block is not None else 0
            self._records.inc(records)
            self._rows.inc(rows)
            if nbytes is not None:
                self._bytes.inc(nbytes)
            if bad:
                yield from route_bad_records(
                    bad, source.fmt, source.strict, self._bad, self._dropped
                )
            if self._progress is not None:
                self._progress.update(rows, len(bad), source.name(rng))
            if block is not None:
                yield block


def read_ranges(
    pbegin: beam.pvalue.PBegin,
    listed: str,
    items: list[Any],
    fn: ReadRangesFn,
    split: Callable[..., list[Any]] | None = None,
    *split_args: Any,
) -> Any:
    """``Create`` (``items``: ranges, or files that ``split`` cuts into ranges on the
    workers) -> ``Reshuffle`` -> ``ParDo(fn)``: its outputs, ``blocks`` and
    :data:`DEAD_LETTERS`."""
    pcoll = pbegin | listed >> beam.Create(items)
    if split is not None:
        pcoll = pcoll | "SplitFiles" >> beam.FlatMap(split, *split_args)
    return (
        pcoll
        | "Reshuffle" >> beam.Reshuffle()
        | "ReadRanges" >> beam.ParDo(fn).with_outputs(DEAD_LETTERS, main="blocks")
    )
