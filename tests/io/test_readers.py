"""Tests of the block readers: formats, byte-range splits, dead letters, Beam wiring.

Every reader result is compared with an independent parse of the same file (numpy,
sklearn, pyarrow); Beam-level tests run on the DirectRunner and collect their blocks
by writing them to ``tmp_path``, since a PCollection's contents cannot be returned.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import threading
import uuid
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.core.runner import pipeline_options
from beam_ml.io import ReadBlocks, formats, read_blocks_local, sources
from tests.conftest import data_path

# ----------------------------------------------------------------------------- helpers


def _save(element, outdir: str) -> None:
    with open(os.path.join(outdir, uuid.uuid4().hex + ".pkl"), "wb") as f:
        pickle.dump(element, f)  # a test artifact, read back below; never a state


def _load(outdir: Path) -> list:
    return [pickle.loads(p.read_bytes()) for p in sorted(outdir.glob("*.pkl"))]


def run_beam(read: ReadBlocks, tmp_path: Path):
    """Run ``read`` on the DirectRunner; return (blocks, dead letters, metrics)."""
    out = tmp_path / f"out-{uuid.uuid4().hex}"
    (out / "blocks").mkdir(parents=True)
    (out / "dead").mkdir()
    p = test_pipeline.TestPipeline(options=pipeline_options())
    result = p | read
    blocks, dead = result if isinstance(result, tuple) else (result, None)
    _ = blocks | "SaveBlocks" >> beam.Map(_save, str(out / "blocks"))
    if dead is not None:
        _ = dead | "SaveDead" >> beam.Map(_save, str(out / "dead"))
    run = p.run()
    run.wait_until_finish()
    counters = dict.fromkeys(["records_read", "rows_read", "bad_records", "bytes_read"], 0)
    for c in run.metrics().query(MetricsFilter().with_namespace("beam_ml"))["counters"]:
        counters[c.key.metric.name] += c.committed
    # every record read is either used or set aside
    assert counters["records_read"] == counters["rows_read"] + counters["bad_records"]
    return _load(out / "blocks"), _load(out / "dead"), counters


def n_ranges(path: Path, fmt: str, **options) -> int:
    """How many work units (byte ranges, row ranges, row-group runs) ``path`` makes."""
    read = ReadBlocks(str(path), fmt, **options)
    return sum(len(sources._split_file(file, read._spec)) for file in read._files)


def stack(blocks: list[Block]):
    """Concatenate blocks into (features, labels)."""
    assert blocks, "no blocks"
    if blocks[0].is_sparse:
        X = sp.vstack([b.features for b in blocks]).tocsr()
    else:
        X = np.vstack([b.features for b in blocks])
    y = None if blocks[0].labels is None else np.concatenate([b.labels for b in blocks])
    return X, y


def sort_rows(X: np.ndarray, y: np.ndarray | None = None):
    """Rows in a canonical order (Beam shuffles ranges), labels alongside."""
    dense = X.toarray() if sp.issparse(X) else X
    keys = dense if y is None else np.column_stack([dense, y])
    order = np.lexsort(keys.T[::-1])
    return dense[order], None if y is None else y[order]


def write_csv(path: Path, values: np.ndarray, header: list[str] | None = None) -> None:
    lines = [",".join(header)] if header else []
    lines += [",".join(f"{v:.4f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")


def sort_dead(dead: list[dict]) -> list[dict]:
    return sorted(dead, key=lambda d: (d["file"], d["offset"]))


# ------------------------------------------------------------------------------- CSV


def test_csv_without_header_matches_numpy(tmp_path, rng):
    path = tmp_path / "x.csv"
    write_csv(path, rng.standard_normal((300, 5)))
    expected = np.loadtxt(path, delimiter=",")

    blocks = list(read_blocks_local(str(path), "csv", block_size=64))
    X, y = stack(blocks)
    assert y is None
    assert X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(X, expected, rtol=1e-6)
    # about block_size rows per block, not one block per file
    assert len(blocks) >= 3 and max(b.n_rows for b in blocks) <= 2 * 64
    assert ReadBlocks(str(path), "csv").n_features == 5


@pytest.mark.beam
def test_csv_header_and_label_column(tmp_path, rng):
    path = tmp_path / "h.csv"
    values = rng.standard_normal((120, 4))
    write_csv(path, values, header=["a", "b", "price", "c"])
    expected = np.loadtxt(path, delimiter=",", skiprows=1)

    read = ReadBlocks(str(path), "csv", label_column="price")
    assert read.n_features == 3 and read.has_header
    for label in ("price", 2, -2):
        X, y = stack(list(read_blocks_local(str(path), "csv", label_column=label)))
        np.testing.assert_allclose(X, expected[:, [0, 1, 3]], rtol=1e-6)
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, expected[:, 2], rtol=1e-12)

    blocks, _, counters = run_beam(read, tmp_path)
    X, y = sort_rows(*stack(blocks))
    X_ref, y_ref = sort_rows(expected[:, [0, 1, 3]].astype(np.float32), expected[:, 2])
    np.testing.assert_allclose(X, X_ref, rtol=1e-6)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    assert counters["rows_read"] == 120 and counters["bad_records"] == 0
    assert counters["bytes_read"] == path.stat().st_size - len("a,b,price,c\n")


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.beam
def test_csv_many_byte_ranges_read_each_row_once(tmp_path, rng, trailing_newline):
    n = 400
    values = np.column_stack([np.arange(n), rng.standard_normal((n, 3))])
    path = tmp_path / "split.csv"
    write_csv(path, values, header=["id", "a", "b", "c"])
    if not trailing_newline:
        path.write_bytes(path.read_bytes().rstrip(b"\n"))

    whole = stack(list(read_blocks_local(str(path), "csv", label_column="id")))
    split = stack(
        list(read_blocks_local(str(path), "csv", label_column="id", split_bytes=100, block_size=7))
    )
    assert n_ranges(path, "csv", split_bytes=100) > 100
    np.testing.assert_array_equal(whole[1], np.arange(n))
    np.testing.assert_array_equal(split[0], whole[0])
    np.testing.assert_array_equal(split[1], whole[1])

    read = ReadBlocks(str(path), "csv", label_column="id", split_bytes=100, block_size=7)
    blocks, _, counters = run_beam(read, tmp_path)
    X, ids = stack(blocks)
    order = np.argsort(ids)
    np.testing.assert_array_equal(ids[order], np.arange(n))  # every row exactly once
    np.testing.assert_array_equal(X[order], whole[0])
    assert counters["rows_read"] == n
    # origin = (file, byte offset where the block's records start): sorting blocks by
    # it restores the input order, which ordered outputs rely on
    in_order = stack(sorted(blocks, key=lambda b: b.origin))
    np.testing.assert_array_equal(in_order[1], np.arange(n))
    assert all(b.origin[0] == str(path) for b in blocks)


BAD_CSV = (
    "a,b,c\n"  # line 1: header
    "1,2,3\n"  # line 2
    "4,abc,6\n"  # line 3: not a number
    "7,8\n"  # line 4: field count
    "\n"  # line 5: blank, skipped
    "9,,1\n"  # line 6: empty field
    "1,nan,2\n"  # line 7: NaN
    "2,3,inf\n"  # line 8: inf
    "5,6,7\n"  # line 9
)
BAD_CSV_EXPECTED = [
    (3, "field 1 [b] ('abc') is not a number", "4,abc,6"),
    (4, "expected 3 fields, found 2", "7,8"),
    (6, "field 1 [b] is empty", "9,,1"),
    (7, "field 1 [b] is NaN", "1,nan,2"),
    (8, "field 2 [c] is inf", "2,3,inf"),
]


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.split("\n")[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets


def _check_bad_csv(blocks, dead, path):
    X, y = stack(blocks)
    X, y = sort_rows(X, y)
    np.testing.assert_array_equal(X, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(y, [3, 7])
    offsets = _line_offsets(BAD_CSV)
    assert sort_dead(dead) == [
        {
            "file": str(path),
            "offset": offsets[line - 1],
            "line": line,
            "record": record,
            "reason": reason,
        }
        for line, reason, record in BAD_CSV_EXPECTED
    ]


@pytest.mark.parametrize("split_bytes", [2**20, 9])
@pytest.mark.beam
def test_malformed_csv_rows_go_to_dead_letters(tmp_path, split_bytes):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    opts = dict(label_column=2, split_bytes=split_bytes)

    dead: list[dict] = []
    blocks = list(read_blocks_local(str(path), "csv", dead_letters=dead, **opts))
    _check_bad_csv(blocks, dead, path)

    read = ReadBlocks(str(path), "csv", **opts).with_dead_letters()
    blocks, dead, counters = run_beam(read, tmp_path)
    _check_bad_csv(blocks, dead, path)
    assert counters["bad_records"] == 5 and counters["rows_read"] == 2


def test_bad_records_without_dead_letters_are_logged_and_dropped(tmp_path, caplog):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    with caplog.at_level(logging.WARNING, logger="beam_ml.io"):
        X, _ = stack(list(read_blocks_local(str(path), "csv")))
    assert X.shape == (2, 3)
    assert "line 3 (byte offset 12)" in caplog.text and "'abc'" in caplog.text


@pytest.mark.beam
def test_strict_mode_raises_naming_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    with pytest.raises(BadInputError, match=r"bad\.csv, line 3 \(byte offset 12\).*'abc'"):
        list(read_blocks_local(str(path), "csv", strict=True))
    with pytest.raises(BadInputError, match=r"line 3 .*is not a number"):
        run_beam(ReadBlocks(str(path), "csv", strict=True), tmp_path)
    with pytest.raises(BadInputError, match="one or the other"):
        ReadBlocks(str(path), "csv", strict=True).with_dead_letters()


def test_slow_path_matches_fast_path(tmp_path, rng):
    """A chunk with one bad line is re-parsed line by line: same good rows."""
    values = np.round(rng.standard_normal((50, 4)), 3)
    text = "\n".join(",".join(map(str, row)) for row in values) + "\n"
    fast, bad = formats.parse_csv(text.encode(), n_columns=4, label_column=0)
    assert bad == []
    broken = text.replace("\n", "\n1,2\n", 1).encode()
    slow, bad = formats.parse_csv(broken, n_columns=4, label_column=0, offset=100)
    assert [(b["line"], b["offset"]) for b in bad] == [(2, 100 + text.index("\n") + 1)]
    np.testing.assert_array_equal(slow.features, fast.features)
    np.testing.assert_array_equal(slow.labels, fast.labels)


@pytest.mark.beam
def test_empty_inputs_yield_nothing(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,c\n")
    for path in (empty, header_only):
        assert list(read_blocks_local(str(path), "csv")) == []
    assert ReadBlocks(str(empty), "csv").n_features is None
    assert ReadBlocks(str(header_only), "csv").n_features == 3

    p = test_pipeline.TestPipeline(options=pipeline_options())
    counts = (
        p
        | ReadBlocks([str(empty), str(header_only)], "csv")
        | beam.Map(lambda b: b.n_rows)
        | beam.combiners.Count.Globally()
    )
    assert_that(counts, equal_to([0]))
    p.run().wait_until_finish()


def test_construction_errors_are_clear(tmp_path):
    path = tmp_path / "h.csv"
    write_csv(path, np.ones((3, 3)), header=["a", "b", "y"])
    missing = str(tmp_path / "nope" / "*.csv")
    with pytest.raises(BadInputError, match=r"input pattern '.*nope/\*\.csv' matched no files"):
        ReadBlocks(missing, "csv")
    with pytest.raises(BadInputError, match="matched no files"):
        read_blocks_local([str(path), missing], "csv")
    with pytest.raises(BadInputError, match=r"'format' parameter .* Got 'tsv'"):
        ReadBlocks(str(path), "tsv")
    with pytest.raises(BadInputError, match=r"label_column must be in \[-3, 3\)"):
        ReadBlocks(str(path), "csv", label_column=3)
    with pytest.raises(BadInputError, match=r"'price' is not in the header .* \['a', 'b', 'y'\]"):
        ReadBlocks(str(path), "csv", label_column="price")
    with pytest.raises(BadInputError, match="not a header"):
        ReadBlocks(str(path), "csv", label_column="y", header=False)
    with pytest.raises(ValueError, match="block_size"):  # BadInputError is a ValueError
        ReadBlocks(str(path), "csv", block_size=0)
    with pytest.raises(BadInputError, match="feature_dim=5 was given, but .* 2 feature"):
        ReadBlocks(str(path), "csv", label_column="y", feature_dim=5)
    # the CLI passes header as a string
    assert ReadBlocks(str(path), "csv", header="false").has_header is False
    assert ReadBlocks(str(path), "csv", header="true").n_features == 3


@pytest.mark.beam
def test_gzip_csv_is_read_whole(tmp_path, rng):
    values = np.column_stack([np.arange(500), rng.standard_normal((500, 3))])
    plain = tmp_path / "plain.csv"
    write_csv(plain, values, header=["id", "a", "b", "c"])
    gz = tmp_path / "data.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))

    expected = stack(list(read_blocks_local(str(plain), "csv", label_column="id")))
    got = stack(list(read_blocks_local(str(gz), "csv", label_column="id", split_bytes=100)))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])

    read = ReadBlocks(str(gz), "csv", label_column="id", split_bytes=100)
    assert read.n_features == 3
    blocks, _, counters = run_beam(read, tmp_path)
    X, ids = stack(blocks)
    np.testing.assert_array_equal(np.sort(ids), np.arange(500))
    assert counters["rows_read"] == 500


def test_gzip_bad_records_have_lines_and_uncompressed_offsets(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(BAD_CSV.encode()))
    dead: list[dict] = []
    blocks = list(read_blocks_local(str(path), "csv", label_column=2, dead_letters=dead))
    _check_bad_csv(blocks, dead, path)


def test_progress_is_logged(tmp_path, rng, caplog, monkeypatch):
    path = tmp_path / "x.csv"
    write_csv(path, rng.standard_normal((50, 2)))
    monkeypatch.setattr(sources, "_PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="beam_ml.io"):
        list(read_blocks_local(str(path), "csv", block_size=10))
    assert "rows/s" in caplog.text and str(path) in caplog.text


# ---------------------------------------------------------------------------- LIBSVM


@pytest.fixture(scope="module")
def a9a():
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(data_path("a9a", "a9a")), n_features=123)
    return X.tocsr(), y


@pytest.mark.beam
def test_libsvm_a9a_matches_sklearn(a9a, tmp_path):
    X_ref, y_ref = a9a
    read = ReadBlocks(str(data_path("a9a", "a9a")), "libsvm")
    assert read.n_features == 123  # scanned: the largest index is 123, 1-based

    X, y = stack(list(read_blocks_local(str(data_path("a9a", "a9a")), "libsvm")))
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32 and X.shape == X_ref.shape
    assert (X != X_ref).nnz == 0
    np.testing.assert_array_equal(y, y_ref)

    blocks, _, counters = run_beam(
        ReadBlocks(
            str(data_path("a9a", "a9a")), "libsvm", feature_dim=123, split_bytes=256 * 2**10
        ),
        tmp_path,
    )
    assert len(blocks) >= 9  # 2.3 MB in 256 KiB ranges
    X, y = sort_rows(*stack(blocks))
    X_ref_sorted, y_ref_sorted = sort_rows(X_ref, y_ref)
    np.testing.assert_array_equal(X, X_ref_sorted)
    np.testing.assert_array_equal(y, y_ref_sorted)
    assert counters["rows_read"] == 32_561 and counters["bad_records"] == 0


@pytest.mark.beam
def test_libsvm_bad_records_and_syntax(tmp_path):
    text = (
        "# a comment line\n"  # 1
        "1 qid:3 1:0.5 3:2 # trailing comment\n"  # 2
        "-1 4:1\n"  # 3
        "1 5:1\n"  # 4: beyond feature_dim=4
        "1 2:abc\n"  # 5
        "1 2:1 2:3\n"  # 6: duplicate
        "x 1:1\n"  # 7: label
        "1 7\n"  # 8: not a pair
        "0 3:1 1:2\n"  # 9: unsorted, fine
    )
    path = tmp_path / "s.svm"
    path.write_text(text)
    dead: list[dict] = []
    X, y = stack(list(read_blocks_local(str(path), "libsvm", feature_dim=4, dead_letters=dead)))
    np.testing.assert_array_equal(X.toarray(), [[0.5, 0, 2, 0], [0, 0, 0, 1], [2, 0, 1, 0]])
    np.testing.assert_array_equal(y, [1, -1, 0])
    offsets = _line_offsets(text)
    assert [(d["line"], d["offset"], d["reason"]) for d in dead] == [
        (4, offsets[3], "index 5 is out of range for feature_dim=4"),
        (5, offsets[4], "value of index 2 ('abc') is not a number"),
        (6, offsets[5], "duplicate index 2"),
        (7, offsets[6], "label ('x') is not a number"),
        (8, offsets[7], "'7' is not an index:value pair"),
    ]
    assert dead[0]["record"] == "1 5:1"

    # the bulk path (no comments, no qid) finds the same bad rows
    plain = tmp_path / "plain.svm"
    plain.write_text("1 1:1\n1 5:1\n-1 4:2 2:1\n1 0:1\n")
    dead = []
    X, y = stack(list(read_blocks_local(str(plain), "libsvm", feature_dim=4, dead_letters=dead)))
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 0, 0], [0, 1, 0, 2]])
    assert [d["line"] for d in dead] == [2, 4]
    assert "out of range for feature_dim=4" in dead[0]["reason"]
    assert "1-based" in dead[1]["reason"]

    zero = stack(list(read_blocks_local(str(plain), "libsvm", feature_dim=6, zero_based=True)))[0]
    assert zero.shape == (4, 6) and zero[3, 0] == 1 and zero[1, 5] == 1

    read = ReadBlocks(str(path), "libsvm", feature_dim=4).with_dead_letters()
    blocks, dead_beam, _ = run_beam(read, tmp_path)
    assert sum(b.n_rows for b in blocks) == 3
    assert [d["line"] for d in sort_dead(dead_beam)] == [4, 5, 6, 7, 8]


def _same_parse(data: bytes, feature_dim: int, zero_based: bool = False) -> None:
    """parse_libsvm (bulk paths) gives what the line-by-line reference gives."""
    got, got_bad = formats.parse_libsvm(
        data, feature_dim=feature_dim, zero_based=zero_based, file="f", offset=7, line=3
    )
    ref, ref_bad = formats._parse_libsvm_lines(data, feature_dim, zero_based, "f", 7, 3)
    assert got_bad == ref_bad
    if ref is None:
        assert got is None
        return
    assert got.origin == ref.origin == ("f", 7)
    assert got.features.dtype == np.float32 and got.labels.dtype == np.float64
    assert got.features.has_sorted_indices
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.features.indptr, ref.features.indptr)
    np.testing.assert_array_equal(got.features.indices, ref.features.indices)
    np.testing.assert_array_equal(got.features.data, ref.features.data)


@pytest.mark.parametrize(
    "text",
    [
        "1 1:1 3:0.5\n0 2:-2\n",  # one separator after every field: the fastest path
        "1 1:7 3:007\n0 2:12345678901234567\n1 4:99999999999999999999\n",  # integers only
        "+1 1:1e-3 3:.5\n-1 2:5. 4:-0\n1\n",  # signs, exponents, bare points, no pairs
        "1  1:1\t3:2 \r\n\n0 2:1\n\n",  # runs of whitespace, CRLF, blank lines
        "1 1:1\n0 2:1",  # no final newline
        "1 3:1 1:2\n0 2:1 2:3\n1 4:1 1:1 2:1\n",  # unsorted rows, a duplicate
        "1 1:0.1234567890123456789\n2.5 2:1e400 3:1\n1 2:123456789012345678901234567890\n",
        "1 1:1\n1 1::2\n1 :2\n1 2:\n1 1:2:3\n1:1 2:1\n0 7\n1 1:-2-3\n",  # malformed pairs
        "1 1:nan\n1 2:inf\nx 1:1\n1 1:0x10\n1 2:1\n",  # other characters
        "1 0:1\n1 1.5:1\n1 -2:1\n1 99999999999:1\n",  # odd indices
    ],
)
def test_libsvm_bulk_tokenizer_matches_the_line_parser(text):
    data = text.encode()
    for zero_based in (False, True):
        _same_parse(data, 4, zero_based)


def test_libsvm_bulk_tokenizer_fuzzed_against_the_line_parser():
    rng = np.random.default_rng(4)
    numbers = ["1", "0", "-1", "+1", "2.5", "1e3", "-0", ".5", "5.", "1e", "+-1", "3.0", "007"]
    separators = [" ", "  ", "\t", ":", "::", "\n", "\r\n", "\n\n", " \n "]
    bulk = 0
    for _ in range(400):
        parts = []
        for _ in range(rng.integers(1, 10)):
            if rng.random() < 0.6:  # a well-formed line
                pairs = [
                    f"{rng.choice(['1', '2', '3', '5', '0', '1.5'])}:{rng.choice(numbers)}"
                    for _ in range(rng.integers(0, 5))
                ]
                parts.append(" ".join([rng.choice(["1", "0", "-1", "+1"]), *pairs]) + "\n")
            else:
                parts.append(rng.choice(numbers) + rng.choice(separators))
        data = "".join(parts).encode()
        bulk += formats._libsvm_bulk(data) is not None
        _same_parse(data, 4)
    assert bulk > 50  # the bulk tokenizer took part, not only the line parser


def test_libsvm_bulk_parse_of_a9a_matches_the_line_parser(a9a):
    data = Path(data_path("a9a", "a9a")).read_bytes()[: 2**20]
    data = data[: data.rfind(b"\n") + 1]
    assert formats._libsvm_bulk(data) is not None
    _same_parse(data, 123)


def test_libsvm_needs_labels_from_the_line(tmp_path):
    path = tmp_path / "s.svm"
    path.write_text("1 1:1\n")
    with pytest.raises(BadInputError, match="label_column must be None"):
        ReadBlocks(str(path), "libsvm", label_column=0)


# ------------------------------------------------------------------------ JSON lines


@pytest.mark.beam
def test_jsonl_arrays_and_objects(tmp_path):
    arrays = tmp_path / "a.jsonl"
    arrays.write_text(
        "[1, 2, 3]\n"
        "[4.5, -5, 6]\n"
        "[7, 8]\n"  # 3: length
        '[1, "x", 2]\n'  # 4: string
        "[1, true, 2]\n"  # 5: boolean
        "{not json\n"  # 6
        "[0, 0, 1e3]\n"
    )
    dead: list[dict] = []
    X, y = stack(list(read_blocks_local(str(arrays), "jsonl", dead_letters=dead)))
    assert y is None
    np.testing.assert_array_equal(X, [[1, 2, 3], [4.5, -5, 6], [0, 0, 1000]])
    assert [(d["line"], d["reason"].split(":")[0]) for d in dead] == [
        (3, "expected 3 numbers, found 2"),
        (4, "feature 1 ('\"x\"') is not a number"),
        (5, "feature 1 ('true') is not a number"),
        (6, "invalid JSON"),
    ]
    X, y = stack(list(read_blocks_local(str(arrays), "jsonl", label_column=-1)))
    np.testing.assert_array_equal(X, [[1, 2], [4.5, -5], [0, 0]])
    np.testing.assert_array_equal(y, [3, 6, 1000])

    objects = tmp_path / "o.jsonl"
    objects.write_text(
        '{"features": [1, 2], "label": 1, "id": "a"}\n'
        '{"features": [3, 4], "label": 0}\n'
        '{"features": [5, 6]}\n'  # 3: no label
        '{"feats": [5, 6], "label": 1}\n'  # 4
    )
    read = ReadBlocks(str(objects), "jsonl")
    assert read.n_features == 2
    dead = []
    X, y = stack(list(read_blocks_local(str(objects), "jsonl", dead_letters=dead)))
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [1, 0])  # the 'label' key is used when present
    assert [d["reason"] for d in dead] == ["missing label key 'label'", "missing key 'features'"]

    keyed = tmp_path / "k.jsonl"
    keyed.write_text('{"x": [1, 2], "target": 3.5}\n{"x": [4, 5], "target": -1}\n')
    blocks, dead, _ = run_beam(
        ReadBlocks(
            str(keyed), "jsonl", features_key="x", label_column="target"
        ).with_dead_letters(),
        tmp_path,
    )
    X, y = sort_rows(*stack(blocks))
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [3.5, -1])
    assert dead == []
    with pytest.raises(BadInputError, match="is an index, but the records"):
        ReadBlocks(str(keyed), "jsonl", features_key="x", label_column=0)


# ------------------------------------------------------------------------------ .npy


@pytest.mark.beam
def test_npy_row_range_splits(tmp_path, rng):
    values = rng.standard_normal((1000, 6))
    values[:, 0] = np.arange(1000)
    values[123, 3] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, values)
    opts = dict(label_column=0, split_bytes=37 * 6 * 8, block_size=10)
    assert n_ranges(path, "npy", split_bytes=37 * 6 * 8) == 28  # 37 rows each

    dead: list[dict] = []
    X, y = stack(list(read_blocks_local(str(path), "npy", dead_letters=dead, **opts)))
    keep = np.arange(1000) != 123
    np.testing.assert_array_equal(y, np.arange(1000)[keep])
    np.testing.assert_array_equal(X, values[keep, 1:].astype(np.float32))
    assert [(d["offset"], d["line"], d["reason"]) for d in dead] == [(123, None, "column 3 is NaN")]

    read = ReadBlocks(str(path), "npy", **opts).with_dead_letters()
    assert read.n_features == 5
    blocks, dead, counters = run_beam(read, tmp_path)
    X, y = stack(blocks)
    order = np.argsort(y)
    np.testing.assert_array_equal(y[order], np.arange(1000)[keep])
    np.testing.assert_array_equal(X[order], values[keep, 1:].astype(np.float32))
    assert [d["offset"] for d in dead] == [123]
    assert counters["bytes_read"] == 1000 * 6 * 8


def test_npy_rejects_what_it_cannot_read_by_rows(tmp_path):
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((2, 2, 2)))
    with pytest.raises(BadInputError, match=r"shape \(2, 2, 2\).*2-D"):
        ReadBlocks(str(cube), "npy")
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(np.ones((3, 4))))
    with pytest.raises(BadInputError, match="Fortran order"):
        ReadBlocks(str(fortran), "npy")


# --------------------------------------------------------------------------- Parquet


@pytest.mark.beam
def test_parquet_row_groups_and_label_by_name(tmp_path, rng):
    n = 230
    table = pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "a": rng.standard_normal(n),
            "y": rng.standard_normal(n).astype(np.float32),
            "b": rng.integers(0, 5, n).astype(np.int32),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=50)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5

    read = ReadBlocks(str(path), "parquet", label_column="y", split_bytes=1, block_size=20)
    assert read.n_features == 3
    X, y = stack(
        list(
            read_blocks_local(str(path), "parquet", label_column="y", split_bytes=1, block_size=20)
        )
    )
    expected = np.column_stack([table["id"], table["a"], table["b"]]).astype(np.float32)
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, table["y"].to_numpy().astype(np.float64))

    blocks, _, counters = run_beam(read, tmp_path)
    X, y = stack(blocks)
    order = np.argsort(X[:, 0])
    np.testing.assert_array_equal(X[order], expected)
    assert counters["rows_read"] == n
    # batches never span row groups: 4 x (20, 20, 10) + (20, 10)
    assert sorted(b.n_rows for b in blocks) == sorted([20, 20, 10] * 4 + [20, 10])

    strings = tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": [1.0], "name": ["x"]}), strings)
    with pytest.raises(BadInputError, match="column 'name' .* type string"):
        ReadBlocks(str(strings), "parquet")
    with pytest.raises(BadInputError, match="'z' is not a column"):
        ReadBlocks(str(path), "parquet", label_column="z")


def test_parquet_nulls_are_bad_records(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "b": [1, 2, None]}), path)
    dead: list[dict] = []
    X, _ = stack(list(read_blocks_local(str(path), "parquet", dead_letters=dead)))
    np.testing.assert_array_equal(X, [[1, 1]])
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (1, "column 'a' is null or NaN"),
        (2, "column 'b' is null or NaN"),
    ]


# --- read-ahead ------------------------------------------------------------------------------
def _produced(log: list, n: int, fail_at: int | None = None):
    """Yields 0..n-1, logging each before it is handed on; raises at ``fail_at``."""
    try:
        for i in range(n):
            if i == fail_at:
                raise BadInputError(f"item {i} is bad")
            log.append(i)
            yield np.full(3, i)
    finally:
        log.append("closed")


def _read_ahead_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "beam_ml-read-ahead"]


def test_read_ahead_keeps_order_stays_bounded_and_raises_in_place():
    log: list = []
    seen = []
    for item in sources.read_ahead(_produced(log, 50), depth=2):
        ahead = sum(1 for x in log if x != "closed") - len(seen)
        assert ahead <= 2 + 2  # the queue, the item being put, the one handed out
        seen.append(int(item[0]))
    assert seen == list(range(50)) and log[-1] == "closed"

    log = []
    got = []
    with pytest.raises(BadInputError, match="item 3 is bad"):
        for item in sources.read_ahead(_produced(log, 10, fail_at=3)):
            got.append(int(item[0]))
    assert got == [0, 1, 2] and log[-1] == "closed"
    assert not _read_ahead_threads()


def test_read_ahead_stops_the_producer_when_the_consumer_stops():
    log: list = []
    items = sources.read_ahead(_produced(log, 1000))
    assert int(next(items)[0]) == 0
    items.close()  # what Beam does when a later stage raises
    assert log[-1] == "closed" and len(log) <= 5
    assert not _read_ahead_threads()
