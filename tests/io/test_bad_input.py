"""Bad input: a clear error or dead letters, never a traceback, every record accounted for.

Each format is fuzzed with generated files (seeded; ``BEAM_ML_TEST_SEED`` as everywhere):
a valid file, then random damage (stray quotes, carriage returns, delimiters, colons,
brackets, huge numbers and fields, NUL and non-UTF-8 bytes, byte order marks, cuts,
deleted and repeated pieces, gzip, truncated gzip). Whatever the damage, a read either
raises :class:`BadInputError` (one clear line) or returns rows and dead letters with
``rows used + dead letters == records read``, where records read is counted here, apart
from the reader, as the file's non-blank lines (rows, for ``.npy``, Parquet and SQL).
Then one test per class of failure found by the trial over 1,190 bad inputs.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import struct
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.sources import ReadBlocks, ReadCounts, read_blocks_local
from beam_ml.io.sql import _read_range, _split

CASES = 40  # damaged files per format (each read takes milliseconds)


# ----------------------------------------------------------------------------- helpers


def read(path, fmt, **options):
    """(rows, dead letters, counts) of a read that must account for every record;
    BadInputError propagates, any other exception fails the test with its traceback."""
    dead: list[dict] = []
    counts = ReadCounts()
    rows = sum(
        b.n_rows
        for b in read_blocks_local(str(path), fmt, dead_letters=dead, counts=counts, **options)
    )
    assert rows == counts.rows_used and len(dead) == counts.rows_set_aside
    assert counts.records_read == counts.rows_used + counts.rows_set_aside
    for record in dead:
        assert record["file"] in counts.files and record["reason"], record
        if fmt in ("csv", "libsvm", "jsonl"):
            assert record["line"] is not None and record["line"] >= 1, record
    return rows, dead, counts


def non_blank_lines(data: bytes, fmt: str) -> int:
    """Records as this test counts them: lines with something on them (LIBSVM: before
    a comment), a byte order mark at the very start not counting."""
    if data.startswith(formats.BOM):
        data = data[len(formats.BOM) :]
    lines = data.split(b"\n")
    if fmt == "libsvm":
        lines = [line.split(b"#", 1)[0] for line in lines]
    return sum(1 for line in lines if line.strip())


def header_lines(path, fmt, options) -> int:
    """1 if the reader takes the first line of this (single) CSV file as a header."""
    if fmt != "csv" or options.get("header") is False or not path.read_bytes().strip():
        return 0
    return int(ReadBlocks(str(path), fmt, max_bad_fraction=1.0, **options).has_header)


_NASTY = [
    b'"',
    b"\r",
    b"\n",
    b",",
    b":",
    b"#",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\x00",
    b"\xff\xfe",
    formats.BOM,
    b" ",
    b"\t",
    b"nan",
    b"-inf",
    b"1e999",
    b"9" * 400,
    b"qid:",
    b"0:1",
    b"\\",
    b"'",
    b"true",
    b"null",
    b"-",
    b".",
]


def damage(data: bytes, rng: np.random.Generator) -> bytes:
    """A few random injuries to ``data``."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 7))
        at = int(rng.integers(0, len(data) + 1))
        if kind <= 2:  # insert something nasty
            data[at:at] = _NASTY[int(rng.integers(0, len(_NASTY)))]
        elif kind == 3:  # cut the file
            del data[at:]
        elif kind == 4:  # delete a piece
            del data[at : at + int(rng.integers(1, 30))]
        elif kind == 5:  # repeat a piece
            data[at:at] = data[at : at + int(rng.integers(1, 40))]
        else:  # overwrite a byte
            if data:
                data[min(at, len(data) - 1)] = int(rng.integers(0, 256))
    return bytes(data)


