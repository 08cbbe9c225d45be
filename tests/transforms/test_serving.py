"""RunInference with BeamMLModelHandler: blocks, single rows, keyed, and a model swap."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.util import assert_that, equal_to

from beam_ml import BeamMLModelHandler, Block, announcement_metadata, write_checkpoint
from beam_ml.core.state import state_class_for
from tests.conftest import direct_options
from tests.contract.cases import CASES

pytestmark = pytest.mark.beam

# One case per derived-model family.
_FAMILIES = ["pca-regular", "kmeans", "factorization_machines-regressor", "linear_learner-logistic"]
_CASES = {case.name: case for case in CASES if case.name in _FAMILIES}


def _model(case, seed: int):
    rng = np.random.default_rng(seed)
    state = state_class_for(case.config)(case.config).update(case.feed(case.make_data(rng, 400)))
    return state.derive()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(case name -> (model, its checkpoint path, test features))."""
    root = tmp_path_factory.mktemp("served")
    out = {}
    for name, case in _CASES.items():
        model = _model(case, 0)
        path = str(root / name)
        write_checkpoint(path, model)
        out[name] = (model, path, case.make_data(np.random.default_rng(1), 30))
    return out


@pytest.mark.parametrize("name", _FAMILIES)
def test_rows_keyed_and_blocks_equal_the_models_own_predictions(served, name):
    model, path, x = served[name]
    expected = model.evaluate(Block(x))
    handler = BeamMLModelHandler(path, min_batch_size=4, max_batch_size=8)
    with beam.Pipeline(options=direct_options()) as p:
        rows = p | "Rows" >> beam.Create(list(enumerate(x)))
        by_row = (
            rows
            | "Keyed" >> RunInference(KeyedModelHandler(handler))
            | "CheckRows"
            >> beam.MapTuple(
                lambda i, r: (i, bool(np.allclose(r.inference, expected[i], rtol=1e-12)))
            )
        )
        assert_that(by_row, equal_to([(i, True) for i in range(len(x))]), label="rows")
        unkeyed = (
            p
            | "Blocks" >> beam.Create([Block(part) for part in np.array_split(x, 3)])
            | "Unkeyed" >> RunInference(handler)
            | "CheckBlocks"
            >> beam.Map(
                lambda r: (
                    bool(np.allclose(r.inference, model.evaluate(r.example), rtol=1e-12))
                    and r.inference.shape[0] == r.example.n_rows
                )
            )
        )
        assert_that(unkeyed, equal_to([True] * 3), label="blocks")


def test_rows_of_the_wrong_width_are_refused_naming_the_element(served):
    model, path, _ = served["pca-regular"]
    handler = BeamMLModelHandler(path)
    with pytest.raises(ValueError, match="element 1 has 3"):
        handler.run_inference([np.zeros(12), np.zeros(3)], model)


def test_announcements_become_metadata_with_the_snapshot():
    message = json.dumps({"algorithm": "pca", "snapshot": 7, "model": "gs://b/m"}).encode()
    meta = announcement_metadata(message)
    assert meta.model_id == "gs://b/m#snapshot=7" and meta.model_name == "pca_snapshot_7"
    with pytest.raises(ValueError, match="naming a model path"):
        announcement_metadata({"snapshot": 1, "model": None})
