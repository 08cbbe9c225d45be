"""JSON lines: one JSON array of numbers per line, or one object with a
``features_key`` array (and a label key); categorical values hashed.

Decoding is one ``json.loads`` per line (C code); the numbers of a whole chunk are then
converted and checked in one numpy call (:func:`_jsonl_fast`), and only a chunk with a
problem is checked record by record (:func:`_jsonl_item`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import pyarrow as pa

from beam_ml.core.errors import BadInputError
from beam_ml.io.formats import reading
from beam_ml.io.formats.base import START, Format, Plan, TextFormat, Where
from beam_ml.io.formats.common import (
    FLOAT32_MAX,
    PLAN_RECORDS,
    ParseResult,
    bad_record,
    check_missing,
    line_bounds,
    line_of,
    make_block,
    normalize_index,
    resolve_categorical,
    short_repr,
    split_label,
    usual_width,
)
from beam_ml.io.formats.hashing import check_hashed_feature_dim, hash_codes, hashed_rows

__all__ = ["FORMAT", "parse_jsonl"]


def _json_number(value: Any) -> bool:
    return type(value) in (int, float)  # bool is an int subclass, but not a number here


def _jsonl_item(
    item: Any,
    n_features: int,
    label_column: int | str | None,
    features_key: str,
    missing: str = "error",
) -> tuple[str | None, list[float], float | None]:
    """Reference check of one decoded JSON record: (reason, features, label)."""
    label = None
    if isinstance(item, list):
        if isinstance(label_column, str):
            return (
                f"expected an object with keys {features_key!r} and {label_column!r}, "
                "found an array",
                [],
                None,
            )
        expected = n_features + (label_column is not None)
        if len(item) != expected:
            return f"expected {expected} numbers, found {len(item)}", [], None
        values = list(item)
        if label_column is not None:
            label = values.pop(label_column)
            if not _json_number(label):
                return f"label (element {label_column}) is not a number", [], None
    elif isinstance(item, dict):
        if features_key not in item:
            return f"missing key {features_key!r}", [], None
        values = item[features_key]
        if not isinstance(values, list):
            return f"{features_key!r} is not an array", [], None
        if len(values) != n_features:
            return f"expected {n_features} features, found {len(values)}", [], None
        if isinstance(label_column, str):
            if label_column not in item:
                return f"missing label key {label_column!r}", [], None
            label = item[label_column]
            if not _json_number(label):
                return f"label {label_column!r} ({short_repr(label)}) is not a number", [], None
        elif label_column is not None:
            return (
                f"expected an array (label_column={label_column}), found an object",
                [],
                None,
            )
    else:
        return (
            f"expected a JSON array or an object with {features_key!r}, "
            f"found {type(item).__name__}",
            [],
            None,
        )
    if missing == "zero" and None in values:  # null features read as 0
        values = [0 if value is None else value for value in values]
    for j, value in enumerate(values):
        if not _json_number(value):
            return f"feature {j} ({short_repr(json.dumps(value))}) is not a number", [], None
        number = _json_float(value)
        if number is None or abs(number) > FLOAT32_MAX:
            return f"feature {j} ({short_repr(value)}) is too large for float32", [], None
        if not math.isfinite(number):
            return f"feature {j} is {value}", [], None
    if label is not None:
        number = _json_float(label)
        if number is None:
            return f"label ({short_repr(label)}) is too large for a float", [], None
        if not math.isfinite(number):
            return f"label is {label}", [], None
    return None, values, label


def _json_float(value: int | float) -> float | None:
    """``float(value)``, or None for an integer beyond float's range (JSON has no limit)."""
    try:
        return float(value)
    except OverflowError:
        return None


