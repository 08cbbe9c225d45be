"""What the record sources share: ``RecordReader`` (Kafka, Kinesis, Pub/Sub) and
``PartitionedReader`` (Kafka and Kinesis).

A record source delivers one row a record (:mod:`beam_ml.io.records`). Its reader takes
the same decoding options (``label_column``, ``delimiter``, ``feature_dim``,
``zero_based``, ``features_key``, ``block_size``, ``strict``), checks them before any
network, and settles the records' shape from a first record (:meth:`RecordReader._settle`).

Kafka and Kinesis are partitioned logs read by a splittable DoFn over their parts (Kafka:
one partition's offsets; Kinesis: one family of shards, parents before children, by
sequence numbers), bounded (up to where each part stands now) or not
(``unbounded=True``: blocks in event time, the rest of a part handed back to the runner
about every ``max_block_seconds``). :class:`PartitionedReader` is that transform's common
part (options, ``from_url``, ``with_positions``, the outputs); :class:`PartReadFn` is the
DoFn's (decoding a batch of a part's records into a block, in event time when unbounded).
Each source keeps its own parts, positions and client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import apache_beam as beam
from apache_beam.io.watermark_estimators import MonotonicWatermarkEstimator
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from beam_ml.core.errors import BadInputError
from beam_ml.io.dead_letters import DEAD_LETTERS, Reader
from beam_ml.io.records import RecordDecoder, RecordSpec, check_decoding, record_spec

__all__ = ["EventTimeWatermark", "POSITIONS", "PartReadFn", "PartitionedReader", "RecordReader"]

#: Tag of the positions output.
POSITIONS = "positions"


class RecordReader(Reader):
    """A reader of records of one row each: the decoding options, checked at
    construction (the errors name the subclass), and the :class:`RecordSpec` settled
    from a first record (:meth:`_settle`).

    Parameters
    ----------
    format : {'csv', 'jsonl', 'libsvm'}
    **decoding
        ``label_column``, ``delimiter``, ``feature_dim``, ``zero_based``,
        ``features_key``, ``block_size``, ``strict``: as
        :func:`~beam_ml.io.records.record_spec`, with its defaults.
    """

    #: The decoding options a record reader takes (record_spec's, less the encodings).
    DECODING = (
        "label_column", "delimiter", "feature_dim", "zero_based", "features_key", "block_size",
        "strict",
    )  # fmt: skip

    def __init__(self, format: str, **decoding: Any):
        super().__init__()
        for name in decoding:
            if name not in self.DECODING:
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {name!r}"
                )
        check_decoding(format, decoding, type(self).__name__)
        self._format = format
        self._decoding = decoding
        self._records: RecordSpec | None = None

    def _settle(self, first_value: bytes | None) -> RecordSpec:
        """How records decode, counted from ``first_value`` (None: from ``feature_dim``)."""
        self._records = record_spec(self._format, first_value, **self._decoding)
        return self._records

    @property
    def n_features(self) -> int | None:
        return self._records.n_features

    @property
    def strict(self) -> bool:
        return self._records.strict


class PartitionedReader(RecordReader):
    """A partitioned log read by a splittable DoFn over its parts (see the module notes).

    A subclass sets ``PARTS`` (the steps' noun: ``'Partitions'`` names them
    ``ListPartitions`` and ``ReadPartitions``) and ``parse_url``, keeps its parts in
    ``_parts`` and builds its DoFn in ``_reading_fn``.

    Parameters
    ----------
    format : {'csv', 'jsonl', 'libsvm'}
    max_block_seconds : float, default 1.0
        A block is emitted once its first row has waited this long, full or not; an
        unbounded read hands the rest of a part back to the runner this often.
    unbounded : bool, default False
    stop_after_seconds : float, optional
        Unbounded reads: stop this long after the pipeline is built (else never).
    **decoding
        As :class:`RecordReader`.
    """

    PARTS: ClassVar[str]
    parse_url: ClassVar[Callable[[str], dict[str, Any]]]
    _parts: Sequence[Any]

    def __init__(
        self,
        format: str,
        *,
        max_block_seconds: float = 1.0,
        unbounded: bool = False,
        stop_after_seconds: float | None = None,
        **decoding: Any,
    ):
        super().__init__(format, **decoding)
        if not isinstance(max_block_seconds, (int, float)) or not max_block_seconds > 0:
            raise BadInputError(
                f"The 'max_block_seconds' parameter of {type(self).__name__} must be a "
                f"number > 0. Got {max_block_seconds!r} instead."
            )
        if stop_after_seconds is not None and not unbounded:
            raise BadInputError("stop_after_seconds applies to unbounded=True reads only.")
        self._max_block_seconds = float(max_block_seconds)
        self._unbounded = unbounded
        self._stop_after_seconds = stop_after_seconds
        self._with_positions = False

    @classmethod
    def from_url(cls, url: str, format: str, **options: Any) -> Any:
        """The reader of ``url`` (see the subclass's ``parse_url``); URL options win over
        ``options``."""
        return cls(**{**options, **cls.parse_url(url)}, format=format)

    def with_positions(self) -> Any:
        """Also return the positions output (:data:`POSITIONS`), where a part stands
        after each block (the subclass says in what terms): the transform then returns
        ``(blocks, positions)`` or ``(blocks, dead_letters, positions)``."""
        self._with_positions = True
        return self

    def _deadline(self) -> float | None:
        """The wall-clock end of an unbounded read (``stop_after_seconds``): the clock
        starts when the pipeline is built, just before it runs."""
        seconds = self._stop_after_seconds
        return None if seconds is None else time.time() + seconds

    def _reading_fn(self) -> PartReadFn:
        raise NotImplementedError

    def _read_parts(self, pbegin: beam.pvalue.PBegin) -> Any:
        """The reading ParDo's outputs: blocks, dead letters and positions."""
        return (
            pbegin
            | f"List{self.PARTS}" >> beam.Create(self._parts)
            | f"Read{self.PARTS}"
            >> beam.ParDo(self._reading_fn()).with_outputs(DEAD_LETTERS, POSITIONS, main="blocks")
        )

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        outputs = self._read_parts(pbegin)
        result = [outputs.blocks]
        if self._with_dead_letters:
            result.append(outputs[DEAD_LETTERS])
        if self._with_positions:
            result.append(outputs[POSITIONS])
        return result[0] if len(result) == 1 else tuple(result)


class PartReadFn(beam.DoFn):
    """The base of a DoFn reading parts: ``spec`` (its ``records`` tell how records
    decode) and :meth:`_decoded`, a batch of one part's records into bad records and
    a block. A subclass calling ``setup`` calls this one's too."""

    def __init__(self, spec: Any, dead_letters: bool):
        self._spec = spec
        self._decoder = RecordDecoder(spec.records, dead_letters)

    def setup(self) -> None:
        self._decoder.setup()

    def _decoded(
        self, source: str, ids: Sequence[Any], values: Sequence[Any], event_time: float | None
    ) -> Iterator[Any]:
        """The bad records (dead letters, or logged) and the block of the good rows,
        timestamped ``event_time`` (seconds) when given (unbounded reads)."""
        block, dead_letters = self._decoder.decode(source, ids, values)
        yield from dead_letters
        if block is not None:
            yield block if event_time is None else TimestampedValue(block, event_time)


class EventTimeWatermark(WatermarkEstimatorProvider):
    """The watermark follows the output timestamps (Beam 2.77's own
    ``MonotonicWatermarkEstimator.default_provider()`` starts from None and fails)."""

    def initial_estimator_state(self, element: Any, restriction: Any) -> Timestamp:
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, state: Timestamp) -> MonotonicWatermarkEstimator:
        return MonotonicWatermarkEstimator(state)
