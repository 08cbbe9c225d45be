"""What the series formats share: their options and plan, records -> SeriesBlock with
bad records named, point records -> series, and a local reader.

The series formats (:mod:`~beam_ml.io.formats.deepar_jsonl`,
:mod:`~beam_ml.io.formats.deepar_parquet`, :mod:`~beam_ml.io.formats.series_csv`,
:mod:`~beam_ml.io.formats.points_csv`, :mod:`~beam_ml.io.formats.points_jsonl`) emit
:class:`~beam_ml.core.series.SeriesBlock` chunks instead of matrix blocks. The frequency
is not in the data (it is DeepAR's ``time_freq``), so they read it from
:class:`SeriesReadOptions`; their plan is a :class:`SeriesPlan`.

Bad records are the dead-letter dicts of :func:`~beam_ml.io.formats.common.bad_record`
(file, byte offset or row, line, record, reason), as in the other formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock, is_frequency
from beam_ml.io.formats.base import Plan, ReadOptions
from beam_ml.io.formats.common import ParseResult, bad_record, line_of

__all__ = [
    "SeriesPlan",
    "SeriesReadOptions",
    "points_to_block",
    "read_series",
    "records_to_block",
    "series_plan",
]


@dataclass(frozen=True)
class SeriesReadOptions(ReadOptions):
    """The reading options of the series formats.

    Attributes
    ----------
    freq : str
        DeepAR's ``time_freq`` ('H', 'D', '5min'...): the frequency of every series.
    start : str
        Wide CSV: the start of every series (the M4 files give none; GluonTS's M4
        datasets use this same date).
    """

    freq: str = "H"
    start: str = "1750-01-01 00:00:00"


@dataclass(frozen=True)
class SeriesPlan(Plan):
    """A series format's plan: what the first record of the input has.

    ``optional`` are the optional fields of the first record (``cat``,
    ``dynamic_feat``, ``item_id``): every record must have the same, with ``n_cat``
    categorical ids and ``n_features`` dynamic features.
    """

    optional: tuple[str, ...] = ()
    n_cat: int = 0

    @property
    def freq(self) -> str:
        return self.options.freq  # type: ignore[attr-defined]


def series_plan(plan: Plan, **found: Any) -> SeriesPlan:
    """``plan`` as a :class:`SeriesPlan`, its options checked, with ``found`` set."""
    options = plan.options
    if not isinstance(options, SeriesReadOptions):
        raise BadInputError(
            f"the {plan.format} format reads time series: give SeriesReadOptions (their "
            "frequency, DeepAR's time_freq)."
        )
    if not is_frequency(options.freq):
        raise BadInputError(
            f"time_freq must be 'min', 'H', 'D', 'W' or 'M', optionally with a multiple "
            f"('5min'); got {options.freq!r}."
        )
    base = {f.name: getattr(plan, f.name) for f in fields(plan)}
    return replace(SeriesPlan(**base), **found)


# --------------------------------------------------------------- records -> block

_SERIES_ZERO = re.compile(r"^SeriesBlock:? (?:expects )?")


def _reason(exc: BadInputError) -> str:
    """A SeriesBlock error about one record, as a bad record's reason."""
    text = _SERIES_ZERO.sub("", str(exc))
    return text.replace("series 0 ", "the series ").replace("record 0 ", "the record ")


def optional_problem(item: Mapping[str, Any], plan: SeriesPlan) -> str | None:
    """Why a decoded record does not fit the input's first record, or None."""
    for field in ("start", "target"):
        if field not in item or item[field] is None:
            return f"no {field!r}"
    for field in ("cat", "dynamic_feat", "item_id"):
        has, wanted = field in item, field in plan.optional
        if has != wanted:
            verb = "has" if has else "has no"
            return f"{verb} {field!r}, unlike the first record of the input"
    if "cat" in item:
        cat = item["cat"]
        if not isinstance(cat, list) or len(cat) != plan.n_cat:
            return f"'cat' is not a list of {plan.n_cat} ids, as in the first record"
        if not all(type(c) is int for c in cat):
            return "'cat' holds something other than integer ids"
    if "dynamic_feat" in item:
        dyn = item["dynamic_feat"]
        if not isinstance(dyn, list) or len(dyn) != plan.n_features:
            return f"'dynamic_feat' is not {plan.n_features} lists, as in the first record"
    target = item["target"]
    if not isinstance(target, list):
        return "'target' is not a list"
    return None


def _has_booleans(item: Mapping[str, Any]) -> bool:
    """numpy would read true/false as 1/0: such a record takes the checked path."""
    lists = [item.get("target") or []] + list(item.get("dynamic_feat") or [])
    return any(type(v) is bool for values in lists if isinstance(values, list) for v in values)


