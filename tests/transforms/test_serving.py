"""RunInference with BeamMLModelHandler: blocks, single rows, keyed, and a model swap."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_stream import TestStream as _TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

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


def _streaming_options():
    options = direct_options()
    options.view_as(StandardOptions).streaming = True
    return options


def test_a_published_model_replaces_the_served_one_mid_stream(served, tmp_path):
    """Rows before the second announcement use the first model, rows after it the second
    (windows of 10 s: the announcement of each window is the model its rows see)."""
    first, first_path, x = served["pca-regular"]
    second = _model(_CASES["pca-regular"], 5)
    second_path = str(tmp_path / "second")
    write_checkpoint(second_path, second)
    announcements = [
        json.dumps({"algorithm": "pca", "snapshot": n, "model": path})
        for n, path in ((1, first_path), (2, second_path))
    ]
    stream = (
        _TestStream()
        .add_elements([TimestampedValue(announcements[0], 1)], tag="models")
        .add_elements([TimestampedValue((i, x[i]), 2 + i % 5) for i in range(10)], tag="rows")
        .add_elements([TimestampedValue(announcements[1], 11)], tag="models")
        .add_elements([TimestampedValue((i, x[i]), 12 + i % 5) for i in range(10, 20)], tag="rows")
        .advance_watermark_to_infinity()
    )
    expected = {
        i: (first if i < 10 else second).evaluate(Block(x[i : i + 1]))[0] for i in range(20)
    }
    with beam.Pipeline(options=_streaming_options()) as p:
        streams = p | stream
        metadata = (
            streams["models"]
            | "ModelWindows" >> beam.WindowInto(window.FixedWindows(10))
            | beam.Map(announcement_metadata)
        )
        results = (
            streams["rows"]
            | "RowWindows" >> beam.WindowInto(window.FixedWindows(10))
            | RunInference(
                KeyedModelHandler(BeamMLModelHandler("unused")),
                model_metadata_pcoll=metadata,
            )
            | beam.MapTuple(
                lambda i, r: (
                    i,
                    r.model_id.split("/")[-1],
                    bool(np.allclose(r.inference, expected[i], rtol=1e-12)),
                )
            )
        )
        names = {True: "pca-regular#snapshot=1", False: "second#snapshot=2"}
        assert_that(results, equal_to([(i, names[i < 10], True) for i in range(20)]))