def _numeric_matrix(rows: list[Any], width: int) -> np.ndarray | None:
    """``rows`` as a float64 matrix if they are all lists of ``width`` JSON numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ragged lists: VisibleDeprecationWarning
        try:
            array = np.array(rows)
        except (ValueError, TypeError, OverflowError):  # ragged, or a huge integer
            return None
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "fi":
        return None
    return array.astype(np.float64, copy=False)


def parse_jsonl(
    data: bytes,
    *,
    n_features: int,
    label_column: int | str | None = None,
    features_key: str = "features",
    file: str = "",
    offset: int = 0,
    line: int | None = 1,
    missing: str = "error",
    categorical: Sequence[int | str] = (),
    feature_dim: int | None = None,
) -> ParseResult:
    """Parse complete JSON lines into a dense float32 block.

    Each line is either a JSON array of numbers (``label_column`` is then an element
    index, or None) or an object whose ``features_key`` array holds the features
    (``label_column`` is then the label's key, or None).

    ``missing='zero'`` reads a ``null`` feature as 0 (a null label stays bad).
    ``categorical`` (see :func:`parse_csv`) makes the rows hashed CSR rows of
    ``feature_dim`` columns: in arrays, element indices (the label's counted, as in
    ``label_column``); in objects, top-level keys, or indices into the features array.
    A categorical value is a string, or a number or boolean taken as its JSON text
    (``3``, ``2.5``, ``true``); ``null``, ``""`` or an absent key set no feature.
    ``n_features`` is the record's width without categoricals (array elements but the
    label's, or the features array's length), as a dense reader counts it.

    Returns
    -------
    block : Block or None
    bad : list of dict
        Invalid JSON, a wrong form or length, a missing key, a non-number (``true``,
        ``null`` and strings included), NaN or inf.

    Notes
    -----
    Decoding is one ``json.loads`` per line (C code); the numbers of all lines are then
    converted and checked in one numpy call. Lines containing ``true``/``false`` skip
    that bulk step, because numpy would silently read booleans as 0/1.
    """
    check_missing(missing)
    starts, ends = line_bounds(data)
    texts = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    keep = [i for i, text in enumerate(texts) if text.strip()]
    if not keep:
        return None, []
    if categorical:
        hashing = _JsonHashing.build(n_features, label_column, categorical, feature_dim)
        return _parse_jsonl_hashed(
            data, starts, texts, keep, hashing, features_key, missing, file, offset, line
        )
    items: list[Any] = []
    errors: dict[int, str] = {}
    for k, i in enumerate(keep):
        try:
            items.append(json.loads(texts[i]))
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            items.append(None)
            errors[k] = f"invalid JSON: {exc}"
    fast = None
    if not errors and not any(b"true" in texts[i] or b"false" in texts[i] for i in keep):
        fast = _jsonl_fast(items, n_features, label_column, features_key)
    if fast is not None:
        features, labels = fast
        return make_block(features, labels, file, offset), []
    good_values: list[list[float]] = []
    good_labels: list[float | None] = []
    bad = []
    for k, i in enumerate(keep):
        reason = errors.get(k)
        if reason is None:
            reason, values, label = _jsonl_item(
                items[k], n_features, label_column, features_key, missing
            )
        if reason is not None:
            bad.append(
                bad_record(file, offset + int(starts[i]), line_of(line, i), texts[i], reason)
            )
            continue
        good_values.append(values)
        good_labels.append(label)
    if not good_values:
        return None, bad
    features = np.array(good_values, dtype=np.float32).reshape(len(good_values), n_features)
    labels = None if label_column is None else np.array(good_labels, dtype=np.float64)
    return make_block(features, labels, file, offset), bad


def _jsonl_fast(
    items: list[Any],
    n_features: int,
    label_column: int | str | None,
    features_key: str,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Vectorized path when every record has the expected form; None otherwise."""
    if all(type(item) is list for item in items):
        if isinstance(label_column, str):
            return None
        width = n_features + (label_column is not None)
        matrix = _numeric_matrix(items, width)
        if matrix is None or not np.isfinite(matrix).all():
            return None
        features, labels = split_label(matrix, label_column)
        # a feature beyond float32's range became inf: the per-record check names it
        return (features, labels) if np.isfinite(features).all() else None
    if all(type(item) is dict for item in items):
        if label_column is not None and not isinstance(label_column, str):
            return None
        try:
            rows = [item[features_key] for item in items]
            labels_raw = None if label_column is None else [item[label_column] for item in items]
        except (KeyError, TypeError):
            return None
        matrix = _numeric_matrix(rows, n_features)
        if matrix is None or not np.isfinite(matrix).all():
            return None
        labels = None
        if labels_raw is not None:
            if not all(_json_number(v) for v in labels_raw):
                return None
            try:
                labels = np.array(labels_raw, dtype=np.float64)
            except OverflowError:  # an integer beyond float's range: named per record
                return None
            if not np.isfinite(labels).all():
                return None
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        return (features, labels) if np.isfinite(features).all() else None
    return None


