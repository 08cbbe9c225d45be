"""The block protocol, checked for every kind: matrix (dense, CSR) and series.

Readers and pending mini-batches rely on ``concat`` and ``slice`` being exact inverses
and on ``validate`` naming the owner, the place and the field of a bad value.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from beam_ml.core.block import Block, BlockKind, MatrixSpec
from beam_ml.core.errors import BadInputError
from beam_ml.core.series import SeriesBlock, SeriesSpec


def _dense(rng, n):
    return Block(rng.normal(size=(n, 4)), rng.normal(size=n), origin=("rows.csv", 10))


def _csr(rng, n):
    x = rng.normal(size=(n, 6)) * (rng.random((n, 6)) < 0.3)
    return Block(sp.csr_matrix(x), None, origin=("rows.libsvm", 0))


def _series(rng, n):
    lengths = rng.integers(1, 12, n)
    targets = [np.abs(rng.normal(size=k)) * 10 for k in lengths]
    for target in targets[::3]:
        target[0] = np.nan  # missing values are allowed
    starts = np.datetime64("2020-01-01T00:00:00") + rng.integers(0, 1000, n) * np.timedelta64(1, "h")  # fmt: skip
    return SeriesBlock.from_series(
        targets,
        starts,
        "H",
        cat=rng.integers(0, 3, (n, 2)).tolist(),
        dynamic_feat=[rng.normal(size=(2, k)) for k in lengths],
        origin=("series.jsonl", 0),
    )


def _spec(block):
    if isinstance(block, SeriesBlock):
        return SeriesSpec(block.freq, (3, 3), block.n_dynamic)
    return MatrixSpec(block.n_features)


KINDS = {"dense": _dense, "csr": _csr, "series": _series}


@pytest.fixture(params=list(KINDS))
def make(request):
    return KINDS[request.param]


def _equal(a, b):
    assert type(a) is type(b) and a.n_rows == b.n_rows
    for name in vars(a):
        x, y = getattr(a, name), getattr(b, name)
        if sp.issparse(x):
            x, y = x.toarray(), y.toarray()
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=name)
        elif name != "origin":
            assert x == y, name


def test_kinds_follow_the_protocol(make, rng):
    block = make(rng, 10)
    assert isinstance(block, BlockKind) and block.n_rows == 10
    assert type(block).validate(block, owner="X", spec=_spec(block)) is block
    assert _spec(block).validate(block, "X") is block
    assert "block came from" in block.origin_note()


@pytest.mark.parametrize("cuts", [[0], [3], [1, 2, 9], [5, 5, 10]])
def test_slices_concatenate_back_to_the_block(make, rng, cuts):
    block = make(rng, 10)
    bounds = [0, *cuts, 10]
    parts = [block.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert [p.n_rows for p in parts] == [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]  # fmt: skip
    again = type(block).concat(parts)
    _equal(again, block)
    assert again.origin == block.origin  # the first part's, which starts at unit 0
    for part in parts:
        assert type(part).validate(part, owner="X", spec=_spec(block)) is part


def test_slice_keeps_the_origin_only_from_the_first_unit(make, rng):
    block = make(rng, 6)
    assert block.slice(0, 3).origin == block.origin
    assert block.slice(2, 4).origin is None  # no longer where its first unit came from
    assert block.slice(4, 100).n_rows == 2 and block.slice(5, 2).n_rows == 0


def test_concat_of_one_block_is_the_block_and_of_none_an_error(make, rng):
    block = make(rng, 4)
    assert type(block).concat([block]) is block
    with pytest.raises(ValueError, match="at least one block"):
        type(block).concat([])


def test_concat_of_many_slices_is_the_whole(make, rng):
    block = make(rng, 200)
    parts = [block.slice(i, i + 1) for i in range(200)]
    _equal(type(block).concat(parts), block)


def test_dense_slices_are_views():
    x = np.arange(12.0).reshape(6, 2)
    assert np.shares_memory(Block(x).slice(2, 4).features, x)


def test_series_slices_are_views(rng):
    block = _series(rng, 8)
    part = block.slice(2, 5)
    assert np.shares_memory(part.values, block.values)
    assert np.shares_memory(part.dynamic_feat, block.dynamic_feat)
    np.testing.assert_array_equal(part.target(1), block.target(3))
    assert part.offsets[0] == 0 and part.n_observations == block.lengths[2:5].sum()


def test_matrix_concat_refuses_mixed_labels_and_widths():
    with pytest.raises(BadInputError, match="some blocks have labels"):
        Block.concat([Block(np.ones((2, 3)), np.ones(2)), Block(np.ones((1, 3)))])
    with pytest.raises(BadInputError, match=r"\[2, 3\] features"):
        Block.concat([Block(np.ones((2, 3))), Block(np.ones((1, 2)))])


def test_matrix_concat_of_dense_and_csr_is_csr():
    joined = Block.concat([Block(np.ones((2, 3))), Block(sp.csr_matrix(np.eye(3)))])
    assert sp.isspmatrix_csr(joined.features)
    np.testing.assert_array_equal(joined.features.toarray(), np.vstack([np.ones((2, 3)), np.eye(3)]))  # fmt: skip


def test_series_concat_refuses_other_frequencies_and_widths(rng):
    block = _series(rng, 3)
    daily = SeriesBlock.from_series([[1.0]], ["2020-01-01"], "D")
    with pytest.raises(BadInputError, match=r"different freq \('H' and 'D'\)"):
        SeriesBlock.concat([block, daily])
    bare = SeriesBlock.from_series([[1.0]], ["2020-01-01"], "H")
    with pytest.raises(BadInputError, match="different number of 'cat' values"):
        SeriesBlock.concat([block, bare])


def test_series_from_records_reads_deepar_json_lines():
    records = [
        {
            "start": "2012-01-01 00:00:00",
            "target": [1, "NaN", 3],
            "cat": [0],
            "dynamic_feat": [[1, 2, 3]],
        },  # fmt: skip
        {
            "start": "2012-01-02 00:00:00",
            "target": [4.5, None],
            "cat": [2],
            "dynamic_feat": [[0, 1]],
        },  # fmt: skip
    ]
    block = SeriesBlock.from_records(records, "D", origin=("f.jsonl", 0))
    assert block.n_rows == 2 and block.lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(block.values, [1, np.nan, 3, 4.5, np.nan])
    assert block.start[1] == np.datetime64("2012-01-02T00:00:00")
    assert block.cat.tolist() == [[0], [2]] and block.dynamic_feat.shape == (1, 5)
    assert block.series_ids.tolist() == [0, 0, 0, 1, 1]
    assert SeriesBlock.from_records([], "D").n_rows == 0


@pytest.mark.parametrize(
    "records, pattern",
    [
        ([{"target": [1]}], r"record 0 has no 'start'"),
        (
            [
                {"start": "2012-01-01", "target": [1], "cat": [0]},
                {"start": "2012-01-01", "target": [1]},
            ],
            r"record 1 lacks 'cat', record 0 has it",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1]}, {"start": "yesterday", "target": [1]}],
            r"series 1 has 'start' 'yesterday', which is not a timestamp",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1, "x"]}],
            r"series 0 has a 'target' that is not a list of numbers",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [[1], [2]]}],
            r"series 0 has a 'target' of shape \(2, 1\)",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1]}, {"start": "2012-01-01", "target": []}],
            r"series 1 has an empty 'target'",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1, "Infinity"]}],
            r"'target' of series 0 at time 1 is inf",
        ),  # fmt: skip
        (
            [
                {"start": "2012-01-01", "target": [1], "cat": [0]},
                {"start": "2012-01-01", "target": [1], "cat": [0, 1]},
            ],
            r"series 1 has 2 'cat' values, series 0 has 1",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1], "cat": [-1]}],
            r"non-negative 'cat' ids; series 0 has -1 in 'cat' 0",
        ),  # fmt: skip
        ([{"start": "2012-01-01", "target": [1], "cat": [1.5]}], r"'cat' as integers"),
        (
            [{"start": "2012-01-01", "target": [1, 2], "dynamic_feat": [[1]]}],
            r"series 0 has 'dynamic_feat' of shape \(1, 1\); each feature must be aligned with its target of 2 values",
        ),  # fmt: skip
        (
            [
                {"start": "2012-01-01", "target": [1], "dynamic_feat": [[1]]},
                {"start": "2012-01-01", "target": [1], "dynamic_feat": [[1], [2]]},
            ],
            r"series 1 has 2 'dynamic_feat', series 0 has 1",
        ),  # fmt: skip
        (
            [{"start": "2012-01-01", "target": [1, 2], "dynamic_feat": [[1, "NaN"]]}],
            r"finite 'dynamic_feat'; feature 0 of series 0 at time 1 is nan",
        ),  # fmt: skip
    ],
)
def test_bad_series_records_name_the_record_or_series_and_field(records, pattern):
    with pytest.raises(BadInputError, match=pattern):
        SeriesBlock.from_records(records, "H")


@pytest.mark.parametrize("freq", ["H", "min", "5min", "2H", "D", "W", "M", "15min"])
def test_deepar_frequencies_are_accepted(freq):
    assert SeriesBlock.from_series([[1.0]], ["2020-01-01"], freq).freq == freq


@pytest.mark.parametrize("freq", ["", "Q", "0H", "h", "H5", 5, None])
def test_other_frequencies_are_refused(freq):
    with pytest.raises(BadInputError, match="expects a 'freq' of"):
        SeriesBlock.from_series([[1.0]], ["2020-01-01"], freq)


def test_series_validate_checks_the_spec_and_names_the_owner_and_origin(rng):
    block = _series(rng, 4)
    cases = [
        (
            SeriesSpec("D"),
            r"^Owner expects series of frequency 'D'; the block's 'freq' is 'H'\. The block came from series\.jsonl",
        ),  # fmt: skip
        (SeriesSpec("H", (3,)), r"expects 1 'cat' values per series; the block has 2"),
        (SeriesSpec("H", (3, 1)), r"expects 'cat' 1 in \[0, 1\); series \d+ has [12]"),
        (SeriesSpec("H", (3, 3), 1), r"expects 1 'dynamic_feat' per series; the block has 2"),
    ]
    for spec, pattern in cases:
        with pytest.raises(BadInputError, match=pattern):
            SeriesBlock.validate(block, owner="Owner", spec=spec)
    with pytest.raises(BadInputError, match="Owner expects a SeriesBlock .* got a ndarray"):
        SeriesBlock.validate(np.ones((2, 2)), owner="Owner")
    with pytest.raises(TypeError, match="SeriesSpec"):
        SeriesBlock.validate(block, spec=MatrixSpec(3))


def test_series_validate_finds_damaged_arrays(rng):
    block = _series(rng, 3)
    fields = vars(block)
    damaged = [
        ({"offsets": block.offsets[::-1].copy()}, "never decreasing"),
        ({"offsets": block.offsets.astype(float)}, "'offsets' of n_series"),
        ({"values": block.values.astype(int)}, "'values' as one float array"),
        ({"start": block.start[:2]}, "one datetime64 'start' per series"),
        (
            {"start": np.array(["2020-01-01", "NaT", "2020-01-01"], dtype="datetime64[s]")},
            r"series 1 has none \(NaT\)",
        ),  # fmt: skip
        ({"dynamic_feat": block.dynamic_feat[:, 1:]}, "aligned with the targets"),
        ({"cat": block.cat[:2]}, r"'cat' as integers of shape \(3, n_cat\)"),
    ]
    for change, pattern in damaged:
        with pytest.raises(BadInputError, match=pattern):
            SeriesBlock.validate(SeriesBlock(**{**fields, **change}))


def test_series_spec_probe_is_a_valid_block_and_specs_describe_their_mismatch():
    spec = SeriesSpec("H", (4, 2), 3)
    probe = spec.probe()
    assert SeriesBlock.validate(probe, spec=spec) is probe and probe.n_rows == 1
    assert SeriesSpec("H").mismatch(SeriesSpec("D")) == "with freq 'H' and 'D'"
    assert MatrixSpec(3).mismatch(MatrixSpec(4)) == "of 3 and 4 features"
    assert MatrixSpec(3).probe().shape == (1, 3)
