"""The series formats through the generic reading path: ReadBlocks (a Beam pipeline)
and read_blocks_local give the blocks that read_series gives, bad records as dead
letters named by file and line; and DeepAR's 'auto' cardinality and num_dynamic_feat
resolved from the data (numpy over the records as the reference)."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.algorithms.deepar import DeepARConfig, DeepARState, resolve_auto
from beam_ml.core.errors import BadInputError
from beam_ml.core.runner import pipeline_options
from beam_ml.core.series import SeriesBlock
from beam_ml.io.formats.series_common import read_series
from beam_ml.io.sources import ReadBlocks, ReadCounts, read_blocks_local


def _records(rng, n, with_dynamic=False):
    out = []
    for i in range(n):
        length = int(rng.integers(5, 30))
        record = {
            "start": f"2021-03-{1 + i % 28:02d} 0{i % 10}:00:00",
            "target": np.round(rng.normal(size=length), 4).tolist(),
            "cat": [int(rng.integers(0, 7)), int(rng.integers(0, 3))],
        }
        if with_dynamic:
            record["dynamic_feat"] = [np.round(rng.normal(size=length), 4).tolist()]
        out.append(record)
    return out


BAD_LINES = [
    '{"start": "2021-01-01 00:00:00", "target": [1.0, "x"], "cat": [0, 0]}',
    '{"target": [1.0, 2.0], "cat": [0, 0]}',
    '"just a string"',
]


@pytest.fixture
def series_file(tmp_path, rng):
    records = _records(rng, 40)
    lines = [json.dumps(r) for r in records]
    for k, bad in enumerate(BAD_LINES):  # at lines 6, 17, 28
        lines.insert(5 + 11 * k, bad)
    path = tmp_path / "train.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path, records


def _same(a: SeriesBlock, b: SeriesBlock) -> None:
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.start, b.start)
    np.testing.assert_array_equal(a.cat, b.cat)


def test_read_blocks_local_gives_read_series_blocks_and_names_bad_lines(series_file):
    path, records = series_file
    dead, counts = [], ReadCounts()
    blocks = list(
        read_blocks_local(
            str(path), "deepar_jsonl", freq="H", block_size=7, dead_letters=dead, counts=counts
        )
    )
    assert len(blocks) > 1
    _same(SeriesBlock.concat(blocks), SeriesBlock.from_records(records, "H"))
    _same(
        SeriesBlock.concat(blocks),
        SeriesBlock.concat(list(read_series(str(path), "deepar_jsonl", freq="H", dead_letters=[]))),
    )
    assert [d["line"] for d in dead] == [6, 17, 28]
    assert "'target'" in dead[0]["reason"] and "'start'" in dead[1]["reason"]
    assert "found str" in dead[2]["reason"]
    assert (counts.records_read, counts.rows_used, counts.rows_set_aside) == (43, 40, 3)


@pytest.mark.beam
def test_read_blocks_in_a_pipeline_with_dead_letters(series_file):
    path, records = series_file
    read = ReadBlocks(str(path), "deepar_jsonl", freq="H", block_size=9)
    expected = sorted(float(np.nansum(r["target"])) for r in records)
    with beam.Pipeline(options=pipeline_options()) as p:
        blocks, dead = p | read.with_dead_letters()
        sums = blocks | beam.FlatMap(
            lambda b: [float(np.nansum(b.target(i))) for i in range(b.n_rows)]
        )
        assert_that(
            sums | beam.combiners.ToList() | beam.Map(lambda s: np.round(sorted(s), 6).tolist()),
            equal_to([np.round(expected, 6).tolist()]),
            label="Series",
        )
        assert_that(dead | beam.Map(lambda d: d["line"]), equal_to([6, 17, 28]), label="Dead")


def test_points_are_read_as_series_without_lost_record_errors(tmp_path):
    lines = ["series_id,timestamp,value"]
    for t in range(30):
        for sid in ("a", "b"):
            if not (sid == "b" and t == 4):  # a gap: missing
                lines.append(f"{sid},2020-02-01 {t // 4:02d}:{(t % 4) * 15:02d}:00,{t}")
    lines.append("c,not a time,1")
    path = tmp_path / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    dead, counts = [], ReadCounts()
    blocks = list(
        read_blocks_local(str(path), "points_csv", freq="15min", dead_letters=dead, counts=counts)
    )
    block = SeriesBlock.concat(blocks)
    assert block.item_id.tolist() == ["a", "b"]
    np.testing.assert_array_equal(block.target(0), np.arange(30.0))
    want_b = np.arange(30.0)
    want_b[4] = np.nan
    np.testing.assert_array_equal(block.target(1), want_b)
    assert counts.records_read == 60 and len(dead) == 1 and dead[0]["line"] == 61


def test_series_options_are_checked(series_file, tmp_path):
    path, _ = series_file
    with pytest.raises(BadInputError, match="reads time series: give their frequency"):
        ReadBlocks(str(path), "deepar_jsonl")
    csv = tmp_path / "m.csv"
    csv.write_text("1,2\n3,4\n")
    with pytest.raises(BadInputError, match="apply to the series formats, not 'csv'"):
        ReadBlocks(str(csv), "csv", freq="H")
    with pytest.raises(BadInputError, match="time_freq must be"):
        ReadBlocks(str(path), "deepar_jsonl", freq="fortnightly")


def test_auto_cardinality_is_the_largest_id_plus_one_over_all_blocks(series_file):
    path, records = series_file
    blocks = read_blocks_local(str(path), "deepar_jsonl", freq="H", block_size=5, dead_letters=[])
    config = resolve_auto(DeepARConfig("H", 6, num_cells=4, num_layers=1), blocks)
    highest = np.max([r["cat"] for r in records], axis=0)
    assert config.cardinality == tuple(int(h) + 1 for h in highest)
    assert config.num_dynamic_feat == 0
    kept = DeepARConfig("H", 6, cardinality="ignore", num_dynamic_feat=2)
    assert resolve_auto(kept, iter(())) == kept  # nothing to resolve, nothing read


def test_auto_dynamic_features_and_disagreeing_blocks(rng):
    with_dyn = SeriesBlock.from_records(_records(rng, 3, with_dynamic=True), "H")
    without = SeriesBlock.from_records(_records(rng, 2), "H")
    config = DeepARConfig("H", 6, cardinality=(7, 3))
    assert resolve_auto(config, [with_dyn, with_dyn]).num_dynamic_feat == 1
    with pytest.raises(BadInputError, match=r"1 'dynamic_feat' in the first, 2 and 0 in others"):
        resolve_auto(DeepARConfig("H", 6), [with_dyn, without])


def test_a_state_refuses_cat_it_cannot_size(rng):
    block = SeriesBlock.from_records(_records(rng, 3), "H")
    with pytest.raises(
        BadInputError, match="the block has 2: with cardinality='auto' got series with 'cat'"
    ):
        DeepARState(DeepARConfig("H", 6, num_cells=4, num_layers=1)).update(block)


def test_point_records_of_a_stream_decode_to_series():
    """Kafka / Pub/Sub values of point records: one series per id of the batch, bad
    records named by their record id."""
    from beam_ml.io.records import decode_records, record_spec

    values = [b"a,2020-01-01 00:00:00,1", b"b,2020-01-01 01:00:00,5", b"a,2020-01-01 02:00:00,3",
              b"a,yesterday,9", b"b,2020-01-01 02:00:00,"]  # fmt: skip
    spec = record_spec("points_csv", values[0], freq="H")
    block, bad = decode_records(spec, "kafka://points/0", [10, 11, 12, 13, 14], values)
    assert isinstance(block, SeriesBlock) and block.item_id.tolist() == ["a", "b"]
    np.testing.assert_array_equal(block.target(0), [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(block.target(1), [5.0, np.nan])
    assert block.start.astype(str).tolist() == ["2020-01-01T00:00:00", "2020-01-01T01:00:00"]
    assert block.origin == ("kafka://points/0", 10)
    assert [b["offset"] for b in bad] == [13] and "timestamp" in bad[0]["reason"]
    jsonl = record_spec("points_jsonl", None, freq="D")
    block, bad = decode_records(jsonl, "pubsub://s", ["m1"], [b'{"series_id": 7, "timestamp": "2020-01-02", "value": 2}'])  # fmt: skip
    assert block.item_id.tolist() == ["7"] and bad == []
    with pytest.raises(BadInputError, match="give their frequency"):
        record_spec("points_csv", values[0])
    with pytest.raises(BadInputError, match="apply to the series formats, not 'csv'"):
        record_spec("csv", b"1,2", freq="H")


def test_series_with_ids_train_on_every_epoch(rng):
    """Series read with ids (series_csv, point records) are tracked on a pass over new
    data; a further epoch over the same values trains as many windows as without ids."""
    targets = [np.sin(np.arange(200) / 4) + rng.normal(0, 0.1, 200) for _ in range(6)]
    config = DeepARConfig("H", 12, num_cells=4, num_layers=1, mini_batch_size=8, epochs=2)
    windows = {}
    for ids in (None, [f"s{i}" for i in range(6)]):
        block = SeriesBlock.from_series(targets, ["2020-01-01"] * 6, "H", item_id=ids)
        state = DeepARState(config).update(block)
        first = state.n_windows + len(state.pending)
        state = state.continued().update(block)
        windows[ids is None] = (first, state.n_windows + len(state.pending))
    # the expected count: each forecast start of 6 series of 200 with probability 1 / 12
    expected = 6 * (200 - 12) / 12
    for first, second in windows.values():
        assert abs(first - expected) < 4 * np.sqrt(expected)
        assert abs(second - expected) < 4 * np.sqrt(expected)