@dataclass(frozen=True)
class _JsonHashing:
    """Where the categorical values of a JSON record are: element indices of arrays
    (``label_column`` an int or None), or keys / features-array indices of objects."""

    n_features: int
    label_column: int | str | None
    indices: tuple[int, ...]  # arrays: element indices; objects: features-array indices
    keys: tuple[str, ...]  # objects only
    feature_dim: int

    @classmethod
    def build(
        cls,
        n_features: int,
        label_column: int | str | None,
        categorical: Sequence[int | str],
        feature_dim: int | None,
    ) -> _JsonHashing:
        indices = tuple(sorted({int(c) for c in categorical if not isinstance(c, str)}))
        keys = tuple(dict.fromkeys(c for c in categorical if isinstance(c, str)))
        if label_column is not None and (label_column in indices or label_column in keys):
            raise BadInputError(f"the label ({label_column!r}) cannot be a categorical column.")
        check_hashed_feature_dim(feature_dim, n_features - len(indices))
        return cls(n_features, label_column, indices, keys, int(cast(int, feature_dim)))

    @property
    def n_numeric(self) -> int:
        """Numeric features per record (the same for arrays and objects)."""
        return self.n_features - len(self.indices)

    def split(
        self, item: Any, features_key: str, missing: str
    ) -> tuple[str | None, list[float], list[str | None], float | None]:
        """(reason, numeric values (NaN = missing), categorical texts, label) of one
        decoded record."""
        label: Any = None
        if isinstance(item, list):
            if self.keys or isinstance(self.label_column, str):
                return "expected a JSON object, found an array", [], [], None
            width = self.n_features + (self.label_column is not None)
            if len(item) != width:
                return f"expected {width} elements, found {len(item)}", [], [], None
            fields = list(item)
            if self.label_column is not None:
                label = fields[self.label_column]
            skip = {*self.indices, self.label_column}
            numeric = [(j, v) for j, v in enumerate(fields) if j not in skip]
            texts = [(j, fields[j]) for j in self.indices]
            what = "element"
        elif isinstance(item, dict):
            values = item.get(features_key)
            if not isinstance(values, list):
                return f"missing or non-array key {features_key!r}", [], [], None
            if len(values) != self.n_features:
                return f"expected {self.n_features} features, found {len(values)}", [], [], None
            if self.label_column is not None:
                if self.label_column not in item:
                    return f"missing label key {self.label_column!r}", [], [], None
                label = item[self.label_column]
            numeric = [(j, v) for j, v in enumerate(values) if j not in self.indices]
            texts = [(j, values[j]) for j in self.indices] + [(k, item.get(k)) for k in self.keys]
            what = "feature"
        else:
            return f"expected a JSON array or object, found {type(item).__name__}", [], [], None
        numbers: list[float] = []
        for j, value in numeric:
            if value is None:
                if missing != "zero":
                    return f"{what} {j} is null (missing='zero' reads it as 0)", [], [], None
                numbers.append(math.nan)
                continue
            number = _json_float(value) if _json_number(value) else None
            if number is None or not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                return (
                    f"{what} {j} ({short_repr(json.dumps(value))}) is not a float32 number",
                    [],
                    [],
                    None,
                )
            numbers.append(number)
        words: list[str | None] = []
        for j, value in texts:
            if value is None or isinstance(value, str):
                words.append(value)
            elif isinstance(value, (bool, int, float)):
                words.append(json.dumps(value))
            else:
                return (
                    f"categorical {j!r} ({short_repr(json.dumps(value))}) is not a string or number",
                    [],
                    [],
                    None,
                )
        if self.label_column is not None:
            number = _json_float(label) if _json_number(label) else None
            if number is None or not math.isfinite(number):
                return (
                    f"label ({short_repr(json.dumps(label))}) is not a finite number",
                    [],
                    [],
                    None,
                )
            label = number
        return None, numbers, words, label

    def column_keys(self) -> list[int | str]:
        return [*self.indices, *self.keys]


