"""Reading Kafka topics into blocks with ``kafka-python``: ``ReadKafka``.

A pure-Python Beam source (Beam's own ``ReadFromKafka`` is a Java cross-language
transform that needs a Java expansion service). It is a splittable DoFn over partition
offset ranges: at construction the driver lists the topics' partitions and resolves,
for each, the start offset (``earliest``, ``latest``, given offsets or the first
record at or after a timestamp) and the end offset at that moment; the pipeline then
reads every partition's ``[start, end)`` and stops (bounded mode). Long ranges are split
into chunks that workers read in parallel. With ``unbounded=True`` the ranges are
``[start, ∞)``: each partition's reader keeps polling, emits blocks timestamped with
their records' time (the watermark follows), and every ``max_block_seconds`` hands the
rest of its range back to the runner (``defer_remainder``) so what it read commits.

Records are rows: each value is one CSV line, one JSON object or array, or one LIBSVM
line, decoded with the parsers of :mod:`beam_ml.io.formats`. Rows are grouped into
blocks of at most ``block_size`` rows, and a block is also closed when its first row
waited ``max_block_seconds`` (size- and time-bounded, like ``beam.BatchElements``).
An undecodable value (or an empty one, such as a tombstone) is a bad record, in the
shape of the file readers' with ``file`` = ``'kafka://topic/partition'`` and ``offset``
= the record's Kafka offset.

Positions: the offsets a bounded read ends at are known at construction
(``ReadKafka.end_offsets``), so a checkpoint written after the read can store them and
a later run can ``start`` there, neither losing nor re-reading a record.
``with_positions()`` also returns, per block, the next offset of its partition.

Examples
--------
>>> read = ReadKafka("127.0.0.1:9092", "events", "csv", start="earliest")  # doctest: +SKIP
>>> read.n_features, read.end_offsets                                       # doctest: +SKIP
(8, {('events', 0): 1200, ('events', 1): 1187})
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.core import RestrictionProvider

from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.feeds import FetchingFeed, Take
from beam_ml.io.readers import POSITIONS, EventTimeWatermark, PartitionedReader, PartReadFn
from beam_ml.io.records import RECORD_FORMATS, RecordSpec

__all__ = ["KAFKA_FORMATS", "KafkaFeed", "POSITIONS", "ReadKafka", "parse_kafka_url"]

#: Record value formats.
KAFKA_FORMATS = RECORD_FORMATS

_PEEK_SECONDS = 20.0
_POLL_MS = 200
_CHUNK_OFFSETS = 100_000  # offsets per parallel chunk of a partition
_UNBOUNDED = 2**63 - 1  # the end of an endless partition's offset range
_log = logging.getLogger("beam_ml.io")


@dataclass(frozen=True)
class _Spec:
    """What a worker needs: connection, decoding and batching, resolved once."""

    bootstrap_servers: tuple[str, ...]
    api_version: tuple[int, ...] | None
    consumer_config: tuple[tuple[str, Any], ...]
    records: RecordSpec | None  # how values decode (None until the first record is seen)
    max_block_seconds: float = 1.0
    idle_timeout: float = 60.0


@dataclass(frozen=True)
class _Partition:
    """Offsets ``[start, end)`` of one topic partition."""

    topic: str
    partition: int
    start: int
    end: int


def parse_kafka_url(url: str) -> dict[str, Any]:
    """``kafka://host:port[,host:port]/topic[,topic][?options]`` -> ``ReadKafka`` arguments.

    Options: ``start`` (``earliest``, default; ``latest``; ``timestamp:MS``; or
    ``P:OFFSET,P:OFFSET`` per partition), ``partitions`` (``0,2``), ``api_version``
    (``0.9``, ``2.3.0``).

    >>> parse_kafka_url("kafka://127.0.0.1:9092/a,b?start=1:5,0:7&partitions=0,1")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'bootstrap_servers': ['127.0.0.1:9092'], 'topics': ['a', 'b'],
     'start': {1: 5, 0: 7}, 'partitions': [0, 1]}
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc or not parts.path.strip("/"):
        raise BadInputError(
            f"a Kafka input is kafka://host:port/topic[?start=earliest]; got {url!r}."
        )
    out: dict[str, Any] = {
        "bootstrap_servers": parts.netloc.split(","),
        "topics": [t for t in parts.path.strip("/").split(",") if t],
    }
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "start":
            if value in ("earliest", "latest"):
                out["start"] = value
            elif value.startswith("timestamp:"):
                out["start_timestamp_ms"] = _int(value[len("timestamp:") :], url)
            else:
                pairs = [p.split(":") for p in value.split(",")]
                if not all(len(p) == 2 for p in pairs):
                    raise BadInputError(
                        f"start must be earliest, latest, timestamp:MS or P:OFFSET,...; "
                        f"got {value!r} in {url!r}."
                    )
                out["start"] = {_int(p, url): _int(o, url) for p, o in pairs}
        elif key == "partitions":
            out["partitions"] = [_int(p, url) for p in value.split(",")]
        elif key == "api_version":
            out["api_version"] = tuple(_int(p, url) for p in value.split("."))
        else:
            raise BadInputError(
                f"unknown Kafka URL option {key!r} in {url!r}; the options are start, "
                "partitions and api_version."
            )
    return out


