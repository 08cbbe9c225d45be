"""Reading Amazon Kinesis data streams with boto3: ``ReadKinesis`` and ``KinesisFeed``.

A pure-Python Beam source with the block and dead-letter interface of
:class:`~beam_ml.io.kafka.ReadKafka`. Each record's data is one row (a CSV line, a JSON
object or array, a LIBSVM line: :mod:`beam_ml.io.records`); rows are grouped into
blocks of at most ``block_size`` rows of one shard. An undecodable record is a bad
record with ``file`` = ``'kinesis://stream/shardId-...'`` and ``offset`` = its sequence
number (a string of digits).

Positions: where each shard stands, ``{shard id: position}``, where a position is the
sequence number of the last record read (digits), ``'trim_horizon'`` or
``'at_timestamp:MS'`` (nothing read yet: start there), or ``'drained'`` (a closed shard
read to its end). ``start='latest'`` is fixed at construction as ``at_timestamp`` of
that moment, so that a position always names the same records. A checkpoint stores the
positions after the records it holds (``source_positions``); a run started from them
(``positions=``) reads each shard after its last record read, the shards created since
(children of a shard in the positions) from their start, and neither loses nor repeats
a record.

Resharding: a split or merged shard is closed, keeps its records until they expire, and
its children (``ParentShardId``, ``AdjacentParentShardId``) take the new ones. A child
is read only once its parents are drained, so the records of one partition key come in
order. The shards are read by *families* (shards linked by parenthood, the unit of the
splittable DoFn): one reader reads a family's shards, parents first; different families
are read in parallel. The restriction of a family is its positions: an unbounded read
hands the rest back to the runner (``defer_remainder``) about every
``max_block_seconds`` with the positions reached, and adopts the children of a shard it
drains (a merge across two families is followed by the family of its ``ParentShardId``;
its ``AdjacentParentShardId`` may then still be read by the other family's reader).

A bounded read ends each shard where it has caught up (``GetRecords`` answers no record
and ``MillisBehindLatest`` 0) or at the end of a closed shard; what it read is only
known once it has run: ``with_positions()`` returns the positions after each block, and
:class:`LatestPositions` reduces them to the positions a next run starts from.

Connection: ``endpoint_url`` and ``region_name`` (or the URL's ``endpoint`` and
``region``), else boto3's own settings (``AWS_ENDPOINT_URL_KINESIS``,
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, credentials chain).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.core import RestrictionProvider

from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.feeds import FetchingFeed, Take
from beam_ml.io.readers import POSITIONS, EventTimeWatermark, PartitionedReader, PartReadFn
from beam_ml.io.records import RecordSpec

__all__ = [
    "DRAINED",
    "KinesisFeed",
    "LatestPositions",
    "ReadKinesis",
    "latest_positions",
    "parse_kinesis_url",
]

#: The position of a closed shard read to its end.
DRAINED = "drained"
_STARTS = ("trim_horizon", "latest")
# between GetRecords rounds that had nothing new (Kinesis allows 5 a second per shard)
_POLL_SECONDS = 0.25
_PEEK_CALLS = 20
_log = logging.getLogger("beam_ml.io")


@dataclass(frozen=True)
class _Spec:
    """What a worker needs: connection, decoding and batching, resolved once."""

    stream: str
    endpoint_url: str | None
    region_name: str | None
    records: RecordSpec | None
    max_block_seconds: float = 1.0


@dataclass(frozen=True)
class _Family:
    """Shards linked by parenthood, read by one reader parents first: ``shards`` holds
    ``(shard id, parent ids, position)``. It is also the restriction: the positions."""

    shards: tuple[tuple[str, tuple[str, ...], str], ...]
    closed: frozenset[str] = frozenset()  # shards closed at construction: read to their end
    done: bool = False  # a primary after a split: nothing left to read

    def positions(self) -> dict[str, str]:
        return {shard: position for shard, _, position in self.shards}


def parse_kinesis_url(url: str) -> dict[str, Any]:
    """``kinesis://stream[?options]`` -> ``ReadKinesis`` arguments.

    Options: ``start`` (``trim_horizon``, default; ``latest``; ``at_timestamp:MS``),
    ``endpoint`` (``http://127.0.0.1:4567``), ``region``.

    >>> parse_kinesis_url("kinesis://events?start=at_timestamp:1700000000000&region=eu-west-1")
    {'stream': 'events', 'start': 'at_timestamp', 'start_timestamp_ms': 1700000000000, \
'region_name': 'eu-west-1'}
    """
    parts = urllib.parse.urlsplit(url)
    stream = parts.netloc + parts.path.rstrip("/")
    if parts.scheme != "kinesis" or not stream or "/" in stream:
        raise BadInputError(
            f"a Kinesis input is kinesis://stream[?start=trim_horizon]; got {url!r}."
        )
    out: dict[str, Any] = {"stream": stream}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "start":
            if value in _STARTS:
                out["start"] = value
            elif value.startswith("at_timestamp:") and value[13:].isdigit():
                out["start"], out["start_timestamp_ms"] = "at_timestamp", int(value[13:])
            else:
                raise BadInputError(
                    "start must be trim_horizon, latest or at_timestamp:MS (milliseconds "
                    f"since the epoch); got {value!r} in {url!r}."
                )
        elif key == "endpoint":
            out["endpoint_url"] = value
        elif key == "region":
            out["region_name"] = value
        else:
            raise BadInputError(
                f"unknown Kinesis URL option {key!r} in {url!r}; the options are start, "
                "endpoint and region."
            )
    return out


def _client(endpoint_url: str | None, region_name: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=10)
    return boto3.session.Session().client(
        "kinesis", endpoint_url=endpoint_url, region_name=region_name, config=config
    )


def _list_shards(client: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard of ``stream`` still holding records (closed ones too)."""
    shards: list[dict[str, Any]] = []
    request: dict[str, Any] = {"StreamName": stream}
    while True:
        try:
            answer = client.list_shards(**request)
        except client.exceptions.ResourceNotFoundException:
            raise BadInputError(f"the Kinesis stream {stream!r} does not exist.") from None
        shards += answer["Shards"]
        if not answer.get("NextToken"):
            return shards
        request = {"NextToken": answer["NextToken"]}


def _parents(shard: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(shard[k] for k in ("ParentShardId", "AdjacentParentShardId") if shard.get(k))


def _plan(
    shards: list[dict[str, Any]], start: str, positions: Mapping[str, str] | None
) -> dict[str, tuple[tuple[str, ...], str]]:
    """``{shard: (parents, position)}`` of every shard this read knows: the stored
    ``positions`` and shards created since (their descendants) from their start; or,
    with no positions, every shard from ``start``."""
    if not positions:
        return {s["ShardId"]: (_parents(s), start) for s in shards}
    plan: dict[str, tuple[tuple[str, ...], str]] = {}
    for shard in shards:  # ListShards lists parents before their children
        parents = _parents(shard)
        if shard["ShardId"] in positions:
            plan[shard["ShardId"]] = (parents, str(positions[shard["ShardId"]]))
        elif any(p in plan for p in parents):  # created since the positions were stored
            plan[shard["ShardId"]] = (parents, "trim_horizon")
    return plan


def _closed(shards: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(
        s["ShardId"] for s in shards if s["SequenceNumberRange"].get("EndingSequenceNumber")
    )


def _families(
    plan: Mapping[str, tuple[tuple[str, ...], str]], closed: frozenset[str]
) -> list[_Family]:
    """The plan's shards grouped by parenthood (union-find), each in plan order."""
    root = {shard: shard for shard in plan}

    def find(shard: str) -> str:
        while root[shard] != shard:
            root[shard] = root[root[shard]]
            shard = root[shard]
        return shard

    for shard, (parents, _) in plan.items():
        for parent in parents:
            if parent in plan:
                root[find(parent)] = find(shard)
    groups: dict[str, list[tuple[str, tuple[str, ...], str]]] = {}
    for shard, (parents, position) in plan.items():
        groups.setdefault(find(shard), []).append((shard, parents, position))
    return [_Family(tuple(group), closed & set(plan)) for group in groups.values()]


def _later(a: str, b: str) -> str:
    """The further of two positions of one shard."""
    if DRAINED in (a, b):
        return DRAINED
    if a.isdigit() and b.isdigit():
        return a if int(a) >= int(b) else b
    return a if a.isdigit() else b  # a record read is past any start


def latest_positions(positions: Any, start: Mapping[str, str] | None = None) -> dict[str, str]:
    """The furthest position of every shard among ``positions`` (dicts of
    ``with_positions()``, ``{'shard', 'position'}``) and ``start`` (a read's
    ``start_positions``): where a next run starts."""
    reduce = _LatestFn(start or {})
    reached = reduce.create_accumulator()
    for item in positions:
        reached = reduce.add_input(reached, item)
    return reached


class LatestPositions(beam.PTransform):
    """The positions output of ``ReadKinesis.with_positions()`` -> one dict, the
    furthest position of every shard (``start`` for the shards that yielded none)."""

    def __init__(self, start: Mapping[str, str]):
        super().__init__()
        self._start = dict(start)

    def expand(self, positions: beam.PCollection) -> beam.PCollection:
        return positions | "Latest" >> beam.CombineGlobally(_LatestFn(self._start))


class _LatestFn(beam.CombineFn):
    def __init__(self, start: Mapping[str, str]):
        self._start = dict(start)

    def create_accumulator(self) -> dict[str, str]:
        return dict(self._start)

    def add_input(self, reached: dict[str, str], item: dict[str, str]) -> dict[str, str]:
        shard, position = item["shard"], item["position"]
        reached[shard] = _later(reached.get(shard, position), position)
        return reached

    def merge_accumulators(self, accumulators: Any) -> dict[str, str]:
        merged: dict[str, str] = {}
        for reached in accumulators:
            for shard, position in reached.items():
                merged[shard] = _later(merged.get(shard, position), position)
        return merged

    def extract_output(self, reached: dict[str, str]) -> dict[str, str]:
        return reached


# ----------------------------------------------------------------- reading shards


class _ShardWalker:
    """Reads shards with GetRecords from their positions, parents before children.

    ``state`` is ``{shard: (parents, position)}``; :meth:`ready` lists the shards whose
    parents (those in ``state``) are drained, :meth:`fetch` reads the next records of one.
    With ``adopt``, the children of a shard drained are added to ``state``, from their
    start (the merge child of two shards only by the reader of its ``ParentShardId``).
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        state: Mapping[str, Any],
        adopt: bool,
        closed: frozenset[str] = frozenset(),
    ):
        self.client, self.stream, self.adopt, self.closed = client, stream, adopt, closed
        self.state: dict[str, tuple[tuple[str, ...], str]] = dict(state)
        self._iterators: dict[str, str] = {}

    def ready(self) -> list[str]:
        state = self.state
        return [
            shard
            for shard, (parents, position) in state.items()
            if position != DRAINED and all(state[p][1] == DRAINED for p in parents if p in state)
        ]

    def _iterator(self, shard: str) -> str:
        position = self.state[shard][1]
        request: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard}
        if position.isdigit():
            request.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                           StartingSequenceNumber=position)  # fmt: skip
        elif position.startswith("at_timestamp:"):
            request.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=int(position[13:]) / 1000)
        else:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        return self.client.get_shard_iterator(**request)["ShardIterator"]

    def fetch(self, shard: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """``(records, caught_up)``: the next records of ``shard`` (its position moves
        to the last), and whether it has none more for now (or ever: drained)."""
        errors = self.client.exceptions
        for attempt in range(8):
            iterator = self._iterators.get(shard) or self._iterator(shard)
            try:
                answer = self.client.get_records(ShardIterator=iterator, Limit=limit)
                break
            except errors.ExpiredIteratorException:
                self._iterators.pop(shard, None)
            except errors.ProvisionedThroughputExceededException:
                self._iterators[shard] = iterator
                time.sleep(0.2 * 2**attempt)
        else:
            raise BadInputError(f"GetRecords of {_source(self.stream, shard)} kept failing.")
        records = answer["Records"]
        parents, position = self.state[shard]
        if records:
            position = records[-1]["SequenceNumber"]
        following = answer.get("NextShardIterator")
        if following is None:  # the end of a closed shard
            self.state[shard] = (parents, DRAINED)
            self._iterators.pop(shard, None)
            if self.adopt:
                self._adopt_children(shard)
            return records, True
        self.state[shard] = (parents, position)
        self._iterators[shard] = following
        # a closed shard may answer no record before its end: it is read until that end
        caught_up = not records and not answer.get("MillisBehindLatest")
        return records, caught_up and shard not in self.closed

    def _adopt_children(self, shard: str) -> None:
        for child in _list_shards(self.client, self.stream):
            parents = _parents(child)
            if child["ShardId"] not in self.state and parents and parents[0] in self.state:
                self.state[child["ShardId"]] = (parents, "trim_horizon")

    def peek(self, dense: bool) -> bytes | None:
        """The data of the first non-empty record to be read (to count its fields),
        without moving the positions; None if none comes in a few calls."""
        if not dense:
            return None
        saved = dict(self.state)
        try:
            for _ in range(_PEEK_CALLS):
                ready = self.ready()
                if not ready:
                    return None
                for shard in ready:
                    records, _ = self.fetch(shard, 100)
                    for record in records:
                        if record["Data"].strip():
                            return bytes(record["Data"])
        finally:
            self.state, self._iterators = saved, {}
        return None


def _source(stream: str, shard: str) -> str:
    return f"kinesis://{stream}/{shard}"


class _FamilyTracker(RestrictionTracker):
    """Claims ``(shard, parents, position)`` moves; splits only at the current
    positions (a checkpoint: ``defer_remainder`` or the runner's)."""

    def __init__(self, family: _Family, bounded: bool):
        self._family, self._bounded = family, bounded
        self._claimed = {shard: (shard, parents, pos) for shard, parents, pos in family.shards}
        self._stopped = family.done

    def current_restriction(self) -> _Family:
        return self._family

    def try_claim(self, move: tuple[str, tuple[str, ...], str]) -> bool:
        if self._stopped:
            return False
        self._claimed[move[0]] = move
        return True

    def try_split(self, fraction_of_remainder: float) -> Any:
        if self._stopped or fraction_of_remainder != 0:
            return None
        self._stopped = True
        reached = replace(self._family, shards=tuple(self._claimed.values()))
        return replace(reached, done=True), reached

    def check_done(self) -> None:
        pass  # a bounded family ends where its shards caught up; an unbounded one, never

    def current_progress(self) -> RestrictionProgress:
        left = sum(pos != DRAINED for _, _, pos in self._claimed.values())
        return RestrictionProgress(completed=len(self._claimed) - left, remaining=left)

    def is_bounded(self) -> bool:
        return self._bounded


class _FamiliesProvider(RestrictionProvider):
    def __init__(self, bounded: bool):
        self._bounded = bounded

    def initial_restriction(self, family: _Family) -> _Family:
        return family

    def create_tracker(self, restriction: _Family) -> _FamilyTracker:
        return _FamilyTracker(restriction, self._bounded)

    def restriction_size(self, family: _Family, restriction: _Family) -> int:
        return 0 if restriction.done else len(restriction.shards)

    def split(self, family: _Family, restriction: _Family) -> Iterator[_Family]:
        yield restriction  # a family is read in order by one reader


class _ReadFamilyFn(PartReadFn):
    """Reads one family of shards into blocks, bad records and positions."""

    def __init__(self, spec: _Spec, dead_letters: bool, bounded: bool = True):
        super().__init__(spec, dead_letters)
        self._bounded = bounded

    def setup(self) -> None:
        super().setup()
        self._client = _client(self._spec.endpoint_url, self._spec.region_name)

    def process(
        self, family: _Family, tracker: Any = beam.DoFn.RestrictionParam(_FamiliesProvider(True))
    ) -> Iterator[Any]:
        yield from self._read(tracker, None)

    def _flush(self, shard: str, records: list[dict[str, Any]]) -> Iterator[Any]:
        # event time (unbounded): the block's first record's arrival
        arrived = None if self._bounded else records[0]["ApproximateArrivalTimestamp"].timestamp()
        ids, values = [r["SequenceNumber"] for r in records], [r["Data"] for r in records]
        yield from self._decoded(_source(self._spec.stream, shard), ids, values, arrived)

    def _read(self, tracker: Any, deadline: float | None) -> Iterator[Any]:
        """Bounded: read each shard, parents first, to its end or until caught up.
        Unbounded: read the ready shards in turn for about ``max_block_seconds``, then
        hand the rest back to the runner; finish at the wall-clock ``deadline``."""
        family = tracker.current_restriction()
        if family.done:
            return
        spec = self._spec
        walker = _ShardWalker(
            self._client, spec.stream, {s: (p, pos) for s, p, pos in family.shards},
            adopt=not self._bounded, closed=family.closed,
        )  # fmt: skip
        size = spec.records.block_size
        held: dict[str, list[dict[str, Any]]] = {}
        opened: dict[str, float] = {}
        caught_up: set[str] = set()
        known = set(walker.state)
        began = time.monotonic()

        def flush(shard: str) -> Iterator[Any]:
            records = held.pop(shard, [])
            opened.pop(shard, None)
            if records:
                yield from self._flush(shard, records)
            yield TaggedOutput(POSITIONS, {"shard": shard, "position": walker.state[shard][1]})

        while True:
            fetched = False
            for shard in walker.ready():
                if shard in caught_up and self._bounded:
                    continue
                records, at_end = walker.fetch(shard, size)
                position = walker.state[shard][1]
                # the shard's move, and the children it let in (so a checkpoint keeps them)
                moves = [shard, *(s for s in walker.state if s not in known)]
                if not all(tracker.try_claim((s, *walker.state[s])) for s in moves):
                    for rest in list(held):
                        yield from flush(rest)
                    return
                known.update(moves)
                if at_end:
                    caught_up.add(shard)
                if records:
                    fetched = True
                    opened.setdefault(shard, time.monotonic())
                    held.setdefault(shard, []).extend(records)
                if len(held.get(shard, ())) >= size or position == DRAINED:
                    yield from flush(shard)
            now = time.monotonic()
            for shard in [s for s, t in opened.items() if now - t >= spec.max_block_seconds]:
                yield from flush(shard)
            if self._bounded:
                if all(s in caught_up for s in walker.ready()):
                    for shard in list(held):
                        yield from flush(shard)
                    return
            else:
                if not walker.ready() or (deadline is not None and time.time() >= deadline):
                    # nothing left (every shard drained, children read elsewhere), or the end
                    for shard in list(held):
                        yield from flush(shard)
                    return
                if now - began >= spec.max_block_seconds:
                    for shard in list(held):
                        yield from flush(shard)
                    tracker.defer_remainder()
                    return
            if not fetched:
                time.sleep(_POLL_SECONDS)


class _ReadFamilyUnboundedFn(_ReadFamilyFn):
    """The same without an end: blocks carry their first record's arrival time, and
    the watermark follows them."""

    def __init__(self, spec: _Spec, dead_letters: bool, deadline: float | None):
        super().__init__(spec, dead_letters, bounded=False)
        self._deadline = deadline

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        family: _Family,
        tracker: Any = beam.DoFn.RestrictionParam(_FamiliesProvider(False)),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(EventTimeWatermark()),
    ) -> Iterator[Any]:
        yield from self._read(tracker, self._deadline)


# ------------------------------------------------------------------------ public API


class ReadKinesis(PartitionedReader):
    """Read a Kinesis data stream into a PCollection of blocks.

    Parameters
    ----------
    stream : str
        The stream's name.
    format : {'csv', 'jsonl', 'libsvm'}
        What each record's data holds: one CSV line (no header), one JSON array or
        object (with a ``features_key`` array), or one LIBSVM line.
    start : {'trim_horizon', 'latest', 'at_timestamp'}, default 'trim_horizon'
        Where shards with no stored position start: the oldest record kept, the end
        at construction, or the first record that arrived at or after
        ``start_timestamp_ms`` (ms since the epoch).
    positions : dict, optional
        ``{shard id: position}`` of a previous read (a checkpoint's
        ``source_positions``): each shard goes on after its last record read; shards
        created since then (children of those) start at their oldest record.
    endpoint_url, region_name : str, optional
        The Kinesis endpoint and region (default: boto3's configuration).
    label_column, delimiter, feature_dim, zero_based, features_key, block_size, strict
        As :class:`~beam_ml.io.kafka.ReadKafka`.
    max_block_seconds : float, default 1.0
        A block is emitted once its first row has waited this long, full or not; an
        unbounded read hands its remaining positions back to the runner this often.
    unbounded : bool, default False
        Keep reading new records, following resharding: an unbounded PCollection of
        blocks timestamped with their first record's arrival time.
    stop_after_seconds : float, optional
        Unbounded reads: stop this long after the pipeline is built (else never).

    Attributes
    ----------
    n_features : int or None
    start_positions : dict of shard id -> position
        Where every shard this read knows starts.

    Positions (``with_positions()``): after each block (and each shard drained),
    ``{'shard', 'position'}``; :class:`LatestPositions` reduces them.

    Raises
    ------
    BadInputError
        At construction: an unknown stream, a first record that does not parse, a
        missing ``feature_dim`` for LIBSVM, bad options.
    """

    PARTS = "Shards"
    parse_url = staticmethod(parse_kinesis_url)

    def __init__(
        self,
        stream: str,
        format: str,
        *,
        start: str = "trim_horizon",
        start_timestamp_ms: int | None = None,
        positions: Mapping[str, str] | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        **options: Any,
    ):
        # decoding, max_block_seconds, unbounded, stop_after_seconds: PartitionedReader's
        super().__init__(format, **options)
        client = _client(endpoint_url, region_name)
        first_start = _start_position(start, start_timestamp_ms)
        shards = _list_shards(client, stream)
        plan = _plan(shards, first_start, positions)
        self._start_positions = {shard: pos for shard, (_, pos) in plan.items()}
        self._parts = _families(plan, _closed(shards))
        walker = _ShardWalker(client, stream, plan, adopt=False, closed=_closed(shards))
        peek = walker.peek(formats.get(format).dense)
        records = self._settle(peek)
        self._spec = _Spec(stream, endpoint_url, region_name, records, self._max_block_seconds)

    @property
    def start_positions(self) -> dict[str, str]:
        return dict(self._start_positions)

    def _reading_fn(self) -> _ReadFamilyFn:
        if self._unbounded:
            return _ReadFamilyUnboundedFn(self._spec, self._with_dead_letters, self._deadline())
        return _ReadFamilyFn(self._spec, self._with_dead_letters)

    def _read_parts(self, pbegin: beam.pvalue.PBegin) -> Any:
        outputs = super()._read_parts(pbegin)
        # The positions, also when not returned: what a checkpoint of this read stores.
        self.positions_read = outputs[POSITIONS]
        return outputs


def _start_position(start: str, start_timestamp_ms: int | None) -> str:
    """The position of a shard that has none stored: ``latest`` is fixed as the
    moment of construction, so that a restart means the same records."""
    if start == "trim_horizon" and start_timestamp_ms is None:
        return "trim_horizon"
    if start == "latest" and start_timestamp_ms is None:
        return f"at_timestamp:{int(time.time() * 1000)}"
    if start in ("at_timestamp", "trim_horizon") and isinstance(start_timestamp_ms, int):
        return f"at_timestamp:{start_timestamp_ms}"
    raise BadInputError(
        "The 'start' parameter of ReadKinesis must be 'trim_horizon', 'latest' or "
        f"'at_timestamp' (with start_timestamp_ms). Got {start!r} instead."
    )


# ------------------------------------------------------------------------- KinesisFeed


class KinesisFeed(FetchingFeed):
    """A Kinesis stream read in cycles; positions are ``{shard id: position}``.

    A background reader (one :class:`_ShardWalker` over every shard, following
    resharding, parents first) fetches records as they arrive into a buffer of at most
    ``max_records`` (then it waits); each cycle trains on what was fetched and stores
    the positions after it with the state.

    Parameters
    ----------
    url : str
        ``kinesis://stream[?start=...&endpoint=...&region=...]``: ``start`` applies to
        the first cycle only; later cycles, and restarts, go on from the checkpoint.
    format : {'csv', 'jsonl', 'libsvm'}
    max_records : int
        Records fetched ahead of the next cycle, at most.
    **decode_options
        label_column, delimiter, feature_dim, zero_based, features_key, block_size.
    """

    KIND = "kinesis"

    def __init__(self, url: str, format: str, *, max_records: int = 200_000, **decode_options):
        self._url = parse_kinesis_url(url)
        super().__init__(url, format, max_records=max_records, **decode_options)
        self._positions: dict[str, str] = {}

    def _start(self, positions: dict[str, Any]) -> None:
        url = self._url
        client = _client(url.get("endpoint_url"), url.get("region_name"))
        start = _start_position(url.get("start", "trim_horizon"), url.get("start_timestamp_ms"))
        plan = _plan(_list_shards(client, url["stream"]), start, positions)
        self._positions = {shard: pos for shard, (_, pos) in plan.items()}
        walker = _ShardWalker(client, url["stream"], plan, adopt=True)
        self._spawn(self._fetch, walker)

    def _fetch(self, walker: _ShardWalker) -> None:
        try:
            while not self._stop.is_set():
                if self._count >= self._max:
                    time.sleep(0.05)
                    continue
                fetched = False
                for shard in walker.ready():
                    records, _ = walker.fetch(shard, 10_000)
                    fetched = fetched or bool(records)
                    with self._lock:  # the records and the positions after them, together
                        held = self._buffer.setdefault(shard, [])
                        held.extend((r["SequenceNumber"], r["Data"]) for r in records)
                        self._count += len(records)
                        self._positions.update({s: pos for s, (_, pos) in walker.state.items()})
                if not fetched:
                    self._stop.wait(_POLL_SECONDS)
        except BaseException as exc:  # reported by the next take()
            self._error = exc

    def _after(self, positions: dict[str, Any]) -> dict[str, Any]:
        return dict(self._positions)  # the reader's positions, kept with its records

    def take(self, positions: dict[str, Any]) -> Take | None:
        buffer, after = self._drain(positions)
        groups = [
            (_source(self._url["stream"], shard), [s for s, _ in held], [v for _, v in held])
            for shard, held in sorted(buffer.items())
            if held
        ]
        return self._take(groups, after)