def fuzz(tmp_path, rng, fmt, base: bytes, name: str, **options) -> dict[str, int]:
    """Read ``CASES`` damaged copies of ``base``; returns how the reads ended."""
    outcomes = {"read": 0, "error": 0, "dead letters": 0}
    for case in range(CASES):
        data = damage(base, rng)
        path = tmp_path / f"{case}-{name}"
        path.write_bytes(data)
        try:
            rows, dead, counts = read(path, fmt, max_bad_fraction=1.0, **options)
        except BadInputError as exc:
            assert "\n" not in str(exc).strip() and str(path) in str(exc), str(exc)
            outcomes["error"] += 1
            continue
        expected = non_blank_lines(data, fmt) - header_lines(path, fmt, options)
        assert counts.records_read == expected, data
        outcomes["read"] += 1
        outcomes["dead letters"] += len(dead)
    return outcomes


def csv_base(rng, n=30, d=4) -> bytes:
    x = rng.normal(size=(n, d)).round(3)
    return "".join(",".join(map(str, row)) + "\n" for row in x).encode()


# -------------------------------------------------------------------------------- fuzz


def test_fuzz_csv(tmp_path, rng):
    outcomes = fuzz(tmp_path, rng, "csv", csv_base(rng), "x.csv", header=False)
    assert outcomes["read"] > CASES // 2 and outcomes["dead letters"] > 0, outcomes
    outcomes = fuzz(tmp_path, rng, "csv", csv_base(rng), "y.csv", label_column=0)
    assert outcomes["read"] > CASES // 2, outcomes


def test_fuzz_libsvm(tmp_path, rng):
    lines = [
        f"{int(rng.integers(0, 2))} "
        + " ".join(f"{j}:{rng.normal():.3f}" for j in sorted(rng.choice(20, 4, replace=False) + 1))
        for _ in range(30)
    ]
    base = ("\n".join(lines) + "\n").encode()
    outcomes = fuzz(tmp_path, rng, "libsvm", base, "x.svm", feature_dim=20)
    assert outcomes["read"] > CASES // 2 and outcomes["dead letters"] > 0, outcomes
    # without feature_dim: inferred (within its bound), or a clear error
    outcomes = fuzz(tmp_path, rng, "libsvm", base, "y.svm")
    assert outcomes["read"] > 0, outcomes


def test_fuzz_jsonl(tmp_path, rng):
    x = rng.normal(size=(30, 3)).round(3)
    arrays = "".join(json.dumps(row) + "\n" for row in x.tolist()).encode()
    outcomes = fuzz(tmp_path, rng, "jsonl", arrays, "x.jsonl")
    assert outcomes["read"] > CASES // 2 and outcomes["dead letters"] > 0, outcomes
    objects = "".join(
        json.dumps({"features": row, "label": i % 2}) + "\n" for i, row in enumerate(x.tolist())
    ).encode()
    outcomes = fuzz(tmp_path, rng, "jsonl", objects, "y.jsonl")
    assert outcomes["read"] > CASES // 2, outcomes


def test_fuzz_gzip(tmp_path, rng):
    """Damage inside the compressed bytes: an error, or (damage the CRC does not see
    being rare) a read that accounts for every record of what it decompressed."""
    base = gzip.compress(csv_base(rng))
    for case in range(CASES):
        data = bytearray(base)
        if case % 2:
            del data[int(rng.integers(10, len(data))) :]  # truncated
        else:
            data[int(rng.integers(10, len(data)))] ^= 1 + int(rng.integers(0, 255))
        path = tmp_path / f"{case}.csv.gz"
        path.write_bytes(bytes(data))
        try:
            _, _, counts = read(path, "csv", header=False, max_bad_fraction=1.0)
        except BadInputError as exc:
            assert str(path) in str(exc) and ("truncated or corrupt" in str(exc)), str(exc)
            continue
        assert counts.records_read == 30  # the damage changed no record