def _int(text: str, url: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadInputError(f"expected an integer, got {text!r} in {url!r}.") from None


def _consumer(spec: _Spec) -> Any:
    from kafka import KafkaConsumer

    options: dict[str, Any] = {
        "bootstrap_servers": list(spec.bootstrap_servers),
        "enable_auto_commit": False,
        "group_id": None,
        "auto_offset_reset": "earliest",
        "consumer_timeout_ms": 1000,
        **dict(spec.consumer_config),
    }
    if spec.api_version is not None:
        options["api_version"] = spec.api_version
    return KafkaConsumer(**options)


# ------------------------------------------------------------------ decoding records


def _source(topic: str, partition: int) -> str:
    return f"kafka://{topic}/{partition}"


# --------------------------------------------------------------------- planning


def _resolve_partitions(
    consumer: Any,
    topics: Sequence[str],
    partitions: Sequence[int] | None,
    start: str | Mapping[Any, int],
    start_timestamp_ms: int | None,
) -> list[_Partition]:
    from kafka import TopicPartition

    tps = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise BadInputError(f"the Kafka topic {topic!r} does not exist (or has no partitions).")
        wanted = sorted(found) if partitions is None else list(partitions)
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise BadInputError(
                f"the Kafka topic {topic!r} has no partition {missing}; it has {sorted(found)}."
            )
        tps += [TopicPartition(topic, p) for p in wanted]
    first = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    if start_timestamp_ms is not None:
        try:
            found = consumer.offsets_for_times({tp: start_timestamp_ms for tp in tps})
        except Exception:  # UnsupportedVersionError and the like: search the records
            found = {}
        begin = {
            tp: found[tp].offset
            if found.get(tp) is not None
            else _first_at_or_after(consumer, tp, first[tp], end[tp], start_timestamp_ms)
            for tp in tps
        }
    elif start == "earliest":
        begin = dict(first)
    elif start == "latest":
        begin = dict(end)
    elif start == "committed":  # where the consumer group stands; earliest where it has none
        if consumer.config["group_id"] is None:
            raise BadInputError(_NO_GROUP)
        begin = {tp: max(first[tp], min(consumer.committed(tp) or 0, end[tp])) for tp in tps}
    elif isinstance(start, Mapping):
        begin = {}
        for tp in tps:
            offset = start.get((tp.topic, tp.partition), start.get(tp.partition))
            if offset is None:  # e.g. a partition added since a checkpoint was written
                offset = first[tp]
            if not first[tp] <= offset <= end[tp]:
                raise BadInputError(
                    f"start offset {offset} of {tp.topic!r} partition {tp.partition} is "
                    f"outside the log's [{first[tp]}, {end[tp]}]."
                )
            begin[tp] = int(offset)
    else:
        raise BadInputError(
            "The 'start' parameter of ReadKafka must be 'earliest', 'latest' or a mapping "
            f"of partitions to offsets. Got {start!r} instead."
        )
    return [_Partition(tp.topic, tp.partition, begin[tp], end[tp]) for tp in tps]


_NO_GROUP = "start='committed' needs a consumer group: consumer_config={'group_id': NAME}."


def _commit_offsets(consumer: Any, offsets: Mapping[tuple[str, int], int]) -> None:
    """Store ``offsets`` as the committed offsets of ``consumer``'s group."""
    from kafka import TopicPartition

    tps = [TopicPartition(topic, partition) for topic, partition in offsets]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, offsets[(tp.topic, tp.partition)])
    consumer.commit()  # the positions just set (portable across kafka-python 2 and 3)


