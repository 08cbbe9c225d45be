"""Categorical columns hashed into sparse rows, and missing numeric fields (issue 24).

A raw click-through CSV has string columns and empty numeric fields: read with
``categorical_columns`` and ``missing='zero'`` it must become CSR rows whose numeric
columns are the fields as written and whose categorical values land in stable hashed
columns (the same in every block, file, process and reader), with every record
accounted for; and a linear learner trained on it from the command line must beat the
base rate on held-out rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io import formats
from beam_ml.io.records import decode_records, record_spec
from beam_ml.io.sources import ReadCounts, read_blocks_local
from tests.cli.test_cli import beam_ml
from tests.conftest import REPO

HEADER = ["click", "site", "hour", "device", "price", "app", "age"]
# numeric fields in order (label excluded): hour, price, age -> columns 0, 1, 2
NUMERIC = ["hour", "price", "age"]
CATEGORICAL = ["site", "device", "app"]
SITE_RATE = {"news.com": 0.8, "shop.com": 0.5, "games.io": 0.15, "mail.net": 0.3}


def ctr_rows(n: int, seed: int, empty: float = 0.3) -> list[list[str]]:
    """CTR-like rows: the click depends on the site (a categorical) and a little on
    the device; numeric fields are empty with probability ``empty``."""
    rng = np.random.default_rng(seed)
    sites = list(SITE_RATE)
    rows = []
    for _ in range(n):
        site = sites[rng.integers(len(sites))]
        device = ["ios", "android", ""][rng.integers(3)]  # '' = no feature
        p = SITE_RATE[site] + (0.1 if device == "ios" else 0.0)
        click = int(rng.random() < min(p, 0.95))
        numbers = [
            "" if rng.random() < empty else f"{v:g}"
            for v in (rng.integers(24), round(float(rng.gamma(2.0)), 2), rng.integers(18, 70))
        ]
        app = str(rng.integers(5))  # a number taken as a label
        rows.append([str(click), site, numbers[0], device, numbers[1], app, numbers[2]])
    return rows


def write_rows(path: Path, rows: list[list[str]], header: bool = True) -> Path:
    lines = ([",".join(HEADER)] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def read(path, **options):
    dead: list = []
    counts = ReadCounts()
    blocks = list(read_blocks_local(str(path), "csv", dead_letters=dead, counts=counts, **options))
    return blocks, dead, counts


def expected_row(row: list[str], dim: int) -> dict[int, float]:
    """The non-zeros a row must have: numeric fields at their own index, then each
    categorical value at its hashed column (field index + value)."""
    fields = dict(zip(HEADER, row, strict=True))
    out: dict[int, float] = {}
    for j, name in enumerate(NUMERIC):
        if fields[name] and float(fields[name]) != 0:
            out[j] = float(np.float32(fields[name]))
    for name in CATEGORICAL:
        if fields[name]:
            col = formats.hashed_column(HEADER.index(name), fields[name], len(NUMERIC), dim)
            out[col] = out.get(col, 0.0) + 1.0
    return out


def as_dicts(features: sp.csr_matrix) -> list[dict[int, float]]:
    return [
        dict(
            zip(
                features.indices[a:b].tolist(),
                features.data[a:b].tolist(),
                strict=True,
            )
        )
        for a, b in zip(features.indptr[:-1], features.indptr[1:], strict=True)
    ]


def test_hashed_csr_rows_and_missing_zero(tmp_path):
    rows = ctr_rows(2_000, seed=1)
    path = write_rows(tmp_path / "ctr.csv", rows)
    dim = 4096
    # small blocks: the hashed columns must not depend on the block a value is in
    blocks, dead, counts = read(
        path,
        label_column="click",
        categorical_columns="site,device,app",
        feature_dim=dim,
        missing="zero",
        block_size=97,
    )
    assert len(blocks) > 5 and not dead
    assert counts.records_read == counts.rows_used == len(rows)
    for block in blocks:
        assert sp.isspmatrix_csr(block.features) and block.features.shape[1] == dim
        assert block.features.dtype == np.float32 and block.features.has_sorted_indices
    features = sp.vstack([b.features for b in blocks]).tocsr()
    labels = np.concatenate([b.labels for b in blocks])
    assert labels.tolist() == [float(r[0]) for r in rows]
    got = as_dicts(features)
    assert got == [expected_row(r, dim) for r in rows]
    # numeric columns unchanged: empty fields are 0 (absent), the rest as written
    dense = features[:, : len(NUMERIC)].toarray()
    for j, name in enumerate(NUMERIC):
        column = [r[HEADER.index(name)] for r in rows]
        want = np.array([float(v) if v else 0.0 for v in column], dtype=np.float32)
        np.testing.assert_array_equal(dense[:, j], want)
    # categoricals only in the hashed range; an empty device sets nothing
    hashed = features[:, len(NUMERIC) :]
    no_device = np.array([r[3] == "" for r in rows])
    assert (hashed.getnnz(axis=1)[no_device] <= 2).all()
    assert (hashed.getnnz(axis=1)[~no_device] >= 2).all()


def test_same_value_same_column_in_two_files_and_headerless(tmp_path):
    dim = 1 << 12
    a = write_rows(tmp_path / "a.csv", ctr_rows(300, seed=2))
    b = write_rows(tmp_path / "b.csv", ctr_rows(300, seed=3), header=False)
    by_name, _, _ = read(
        a,
        label_column="click",
        categorical_columns=["site", "device", "app"],
        feature_dim=dim,
        missing="zero",
    )
    by_index, _, _ = read(
        b,
        label_column=0,
        categorical_columns=[1, 3, 5],
        feature_dim=dim,
        missing="zero",
        header="auto",  # categorical text must not look like a header
    )
    assert sum(x.n_rows for x in by_index) == 300  # no first row taken as a header

    def site_columns(blocks, path):
        rows = [line.split(",") for line in path.read_text().splitlines()]
        rows = [r for r in rows if r[0] != "click"]
        features = sp.vstack([x.features for x in blocks]).tocsr()
        out = {}
        for r, row in zip(range(features.shape[0]), rows, strict=True):
            cols = set(features.indices[features.indptr[r] : features.indptr[r + 1]].tolist())
            out.setdefault(row[1], set()).add(
                frozenset(cols & {formats.hashed_column(1, row[1], 3, dim)})
            )
        return out

    sa, sb = site_columns(by_name, a), site_columns(by_index, b)
    assert set(sa) == set(sb) == set(SITE_RATE)
    for site in SITE_RATE:  # every row of a site has its column set, in both files
        assert sa[site] == sb[site] == {frozenset({formats.hashed_column(1, site, 3, dim)})}
    # the hash is stable across processes (Python's str hash is salted per process)
    code = (
        "from beam_ml.io.formats import hashed_column;"
        "print(hashed_column(1, 'news.com', 3, 4096), hashed_column('site', 'x', 0, 2**20))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random", "PYTHONPATH": str(REPO)}
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout
        for _ in range(2)
    }
    assert outs == {
        f"{formats.hashed_column(1, 'news.com', 3, 4096)} "
        f"{formats.hashed_column('site', 'x', 0, 2**20)}\n"
    }


def reference_hash(column, value: str) -> int:
    """The documented hash in plain Python: the state starts at BLAKE2b of the column,
    takes each little-endian 8-byte word (zero-padded) by fmix64((h ^ w) * golden),
    then the length."""
    mask = 2**64 - 1

    def fmix64(h: int) -> int:
        h ^= h >> 33
        h = h * 0xFF51AFD7ED558CCD & mask
        h ^= h >> 33
        h = h * 0xC4CEB9FE1A85EC53 & mask
        return h ^ (h >> 33)

    h = int.from_bytes(hashlib.blake2b(str(column).encode(), digest_size=8).digest(), "little")
    data = value.encode()
    for k in range(0, len(data), 8):
        word = int.from_bytes(data[k : k + 8].ljust(8, b"\0"), "little")
        h = fmix64((h ^ word) * 0x9E3779B97F4A7C15 & mask)
    return fmix64(h ^ len(data))


def test_vectorized_hash_is_the_reference():
    values = ["", "a", "news.com", "x" * 8, "x" * 9, "héllo wörld, " * 7, "a\0", "3"]
    sliced = pa.array(["skip", *values])[1:]  # an Arrow slice: offsets not from 0
    assert formats.hash_values(3, sliced).tolist() == [reference_hash(3, v) for v in values]
    assert formats.hash_values("site", values).tolist() == [
        reference_hash("site", v) for v in values
    ]
    assert len(set(formats.hash_values(1, values).tolist())) == len(values)


def test_dead_letters_add_up(tmp_path):
    rows = ctr_rows(500, seed=4)
    rows[10][0] = ""  # an empty label: always set aside
    rows[20][4] = "cheap"  # a non-number in a numeric column
    rows[30] = rows[30][:5]  # too few fields
    rows[40][2] = "nan"  # NaN is not missing
    path = write_rows(tmp_path / "ctr.csv", rows)
    options = dict(label_column="click", categorical_columns="site,device,app", feature_dim=512)
    blocks, dead, counts = read(path, missing="zero", **options)
    used = sum(b.n_rows for b in blocks)
    assert (
        counts.records_read == 500 == used + len(dead) == counts.rows_used + counts.rows_set_aside
    )
    assert [d["line"] for d in dead] == [12, 22, 32, 42]
    assert "field 0 [click] is empty" in dead[0]["reason"]
    assert "'cheap'" in dead[1]["reason"] and "fields" in dead[2]["reason"]
    assert "NaN" in dead[3]["reason"]
    # missing='error' (the default): rows with an empty numeric field are set aside too
    n_empty = sum(any(r[HEADER.index(n)] == "" for n in NUMERIC) for r in rows if len(r) == 7)
    blocks, dead, counts = read(path, max_bad_fraction=1.0, **options)
    assert counts.records_read == 500 == counts.rows_used + counts.rows_set_aside
    assert any("is empty" in d["reason"] for d in dead)
    assert counts.rows_set_aside >= n_empty


def test_dense_missing_zero_keeps_dense_blocks(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,,1\n,2,0\n3,4,\n5,6,1\n")
    blocks, dead, counts = read(path, label_column="y", missing="zero")
    assert isinstance(blocks[0].features, np.ndarray)
    assert blocks[0].features.tolist() == [[1, 0], [0, 2], [5, 6]]
    assert [d["line"] for d in dead] == [4] and counts.records_read == 4
    blocks, dead, _ = read(path, label_column="y", max_bad_fraction=1.0)  # default: error
    assert blocks[0].features.tolist() == [[5, 6]] and len(dead) == 3


def test_jsonl_arrays_and_objects(tmp_path):
    dim = 256
    arrays = tmp_path / "a.jsonl"
    arrays.write_text('[1, "news.com", null, 3]\n[0, "games.io", 2.5, true]\n[null, "x", 1, 1]\n')
    dead, counts = [], ReadCounts()
    blocks = list(
        read_blocks_local(
            str(arrays),
            "jsonl",
            label_column=0,
            categorical_columns=[1, 3],
            feature_dim=dim,
            missing="zero",
            dead_letters=dead,
            counts=counts,
        )
    )
    assert counts.records_read == 3 and counts.rows_used == 2 and len(dead) == 1
    rows = as_dicts(blocks[0].features)
    # the same value of the same field index hashes as in a CSV file: 'news.com' at 1
    assert rows[0] == {
        formats.hashed_column(1, "news.com", 1, dim): 1.0,
        formats.hashed_column(3, "3", 1, dim): 1.0,  # a number taken as its text
    }
    assert rows[1][0] == 2.5 and formats.hashed_column(3, "true", 1, dim) in rows[1]
    objects = tmp_path / "o.jsonl"
    objects.write_text(
        '{"features": [1, null], "label": 1, "site": "news.com"}\n'
        '{"features": [2, 3], "label": 0}\n'  # an absent key sets no feature
    )
    blocks = list(
        read_blocks_local(
            str(objects), "jsonl", categorical_columns="site", feature_dim=dim, missing="zero"
        )
    )
    assert as_dicts(blocks[0].features) == [
        {0: 1.0, formats.hashed_column("site", "news.com", 2, dim): 1.0},
        {0: 2.0, 1: 3.0},
    ]
    assert blocks[0].labels.tolist() == [1.0, 0.0]


def test_record_decoder_matches_the_file_reader(tmp_path):
    rows = ctr_rows(200, seed=5)
    path = write_rows(tmp_path / "ctr.csv", rows, header=False)
    dim = 2048
    blocks, _, _ = read(
        path,
        header=False,
        label_column=0,
        categorical_columns=[1, 3, 5],
        feature_dim=dim,
        missing="zero",
    )
    values = [",".join(r).encode() for r in rows]
    spec = record_spec(
        "csv",
        values[0],
        label_column=0,
        categorical_columns="1,3,5",
        feature_dim=dim,
        missing="zero",
    )
    assert spec.n_features == dim
    block, bad = decode_records(spec, "kafka://ctr/0", list(range(200)), values)
    assert not bad
    assert (block.features != sp.vstack([b.features for b in blocks])).nnz == 0
    np.testing.assert_array_equal(block.labels, np.concatenate([b.labels for b in blocks]))
    # an empty label is a bad record with the record's id
    block, bad = decode_records(
        spec, "kafka://ctr/0", [7, 8], [b",news.com,1,ios,2,0,30", values[1]]
    )
    assert [b["offset"] for b in bad] == [7] and block.n_rows == 1


def test_option_errors(tmp_path):
    path = write_rows(tmp_path / "ctr.csv", ctr_rows(20, seed=6))
    with pytest.raises(BadInputError, match="label column"):
        read(path, label_column="click", categorical_columns="click,site")
    with pytest.raises(BadInputError, match="not a column name"):
        read(path, label_column="click", categorical_columns="nope")
    with pytest.raises(BadInputError, match="larger than"):
        read(path, label_column="click", categorical_columns="site", feature_dim=4)
    with pytest.raises(BadInputError, match="missing"):
        read(path, label_column="click", missing="mean")
    npy = tmp_path / "x.npy"
    np.save(npy, np.ones((3, 2)))
    with pytest.raises(BadInputError, match="CSV and JSON"):
        list(read_blocks_local(str(npy), "npy", categorical_columns=[0]))
    # the default width
    blocks, _, _ = read(
        path, label_column="click", categorical_columns="site,device,app", missing="zero"
    )
    assert blocks[0].features.shape[1] == formats.DEFAULT_HASHED_FEATURE_DIM


# ------------------------------------------------------------------ command line


@pytest.mark.beam
def test_cli_train_evaluate_beats_the_base_rate(tmp_path):
    train = write_rows(tmp_path / "ctr.csv", ctr_rows(6_000, seed=7, empty=0.6))
    test = write_rows(tmp_path / "test.csv", ctr_rows(2_000, seed=8, empty=0.6))
    common = [
        "--label_column",
        "click",
        "--categorical_columns",
        "site,device,app",
        "--missing",
        "zero",
    ]
    out = beam_ml(
        "train",
        "linear_learner",
        "--predictor_type",
        "binary_classifier",
        "--input",
        train,
        "--output",
        tmp_path / "state",
        "--feature_dim",
        4096,
        "--quiet",
        *common,
    )
    trained = json.loads(out.stdout.strip().splitlines()[-1])
    assert trained["rows_read"] == 6_000  # most rows have an empty field: none set aside
    beam_ml("derive", tmp_path / "state", "--output", tmp_path / "model")
    out = beam_ml("evaluate", tmp_path / "model", "--input", test, "--quiet", *common)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["n_dead_letters"] == 0
    clicks = np.array([int(r.split(",")[0]) for r in test.read_text().splitlines()[1:]])
    p = clicks.mean()
    base = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    loss = metrics["binary_classification_cross_entropy"]
    assert loss < base - 0.05, (loss, base)
