"""The state contract, checked for every registered family [STYLE §5]."""

from __future__ import annotations

import dataclasses
import pickle
from functools import reduce

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_ml import StateCoder, StateCombineFn, Train
from beam_ml.core import serial
from beam_ml.core.errors import BadInputError, CorruptStateError, IncompatibleStateError
from beam_ml.core.state import families, load_state
from tests.conftest import direct_options
from tests.contract.cases import CASES


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


def _trained(case, data, pieces=1):
    cls = type(_empty(case))
    state = cls.empty(case.config)
    for block in case.pieces(data, pieces):
        state.update(case.feed(block))
    return state


def _shuffled(case, data, rng):
    return case.split(data, [rng.permutation(case.units(data))])[0]


def _arrays(data):
    """Copies of every array of ``data`` (an array or a block of any kind)."""
    if isinstance(data, np.ndarray):
        return [data.copy()]
    values = (getattr(data, f.name) for f in dataclasses.fields(data))
    return [np.array(v, copy=True) for v in values if isinstance(v, np.ndarray)]


def _empty(case):
    from beam_ml.core.state import state_class_for

    return state_class_for(case.config).empty(case.config)


def test_every_family_has_a_case():
    covered = {type(_empty(c)).FAMILY for c in CASES}
    assert set(families()) <= covered, (
        f"families without a contract case: {set(families()) - covered}"
    )


def test_combine_fn_survives_pickle(case, rng):
    data = case.make_data(rng, 300)
    fn = pickle.loads(pickle.dumps(StateCombineFn(case.config)))
    acc = fn.add_input(fn.create_accumulator(), case.feed(data))
    case.assert_equivalent(fn.extract_output(acc), _trained(case, data))


def test_bytes_round_trip_is_exact(case, rng):
    state = _trained(case, case.make_data(rng, 500), pieces=3)
    blob = state.to_bytes()
    again = load_state(blob)
    assert type(again) is type(state) and again.n_seen == state.n_seen
    assert again.to_bytes() == blob
    assert StateCoder().decode(StateCoder().encode(state)).to_bytes() == blob


def test_empty_state_round_trips(case):
    empty = _empty(case)
    assert load_state(empty.to_bytes()).n_seen == 0


def test_truncated_foreign_and_other_version_bytes_raise(case, rng):
    state = _trained(case, case.make_data(rng, 200))
    blob = state.to_bytes()
    for cut in (len(blob) - 1, len(blob) // 2, 12, 3):
        with (
            pytest.raises(CorruptStateError, match="truncated|damaged")
            if cut >= 8
            else pytest.raises(IncompatibleStateError)
        ):
            load_state(blob[:cut])
    with pytest.raises(IncompatibleStateError, match="not a beam_ml state"):
        load_state(pickle.dumps(state))
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    with pytest.raises(CorruptStateError, match="checksum"):
        load_state(bytes(flipped))
    packed = serial.unpack(blob, expected_kind="state")
    newer = serial.pack(
        "state", packed.family, packed.serial_version + 1, packed.config, packed.meta, packed.arrays
    )
    with pytest.raises(IncompatibleStateError, match="version"):
        load_state(newer)
    unknown = serial.pack("state", "no_such_algo", 1, packed.config, packed.meta, packed.arrays)
    with pytest.raises(IncompatibleStateError, match="no_such_algo"):
        load_state(unknown)


def test_merge_with_empty_changes_nothing(case, rng):
    state = _trained(case, case.make_data(rng, 400), pieces=2)
    blob = state.to_bytes()
    assert state.merge(_empty(case)).to_bytes() == blob
    assert _empty(case).merge(state).to_bytes() == blob
    assert state.to_bytes() == blob  # merge did not mutate either side


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_random_shard_splits_merge_to_one_pass(case, rng, parts):
    data = case.make_data(rng, 2000)
    n = case.units(data)
    single = _trained(case, data, pieces=1)
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    states = [
        _trained(case, piece) for piece in case.split(data, np.split(rng.permutation(n), cuts))
    ]
    order = rng.permutation(parts)
    merged = reduce(lambda a, b: a.merge(b), [states[i] for i in order])
    case.assert_equivalent(
        merged, single if case.exact else _trained(case, _shuffled(case, data, rng))
    )
    # A different tree of merges gives the same state too.
    half = parts // 2
    tree = reduce(lambda a, b: a.merge(b), states[:half] or [_empty(case)]).merge(
        reduce(lambda a, b: a.merge(b), states[half:])
    )
    case.assert_equivalent(tree, merged)


def test_block_update_equals_row_by_row(case, rng):
    data = case.make_data(rng, 150)
    by_block = _trained(case, data)
    by_row = _trained(case, data, pieces=case.units(data))
    case.assert_equivalent(by_block, by_row)


def test_update_does_not_change_the_block(case, rng):
    data = case.make_data(rng, 100)
    copy = _arrays(data)
    _trained(case, data)
    for before, after in zip(copy, _arrays(data), strict=True):
        np.testing.assert_array_equal(before, after)


def test_bad_blocks_raise_clear_errors(case, rng):
    state = _trained(case, case.make_data(rng, 50))
    for bad, pattern in case.corrupt(case.make_data(rng, 5), state):
        with pytest.raises(BadInputError, match=pattern):
            state.update(bad)
    assert state.n_seen == 50  # nothing of a rejected block was folded in


def test_incompatible_configs_refuse_to_merge(case, rng):
    data = case.make_data(rng, 100)
    a = _trained(case, data)
    b = type(a).empty(case.other_config).update(case.feed(data))
    with pytest.raises(IncompatibleStateError, match="different configs"):
        a.merge(b)


def test_state_size_does_not_grow_with_rows(case, rng):
    small = _trained(case, case.make_data(rng, 100)).to_bytes()
    large = _trained(case, case.make_data(rng, 20_000), pieces=7).to_bytes()

    def payload(blob):
        return serial.unpack(blob, expected_kind="state").header["payload_bytes"]

    assert payload(large) <= payload(small)
    assert len(large) <= len(small) + 64  # only the header's numbers (n_seen ...) grow, by digits


@pytest.mark.beam
def test_pipeline_with_forced_merges_matches_in_memory(case, rng):
    data = case.make_data(rng, 1200)
    shards = case.pieces(data, 6)
    with beam.Pipeline(options=direct_options()) as p:
        parts = [
            p
            | f"Shard{i}"
            >> beam.Create(
                [case.feed(h) for h in case.split(s, np.split(np.arange(case.units(s)), [100]))]
            )
            for i, s in enumerate(shards)
        ]
        flat = parts | beam.Flatten()
        plain = flat | "Plain" >> Train(case.config)
        fanned = flat | "Fanout" >> Train(case.config, fanout=3)
        ns = (plain, fanned) | "Both" >> beam.Flatten() | beam.Map(lambda s: s.n_seen)
        assert_that(ns, equal_to([1200, 1200]), label="BothSawAllRows")
        reference = _trained(case, data).to_bytes()

        def check(state):
            case.assert_equivalent(state, load_state(reference))
            return True

        assert_that(
            plain | "CheckPlain" >> beam.Map(check), equal_to([True]), label="PlainEqualsInMemory"
        )
        assert_that(
            fanned | "CheckFanned" >> beam.Map(check),
            equal_to([True]),
            label="FanoutEqualsInMemory",
        )