def _record_at(consumer: Any, tp: Any, offset: int) -> Any:
    """The first record at or after ``offset`` (one exists: ``offset`` < the end)."""
    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + _PEEK_SECONDS
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=_POLL_MS, max_records=1).get(tp, []):
            if record.offset >= offset:
                return record
    raise BadInputError(f"no record of {tp.topic!r}/{tp.partition} arrived at offset {offset}.")


def _first_at_or_after(consumer: Any, tp: Any, lo: int, hi: int, timestamp_ms: int) -> int:
    """The offset of the first record with a timestamp >= ``timestamp_ms`` in ``[lo,
    hi)``, or ``hi``: a binary search over the records' own timestamps, for brokers
    that do not answer timestamp lookups (ListOffsets v1) although their records carry
    timestamps. Records are assumed in timestamp order, as with CreateTime producers."""
    found = hi
    while lo < hi:
        mid = (lo + hi) // 2
        record = _record_at(consumer, tp, mid)
        if record.offset >= hi:  # no record in [mid, hi) (compaction, markers)
            hi = mid
        elif record.timestamp is None or record.timestamp < 0:
            raise BadInputError(
                f"the records of {tp.topic!r} carry no timestamps (Kafka < 0.10): "
                "start=timestamp cannot apply; start at offsets instead."
            )
        elif record.timestamp >= timestamp_ms:
            found, hi = record.offset, mid
        else:
            lo = record.offset + 1
    return found


def _peek(consumer: Any, parts: Sequence[_Partition]) -> bytes | None:
    """The value of the first record to be read (to count its fields), or None."""
    from kafka import TopicPartition

    for part in parts:
        if part.start >= part.end:
            continue
        tp = TopicPartition(part.topic, part.partition)
        consumer.assign([tp])
        consumer.seek(tp, part.start)
        deadline = time.monotonic() + _PEEK_SECONDS
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=_POLL_MS, max_records=50).get(tp, []):
                if record.value is not None and record.value.strip():
                    return bytes(record.value)
            if consumer.position(tp) >= part.end:
                break
    return None


