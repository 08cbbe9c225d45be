"""Bag-of-words formats: ``bow``/``bow1`` (``word_id:count`` lines) and UCI ``docword``.

References are built directly with numpy/scipy from the same numbers (the KOS corpus,
loaded with ``np.loadtxt``), never through the readers.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io import ReadBlocks, formats, read_blocks_local, sources
from tests.conftest import data_path
from tests.io.test_readers import run_beam


@pytest.fixture(scope="module")
def kos():
    """KOS as (D, W, NNZ, triples (n, 3) int64), read directly."""
    with gzip.open(data_path("uci-bow-kos", "docword.kos.txt.gz")) as f:
        header = [int(f.readline()) for _ in range(3)]
        triples = np.loadtxt(f, dtype=np.int64)
    return (*header, triples)


def kos_matrix(kos) -> sp.csr_matrix:
    """The documents that have words, as CSR rows (the direct scipy construction)."""
    n_docs, n_words, _, t = kos
    m = sp.csr_matrix(
        (t[:, 2].astype(np.float32), (t[:, 0] - 1, t[:, 1] - 1)), shape=(n_docs, n_words)
    )
    return m[np.diff(m.indptr) > 0]


def stack(blocks) -> sp.csr_matrix:
    assert all(b.labels is None for b in blocks)
    return sp.vstack([b.features for b in blocks], format="csr")


def assert_same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.dtype == np.float32
    assert a.has_sorted_indices
    assert abs(a - b).max() == 0


def bow_lines(m: sp.csr_matrix, base: int) -> bytes:
    """One ``id:count`` line per row (ids shifted by ``base``), written by Python."""
    lines = []
    for r in range(m.shape[0]):
        row = m[r]
        pairs = [f"{j + base}:{int(v)}" for j, v in zip(row.indices, row.data, strict=True)]
        lines.append(" ".join(pairs))
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------- bow


@pytest.mark.parametrize(("fmt", "base"), [("bow", 0), ("bow1", 1)])
def test_bow_matches_scipy_on_kos(kos, tmp_path, fmt, base):
    ref = kos_matrix(kos)[:600]
    path = tmp_path / "kos.bow"
    path.write_bytes(bow_lines(ref, base))
    blocks = list(read_blocks_local(str(path), fmt, feature_dim=ref.shape[1], block_size=100))
    assert max(b.n_rows for b in blocks) <= 150
    assert_same(stack(blocks), ref)
    # without feature_dim: the largest id + 1
    read = ReadBlocks(str(path), fmt)
    assert read.n_features == ref.indices.max() + 1


def test_bow_split_into_byte_ranges_and_gzip(kos, tmp_path):
    ref = kos_matrix(kos)[:300]
    plain, packed = tmp_path / "a.bow", tmp_path / "b.bow.gz"
    plain.write_bytes(bow_lines(ref, 0))
    packed.write_bytes(gzip.compress(bow_lines(ref, 0)))
    for path in (plain, packed):
        blocks = list(
            read_blocks_local(str(path), "bow", feature_dim=7000, split_bytes=4096, block_size=50)
        )
        assert_same(stack(blocks), sp.csr_matrix(ref, shape=(300, 7000)))


def test_bow_bad_lines_go_to_dead_letters_naming_line_and_pair(tmp_path):
    path = tmp_path / "bad.bow"
    path.write_bytes(
        b"0:1 3:2\n"
        b"\n"  # blank: no record
        b"2:1 x:3\n"  # line 3
        b"1:1 1:4\n"  # line 4: duplicate
        b"4:-1\n"  # line 5: negative count
        b"9:1\n"  # line 6: out of range
        b"1:nan\n"  # line 7
        b"2:1.5 0:2\n"  # fractional weights pass, ids sorted
    )
    dead: list = []
    blocks = list(read_blocks_local(str(path), "bow", feature_dim=5, dead_letters=dead))
    expected = np.zeros((2, 5), dtype=np.float32)
    expected[0, [0, 3]] = [1, 2]
    expected[1, [0, 2]] = [2, 1.5]
    assert_same(stack(blocks), sp.csr_matrix(expected))
    got = {d["line"]: d["reason"] for d in dead}
    assert sorted(got) == [3, 4, 5, 6, 7]
    assert "'x:3'" in got[3] or "'x'" in got[3]
    assert "duplicate index 1" in got[4]
    assert "count of word id 4 is negative" in got[5]
    assert "index 9 is out of range for feature_dim=5" in got[6]
    assert "nan" in got[7]
    assert all(d["file"] == str(path) for d in dead)
    with pytest.raises(BadInputError, match=r"bad\.bow.*line 3"):
        list(read_blocks_local(str(path), "bow", feature_dim=5, strict=True))


def test_bow_options_are_checked(tmp_path):
    path = tmp_path / "a.bow"
    path.write_bytes(b"1:1\n")
    with pytest.raises(BadInputError, match="'bow1' word ids are 1-based"):
        ReadBlocks(str(path), "bow1", zero_based=True)
    with pytest.raises(BadInputError, match="no label"):
        ReadBlocks(str(path), "bow", label_column=0)
    # an id 0 in a 1-based file is a bad record, not a silent shift
    path.write_bytes(b"0:1\n1:2\n")
    dead: list = []
    blocks = list(read_blocks_local(str(path), "bow1", feature_dim=3, dead_letters=dead))
    assert [d["line"] for d in dead] == [1]
    assert dead[0]["reason"] == "word id 0 in a 1-based file: format 'bow' reads 0-based ids"
    assert blocks[0].features.toarray().tolist() == [[2, 0, 0]]


def test_bow_formats_are_registered():
    assert {"bow", "bow1", "docword"} <= set(formats.names())
    assert formats.get("bow").decodes_records and not formats.get("docword").decodes_records


# ----------------------------------------------------------------------------- docword


def test_docword_kos_matches_scipy(kos):
    path = data_path("uci-bow-kos", "docword.kos.txt.gz")
    read = ReadBlocks(str(path), "docword", block_size=256)
    assert read.n_features == kos[1] == 6906
    # a gzip file cannot be split: one range, read from its start
    assert len(sources._split_file((str(path), path.stat().st_size), read._spec)) == 1
    blocks = list(read_blocks_local(str(path), "docword", block_size=256))
    assert all(b.n_rows <= 256 for b in blocks)
    assert sum(b.n_rows for b in blocks) == kos[0] == 3430
    assert_same(stack(blocks), kos_matrix(kos))
    assert blocks[0].origin == (str(path), len(b"3430\n6906\n353160\n"))  # its first triple


def write_docword(path, n_docs, n_words, lines: list[str], nnz=None) -> None:
    nnz = len(lines) if nnz is None else nnz
    path.write_text(f"{n_docs}\n{n_words}\n{nnz}\n" + "".join(line + "\n" for line in lines))


def test_docword_documents_cross_chunks(kos, tmp_path, monkeypatch):
    """Small chunks cut documents: rows are still whole documents."""
    from beam_ml.io.formats import docword

    monkeypatch.setattr(docword, "_CHUNK_BYTES", 1000)
    n_docs, n_words, _, t = kos
    part = t[t[:, 0] <= 40]
    path = tmp_path / "docword.part.txt"
    write_docword(path, n_docs, n_words, [" ".join(map(str, row)) for row in part])
    blocks = list(read_blocks_local(str(path), "docword", block_size=7))
    assert [b.n_rows for b in blocks] == [7] * 5 + [5]
    assert_same(stack(blocks), kos_matrix((n_docs, n_words, 0, part)))


def test_docword_bad_lines_set_their_document_aside(tmp_path):
    path = tmp_path / "docword.bad.txt"
    lines = [
        "1 1 2",  # line 4
        "1 3 1",
        "2 2 1",
        "2 x 1",  # line 7: document 2 is set aside
        "3 9 1",  # line 8: wordID out of range; document 3 set aside
        "3 1 1",
        "4 2 1",
        "4 2 5",  # line 11: repeated word; document 4 set aside
        "5 1 0",  # line 12: count 0
        "6 1 1 1",  # line 13: four fields
        "7 4 3",
        "6 1 1",  # line 15: goes back to document 6
        "8 2 2",
    ]
    write_docword(path, 8, 5, lines)
    dead: list = []
    blocks = list(read_blocks_local(str(path), "docword", dead_letters=dead, block_size=2))
    expected = np.zeros((3, 5), dtype=np.float32)
    expected[0, [0, 2]] = [2, 1]  # document 1
    expected[1, 3] = 3  # document 7
    expected[2, 1] = 2  # document 8
    assert_same(stack(blocks), sp.csr_matrix(expected))
    got = {d["line"]: d["reason"] for d in dead}
    assert sorted(got) == [7, 8, 11, 12, 13, 15]
    assert "field 2 (wordID) 'x' is not an integer; document 2 is set aside" == got[7]
    assert "field 2 (wordID) is 9, out of range [1, 5] (W in the header)" in got[8]
    assert "wordID 2 appears twice in document 4" in got[11]
    assert "field 3 (count) is 0" in got[12]
    assert "expected 3 fields" in got[13]
    assert "field 1 (docID) is 6 after document 7" in got[15]
    assert all(d["file"] == str(path) for d in dead)


def test_docword_header_and_options_are_checked(tmp_path):
    path = tmp_path / "docword.x.txt"
    path.write_text("3\nabc\n5\n1 1 1\n")
    with pytest.raises(BadInputError, match=r"docword\.x\.txt, line 2: the docword header's W"):
        ReadBlocks(str(path), "docword")
    write_docword(path, 2, 4, ["1 1 1"])
    with pytest.raises(BadInputError, match="feature_dim=5 was given, but .* W=4"):
        ReadBlocks(str(path), "docword", feature_dim=5)
    with pytest.raises(BadInputError, match="no label"):
        ReadBlocks(str(path), "docword", label_column=0)


def test_docword_in_a_beam_pipeline(kos, tmp_path):
    path = data_path("uci-bow-kos", "docword.kos.txt.gz")
    blocks, dead, counters = run_beam(ReadBlocks(str(path), "docword", block_size=1000), tmp_path)
    assert not dead and counters["rows_read"] == 3430
    blocks.sort(key=lambda b: b.origin[1])
    assert_same(stack(blocks), kos_matrix(kos))


def test_bow_bulk_parse_matches_the_line_parser_fuzzed():
    """Random chunks of good and bad lines: the vectorized parse and the per-line
    reference keep the same rows and set aside the same lines, for the same reasons."""
    from beam_ml.io.formats.bow import _parse_bow_lines, parse_bow

    rng = np.random.default_rng(11)
    pieces = ["3:1", "0:2", "7:1.5", "9:1", "2:-1", "x:1", "4:", ":4", "1:nan", "5:1:2", "6:1e3"]
    for _ in range(200):
        lines = [
            " ".join(rng.choice(pieces, size=rng.integers(0, 4))) for _ in range(rng.integers(1, 8))
        ]
        data = "\n".join(lines).encode() + (b"\n" if rng.random() < 0.5 else b"")
        bulk = parse_bow(data, feature_dim=8, zero_based=True, file="f", offset=10)
        lines_ = _parse_bow_lines(data, 8, True, "f", 10, 1)
        assert (bulk[0] is None) == (lines_[0] is None), data
        if bulk[0] is not None:
            assert abs(bulk[0].features - lines_[0].features).max() == 0, data
        assert bulk[1] == lines_[1], data
