"""The series formats: DeepAR JSON lines (and .gz), DeepAR Parquet, wide CSV (M4) and
point records (CSV, JSON lines) -> SeriesBlocks, checked against blocks built directly
from the same values, with bad records named by file, line (or row) and reason."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock
from beam_ml.io import formats
from beam_ml.io.formats.series_common import read_series

RECORDS = [
    {"start": "2020-01-01 00:00:00", "target": [1.0, "NaN", 3.0], "cat": [0, 2],
     "dynamic_feat": [[0.1, 0.2, 0.3]]},
    {"start": "2020-01-02 05:00:00", "target": [4.0, None], "cat": [1, 0],
     "dynamic_feat": [[1.0, 2.0]]},
    {"start": "2020-03-01 00:00:00", "target": [7.5, 8.5, 9.5, 10.5], "cat": [3, 1],
     "dynamic_feat": [[5.0, 6.0, 7.0, 8.0]]},
]  # fmt: skip


def _read(path, fmt, freq="H", **options):
    bad: list = []
    blocks = list(read_series(str(path), fmt, freq=freq, dead_letters=bad, **options))
    return (SeriesBlock.concat(blocks) if blocks else None), bad, blocks


def _same(got: SeriesBlock, want: SeriesBlock) -> None:
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.values, want.values)  # NaN == NaN here
    np.testing.assert_array_equal(got.start, want.start)
    assert got.freq == want.freq
    for field in ("cat", "dynamic_feat", "item_id"):
        mine, theirs = getattr(got, field), getattr(want, field)
        assert (mine is None) == (theirs is None), field
        if mine is not None:
            np.testing.assert_array_equal(mine, theirs, err_msg=field)


def _jsonl(path, records, opener=open):
    with opener(path, "wt") as f:
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def test_series_formats_are_registered():
    for name in ("deepar_jsonl", "deepar_parquet", "series_csv", "points_csv", "points_jsonl"):
        assert formats.get(name).name == name
    assert "deepar_jsonl" not in formats.record_names()


@pytest.mark.parametrize("gz", [False, True])
def test_deepar_jsonl_reads_targets_with_nan_and_null_cat_and_dynamic_feat(tmp_path, gz):
    path = tmp_path / ("train.json.gz" if gz else "train.json")
    _jsonl(path, RECORDS, gzip.open if gz else open)
    block, bad, blocks = _read(path, "deepar_jsonl", block_size=2)
    assert bad == [] and len(blocks) >= 1
    _same(block, SeriesBlock.from_records(RECORDS, "H"))
    assert np.isnan(block.target(0)[1]) and np.isnan(block.target(1)[1])
    assert block.origin == (str(path), 0)


def test_deepar_jsonl_names_its_bad_records(tmp_path):
    lines = [
        RECORDS[0],
        "{not json",
        {"start": "2020-01-01", "cat": [0, 1], "dynamic_feat": [[1.0]]},
        {"start": "yesterday", "target": [1.0], "cat": [0, 1], "dynamic_feat": [[1.0]]},
        {"start": "2020-01-01", "target": [1.0, "x"], "cat": [0, 1], "dynamic_feat": [[1.0, 2.0]]},
        {"start": "2020-01-01", "target": [1.0]},
        {"start": "2020-01-01", "target": [1.0, 2.0], "cat": [0, 1], "dynamic_feat": [[1.0]]},
        {"start": "2020-01-01", "target": [True], "cat": [0, 1], "dynamic_feat": [[1.0]]},
        RECORDS[2],
    ]
    path = _jsonl(tmp_path / "bad.json", lines)
    block, bad, _ = _read(path, "deepar_jsonl")
    _same(block, SeriesBlock.from_records([RECORDS[0], RECORDS[2]], "H"))
    assert [b["line"] for b in bad] == [2, 3, 4, 5, 6, 7, 8]
    assert all(b["file"] == str(path) for b in bad)
    reasons = [b["reason"] for b in bad]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "no 'target'"
    assert "'start' 'yesterday', which is not a timestamp" in reasons[2]
    assert "'target' that is not a list of numbers" in reasons[3]
    assert reasons[4] == "has no 'cat', unlike the first record of the input"
    assert "'dynamic_feat' of shape (1, 1)" in reasons[5]
    assert "boolean" in reasons[6]
    with pytest.raises(BadInputError, match=r"bad\.json.*line 2"):
        _read(path, "deepar_jsonl", strict=True)


def test_deepar_jsonl_refuses_a_file_of_something_else(tmp_path):
    path = _jsonl(tmp_path / "x.json", [[1, 2, 3]])
    with pytest.raises(BadInputError, match="is not a DeepAR series"):
        _read(path, "deepar_jsonl")
    with pytest.raises(BadInputError, match="time_freq must be"):
        _read(_jsonl(tmp_path / "y.json", RECORDS), "deepar_jsonl", freq="Q")


def _parquet(path, records, start_type=None, row_group_size=2):
    table = pa.Table.from_pylist(
        [{**r, "target": [None if v == "NaN" else v for v in r["target"]]} for r in records]
    )
    if start_type is not None:
        table = table.set_column(0, "start", table.column("start").cast(pa.timestamp("s")))
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("start_type", [None, "timestamp"])
def test_deepar_parquet_matches_the_json_records(tmp_path, start_type):
    path = _parquet(tmp_path / "train.parquet", RECORDS, start_type)
    block, bad, blocks = _read(path, "deepar_parquet", block_size=2)
    assert bad == [] and len(blocks) == 2
    _same(block, SeriesBlock.from_records(RECORDS, "H"))


def test_deepar_parquet_names_bad_rows_by_index(tmp_path):
    records = [*RECORDS, {**RECORDS[0], "target": [1.0, float("inf"), 2.0]}]
    records[1] = {**RECORDS[1], "start": "not a time"}
    path = _parquet(tmp_path / "bad.parquet", records, row_group_size=10)
    block, bad, _ = _read(path, "deepar_parquet")
    _same(block, SeriesBlock.from_records([RECORDS[0], RECORDS[2]], "H"))
    assert [(b["offset"], b["line"]) for b in bad] == [(1, None), (3, None)]
    assert "not a timestamp" in bad[0]["reason"] and "inf" in bad[1]["reason"]
    with pytest.raises(BadInputError, match="has no column 'target'"):
        pq.write_table(pa.table({"start": ["2020-01-01"]}), tmp_path / "n.parquet")
        _read(tmp_path / "n.parquet", "deepar_parquet")


def _wide(path, rows, header=True):
    width = max(len(r) for r in rows)
    with open(path, "w") as f:
        if header:
            f.write(",".join(f'"V{j + 1}"' for j in range(width)) + "\n")
        for r in rows:
            f.write(",".join(f'"{v}"' for v in r + [""] * (width - len(r))) + "\n")
    return path


def test_series_csv_reads_the_m4_layout(tmp_path):
    rows = [["H1", "1", "2", "3"], ["H2", "4", "", "6", "7", "8"], ["H3", "9"]]
    path = _wide(tmp_path / "w.csv", rows)
    block, bad, _ = _read(path, "series_csv", start="2015-07-01 12:00:00")
    assert bad == []
    want = SeriesBlock.from_series(
        [[1, 2, 3], [4, np.nan, 6, 7, 8], [9]],
        ["2015-07-01 12:00:00"] * 3,
        "H",
        item_id=["H1", "H2", "H3"],
    )
    _same(block, want)


def test_series_csv_ragged_lines_and_bad_fields(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,1,2\nb,3,x,4\nc,5,6,7,,\n,8\nd,\n")
    block, bad, _ = _read(path, "series_csv")
    want = SeriesBlock.from_series([[1, 2], [5, 6, 7]], ["1750-01-01"] * 2, "H", item_id=["a", "c"])
    _same(block, want)
    assert [(b["line"], b["reason"]) for b in bad] == [
        (2, "field 2 ('x') is not a number"),
        (4, "no series id in the first field"),
        (5, "no values after the series id"),
    ]


M4 = Path(os.environ.get("BEAM_ML_DATA", "/work/shared/data")) / "m4-hourly"


@pytest.mark.skipif(not (M4 / "Hourly-train.csv").exists(), reason="m4-hourly data absent")
def test_series_csv_reads_m4_hourly():
    train, bad, _ = _read(M4 / "Hourly-train.csv", "series_csv", block_size=100)
    test, _, _ = _read(M4 / "Hourly-test.csv", "series_csv")
    assert bad == [] and train.n_rows == test.n_rows == 414
    assert (train.lengths.min(), train.lengths.max()) == (700, 960)  # SOURCE.md
    assert set(test.lengths.tolist()) == {48} and (train.item_id == test.item_id).all()
    assert not np.isnan(train.values).any()
    first = (M4 / "Hourly-train.csv").read_text().splitlines()[1].split(",")
    np.testing.assert_array_equal(train.target(0), [float(v.strip('"')) for v in first[1:] if v])


def _points(rng, n_series=4, length=30, freq_seconds=3600):
    """Shuffled points of series with gaps, and the series they make."""
    points, want = [], {}
    t0 = np.datetime64("2021-03-01T00:00:00", "s")
    for i in range(n_series):
        start = t0 + int(rng.integers(0, 10)) * freq_seconds
        values = rng.normal(size=length).round(3)
        present = rng.random(length) < 0.8
        present[0] = present[-1] = True
        values[~present] = np.nan
        want[f"s{i}"] = (start, values)
        for t in np.flatnonzero(present):
            points.append((f"s{i}", start + int(t) * freq_seconds, values[t]))
    order = rng.permutation(len(points))
    return [points[k] for k in order], want


def _expected(want, freq):
    ids = sorted(want)
    return SeriesBlock.from_series(
        [want[i][1] for i in ids], [want[i][0] for i in ids], freq, item_id=ids
    )


@pytest.mark.parametrize("fmt", ["points_csv", "points_jsonl"])
def test_points_become_series_with_gaps_missing(tmp_path, rng, fmt):
    points, want = _points(rng)
    path = tmp_path / ("p.csv" if fmt == "points_csv" else "p.json")
    with open(path, "w") as f:
        if fmt == "points_csv":
            f.write("series_id,timestamp,value\n")
        for sid, t, v in points:
            if fmt == "points_csv":
                f.write(f"{sid},{str(t).replace('T', ' ')},{v}\n")
            else:
                f.write(json.dumps({"series_id": sid, "timestamp": str(t), "value": v}) + "\n")
    block, bad, blocks = _read(path, fmt)
    assert bad == [] and len(blocks) == 1
    _same(block, _expected(want, "H"))


def test_points_bad_records_are_named(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "a,2021-01-01 00:00:00,1\n"
        "a,2021-01-01 02:00:00,\n"  # a missing value
        "a,2021-01-01 01:30:00,5\n"  # off the hourly grid
        "b,not a time,2\n"
        "a,2021-01-01 02:00:00,3\n"  # a second value for a's 02:00
        "b,2021-01-01 00:00:00,abc\n"
        "b,2021-01-01 03:00:00,inf\n"
        "b,2021-01-01 04:00:00,4\n"
    )
    block, bad, _ = _read(path, "points_csv")
    want = SeriesBlock.from_series(
        [[1, np.nan, np.nan], [4]],
        ["2021-01-01 00:00:00", "2021-01-01 04:00:00"],
        "H",
        item_id=["a", "b"],
    )
    # which of a's two 02:00 values is kept is the sort's: either, but only one
    assert bad[0]["line"] == 3 and "not a whole number of 'H' steps" in bad[0]["reason"]
    lines = {b["line"]: b["reason"] for b in bad}
    assert set(lines) - {2, 5} == {3, 4, 6, 7} and len(lines) == 5
    assert "timestamp ('not a time') is not a timestamp" in lines[4]
    assert lines[6] == "value ('abc') is not a number" and "infinite" in lines[7]
    kept = [b for b in bad if b["line"] in (2, 5)]
    assert kept[0]["reason"] == "a second value for the same series and time"
    np.testing.assert_array_equal(block.offsets, want.offsets)
    np.testing.assert_array_equal(block.item_id, want.item_id)
    np.testing.assert_array_equal(block.start, want.start)


def test_monthly_points_are_placed_by_month(tmp_path):
    path = tmp_path / "m.json"
    _jsonl(
        path,
        [
            {"series_id": 7, "timestamp": "2020-03-15", "value": 3},
            {"series_id": 7, "timestamp": "2020-01-31", "value": 1},
            {"series_id": 7, "timestamp": "2020-05-01", "value": None},
            {"series_id": 7, "timestamp": "2020-06-02", "value": 6},
        ],
    )
    block, bad, _ = _read(path, "points_jsonl", freq="M")
    assert bad == []
    _same(
        block,
        SeriesBlock.from_series(
            [[1, np.nan, 3, np.nan, np.nan, 6]], ["2020-01-01"], "M", item_id=["7"]
        ),
    )


def test_item_ids_follow_concat_and_slice():
    a = SeriesBlock.from_series([[1.0], [2.0, 3.0]], ["2020-01-01"] * 2, "D", item_id=["x", "y"])
    b = SeriesBlock.from_series([[4.0]], ["2020-01-01"], "D", item_id=["z"])
    both = SeriesBlock.concat([a, b])
    assert both.item_id.tolist() == ["x", "y", "z"]
    assert both.slice(1, 3).item_id.tolist() == ["y", "z"]
    plain = SeriesBlock.from_series([[4.0]], ["2020-01-01"], "D")
    assert plain.item_id is None and plain.slice(0, 1).item_id is None
    with pytest.raises(BadInputError, match="different 'item_id' presence"):
        SeriesBlock.concat([a, plain])
    with pytest.raises(BadInputError, match="2 targets but 1 values of 'item_id'"):
        SeriesBlock.from_series([[1.0], [2.0]], ["2020-01-01"] * 2, "D", item_id=["x"])
    broken = SeriesBlock(a.values, a.offsets, a.start, "D", item_id=np.array([1, 2]))
    with pytest.raises(BadInputError, match="'item_id' as one string per series"):
        SeriesBlock.validate(broken)
