"""Feeds: sources that continuous training reads in cycles, each from where the last
checkpoint left it (:class:`~beam_ml.transforms.continuous.ContinuousTrainer`).

A feed hands each cycle a :class:`Take`: a read transform returning ``(blocks,
dead_letters)``, the source positions after it (stored with the state, atomically), and
what :meth:`Feed.commit` needs once that checkpoint is written. The feeds live beside
their readers: :class:`~beam_ml.io.kafka.KafkaFeed`, :class:`~beam_ml.io.pubsub.PubSubFeed`,
:class:`~beam_ml.io.pipes.PipeFeed`. Kafka and Pub/Sub fetch records in the driver and
spill them to files that the cycle's pipeline decodes (:class:`FromRecords`).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from beam_ml.io.scratch import temp_dir

__all__ = ["Feed", "FetchingFeed", "FromRecords", "RecordsFeed", "Take", "spilled_records"]


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
        """Called once by :class:`~beam_ml.transforms.continuous.ContinuousTrainer` with its output and the stored
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


class RecordsFeed(Feed):
    """Kafka and Pub/Sub: a take reads ``FromRecords`` spills."""

    _spec: Any

    def records(self, take: Take) -> tuple[Any, list[tuple[str, list, list[bytes]]]] | None:
        groups = []
        for path, source in zip(take.read.paths, take.read.sources, strict=True):
            pairs = list(spilled_records(path))
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
        return dataclasses.replace(take, read=FromRecords(kept, self._spec, self._spill_dir))


class FetchingFeed(RecordsFeed):
    """Kafka and Kinesis: a background thread fetches records as they arrive into a
    buffer of at most ``max_records`` (then it waits: back-pressure, bounded memory);
    each take spills what was fetched since the last, with the positions after it.

    A subclass names its ``KIND`` and writes ``_start`` (resolve where each part
    starts, then :meth:`_spawn` its fetching loop), ``_after`` (the positions after
    what the buffer holds, read under the buffer's lock) and ``take`` (the buffer as
    ``(source, ids, values)`` groups, through :meth:`_drain` and :meth:`_take`).
    """

    KIND = "records"

    def __init__(self, url: str, format: str, *, max_records: int = 200_000, **decode_options):
        from beam_ml.io.records import check_decoding

        self.name, self.format = url, format
        self._options = decode_options
        check_decoding(format, decode_options, type(self).__name__)
        self._max = max_records
        self._lock = threading.Lock()
        self._buffer: dict[Any, list[tuple[Any, bytes | None]]] = {}
        self._count = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._spec: Any = None
        self._spill_dir = temp_dir(self.KIND)

    @abc.abstractmethod
    def _start(self, positions: dict[str, Any]) -> None:
        """Resolve where each part starts; :meth:`_spawn` the fetching loop."""

    @abc.abstractmethod
    def _after(self, positions: dict[str, Any]) -> dict[str, Any]:
        """The positions after the buffered records (called under the buffer's lock)."""

    def _spawn(self, fetch: Any, source: Any) -> None:
        self._thread = threading.Thread(
            target=fetch, args=(source,), name=f"beam_ml-{self.KIND}-feed", daemon=True
        )
        self._thread.start()

    def _drain(self, positions: dict[str, Any]) -> tuple[dict[Any, list], dict[str, Any]]:
        """What was fetched since the last take (started on the first call), and the
        positions after it, taken together; the fetching thread's error raised here."""
        if self._thread is None:
            self._start(positions)
        if self._error is not None:
            raise self._error
        with self._lock:
            buffer, self._buffer, self._count = self._buffer, {}, 0
            return buffer, self._after(positions)

    def _take(self, groups: list[tuple[str, list, list[bytes]]], after: dict) -> Take | None:
        from beam_ml.io.records import record_spec

        if not groups:
            return None
        if self._spec is None:
            first = next((v for g in groups for v in g[2] if v.strip()), None)
            self._spec = record_spec(self.format, first, **self._options)
        return Take(FromRecords(groups, self._spec, self._spill_dir), after, self._spec.n_features)

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


class FromRecords(beam.PTransform):
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
                | f"Records{i}" >> beam.FlatMap(spilled_records)
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


def spilled_records(path: str) -> Any:
    import numpy as np

    with np.load(path, allow_pickle=False) as spill:
        ids, data, ends = spill["ids"], spill["data"].tobytes(), spill["ends"]
    start = 0
    for record_id, end in zip(ids.tolist(), ends.tolist(), strict=True):
        yield record_id, data[start:end]
        start = end