def _within(fn: Any, seconds: float, what: str) -> Any:
    """``fn()``, or BadInputError after ``seconds``: some kafka-python metadata calls
    wait without a timeout, and construction must not hang on an unreachable broker."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="beam_ml-kafka-plan", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise BadInputError(f"{what} did not answer within {seconds:.0f} s.")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ------------------------------------------------------------------ the reading DoFn


class _OffsetsProvider(RestrictionProvider):
    def initial_restriction(self, part: _Partition) -> OffsetRange:
        return OffsetRange(part.start, part.end)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, part: _Partition, restriction: OffsetRange) -> int:
        return restriction.size()

    def split(self, part: _Partition, restriction: OffsetRange) -> Iterator[OffsetRange]:
        if part.end >= _UNBOUNDED:
            return iter([restriction])  # an endless partition is read in order by one reader
        # Long partitions are read by several workers at once.
        return restriction.split(_CHUNK_OFFSETS, _CHUNK_OFFSETS // 4)


class _ReadPartitionFn(PartReadFn):
    """Reads one offset range of one partition into blocks, bad records and positions."""

    def setup(self) -> None:
        super().setup()
        self._consumer = _consumer(self._spec)

    def teardown(self) -> None:
        self._consumer.close()

    def _flush(
        self, part: _Partition, offsets: list[int], values: list[Any], stamps: list[int]
    ) -> Iterator[Any]:
        event_time = None
        if part.end >= _UNBOUNDED:  # event time: the block's first record's timestamp
            event_time = stamps[0] / 1000 if stamps[0] >= 0 else time.time()
        yield from self._decoded(_source(part.topic, part.partition), offsets, values, event_time)
        yield TaggedOutput(
            POSITIONS,
            {"topic": part.topic, "partition": part.partition, "offset": offsets[-1] + 1},
        )

    def process(
        self,
        part: _Partition,
        tracker: Any = beam.DoFn.RestrictionParam(_OffsetsProvider()),
    ) -> Iterator[Any]:
        yield from self._read(part, tracker, None, {})

    def _read(
        self, part: _Partition, tracker: Any, deadline: float | None, claimed: dict[str, int]
    ) -> Iterator[Any]:
        """Bounded (``part.end`` < ``_UNBOUNDED``): read up to the restriction's stop.
        Unbounded: read for about ``max_block_seconds``, then hand the rest of the
        restriction back to the runner (``defer_remainder``) so the bundle, and the
        blocks read in it, commit; finish at the wall-clock ``deadline`` if any.
        ``claimed['next']`` is set to the offset after the last record claimed."""
        from kafka import TopicPartition

        unbounded = part.end >= _UNBOUNDED
        span = tracker.current_restriction()
        if span.start >= span.stop:
            return
        tp = TopicPartition(part.topic, part.partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, span.start)
        offsets: list[int] = []
        values: list[Any] = []
        stamps: list[int] = []
        began = idle_since = time.monotonic()
        opened = began  # when the open block's first record arrived
        while True:
            records = self._consumer.poll(
                timeout_ms=_POLL_MS, max_records=self._spec.records.block_size
            ).get(tp, [])
            now = time.monotonic()
            if records:
                idle_since = now
            for record in records:
                if record.offset < span.start:
                    continue
                if not tracker.try_claim(record.offset):
                    if offsets:
                        yield from self._flush(part, offsets, values, stamps)
                    return
                claimed["next"] = record.offset + 1
                if not offsets:
                    opened = now
                offsets.append(record.offset)
                values.append(record.value)
                stamps.append(record.timestamp)
                if len(offsets) >= self._spec.records.block_size:
                    yield from self._flush(part, offsets, values, stamps)
                    offsets, values, stamps = [], [], []
            if offsets and now - opened >= self._spec.max_block_seconds:
                yield from self._flush(part, offsets, values, stamps)
                offsets, values, stamps = [], [], []
            stop = tracker.current_restriction().stop  # smaller after a dynamic split
            if unbounded:
                if deadline is not None and time.time() >= deadline:
                    tracker.try_claim(stop)  # the end of this read: the restriction is done
                    if offsets:
                        yield from self._flush(part, offsets, values, stamps)
                    return
                if now - began >= self._spec.max_block_seconds:
                    if offsets:
                        yield from self._flush(part, offsets, values, stamps)
                    tracker.defer_remainder()
                    return
                continue
            if self._consumer.position(tp) >= stop:
                # The range is read; offsets missing at its end (compaction, transaction
                # markers) are claimed as done here.
                tracker.try_claim(stop)
                if offsets:
                    yield from self._flush(part, offsets, values, stamps)
                return
            if now - idle_since > self._spec.idle_timeout:
                raise BadInputError(
                    f"no record arrived from {_source(part.topic, part.partition)} for "
                    f"{self._spec.idle_timeout:.0f} s, though offsets up to {stop} "
                    f"remain to be read (position {self._consumer.position(tp)})."
                )


class _ReadPartitionUnboundedFn(_ReadPartitionFn):
    """The same on restrictions ``[start, end of time)``; blocks carry their first
    record's timestamp, and the watermark follows them."""

    def __init__(
        self, spec: _Spec, dead_letters: bool, deadline: float | None, commit_offsets: bool
    ):
        super().__init__(spec, dead_letters)
        self._deadline = deadline
        self._commit_offsets = commit_offsets

    def setup(self) -> None:
        super().setup()
        self._committer: Any = None  # a consumer of its own: finalization runs on other threads
        self._commit_lock = threading.Lock()

    def teardown(self) -> None:
        super().teardown()
        if self._committer is not None:
            self._committer.close()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        part: _Partition,
        # before the restriction and watermark parameters: Beam passes those by name and
        # places this one by position
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: Any = beam.DoFn.RestrictionParam(_OffsetsProvider()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(EventTimeWatermark()),
    ) -> Iterator[Any]:
        claimed: dict[str, int] = {}
        yield from self._read(part, tracker, self._deadline, claimed)
        if self._commit_offsets and "next" in claimed:
            # Called once the runner has made this bundle durable (on Flink: when the
            # checkpoint holding its output and the rest of the range completed).
            offsets = {(part.topic, part.partition): claimed["next"]}
            finalizer.register(lambda: self._commit(offsets))

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        with self._commit_lock:
            if self._committer is None:
                self._committer = _consumer(self._spec)
            _commit_offsets(self._committer, offsets)