def records_to_block(
    items: Sequence[Any],
    texts: Sequence[Any],
    where: Sequence[tuple[int, int | None]],
    plan: SeriesPlan,
    file: str,
) -> ParseResult:
    """Decoded DeepAR records (dicts) -> one SeriesBlock of the good ones and the bad
    records; ``texts`` are the records as read, ``where`` their (offset, line).

    Fast path: the whole chunk in one :meth:`SeriesBlock.from_records`; if it fails, each
    record alone, to name the bad ones (the good ones still become the block).
    """
    bad, good = [], []
    for k, item in enumerate(items):
        if isinstance(item, str):  # the caller's reason (invalid JSON...)
            problem: str | None = item
        elif not isinstance(item, dict):
            problem = f"expected a JSON object with 'start' and 'target', found {type(item).__name__}"  # fmt: skip
        else:
            problem = optional_problem(item, plan)
        if problem is None and _has_booleans(item):
            problem = "a boolean among the numbers of 'target' or 'dynamic_feat'"
        if problem is None:
            good.append(k)
        else:
            bad.append(bad_record(file, where[k][0], where[k][1], texts[k], problem))
    if not good:
        return None, bad
    origin = (file, where[good[0]][0]) if file else None
    try:
        return SeriesBlock.from_records([items[k] for k in good], plan.freq, origin), bad
    except BadInputError:
        pass
    kept = []
    for k in good:
        try:
            SeriesBlock.from_records([items[k]], plan.freq)
        except BadInputError as exc:
            bad.append(bad_record(file, where[k][0], where[k][1], texts[k], _reason(exc)))
            continue
        kept.append(k)
    bad.sort(key=lambda record: record["offset"])
    if not kept:
        return None, bad
    origin = (file, where[kept[0]][0]) if file else None
    return SeriesBlock.from_records([items[k] for k in kept], plan.freq, origin), bad


# ------------------------------------------------------------ points -> series

_UNIT_SECONDS = {"min": 60, "H": 3600, "D": 86400, "W": 7 * 86400}


