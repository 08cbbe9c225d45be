"""Beam-level tests: Train, TrainPerKey, Derive, Evaluate, and a real multi-process run."""

from __future__ import annotations

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_ml import (
    Derive,
    Evaluate,
    PCAConfig,
    PCAState,
    Predict,
    Train,
    TrainPerKey,
    WriteCheckpoint,
    read_checkpoint,
)
from tests.conftest import direct_options

pytestmark = pytest.mark.beam


def test_train_per_key_gives_one_state_per_key(rng):
    data = {"a": rng.normal(size=(300, 5)), "b": rng.normal(size=(200, 5)) * 3}
    config = PCAConfig(num_components=2)
    expected = {k: PCAState(config).update(v).derive().explained_variance for k, v in data.items()}
    pairs = [(k, block) for k, v in data.items() for block in np.array_split(v, 4)]
    with beam.Pipeline(options=direct_options()) as p:
        models = p | beam.Create(pairs) | TrainPerKey(config) | Derive()
        checked = models | beam.MapTuple(
            lambda k, m: (k, bool(np.allclose(m.explained_variance, expected[k], rtol=1e-9)))
        )
        assert_that(checked, equal_to([("a", True), ("b", True)]))


def test_derive_many_models_from_one_state_and_evaluate(rng):
    data = rng.normal(size=(1000, 6)) @ rng.normal(size=(6, 6))
    config = PCAConfig(num_components=4)
    reference = PCAState(config).update(data)
    with beam.Pipeline(options=direct_options()) as p:
        state = p | beam.Create(np.array_split(data, 5)) | Train(config)
        blocks = p | "Eval" >> beam.Create(np.array_split(data, 3))
        for k in (1, 2, 4):
            model = state | f"Derive{k}" >> Derive(num_components=k)
            ratio = reference.derive(num_components=k).explained_variance_ratio.sum()
            metrics = blocks | f"Evaluate{k}" >> Evaluate(model)
            assert_that(
                metrics
                | f"Ratio{k}" >> beam.Map(lambda m: round(m["explained_variance_ratio"], 9)),
                equal_to([round(ratio, 9)]),
                label=f"EvaluateK{k}",
            )
        rows = (
            blocks | Predict(reference.derive(num_components=2)) | beam.Map(lambda out: out.shape)
        )
        assert_that(rows, equal_to([(334, 2), (333, 2), (333, 2)]), label="PredictShapes")


@pytest.mark.slow
def test_multi_process_run_equals_single_process(tmp_path, rng):
    blocks = [rng.normal(size=(2000, 16)) + i for i in range(12)]
    config = PCAConfig(num_components=4)
    results = {}
    for mode, argv in {
        "single": [],
        "multi": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    }.items():
        path = str(tmp_path / mode)
        pids = str(tmp_path / f"{mode}-pids")
        with beam.Pipeline(options=direct_options(*argv)) as p:
            data = p | beam.Create(blocks) | beam.Reshuffle()
            _ = (
                data
                | beam.Map(lambda b: os.getpid())
                | beam.Distinct()
                | beam.Map(str)
                | beam.io.WriteToText(pids)
            )
            _ = data | Train(config) | WriteCheckpoint(path)
        results[mode] = read_checkpoint(path)[0]
        pid_lines = set()
        for name in os.listdir(tmp_path):
            if name.startswith(f"{mode}-pids"):
                pid_lines |= set((tmp_path / name).read_text().split())
        results[f"{mode}-pids"] = pid_lines
    assert os.getpid() not in {int(x) for x in results["multi-pids"]}, (
        "multi-process work ran in the test process"
    )
    single, multi = results["single"], results["multi"]
    assert multi.n_seen == single.n_seen == 24_000
    np.testing.assert_allclose(multi.scatter, single.scatter, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(multi.mean, single.mean, rtol=1e-12, atol=1e-12)


def test_predict_and_evaluate_read_a_model_path_on_the_workers(rng, tmp_path):
    """Issue 24: a model given by path is read by the workers, not pickled into the
    graph (a 66 MB FM model took ~100 s that way): same outputs as the object, and a
    graph that stays small however large the model."""
    from beam_ml import write_checkpoint

    x = rng.normal(size=(500, 400))
    model = PCAState(PCAConfig(num_components=300)).update(x).derive()  # ~1 MB of arrays
    write_checkpoint(str(tmp_path / "model"), model)
    np.save(tmp_path / "x.npy", x)
    from beam_ml import ReadBlocks

    def graph_bytes(given):
        p = beam.Pipeline(options=direct_options())
        blocks = p | ReadBlocks(str(tmp_path / "x.npy"), "npy")
        _ = blocks | Predict(given)
        _ = blocks | Evaluate(given)
        return len(p.to_runner_api().SerializeToString())

    by_object, by_path = graph_bytes(model), graph_bytes(str(tmp_path / "model"))
    assert by_object > 1_000_000 > 100_000 > by_path, (by_object, by_path)
    expected = model.metrics_from_sums(model.metric_sums(x))
    with beam.Pipeline(options=direct_options()) as p:
        blocks = p | ReadBlocks(str(tmp_path / "x.npy"), "npy")
        rows = blocks | Predict(str(tmp_path / "model")) | beam.Map(lambda out: out.shape[0])
        assert_that(rows | beam.CombineGlobally(sum), equal_to([500]), label="rows")
        metrics = blocks | Evaluate(str(tmp_path / "model"))
        close = metrics | beam.Map(
            lambda m: all(np.isclose(m[k], v, rtol=1e-9) for k, v in expected.items())
        )
        assert_that(close, equal_to([True]), label="metrics")
