"""Bad records, what every reader does with them, and the reader base.

A bad record (:func:`~beam_ml.io.formats.common.bad_record`) goes to the dead-letter
output of a reader asked for it (:meth:`Reader.with_dead_letters`), or is counted,
logged and dropped, or, with ``strict=True``, stops the pipeline naming the file, line
(or offset, row) and reason [STYLE §1.8]. A reader whose records are mostly bad stops
too (:func:`check_bad_fraction`): a wrong format, delimiter or width must not pass as
dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beam_ml.core.errors import BadInputError

__all__ = [
    "DEAD_LETTERS",
    "METRICS_NAMESPACE",
    "DroppedLog",
    "Reader",
    "check_bad_fraction",
    "describe",
    "no_dead_letters_when_strict",
    "route_bad_records",
]

#: Tag of the dead-letter output.
DEAD_LETTERS = "dead_letters"
#: Namespace of the ``records_read``, ``rows_read`` (rows used), ``bad_records`` (set
#: aside) and ``bytes_read`` counters; records_read == rows_read + bad_records.
METRICS_NAMESPACE = "beam_ml"
# A reader stops on mostly bad records only once it has seen at least this many.
_MIN_BAD_TO_STOP = 10
_LOGGED_BAD_RECORDS = 5

_log = logging.getLogger("beam_ml.io")


def describe(record: dict[str, Any], fmt: str) -> str:
    """One bad record in a sentence: where (by the wording of ``fmt``: rows of ``.npy``,
    Parquet and SQL, offsets of stream records, lines of text files) and why."""
    if fmt in ("npy", "parquet", "sql"):
        where = f"row {record['offset']}"
    elif fmt == "kafka":
        where = f"offset {record['offset']}"
    elif record["line"] is not None:
        where = f"line {record['line']} (byte offset {record['offset']})"
    else:
        where = f"byte offset {record['offset']}"
    return (
        f"bad record in {record['file']}, {where}: {record['reason']}; "
        f"record: {record['record'][:200]!r}"
    )


def check_bad_fraction(
    bad: int,
    records: int,
    max_bad_fraction: float,
    first_bad: dict[str, Any] | None,
    fmt: str,
    where: str,
) -> None:
    """Stop when more than ``max_bad_fraction`` of the records read from ``where`` (a
    file, a range of one, a query range) were bad, and at least 10: a wrong format,
    delimiter, header or width rejects most of a file, and that must not pass as dead
    letters. (A few bad records of a tiny file or range do not decide it.)"""
    if bad >= _MIN_BAD_TO_STOP and bad > max_bad_fraction * records:
        raise BadInputError(
            f"{bad:,} of the {records:,} records read from {where} are malformed, more "
            f"than max_bad_fraction={max_bad_fraction:g} allows: check the format, "
            "delimiter, header, label column and feature_dim. The first: "
            f"{describe(cast(dict, first_bad), fmt)}. To set them aside and go on, "
            "pass --max_bad_fraction 1 (max_bad_fraction=1.0)." + _missing_hint(first_bad)
        )


def _missing_hint(first_bad: dict[str, Any] | None) -> str:
    """A pointer to ``missing='zero'`` when the first bad record has an empty field."""
    reason = "" if first_bad is None else str(first_bad.get("reason", ""))
    if not (reason.endswith(" is empty") or " is null" in reason):
        return ""
    return " Empty numeric fields (not labels) read as 0 with --missing zero (missing='zero')."


class DroppedLog:
    """Logs the first few dropped bad records, then only counts them."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self.count <= _LOGGED_BAD_RECORDS:
            _log.warning(
                "dropped %s (ReadBlocks(...).with_dead_letters() keeps them, "
                "strict=True stops at the first)",
                describe(record, self.fmt),
            )
        elif self.count == _LOGGED_BAD_RECORDS + 1:
            _log.warning(
                "more bad records are being dropped; see the %s/bad_records counter",
                METRICS_NAMESPACE,
            )


def no_dead_letters_when_strict(strict: bool) -> None:
    """The check every reader's ``with_dead_letters()`` makes first."""
    if strict:
        raise BadInputError(
            "strict=True stops at the first bad record, so there are no dead letters to "
            "return; use one or the other."
        )


def route_bad_records(
    bad: list[dict[str, Any]], fmt: str, strict: bool, counter: Any, dropped: DroppedLog | None
) -> Iterator[TaggedOutput]:
    """What every reader does with bad records: count them, then stop at the first
    (``strict``), or yield them to the dead-letter output, or (``dropped``) log and drop."""
    counter.inc(len(bad))
    if strict:
        raise BadInputError(describe(bad[0], fmt))
    for record in bad:
        if dropped is None:
            yield TaggedOutput(DEAD_LETTERS, record)
        else:
            dropped.add(record)


_R = TypeVar("_R", bound="Reader")


class Reader(beam.PTransform):
    """The base of every reader: a PTransform whose output is its blocks, or, after
    :meth:`with_dead_letters`, ``(blocks, dead_letters)``.

    A subclass says whether it is :attr:`strict`, tags its bad records
    :data:`DEAD_LETTERS` (:func:`route_bad_records`), and returns
    ``self._outputs(outputs)`` from ``expand``.
    """

    def __init__(self, label: str | None = None):
        super().__init__(label)
        self._with_dead_letters = False

    @property
    def strict(self) -> bool:
        """Whether the first bad record stops the pipeline."""
        raise NotImplementedError

    def with_dead_letters(self: _R) -> _R:
        """Make the transform return ``(blocks, dead_letters)``.

        ``dead_letters`` is a PCollection of bad-record dicts with keys ``file``,
        ``offset``, ``line``, ``record`` (at most 1,000 characters) and ``reason``.
        """
        no_dead_letters_when_strict(self.strict)
        self._with_dead_letters = True
        return self

    def _outputs(self, outputs: Any) -> Any:
        """The blocks of a ParDo's ``with_outputs(DEAD_LETTERS, main='blocks')``, and
        its dead letters when asked for."""
        if self._with_dead_letters:
            return outputs.blocks, outputs[DEAD_LETTERS]
        return outputs.blocks