def points_to_block(
    ids: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    where: Sequence[tuple[int, int | None]],
    texts: Sequence[Any],
    plan: SeriesPlan,
    file: str,
) -> ParseResult:
    """Point records ``(series_id, timestamp, value)`` -> one series per id.

    Each series starts at its earliest timestamp of this chunk and runs to its latest,
    one value per step of the frequency; steps no record gave are missing (NaN). The
    same id may come again in later chunks (a stream): the blocks carry ``item_id`` so
    the consumer joins them. A timestamp off the series' grid of steps, or a second
    value for the same series and step, is a bad record.
    """
    ids = np.asarray(ids).astype(str)
    times = np.asarray(times, dtype="datetime64[s]")
    values = np.asarray(values, dtype=np.float64)
    n = ids.shape[0]
    if n == 0:
        return None, []
    base = plan.freq.lstrip("0123456789")
    multiple = int(plan.freq[: len(plan.freq) - len(base)] or 1)
    if base == "M":  # a month's values may be stamped any day of it
        ticks = times.astype("datetime64[M]").astype(np.int64)
        step = multiple
    else:
        ticks = times.astype(np.int64)
        step = _UNIT_SECONDS[base] * multiple
    order = np.lexsort((ticks, ids))
    sorted_ids, sorted_ticks = ids[order], ticks[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group = np.cumsum(new) - 1
    first_tick = sorted_ticks[new][group]
    delta = sorted_ticks - first_tick
    position = delta // step
    problem = np.full(n, "", dtype=object)
    problem[np.isinf(values[order])] = "the value is infinite"
    off_grid = delta % step != 0
    problem[off_grid & (problem == "")] = f"the timestamp is not a whole number of '{plan.freq}' steps after the series' first in this chunk"  # fmt: skip
    twice = np.zeros(n, dtype=bool)
    twice[1:] = ~new[1:] & (position[1:] == position[:-1])
    problem[twice & ~off_grid & (problem == "")] = "a second value for the same series and time"
    ok = problem == ""
    bad = [
        bad_record(file, where[i][0], where[i][1], texts[i], f"{problem[k]}")
        for k, i in enumerate(order.tolist())
        if not ok[k]
    ]
    bad.sort(key=lambda record: record["offset"])
    if not ok.any():
        return None, bad
    kept_groups = np.unique(group[ok])
    lengths = np.zeros(int(group[-1]) + 1, dtype=np.int64)
    np.maximum.at(lengths, group[ok], position[ok] + 1)
    lengths = lengths[kept_groups]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    slot = np.searchsorted(kept_groups, group[ok])
    series_values = np.full(int(offsets[-1]), np.nan)
    series_values[offsets[slot] + position[ok]] = values[order][ok]
    firsts = np.flatnonzero(new)[kept_groups]
    start = times[order][firsts].astype("datetime64[s]")
    if base == "M":
        start = start.astype("datetime64[M]").astype("datetime64[s]")
    first_row = int(np.min(order[ok]))
    block = SeriesBlock(
        series_values,
        offsets,
        start,
        plan.freq,
        origin=(file, where[first_row][0]) if file else None,
        item_id=sorted_ids[firsts],
    )
    return SeriesBlock.validate(block, owner="SeriesBlock"), bad


# --------------------------------------------------------------------- reading


def read_series(
    pattern: str | Sequence[str],
    format: str,
    *,
    freq: str,
    dead_letters: list[dict[str, Any]] | None = None,
    **options: Any,
) -> Iterator[SeriesBlock]:
    """SeriesBlocks from files, in this process (no Beam): file order, then range order.

    ``options`` are :class:`SeriesReadOptions` fields (``block_size``, ``strict``,
    ``start``, ``max_bad_fraction``...). Bad records go to ``dead_letters`` when a list
    is given; ``strict=True`` raises at the first, naming file, line and reason.
    """
    from beam_ml.io import formats
    from beam_ml.io.dead_letters import DroppedLog, describe
    from beam_ml.io.files import match_files

    fmt = formats.get(format)
    read_options = SeriesReadOptions(freq=freq, **options)
    files = match_files(pattern)
    first = next((path for path, size in files if size > 0), None)
    plan = fmt.plan(Plan.start(format, read_options), files, first)
    dropped = DroppedLog(format)
    for file in files:
        if file[1] == 0:
            continue
        for rng in fmt.split(file, plan):
            for block, bad, _, _ in fmt.read_range(plan, rng):
                if bad and read_options.strict:
                    raise BadInputError(describe(bad[0], format))
                for record in bad:
                    if dead_letters is not None:
                        dead_letters.append(record)
                    else:
                        dropped.add(record)
                if block is not None:
                    yield block


def where_of_lines(
    offset: int, line: int | None, starts: np.ndarray, index: np.ndarray
) -> list[tuple[int, int | None]]:
    """(byte offset, line) of lines of a chunk that starts at byte ``offset`` on line
    ``line``: lines ``index`` of the chunk, starting at bytes ``starts`` of it."""
    return [
        (offset + s, line_of(line, i)) for s, i in zip(starts.tolist(), index.tolist(), strict=True)
    ]


def first_line(files: list[tuple[str, int]]) -> tuple[str, bytes, int] | None:
    """(path, first non-blank line, bytes per line) of the first file that has one."""
    from beam_ml.io.formats import reading

    peeked = reading.first_text(files)
    if peeked is None:
        return None
    path, lines, hint = peeked
    return path, next(line for line in lines if line.strip()), hint


def first_json(files: list[tuple[str, int]]) -> tuple[str, Any, int] | None:
    """(path, decoded first record, bytes per line) of JSON lines ``files``; None if
    they are all blank."""
    import json

    found = first_line(files)
    if found is None:
        return None
    path, line, hint = found
    try:
        return path, json.loads(line), hint
    except (ValueError, RecursionError) as exc:
        raise BadInputError(
            f"the first record of {path} is not valid JSON ({exc}); is this the right format?"
        ) from None


class SkipsCsvHeader:
    """A series CSV format's header skipping (mixed into a TextFormat): the first line
    of each file, if the input has a header and ('auto') that line looks like one."""

    def is_header(self, fields: list[str]) -> bool:
        raise NotImplementedError

    def check_first(self, path: str, fields: list[str]) -> None:
        """Raise if the first line's ``fields`` cannot be this format's."""

    def plan_csv(self, splan: SeriesPlan, files: list[tuple[str, int]]) -> SeriesPlan:
        """``splan`` with the width, header and row size of the first line of ``files``."""
        from beam_ml.io.formats.csv import split_csv_line

        found = first_line(files)
        if found is None:
            return splan
        path, line, hint = found
        fields = split_csv_line(line, splan.delimiter)
        self.check_first(path, fields)
        header = splan.options.header
        return replace(
            splan,
            n_columns=len(fields),
            n_features=0,
            header=self.is_header(fields) if header == "auto" else bool(header),
            row_bytes_hint=hint,
        )

    def skip_header(self, reader: Any, plan: Plan) -> bool:
        from beam_ml.io.formats.csv import split_csv_line

        if not plan.header:
            return False
        if plan.header_auto and not self.is_header(
            split_csv_line(reader.first_line(), plan.delimiter)
        ):
            return False
        reader.skip_line()
        return True