def test_fuzz_npy(tmp_path, rng):
    x = rng.normal(size=(50, 3))
    np.save(tmp_path / "base.npy", x)
    base = (tmp_path / "base.npy").read_bytes()
    for case in range(CASES):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, 128))  # the header and its neighbourhood
            data[at] = (
                int(rng.integers(0, 256)) if case % 2 else b"(9,)'< "[int(rng.integers(0, 7))]
            )
        if case % 5 == 0:
            del data[int(rng.integers(0, len(data))) :]
        path = tmp_path / f"{case}.npy"
        path.write_bytes(bytes(data))
        started = time.monotonic()
        try:
            rows, _, counts = read(path, "npy", max_bad_fraction=1.0)
        except BadInputError as exc:
            assert str(path) in str(exc)
            continue
        finally:
            assert time.monotonic() - started < 5  # nothing enormous allocated
        assert counts.records_read == rows + counts.rows_set_aside


def test_fuzz_parquet(tmp_path, rng):
    table = pa.table({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    pq.write_table(table, tmp_path / "base.parquet", row_group_size=50)
    base = (tmp_path / "base.parquet").read_bytes()
    for case in range(CASES):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if case % 3 == 0:
            del data[int(rng.integers(0, len(data))) :]
        path = tmp_path / f"{case}.parquet"
        path.write_bytes(bytes(data))
        try:
            _, _, counts = read(path, "parquet", max_bad_fraction=1.0)
        except BadInputError as exc:
            assert str(path) in str(exc)
            continue
        assert counts.records_read == (300 if data else 0)  # an empty file holds none


def test_fuzz_sqlite(tmp_path, rng):
    """NULL, NaN, text (numeric-looking too), blobs, huge numbers and NULL keys: every
    row of the result is used or set aside, whatever the key ranges."""
    from beam_ml.io.sql import ReadSql

    pool = [None, float("nan"), "abc", "3.5", b"\x01", 1e300, 10**18, -0.0, 2.5, 7]
    for case in range(10):
        path = tmp_path / f"{case}.db"
        n = int(rng.integers(1, 60))
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (id INTEGER, a, b, y)")
            db.executemany(
                "INSERT INTO t VALUES (?, ?, ?, ?)",
                [
                    (
                        None if rng.random() < 0.2 else int(rng.integers(-5, 100)),
                        1.0 if i == 0 else pool[int(rng.integers(0, len(pool)))],
                        float(i),
                        pool[int(rng.integers(0, len(pool)))] if rng.random() < 0.3 else 1.0,
                    )
                    for i in range(n)
                ],
            )
        read_sql = ReadSql(
            str(path),
            "SELECT id, a, b, y FROM t",
            label_column="y",
            split_column="id",
            n_splits=3,
            max_bad_fraction=1.0,
        )
        spec, engine = read_sql._spec, _engine_for(read_sql)
        records = used = aside = 0
        for rng_ in _split(spec, engine, 3, 100):
            for block, bad, fetched in _read_range(spec, engine, rng_):
                records += fetched
                used += 0 if block is None else block.n_rows
                aside += len(bad)
        assert records == n and used + aside == n


def _engine_for(read_sql):
    from beam_ml.io.sql import _engine

    return _engine(read_sql._spec.url)


# ------------------------------------------------------------ the trial's failure classes


def test_csv_line_breaks_in_fields_and_huge_fields_are_dead_letters(tmp_path):
    good = "".join(f"{i},{i + 1},{i + 2}\n" for i in range(40))
    cases = {
        "quoted_newline": '1,"2\n3",4\n',
        "unterminated_quote": '1,"2,3\n',
        "carriage_return": "1,2\r3,4\n",
        "huge_field": "1,2," + "3" * 200_000 + "\n",
        "huge_quoted_first": '1,2,"' + "3" * 200_000 + '"\n',
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(bad + good)
        rows, dead, counts = read(path, "csv")
        assert rows == 40, name
        assert counts.records_read == non_blank_lines(path.read_bytes(), "csv"), name
        assert all(d["line"] <= 2 for d in dead), (name, dead)
    (tmp_path / "cr2.csv").write_text("1,2,3\r4,5,6\n" + good)
    _, dead, _ = read(tmp_path / "cr2.csv", "csv")
    assert dead[0]["reason"].startswith("a carriage return inside the line")
    _, dead, _ = read(tmp_path / "huge_field.csv", "csv")
    assert dead[0]["reason"] == "a field is longer than 131,072 characters"


def test_jsonl_integers_beyond_float_are_dead_letters(tmp_path):
    huge = "9" * 400
    path = tmp_path / "a.jsonl"
    path.write_text(f"[1, 2, 3]\n[1, {huge}, 3]\n[4, 5, 6]\n")
    rows, dead, _ = read(path, "jsonl", label_column=-1)
    assert rows == 2 and dead[0]["line"] == 2 and "too large for float32" in dead[0]["reason"]
    path.write_text(f"[1, 2, {huge}]\n[4, 5, 6]\n")
    rows, dead, _ = read(path, "jsonl", label_column=-1)
    assert rows == 1 and "too large for a float" in dead[0]["reason"]
    path = tmp_path / "o.jsonl"
    path.write_text(
        f'{{"features": [1, 2], "label": 1}}\n{{"features": [1, 2], "label": {huge}}}\n'
    )
    rows, dead, _ = read(path, "jsonl")
    assert rows == 1 and dead[0]["line"] == 2
    path.write_text("[1, 2]\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    rows, dead, _ = read(path, "jsonl")
    assert rows == 1 and dead[0]["reason"].startswith("invalid JSON")


def test_truncated_or_corrupt_gzip_is_an_error_not_a_short_read(tmp_path):
    data = gzip.compress("".join(f"{i},{i}\n" for i in range(40)).encode())
    (tmp_path / "t.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"t\.csv\.gz is truncated or corrupt"):
        read(tmp_path / "t.csv.gz", "csv")
    (tmp_path / "c.csv.gz").write_bytes(data[:20] + b"xxxxxxxx" + data[28:])
    with pytest.raises(BadInputError, match=r"c\.csv\.gz is truncated or corrupt"):
        read(tmp_path / "c.csv.gz", "csv")
    # damage after the first 64 KiB: found while reading, not planning
    big = gzip.compress(b"".join(b"%d,%d\n" % (i, i) for i in range(100_000)))
    (tmp_path / "late.csv.gz").write_bytes(big[: len(big) - 100])
    with pytest.raises(BadInputError, match="truncated or corrupt"):
        read(tmp_path / "late.csv.gz", "csv")


def _npy(header: str, body: bytes = b"") -> bytes:
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def test_npy_headers_are_checked_before_anything_is_allocated(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(
        _npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000, 4), }", b"\0" * 1600
        )
    )
    started = time.monotonic()
    with pytest.raises(
        BadInputError, match=r"declares 10,000,000,000,000 rows .* truncated or corrupt"
    ):
        read(path, "npy")
    assert time.monotonic() - started < 2
    for name, header in {
        "token": "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3",
        "syntax": "{'descr': '<f8', 'fortran_order': False, 'shape': (4,, 3), }",
        "negative": "{'descr': '<f8', 'fortran_order': False, 'shape': (-4, 3), }",
        "object": "{'descr': '|O', 'fortran_order': False, 'shape': (1, 1), }",
        "structured": "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1, 1), }",
    }.items():
        (tmp_path / f"{name}.npy").write_bytes(_npy(header, b"\0" * 96))
        with pytest.raises(BadInputError, match=f"{name}.npy"):
            read(tmp_path / f"{name}.npy", "npy")
    # a pickled object array is refused without unpickling anything
    np.save(tmp_path / "pickled.npy", np.array([[1, "x"]], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="dtype object"):
        read(tmp_path / "pickled.npy", "npy")
    # a header length beyond what numpy writes
    (tmp_path / "long.npy").write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{")
    with pytest.raises(BadInputError, match="header of 2,147,483,648 bytes"):
        read(tmp_path / "long.npy", "npy")


def test_utf8_bom_does_not_hide_the_header_or_a_row(tmp_path):
    rows_text = "".join(f"{i},{i + 1}\n" for i in range(10))
    (tmp_path / "data.csv").write_bytes(formats.BOM + rows_text.encode())
    rows, dead, _ = read(tmp_path / "data.csv", "csv")
    assert (rows, dead) == (10, [])
    (tmp_path / "header.csv").write_bytes(formats.BOM + b"a,b\n" + rows_text.encode())
    blocks = list(read_blocks_local(str(tmp_path / "header.csv"), "csv", label_column="a"))
    assert sum(b.n_rows for b in blocks) == 10 and blocks[0].labels[0] == 0
    (tmp_path / "x.jsonl").write_bytes(formats.BOM + b"[1, 2]\n[3, 4]\n")
    assert read(tmp_path / "x.jsonl", "jsonl")[:2] == (2, [])
    (tmp_path / "x.svm").write_bytes(formats.BOM + b"1 1:2\n0 2:3\n")
    assert read(tmp_path / "x.svm", "libsvm")[:2] == (2, [])


def test_a_truncated_first_row_does_not_set_the_width(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2\n" + "".join(f"{i},{i},{i}\n" for i in range(39)))
    rows, dead, _ = read(path, "csv")
    assert rows == 39 and [d["line"] for d in dead] == [1]
    path.write_text("[1, 2]\n" + "[1, 2, 3]\n" * 39)
    rows, dead, _ = read(path, "jsonl")
    assert rows == 39 and [d["line"] for d in dead] == [1]
    # a malformed first row is no header: it is a bad record
    path.write_text('1,"2,3\n' + "".join(f"{i},{i},{i}\n" for i in range(39)))
    rows, dead, _ = read(path, "csv")
    assert rows == 39 and [d["line"] for d in dead] == [1]


def test_mostly_rejected_input_is_an_error_unless_allowed(tmp_path):
    path = tmp_path / "semicolons.csv"  # read with the default delimiter
    path.write_text("".join(f"{i};{i}.5\n" for i in range(30)))
    with pytest.raises(
        BadInputError, match=r"30 of the 30 records read from .* max_bad_fraction=0.5"
    ):
        read(path, "csv", header=False)
    rows, dead, _ = read(path, "csv", header=False, max_bad_fraction=1.0)
    assert rows == 0 and len(dead) == 30
    # a few bad records of a small file do not decide it
    (tmp_path / "small.csv").write_text("1,2\nx,3\ny,4\n")
    assert read(tmp_path / "small.csv", "csv", header=False)[:1] == (1,)
    with pytest.raises(BadInputError, match="max_bad_fraction"):
        read(path, "csv", max_bad_fraction=1.5)


def test_libsvm_feature_dim_is_inferred_within_a_bound(tmp_path):
    path = tmp_path / "stray.svm"
    path.write_text("1 1:1 2:3\n0 1000000000000:1\n" + "1 3:1\n" * 20)
    with pytest.raises(
        BadInputError, match=r"stray\.svm, line 2: index 1000000000000 .* --feature_dim"
    ):
        read(path, "libsvm")
    rows, dead, _ = read(path, "libsvm", feature_dim=3)
    assert rows == 21 and "out of range for feature_dim=3" in dead[0]["reason"]
    path.write_text(f"1 1:1 {formats.MAX_INFERRED_FEATURE_DIM}:1\n")
    assert (
        next(iter(read_blocks_local(str(path), "libsvm"))).n_features
        == formats.MAX_INFERRED_FEATURE_DIM
    )


def test_index_0_in_a_1_based_libsvm_file_is_named(tmp_path):
    path = tmp_path / "zero.svm"
    path.write_text("1 1:1\n" * 5 + "1 0:1 2:3\n" + "1 3:1\n" * 5)
    with pytest.raises(
        BadInputError, match=r"zero\.svm, line 6: index 0 in a 1-based file: pass --zero_based"
    ):
        read(path, "libsvm")
    rows, dead, _ = read(path, "libsvm", feature_dim=3)
    assert rows == 10 and dead[0]["reason"].startswith(
        "index 0 in a 1-based file: pass --zero_based"
    )
    assert read(path, "libsvm", zero_based=True)[:2] == (11, [])


def test_no_feature_column_is_an_error(tmp_path):
    (tmp_path / "label.csv").write_text("1\n2\n")
    with pytest.raises(BadInputError, match="no feature columns"):
        read(tmp_path / "label.csv", "csv", label_column=0)
    (tmp_path / "labels.svm").write_text("1\n0\n")
    with pytest.raises(BadInputError, match="no feature index"):
        read(tmp_path / "labels.svm", "libsvm")
    (tmp_path / "empty.jsonl").write_text("[]\n[]\n")
    with pytest.raises(BadInputError, match="no feature columns"):
        read(tmp_path / "empty.jsonl", "jsonl")
    np.save(tmp_path / "none.npy", np.zeros((3, 0)))
    with pytest.raises(BadInputError, match="no feature columns"):
        read(tmp_path / "none.npy", "npy")
    from beam_ml.core.block import as_block

    with pytest.raises(BadInputError, match="at least one feature"):
        as_block(np.zeros((3, 0)))


def test_blank_lines_are_no_records_in_any_text_format(tmp_path):
    (tmp_path / "b.csv").write_text("1,2\n  \n\t\n\n3,4\n \r\n")
    assert read(tmp_path / "b.csv", "csv")[:2] == (2, [])
    assert formats.count_records(b"1,2\n  \n\n3,4\n \r\n", "csv") == 2
    assert formats.count_records(b"1 1:2\n# c\n  # c\n0 2:1", "libsvm") == 2


# -------------------------------------------------------------- end to end: the command


def beam_ml_main(*args) -> int:
    from beam_ml.cli.main import main

    return main([str(a) for a in args])


def test_cli_reports_records_used_and_set_aside(tmp_path, capsys, caplog):
    path = tmp_path / "x.csv"
    path.write_bytes(
        formats.BOM
        + b"a,b,c\n"
        + b"1,2\r3\n"
        + b"".join(b"%d,%d,%d\n" % (i, i, -i) for i in range(40))
        + b"1,x,2\n"
    )
    caplog.set_level("INFO", logger="beam_ml")
    out = tmp_path / "state"
    assert (
        beam_ml_main("train", "pca", "--input", path, "--output", out, "--num_components", 2) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_seen"] == 40 and summary["config"]["feature_dim"] == 3
    assert "read 42 records" in caplog.text and "40 rows used, 2 set aside" in caplog.text
    dead = [json.loads(line) for line in open(f"{out}.dead_letters.jsonl")]
    assert [(d["line"], d["file"]) for d in dead] == [(2, str(path)), (43, str(path))]


def test_cli_bad_input_is_one_line_never_a_traceback(tmp_path, capsys):
    data = gzip.compress(b"".join(b"%d,%d\n" % (i, i) for i in range(40)))
    (tmp_path / "t.csv.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "stray.libsvm").write_text("1 1:1\n0 1000000000000:1\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "semi.csv").write_text("".join(f"{i};{i}\n" for i in range(20)))
    semicolons = ["train", "pca", "--num_components", 1, "--header", "false"]
    semicolons += ["--input", tmp_path / "semi.csv"]
    cases = [
        (
            ["train", "pca", "--num_components", 1, "--input", tmp_path / "t.csv.gz"],
            1,
            "truncated or corrupt",
        ),
        (
            ["train", "kmeans", "--k", 2, "--input", tmp_path / "stray.libsvm"],
            1,
            "index 1000000000000",
        ),
        (["train", "kmeans", "--k", 2, "--input", tmp_path / "empty.csv"], 2, "no rows were read"),
        (semicolons, 1, "20 of the 20 records"),
    ]
    for args, status, message in cases:
        assert beam_ml_main(*args, "--output", tmp_path / "out") == status, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err, err
        assert err.strip().splitlines()[-1].startswith("beam-ml: error: "), err
    # the user may accept a mostly bad input: then it is set aside and said so
    args = semicolons
    assert beam_ml_main(*args, "--max_bad_fraction", 1, "--output", tmp_path / "o2") == 2  # no rows
    assert sum(1 for _ in open(tmp_path / "o2.dead_letters.jsonl")) == 20


def test_a_runaway_record_is_an_error_not_an_allocation(tmp_path):
    """Parsing a record costs ~20x its size: a line over 16 MiB (a file without line
    breaks, or a 10M-feature LIBSVM line) stops the reading, naming where it starts."""
    path = tmp_path / "wide.svm"
    path.write_bytes(b"1 1:1\n" * 3 + b"1 " + b"7:1 " * (4 * 2**20 + 1) + b"\n1 2:1\n")
    with pytest.raises(BadInputError, match=r"wide\.svm at byte offset 18 is longer than 16 MiB"):
        read(path, "libsvm", feature_dim=10)
    (tmp_path / "one.csv").write_bytes(b"1," * (9 * 2**20))
    with pytest.raises(BadInputError, match=r"first line of .*one\.csv is longer than 16 MiB"):
        read(tmp_path / "one.csv", "csv")


def test_fuzz_stream_records(rng):
    """Kafka / Pub/Sub records (one row each): every record is a row or a dead letter."""
    from beam_ml.io.records import decode_records, record_spec

    x = rng.normal(size=(CASES, 3)).round(3)
    bases = {
        "csv": [",".join(map(str, row)).encode() for row in x],
        "jsonl": [json.dumps(row).encode() for row in x.tolist()],
        "libsvm": [
            b"1 " + b" ".join(b"%d:%r" % (j + 1, v) for j, v in enumerate(row)) for row in x
        ],
    }
    with pytest.raises(BadInputError, match="not JSON"):
        record_spec("jsonl", b"[" * 100_000)
    for fmt, values in bases.items():
        spec = record_spec(fmt, values[0], feature_dim=3)
        damaged = [damage(v, rng) if i % 2 else v for i, v in enumerate(values)]
        block, bad = decode_records(spec, "kafka://t/0", list(range(CASES)), damaged)
        assert (0 if block is None else block.n_rows) + len(bad) == CASES, fmt
        assert all(r["reason"] and r["file"] == "kafka://t/0" for r in bad)


def test_a_bad_first_row_of_another_file_is_no_header(tmp_path):
    """header='auto': later files' first lines are skipped only when they are the
    header (or hold no number at all), never a row of data with one bad field."""
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp_path / "b.csv").write_text("x,y\n5,6\n")
    (tmp_path / "c.csv").write_text("7,oops\n8,9\n")
    (tmp_path / "d.csv").write_text("X,Y\n10,11\n")  # another header, no number in it
    rows, dead, counts = read(tmp_path / "*.csv", "csv")
    assert rows == 5 and [(d["file"][-5:], d["line"]) for d in dead] == [("c.csv", 1)]
    assert counts.records_read == 6


def test_stream_decoding_counters_add_up():
    """DecodeRecords (Kafka, Pub/Sub) counts records read = rows used + set aside."""
    import apache_beam as beam

    from beam_ml.core.runner import counter
    from beam_ml.io.records import DecodeRecords, record_spec
    from tests.conftest import direct_options

    values = [b"1,2", b"3,x", b"", b"4,5", b"6,7,8", b'9,"1\r0']
    p = beam.Pipeline(options=direct_options())
    _ = (
        p
        | beam.Create(list(enumerate(values)))
        | DecodeRecords(record_spec("csv", b"1,2"), "kafka://t/0").with_dead_letters()
    )
    result = p.run()
    result.wait_until_finish()
    counts = [counter(result, n) for n in ("records_read", "rows_read", "bad_records")]
    assert counts == [6, 2, 4]
