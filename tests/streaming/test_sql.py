"""Database query results as training input: ReadSql against real SQLite files."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from beam_ml.core.errors import BadInputError
from beam_ml.io.sql import ReadSql
from tests.streaming.helpers import MULTI_PROCESS, beam_ml, run_source, stack

pytestmark = pytest.mark.streaming

BAD_IDS = {17: None, 333: "oops", 900: float("inf")}  # id -> the bad value of column b


@pytest.fixture
def database(tmp_path, rng):
    """1,000 rows (id 1..1000; a, b, c float32-exact; label), three of them bad."""
    rows = rng.normal(size=(1000, 4)).astype(np.float32).astype(np.float64)
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a REAL, b, c REAL, label REAL)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            [
                (i + 1, r[0], BAD_IDS.get(i + 1, r[1]), r[2], r[3])
                for i, r in enumerate(rows.tolist())
            ],
        )
    good = np.array([i + 1 not in BAD_IDS for i in range(1000)])
    return path, rows[good]


def test_key_ranges_read_in_parallel_every_row_once(database):
    path, rows = database
    read = ReadSql(
        str(path),
        "SELECT id, a, b, c, label FROM t",
        label_column="label",
        split_column="id",
        n_splits=4,
        block_size=100,
    )
    assert (read.n_features, read.feature_columns, read.n_ranges) == (3, ["a", "b", "c"], 4)
    blocks, dead = run_source(read.with_dead_letters(), 2)
    features, labels = stack(blocks)
    np.testing.assert_array_equal(features, rows[:, :3].astype(np.float32))
    np.testing.assert_array_equal(labels, rows[:, 3])
    assert features.dtype == np.float32 and labels.dtype == np.float64
    assert max(b.n_rows for b in blocks) <= 100
    reasons = {r["offset"]: r["reason"] for r in dead}
    assert reasons == {
        17: "column 'b' is NULL",
        333: "column 'b' ('oops') is not a number",
        900: "column 'b' is inf",
    }
    assert all(r["file"] == f"sqlite:///{path}" for r in dead)


def test_split_rows_and_a_single_query(database):
    path, rows = database
    assert (
        ReadSql(
            f"sqlite:///{path}", "SELECT id, a FROM t", split_column="id", split_rows=300
        ).n_ranges
        == 4
    )
    read = ReadSql(path.as_posix(), "SELECT a, c FROM t WHERE id <= 10;", block_size=4)
    assert read.n_ranges == 1 and read.n_features == 2
    [blocks] = run_source(read)
    features, labels = stack(blocks)
    np.testing.assert_array_equal(features, rows[:10][:, [0, 2]].astype(np.float32))
    assert labels is None


def test_construction_errors(database, tmp_path):
    path, _ = database
    with pytest.raises(BadInputError, match="does not exist"):
        ReadSql(str(tmp_path / "missing.db"), "SELECT 1")
    with pytest.raises(BadInputError, match="query failed"):
        ReadSql(str(path), "SELECT nope FROM t")
    with pytest.raises(BadInputError, match="label_column 'y' is not a column"):
        ReadSql(str(path), "SELECT a FROM t", label_column="y")
    with pytest.raises(BadInputError, match="column 'name' of the query holds str"):
        ReadSql(str(path), "SELECT a, 'x' AS name FROM t")
    with pytest.raises(BadInputError, match="must be an integer column"):
        ReadSql(str(path), "SELECT a, c FROM t", split_column="a")
    with pytest.raises(BadInputError, match="'n_splits' parameter of ReadSql"):
        ReadSql(str(path), "SELECT a FROM t", n_splits=0)


def test_cli_trains_on_a_query(database, tmp_path):
    path, rows = database
    out = beam_ml(
        "train",
        "pca",
        "--input",
        path,
        "--query",
        "SELECT id, a, b, c FROM t",
        "--split_column",
        "id",
        "--output",
        tmp_path / "state",
        "--num_components",
        2,
        *MULTI_PROCESS,
    )
    summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 997 and summary["config"]["feature_dim"] == 3
    state, _ = read_checkpoint(str(tmp_path / "state"))
    reference = PCAState(PCAConfig(num_components=2)).update(rows[:, :3])
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    dead = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert sorted(r["offset"] for r in dead) == sorted(BAD_IDS)


def _sql_counters(read: ReadSql) -> dict[str, int]:
    import apache_beam as beam

    from beam_ml.core.runner import counter
    from tests.conftest import direct_options

    p = beam.Pipeline(options=direct_options())
    _ = p | read
    result = p.run()
    result.wait_until_finish()
    return {name: counter(result, name) for name in ("records_read", "rows_read", "bad_records")}


def test_null_keys_and_numeric_text_are_read_and_accounted_for(tmp_path):
    """Rows whose split key is NULL belong to no key range: one more range reads them.
    Text is a dead letter even when it reads as a number ('6.5')."""
    path = tmp_path / "n.db"
    rows = [
        (None if i % 4 == 0 else i, float(i), "6.5" if i == 6 else float(i)) for i in range(1, 41)
    ]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, a REAL, b)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)

    def read_table():
        return ReadSql(str(path), "SELECT id, a, b FROM t", split_column="id", n_splits=3)

    read = read_table()
    assert read.n_ranges == 4  # three key ranges, and the ten NULL keys
    blocks, dead = run_source(read.with_dead_letters(), 2)
    used = np.concatenate([np.asarray(b.features)[:, 0] for b in blocks])
    assert sorted(used.tolist()) == [float(i) for i in range(1, 41) if i != 6]
    assert [(r["offset"], r["reason"]) for r in dead] == [
        (6, "column 'b' ('6.5') is text, not a number (cast it)")
    ]
    assert _sql_counters(read_table()) == {"records_read": 40, "rows_read": 39, "bad_records": 1}
    # every key NULL: one range, all rows
    only_nulls = ReadSql(str(path), "SELECT NULL AS id, a FROM t", split_column="id")
    assert only_nulls.n_ranges == 1
    assert _sql_counters(only_nulls) == {"records_read": 40, "rows_read": 40, "bad_records": 0}


def test_a_mostly_bad_result_is_an_error_unless_allowed(tmp_path):
    path = tmp_path / "bad.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a REAL, b)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(1.0, 2.0)] + [(1.0, None)] * 20)
    with pytest.raises(BadInputError, match=r"20 of the 21 records read from sqlite:///.*"):
        _sql_counters(ReadSql(str(path), "SELECT a, b FROM t"))
    counts = _sql_counters(ReadSql(str(path), "SELECT a, b FROM t", max_bad_fraction=1.0))
    assert counts == {"records_read": 21, "rows_read": 1, "bad_records": 20}
