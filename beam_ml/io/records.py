"""Record values (one row each) into blocks: shared by the Kafka, Kinesis and Pub/Sub readers.

A *record* is one message of a row-at-a-time source: a Kafka record's value or a Pub/Sub
message's data. Each holds one row, as one CSV line without header, one JSON array or
object (with a ``features_key`` array), or one LIBSVM line. :func:`record_spec` settles
the shape once, from the first record; :func:`decode_records` turns a batch of records
into one :class:`~beam_ml.core.block.Block` and the bad records, with the format's parser
(``formats.get(format).parse``); :class:`DecodeRecords` does it in a pipeline, batching the
records of a bundle into blocks of at most ``block_size`` rows [STYLE §1.4].

A bad record (undecodable, empty, several lines in one CSV or LIBSVM record) has the
shape of the file readers' with ``file`` = the source (``'kafka://topic/0'``,
``'pubsub://projects/P/subscriptions/S'``) and ``offset`` = the record's id (its Kafka
offset or Pub/Sub message id, as given).

Examples
--------
>>> spec = record_spec("csv", b"1.5,2,0", label_column=-1)
>>> spec.n_columns, spec.n_features, spec.label_column
(3, 2, 2)
>>> block, bad = decode_records(spec, "kafka://t/0", [7, 8], [b"1,2,1", b"1,x,0"])
>>> block.features.tolist(), block.labels.tolist()
([[1.0, 2.0]], [1.0])
>>> bad[0]["offset"], bad[0]["reason"]
(8, "field 1 ('x') is not a number")
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.dead_letters import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    DroppedLog,
    Reader,
    route_bad_records,
)
from beam_ml.io.formats.base import Plan, ReadOptions, with_hashing
from beam_ml.io.sources import (
    check_encoding_options,
    check_feature_dim,
    check_label_column,
    check_positive_ints,
)

__all__ = [
    "RECORD_FORMATS",
    "DecodeRecords",
    "RecordDecoder",
    "RecordSpec",
    "check_decoding",
    "decode_records",
    "record_spec",
]

#: Formats of a record value (the registry's formats whose records are lines).
RECORD_FORMATS = formats.record_names()

# ``route_bad_records`` describes a bad record by its ``offset``; under the "kafka"
# wording that reads "offset <id>", which fits any record id.
_DESCRIBE_AS = "kafka"

#: How to decode records, settled once by :func:`record_spec`: the reading plan
#: (:class:`~beam_ml.io.formats.base.Plan`) of a stream, whose ``n_features`` is None
#: when nothing told it yet (no first record).
RecordSpec = Plan


def check_record_options(
    format: Any,
    label_column: Any,
    delimiter: Any,
    feature_dim: Any,
    block_size: Any,
    owner: str = "record_spec",
) -> None:
    """Clear errors for the decoding options of ``owner`` (record_spec, ReadKafka ...)."""
    if format not in RECORD_FORMATS:
        raise BadInputError(
            f"The 'format' parameter of {owner} must be one of {list(RECORD_FORMATS)}. "
            f"Got {format!r} instead."
        )
    check_label_column(label_column, owner)
    formats.get(format).check_record_options(label_column, feature_dim)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise BadInputError(
            f"The 'delimiter' parameter of {owner} must be one character. "
            f"Got {delimiter!r} instead."
        )
    check_feature_dim(feature_dim, owner)
    check_positive_ints(owner, block_size=block_size)


def check_decoding(format: Any, decoding: Mapping[str, Any], owner: str) -> None:
    """:func:`check_record_options` of :func:`record_spec`'s keyword options given as a
    mapping (its defaults where absent): the feeds' and record readers' ``**decoding``."""
    option = decoding.get
    check_record_options(format, option("label_column"), option("delimiter", ","),
                         option("feature_dim"), option("block_size", 10_000), owner)  # fmt: skip


def record_spec(
    format: str,
    first_value: bytes | str | None,
    label_column: int | str | None = None,
    delimiter: str = ",",
    feature_dim: int | None = None,
    zero_based: bool = False,
    features_key: str = "features",
    block_size: int = 10_000,
    strict: bool = False,
    categorical_columns: Sequence[int | str] | str | None = None,
    missing: str = "error",
    freq: str | None = None,
) -> RecordSpec:
    """Settle how records are decoded, counting columns and features in ``first_value``.

    Parameters
    ----------
    format : {'csv', 'jsonl', 'libsvm'}
    first_value : bytes, str or None
        A record of the stream (its first). None when none is known: the feature count
        then comes from ``feature_dim`` alone.
    label_column : int or str, optional
        CSV: field index (negative counts from the end); JSON arrays: element index;
        JSON objects: key (``'label'`` by default when the first object has one).
    delimiter : str, default ','
    feature_dim : int, optional
        Features per row. Required for LIBSVM; otherwise it must match ``first_value``.
    zero_based : bool, default False
    features_key : str, default 'features'
    block_size : int, default 10_000
    strict : bool, default False
    categorical_columns : list of int or str, or a comma-separated str, optional
        Columns hashed into ``feature_dim`` columns (default 2**20), as for
        :class:`~beam_ml.io.sources.ReadBlocks`: CSV field indices (records have no
        header), JSON element indices, keys or features-array indices. Needs a first
        record (it tells the record's width).
    missing : {'error', 'zero'}, default 'error'
    freq : str, optional
        Point records (``points_csv``, ``points_jsonl``: ``series_id,timestamp,value``):
        the series' frequency (DeepAR's ``time_freq``); each batch of records becomes a
        :class:`~beam_ml.core.series.SeriesBlock` of one series per id. Required for them.

    Returns
    -------
    RecordSpec

    Raises
    ------
    BadInputError
        An unknown format, a label column that does not fit the records, a first value
        that does not parse, a ``feature_dim`` other than the first value's, a LIBSVM
        spec without ``feature_dim``.
    """
    check_record_options(format, label_column, delimiter, feature_dim, block_size)
    categorical = check_encoding_options(format, categorical_columns, missing, "record_spec")
    if formats.get(format).series or freq is not None:
        return _series_record_spec(format, freq, delimiter, block_size, strict)
    options = ReadOptions(
        label_column=label_column,
        delimiter=delimiter,
        feature_dim=feature_dim,
        zero_based=bool(zero_based),
        features_key=features_key,
        block_size=block_size,
        strict=bool(strict),
        categorical=categorical,
        missing=missing,
    )
    if isinstance(first_value, str):
        first_value = first_value.encode()
    value = first_value.strip() if first_value is not None and first_value.strip() else None
    if categorical and value is None:
        raise BadInputError(
            "categorical_columns need a first record: it tells the width of the records."
        )
    fmt = formats.get(format)
    spec = Plan.start(format, options)
    n_columns, n_features, label_column = fmt.record_layout(value, spec)
    spec = replace(spec, n_columns=n_columns, n_features=n_features, label_column=label_column)
    if value is not None and fmt.dense:
        if categorical:
            spec = with_hashing(replace(spec, categorical=fmt.record_categorical(value, spec)))
        elif feature_dim is not None and feature_dim != n_features:
            raise BadInputError(
                f"feature_dim={feature_dim} was given, but the first record has "
                f"{n_features} features: {first_value[:200]!r}"
            )
    return spec


def _series_record_spec(
    format: str, freq: str | None, delimiter: str, block_size: int, strict: bool
) -> RecordSpec:
    """The plan of point records: one series per id of each batch (no header line)."""
    from beam_ml.io.formats.series_common import SeriesReadOptions, series_plan
    from beam_ml.io.sources import _series_options

    fmt = formats.get(format)
    options = _series_options(fmt, freq, None)
    read = SeriesReadOptions(delimiter=delimiter, block_size=block_size, strict=bool(strict), header=False, **options)  # fmt: skip
    return series_plan(Plan.start(format, read), optional=("item_id",), n_features=0)


def _bad(source: str, record_id: Any, value: Any, reason: str) -> dict[str, Any]:
    record = formats.bad_record(source, 0, None, value, reason)
    record["offset"] = record_id  # ids need not be integers (Pub/Sub message ids)
    return record


def _no_record(value: bytes, fmt: formats.Format) -> bool:
    """Whether a stream value holds no record: blank, or (LIBSVM) only a comment. The
    same rule as :func:`formats.count_records`, whose general path costs ~5 us a value:
    a tenth of a continuous-training cycle at 10,000 records."""
    if not value.strip():
        return True
    return fmt.has_comments and b"#" in value and not fmt.count_records(value)


def decode_records(
    spec: RecordSpec, source: str, ids: Sequence[Any], values: Sequence[bytes | None]
) -> tuple[Block | None, list[dict[str, Any]]]:
    """Record values -> one block of the good rows (in order) and the bad records.

    Parameters
    ----------
    spec : RecordSpec
    source : str
        Names the records' origin in bad records and in ``Block.origin``.
    ids : sequence
        One id per record (Kafka offset, Pub/Sub message id): a bad record's ``offset``.
    values : sequence of bytes
        One row each; ``None`` or blank values are bad records.

    Returns
    -------
    block : Block or None
        ``origin`` is ``(source, id of its first row)``; None if no row is good.
    bad : list of dict
        In input order.

    Raises
    ------
    BadInputError
        ``spec`` does not know the feature count (no first record nor ``feature_dim``).
    """
    if len(ids) != len(values):
        raise BadInputError(f"decode_records got {len(ids)} ids but {len(values)} values.")
    fmt = formats.get(spec.format)
    bad: list[tuple[int, dict[str, Any]]] = []  # (position, record): sorted at the end
    lines: list[bytes] = []
    kept: list[int] = []  # positions of ``lines`` in the input
    for i, value in enumerate(values):
        if isinstance(value, str):
            value = value.encode()
        if value is None or _no_record(bytes(value), fmt):
            # blank, or (LIBSVM) only a comment: a record with no row in it
            reason = "empty record value" + (" (only a comment)" if value and b"#" in value else "")
            bad.append((i, _bad(source, ids[i], value or b"", reason)))
            continue
        value = bytes(value).rstrip(b"\r\n")
        if b"\n" in value or b"\r" in value:
            if not fmt.multiline_records:
                bad.append((i, _bad(source, ids[i], value, "a record holds several lines")))
                continue
            value = value.replace(b"\r", b" ").replace(b"\n", b" ")  # JSON whitespace
        lines.append(value)
        kept.append(i)
    if not lines:
        return None, [record for _, record in bad]
    if spec.n_features is None:
        raise BadInputError(
            f"cannot decode the records of {source}: the RecordSpec knows no feature count "
            "(build it with record_spec from a first record, or give feature_dim)."
        )
    data = b"\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    block, parse_bad = fmt.parse(spec, data)
    for record in parse_bad:
        # the parsers report byte offsets in ``data``: map them back to the records
        i = kept[bisect.bisect_right(starts, record["offset"]) - 1]
        bad.append((i, _bad(source, ids[i], record["record"], record["reason"])))
    bad.sort(key=lambda pair: pair[0])
    rows = 0 if block is None else block.n_rows
    if fmt.records_are_rows and rows + len(bad) != len(values):
        raise RuntimeError(
            f"beam_ml lost records of {source}: {len(values)} records, but "
            f"{0 if block is None else block.n_rows} rows used and {len(bad)} set aside. "
            "This is a bug; please report it with the records."
        )
    if block is not None:
        good = sorted(set(kept) - {i for i, _ in bad})
        block = (
            replace(block, origin=(source, ids[good[0]]))
            if fmt.series  # point records: a SeriesBlock
            else Block(block.features, block.labels, origin=(source, ids[good[0]]))
        )
    return block, [record for _, record in bad]


# ----------------------------------------------------------------------- the transform


class RecordDecoder:
    """:func:`decode_records` inside a DoFn, counted, its bad records routed: what
    :class:`DecodeRecords` and the Kafka and Kinesis readers do with a batch of records.

    Counts the ``beam_ml/records_read``, ``beam_ml/rows_read`` (used) and
    ``beam_ml/bad_records`` (set aside) metrics; bad records go to the dead-letter output
    (``dead_letters``), or are logged and dropped, or stop the pipeline (``spec.strict``).
    The DoFn calls :meth:`setup` from its own ``setup``.
    """

    def __init__(self, spec: RecordSpec, dead_letters: bool):
        self.spec = spec
        self._dead_letters = dead_letters
        self._records = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self._rows = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._bad = Metrics.counter(METRICS_NAMESPACE, "bad_records")
        self._dropped: DroppedLog | None = None

    def setup(self) -> None:
        self._dropped = None if self._dead_letters else DroppedLog(_DESCRIBE_AS)

    def decode(
        self, source: str, ids: Sequence[Any], values: Sequence[bytes | None]
    ) -> tuple[Block | None, list[TaggedOutput]]:
        """The block of the good rows (None if none) and the dead-letter outputs (empty
        unless kept); raises at the first bad record with ``spec.strict``."""
        block, bad = decode_records(self.spec, source, ids, values)
        self._records.inc(len(values))
        dead_letters = []
        if bad:
            dead_letters = list(
                route_bad_records(bad, _DESCRIBE_AS, self.spec.strict, self._bad, self._dropped)
            )
        if block is not None:
            self._rows.inc(block.n_rows)
        return block, dead_letters


class _DecodeFn(beam.DoFn):
    """Batches the ``(id, value)`` records of a bundle, per window, into blocks.

    A block is emitted when it holds ``block_size`` records, and the rest at the end of
    the bundle, so no record waits longer than its bundle. Blocks (and bad records)
    carry the earliest timestamp of their records: an event-time stream keeps its times.
    """

    def __init__(self, spec: RecordSpec, source: str, dead_letters: bool):
        self._spec = spec
        self._source = source
        self._decoder = RecordDecoder(spec, dead_letters)

    def setup(self) -> None:
        self._decoder.setup()

    def start_bundle(self) -> None:
        self._batches: dict[Any, list[Any]] = defaultdict(lambda: [[], [], MAX_TIMESTAMP])

    def process(
        self,
        element: tuple[Any, bytes],
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        record_id, value = element
        batch = self._batches[window]
        batch[0].append(record_id)
        batch[1].append(value)
        batch[2] = min(batch[2], timestamp)
        if len(batch[0]) >= self._spec.block_size:
            del self._batches[window]
            yield from self._flush(window, *batch)

    def finish_bundle(self) -> Iterator[Any]:
        batches, self._batches = self._batches, defaultdict(lambda: [[], [], MAX_TIMESTAMP])
        for window, batch in batches.items():
            yield from self._flush(window, *batch)

    def _flush(self, window: Any, ids: list[Any], values: list[Any], stamp: Any) -> Iterator[Any]:
        block, dead_letters = self._decoder.decode(self._source, ids, values)
        for out in dead_letters:
            yield TaggedOutput(out.tag, WindowedValue(out.value, stamp, (window,)))
        if block is not None:
            yield WindowedValue(block, stamp, (window,))


class DecodeRecords(Reader):
    """``(id, value)`` records -> blocks of at most ``spec.block_size`` rows.

    Records are batched within a bundle (per window) and decoded with
    :func:`decode_records`; blocks keep the window and the earliest timestamp of their
    records. Counts the ``beam_ml/records_read``, ``beam_ml/rows_read`` (used) and
    ``beam_ml/bad_records`` (set aside) metrics, the first the sum of the others. Bad
    records are logged and dropped, or kept with :meth:`with_dead_letters`, or stop the
    pipeline (``spec.strict``).

    Parameters
    ----------
    spec : RecordSpec
        From :func:`record_spec`; it must know the feature count.
    source : str
        Names the records' origin (``'pubsub://projects/P/subscriptions/S'``).
    """

    def __init__(self, spec: RecordSpec, source: str):
        super().__init__()
        if not isinstance(spec, RecordSpec):
            raise BadInputError(
                f"DecodeRecords needs a RecordSpec (see record_spec). Got {type(spec).__name__}."
            )
        if spec.n_features is None:
            raise BadInputError(
                "DecodeRecords needs a RecordSpec with a feature count: build it with "
                "record_spec from a first record, or give feature_dim."
            )
        self._spec = spec
        self._source = source

    @property
    def strict(self) -> bool:
        return self._spec.strict

    def expand(self, records: beam.PCollection) -> Any:
        outputs = records | "Decode" >> beam.ParDo(
            _DecodeFn(self._spec, self._source, self._with_dead_letters)
        ).with_outputs(DEAD_LETTERS, main="blocks")
        return self._outputs(outputs)