def _parse_jsonl_hashed(
    data: bytes,
    starts: np.ndarray,
    texts: list[bytes],
    keep: list[int],
    hashing: _JsonHashing,
    features_key: str,
    missing: str,
    file: str,
    offset: int,
    line: int | None,
) -> ParseResult:
    """JSON lines with categorical values -> hashed CSR block (see :func:`parse_jsonl`).

    Records are decoded and checked one by one (``json.loads`` is per line anyway);
    the numbers then go to numpy, and each categorical column is hashed per distinct
    value of the block (:func:`hash_codes`).
    """
    numbers: list[list[float]] = []
    words: list[list[str | None]] = []
    labels: list[float] = []
    bad = []
    n_numeric = hashing.n_numeric
    for i in keep:
        try:
            item = json.loads(texts[i])
            reason, nums, cats, label = hashing.split(item, features_key, missing)
        except (ValueError, RecursionError) as exc:
            reason = f"invalid JSON: {exc}"
        if reason is not None:
            bad.append(
                bad_record(file, offset + int(starts[i]), line_of(line, i), texts[i], reason)
            )
            continue
        numbers.append(nums)
        words.append(cats)
        labels.append(label)
    if not numbers:
        return None, bad
    numeric = np.array(numbers, dtype=np.float32).reshape(len(numbers), n_numeric)
    columns = hashing.column_keys()
    codes = [
        hash_codes(
            key, pa.array([row[c] for row in words], pa.string()), n_numeric, hashing.feature_dim
        )
        for c, key in enumerate(columns)
    ]
    array_labels = None
    if hashing.label_column is not None:
        array_labels = np.array(labels, dtype=np.float64)
    return make_block(
        hashed_rows(numeric, codes, hashing.feature_dim), array_labels, file, offset
    ), bad


# ---------------------------------------------------------------------------- format


def _json_records(lines: list[bytes]) -> tuple[list[Any], str | None]:
    """The lines that are valid JSON, decoded, and the first decoding error."""
    items, error = [], None
    for line in lines:
        try:
            items.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            error = error or str(exc) or type(exc).__name__
    return items, error


