"""The model contract, checked for a model derived from every family's contract case.

A model round-trips through its bytes, declares what it takes (``input_spec``, of the
kind its state takes), gives one output row per input unit whatever the blocks, and
scores with metric sums that add up across any split of the data, so evaluation is one
mergeable pass [STYLE §5].
"""

from __future__ import annotations

import numpy as np
import pytest

from beam_ml.core.block import InputSpec
from beam_ml.core.errors import BadInputError
from beam_ml.core.state import load_model
from tests.contract.cases import CASES
from tests.contract.test_state_contract import _trained


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


def _state_and_model(case, rng):
    state = _trained(case, case.make_data(rng, 600), pieces=3)
    return state, state.derive()


def _add(parts):
    total = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


def test_model_bytes_round_trip(case, rng):
    _, model = _state_and_model(case, rng)
    blob = model.to_bytes()
    again = load_model(blob)
    assert type(again) is type(model)
    assert again.to_bytes() == blob
    assert type(model).from_bytes(blob).to_bytes() == blob
    probe = case.feed(case.make_data(rng, 40))
    np.testing.assert_array_equal(again.evaluate(probe), model.evaluate(probe))


def test_model_declares_the_input_its_state_takes(case, rng):
    state, model = _state_and_model(case, rng)
    spec = model.input_spec
    assert isinstance(spec, InputSpec)
    assert spec.KIND is type(state).BLOCK_KIND
    assert spec == state.input_spec
    assert model.evaluate(spec.probe()).shape[0] == 1


def test_evaluate_gives_one_output_row_per_unit_whatever_the_blocks(case, rng):
    _, model = _state_and_model(case, rng)
    data = case.make_data(rng, 37)
    out = model.evaluate(case.feed(data))
    assert out.ndim == 2 and out.shape[0] == case.units(data) and out.shape[1] >= 1
    parts = np.concatenate([model.evaluate(case.feed(p)) for p in case.pieces(data, 4)])
    np.testing.assert_allclose(parts, out, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("count", [2, 5])
def test_metric_sums_add_up_across_a_split(case, rng, count):
    _, model = _state_and_model(case, rng)
    data = case.make_data(rng, 300)
    n = case.units(data)
    whole = model.metric_sums(case.feed(data))
    cuts = np.sort(rng.choice(np.arange(1, n), size=count - 1, replace=False))
    groups = np.split(rng.permutation(n), cuts)
    total = _add(model.metric_sums(case.feed(p)) for p in case.split(data, groups))
    assert set(total) == set(whole)
    for name, value in whole.items():
        np.testing.assert_allclose(total[name], value, rtol=1e-9, atol=1e-9, err_msg=name)
    mine, theirs = model.metrics_from_sums(total), model.metrics_from_sums(whole)
    assert set(mine) == set(theirs) and set(theirs) >= set(model.METRICS)
    for name, value in theirs.items():
        np.testing.assert_allclose(mine[name], value, rtol=1e-7, atol=1e-9, err_msg=name)


def test_bad_inputs_to_a_model_raise_clear_errors(case, rng):
    _, model = _state_and_model(case, rng)
    for bad, pattern in case.corrupt(case.make_data(rng, 5), model):
        with pytest.raises(BadInputError, match=pattern):
            model.evaluate(bad)