# ------------------------------------------------------------------------ public API


class ReadKafka(PartitionedReader):
    """Read Kafka topics, from a start position up to their end at construction, into
    a PCollection of blocks.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        ``host:port`` of one or more brokers (a string may list several, with commas).
    topics : str or list of str
    format : {'csv', 'jsonl', 'libsvm'}
        What each record value holds: one CSV line (no header), one JSON array or object
        (with a ``features_key`` array), or one LIBSVM line.
    partitions : list of int, optional
        Partitions to read (of every topic); default all.
    start : {'earliest', 'latest', 'committed'} or mapping, default 'earliest'
        Where to start: the oldest record kept, the end (nothing now, in bounded mode),
        the offsets committed by the consumer group ``consumer_config['group_id']``
        (see :meth:`commit`; the earliest where it committed none), or offsets by
        partition (``{0: 120, 1: 98}``, or ``{(topic, 0): 120}``), e.g. a checkpoint's
        ``end_offsets``; partitions not listed start at the earliest.
    start_timestamp_ms : int, optional
        Start at each partition's first record with a timestamp at or after this (ms
        since the epoch; needs a broker of version 0.10.1 or later). Overrides ``start``.
    label_column : int or str, optional
        CSV: field index; JSON: element index or key (``'label'`` when present).
    delimiter : str, default ','
    feature_dim : int, optional
        Features per row. Required for LIBSVM; otherwise counted from the first record.
    zero_based : bool, default False
        LIBSVM indices start at 0.
    features_key : str, default 'features'
    block_size : int, default 10_000
        Most rows per block.
    max_block_seconds : float, default 1.0
        A block is emitted once its first row has waited this long, full or not.
    api_version : tuple of int, optional
        The broker protocol version (``(0, 9)``, ``(2, 3, 0)``); default: probed.
    consumer_config : dict, optional
        More ``kafka.KafkaConsumer`` options (security, timeouts).
    idle_timeout : float, default 60
        Fail if no record arrives for this long while a range is unfinished.
    connect_timeout : float, default 60
        Fail construction if the brokers have not told the partitions, offsets and
        first record by then (an unreachable broker).
    unbounded : bool, default False
        Keep reading new records after the end offsets at construction: the result is
        an unbounded PCollection whose blocks are timestamped with their first record's
        timestamp (the watermark follows them). Each partition is read by one reader,
        which hands its remaining range back to the runner about every
        ``max_block_seconds``, so what was read commits. On the DirectRunner use one
        worker (Beam 2.77 drops a deferred remainder with ``direct_num_workers >= 2``).
    stop_after_seconds : float, optional
        Unbounded reads: stop this long after the pipeline is built (else never).
    commit_offsets : bool, default False
        Unbounded reads: once the runner has made a bundle durable (bundle finalization;
        on Flink, when the checkpoint holding it completed), commit the next offset of
        its partition to the consumer group ``consumer_config['group_id']``, so the
        group's lag shows the progress and ``start='committed'`` resumes there. The
        stream's own position is the runner's checkpoint, not these commits.
    strict : bool, default False
        Stop at the first bad record.

    Attributes
    ----------
    n_features : int or None
        From ``feature_dim`` or the first record; None if there is nothing to read.
    start_offsets, end_offsets : dict of (topic, partition) -> int
        The offsets read are ``[start, end)`` of each partition.

    Positions (``with_positions()``): after each block, ``{'topic', 'partition',
    'offset'}`` with the next offset to read.

    Raises
    ------
    BadInputError
        At construction: an unknown topic or partition, a start offset outside the log,
        a first record that does not parse, a missing ``feature_dim`` for LIBSVM.
    """

    PARTS = "Partitions"
    parse_url = staticmethod(parse_kafka_url)

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topics: str | Sequence[str],
        format: str,
        *,
        partitions: Sequence[int] | None = None,
        start: str | Mapping[Any, int] = "earliest",
        start_timestamp_ms: int | None = None,
        api_version: tuple[int, ...] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        idle_timeout: float = 60.0,
        connect_timeout: float = 60.0,
        commit_offsets: bool = False,
        **options: Any,
    ):
        # decoding, max_block_seconds, unbounded, stop_after_seconds: PartitionedReader's
        super().__init__(format, **options)
        if isinstance(bootstrap_servers, str):
            bootstrap_servers = bootstrap_servers.split(",")  # 'host:port,host:port'
        servers = [server.strip() for server in bootstrap_servers if server.strip()]
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        spec = _Spec(
            bootstrap_servers=tuple(servers),
            api_version=None if api_version is None else tuple(api_version),
            consumer_config=tuple(sorted((consumer_config or {}).items())),
            records=None,
            max_block_seconds=self._max_block_seconds,
            idle_timeout=float(idle_timeout),
        )
        # A first record tells the width of a dense format's records; LIBSVM's indices do.
        peeks = formats.get(format).dense

        def plan() -> tuple[list[_Partition], bytes | None]:
            try:
                consumer = _consumer(spec)
            except BadInputError:
                raise
            except Exception as exc:  # NoBrokersAvailable and friends
                raise BadInputError(f"cannot reach the Kafka brokers {servers}: {exc}") from None
            try:
                parts = _resolve_partitions(
                    consumer, topic_list, partitions, start, start_timestamp_ms
                )
                return parts, _peek(consumer, parts) if peeks else None
            finally:
                consumer.close()

        self._parts, first = _within(plan, connect_timeout, f"the Kafka brokers {servers}")
        self._ends_at_start = {(p.topic, p.partition): p.end for p in self._parts}
        if commit_offsets and not self._unbounded:
            raise BadInputError(
                "commit_offsets applies to unbounded=True reads only (a bounded read "
                "commits with ReadKafka.commit() once its pipeline has run)."
            )
        if commit_offsets and dict(spec.consumer_config).get("group_id") is None:
            raise BadInputError(
                "commit_offsets needs a consumer group: consumer_config={'group_id': NAME}."
            )
        self._commit_offsets = commit_offsets
        if self._unbounded:
            self._parts = [replace(p, end=_UNBOUNDED) for p in self._parts]
        self._spec = replace(spec, records=self._settle(first))

    @property
    def start_offsets(self) -> dict[tuple[str, int], int]:
        return {(p.topic, p.partition): p.start for p in self._parts}

    @property
    def end_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self._ends_at_start)

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Store ``offsets`` (default ``end_offsets``: all read, once a bounded read's
        pipeline has run) as the committed offsets of the consumer group
        ``consumer_config['group_id']``, where ``start='committed'`` resumes."""
        if dict(self._spec.consumer_config).get("group_id") is None:
            raise BadInputError(_NO_GROUP)
        offsets = self.end_offsets if offsets is None else offsets
        consumer = _consumer(self._spec)
        try:
            _commit_offsets(consumer, offsets)
        finally:
            consumer.close()

    def _reading_fn(self) -> _ReadPartitionFn:
        if self._unbounded:
            return _ReadPartitionUnboundedFn(
                self._spec, self._with_dead_letters, self._deadline(), self._commit_offsets
            )
        return _ReadPartitionFn(self._spec, self._with_dead_letters)


# --------------------------------------------------------------------------- KafkaFeed
# Continuous training's feed (beam_ml.transforms.continuous), beside the reader whose
# consumer and partition resolution it shares.


class KafkaFeed(FetchingFeed):
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

    KIND = "kafka"

    def __init__(self, url: str, format: str, *, max_records: int = 200_000, **decode_options):
        self._url = parse_kafka_url(url)
        super().__init__(url, format, max_records=max_records, **decode_options)
        self._starts: dict[str, int] = {}

    def _consumer(self) -> Any:
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
        self._spawn(self._fetch, consumer)

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

    def _after(self, positions: dict[str, Any]) -> dict[str, Any]:
        return {**self._starts, **positions}

    def take(self, positions: dict[str, Any]) -> Take | None:
        buffer, after = self._drain(positions)
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
        return self._take(groups, after)