class JsonlFormat(TextFormat):
    name = "jsonl"
    takes_categorical = True
    takes_missing = True
    multiline_records = True

    def plan(self, plan: Plan, files: list[tuple[str, int]], first: str | None) -> Plan:
        label = plan.label_column
        peeked = reading.first_text(files)
        if peeked is None:
            return plan
        path, lines, hint = peeked
        records = [ln for ln in lines if ln.strip()]
        items, error = _json_records(records[:PLAN_RECORDS])
        if not items:
            raise BadInputError(
                f"the first record of {path} is not valid JSON ({error}); is this the right format?"
            )
        item = items[0]
        if isinstance(item, list):
            if isinstance(label, str):
                raise BadInputError(
                    f"label_column {label!r} is a key, but the records of {path} are "
                    "JSON arrays; give the label's index instead."
                )
            width = usual_width(len(x) for x in items if isinstance(x, list))
            if label is not None:
                label = normalize_index(label, width, path)
            n_features = width - (label is not None)
        elif isinstance(item, dict):
            key = plan.features_key
            if not isinstance(item.get(key), list):
                raise BadInputError(
                    f"the first record of {path} has no {key!r} array; its keys are "
                    f"{sorted(item)}. Set features_key to the key of the features."
                )
            if label is None and "label" in item:
                label = "label"  # the default label key, used when present
            elif isinstance(label, int):
                raise BadInputError(
                    f"label_column {label!r} is an index, but the records of {path} are "
                    "JSON objects; give the label's key instead."
                )
            elif label is not None and label not in item:
                raise BadInputError(
                    f"label_column {label!r} is not a key of the first record of {path}; "
                    f"its keys are {sorted(item)}."
                )
            n_features = usual_width(
                len(x[key]) for x in items if isinstance(x, dict) and isinstance(x.get(key), list)
            )
        else:
            raise BadInputError(
                f"the first record of {path} is a JSON {type(item).__name__}; expected "
                f"an array of numbers or an object with a {plan.features_key!r} array."
            )
        categorical = plan.categorical
        if categorical:  # arrays: element indices; objects: keys or features indices
            array = isinstance(item, list)
            categorical = resolve_categorical(
                categorical,
                n_features + (array and label is not None),
                None,
                label,
                f"the records of {path}",
                keys_allowed=not array,
            )
        return replace(
            plan,
            n_features=n_features,
            label_column=label,
            row_bytes_hint=hint,
            categorical=categorical,
        )

    def parse(self, plan: Plan, data: bytes, at: Where = START) -> ParseResult:
        return parse_jsonl(
            data,
            n_features=cast(int, plan.n_values if plan.categorical else plan.n_features),
            label_column=plan.label_column,
            features_key=plan.features_key,
            file=at.file,
            offset=at.offset,
            line=at.line,
            missing=plan.missing,
            categorical=plan.categorical,
            feature_dim=plan.n_features if plan.categorical else None,
        )

    def record_layout(
        self, value: bytes | None, plan: Plan
    ) -> tuple[int | None, int | None, int | str | None]:
        if value is None:
            return super().record_layout(value, plan)
        label_column = plan.label_column
        features_key = plan.features_key
        try:
            item = json.loads(value)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise BadInputError(f"the first record is not JSON ({exc}): {value[:200]!r}") from None
        if isinstance(item, list):
            if isinstance(label_column, str):
                raise BadInputError(
                    f"label_column {label_column!r} is a key, but the records are JSON arrays."
                )
            if label_column is not None:
                if not -len(item) <= label_column < len(item):
                    raise BadInputError(
                        f"label_column must be in [{-len(item)}, {len(item)}) for JSON arrays "
                        f"of {len(item)} elements; got {label_column}."
                    )
                label_column = label_column % len(item)
            return None, len(item) - (label_column is not None), label_column
        if isinstance(item, dict) and isinstance(item.get(features_key), list):
            if isinstance(label_column, int):
                raise BadInputError(
                    f"label_column {label_column} is an index, but the records are JSON "
                    "objects: give the label's key."
                )
            if label_column is None and "label" in item:
                label_column = "label"
            return None, len(item[features_key]), label_column
        raise BadInputError(
            f"the first record is neither a JSON array nor an object with a "
            f"{features_key!r} array: {value[:200]!r}"
        )

    def record_categorical(self, value: bytes, plan: Plan) -> tuple[int | str, ...]:
        array = value.startswith(b"[")
        return resolve_categorical(
            plan.categorical,
            cast(int, plan.n_features) + (array and plan.label_column is not None),
            None,
            plan.label_column,
            "the records",
            keys_allowed=not array,
        )


FORMAT: Format = JsonlFormat()
