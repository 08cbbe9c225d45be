"""Transforms on states and models: Derive, Predict, Evaluate."""

from __future__ import annotations

import threading
from typing import Any

import apache_beam as beam

from beam_ml.core.state import Model

__all__ = ["Derive", "Predict", "Evaluate", "model_at"]


def _derive(element: Any, params: dict[str, Any]) -> Any:
    if isinstance(element, tuple):  # (key, state) from TrainPerKey
        key, state = element
        return key, state.derive(**params)
    return element.derive(**params)


class Derive(beam.PTransform):
    """States (or ``(key, state)`` pairs) in, models out: ``state.derive(**params)``.

    Deriving reads no data, so one trained state yields as many models as there are
    ``Derive`` steps (any k for PCA/k-means, any regularization for ridge ...).
    """

    def __init__(self, **params: Any):
        super().__init__()
        self.params = params

    def expand(self, states):
        return states | "BeamML_Derive" >> beam.Map(_derive, self.params)


def _as_side(pipeline: beam.Pipeline, model: Any) -> Any:
    """A model given as an object or as a one-element PCollection, as a side input."""
    if isinstance(model, beam.PCollection):
        return beam.pvalue.AsSingleton(model)
    return beam.pvalue.AsSingleton(pipeline | "BeamML_Model" >> beam.Create([model]))


_LOADED: dict[str, tuple[str, Model]] = {}
_LOADING = threading.Lock()


def model_at(path: str) -> Model:
    """The model checkpointed at ``path``, read once per process (and again only when
    the checkpoint's payload changes): what workers score with when a model is given
    by path, so its arrays never travel inside the pipeline graph."""
    from beam_ml.io.checkpoints import read_checkpoint, read_manifest

    with _LOADING:
        payload = read_manifest(path)["payload"]
        cached = _LOADED.get(path)
        if cached is None or cached[0] != payload:
            model, manifest = read_checkpoint(path, kind="model")
            _LOADED[path] = cached = (manifest["payload"], model)
        return cached[1]


def _model_input(pipeline: beam.Pipeline, model: Model | beam.PCollection | str) -> Any:
    """(extra arguments of a Map, model getter): a path is read on the workers, the
    other forms come as a side input."""
    if isinstance(model, str):
        return (), lambda: model_at(model)
    return (_as_side(pipeline, model),), None


def _predict(block: Any, model: Model, keep_origin: bool) -> Any:
    outputs = model.evaluate(block)
    return (block.origin, outputs) if keep_origin else outputs


class Predict(beam.PTransform):
    """Blocks in, one output array per block (``model.evaluate``) out.

    ``model`` is a model, a one-element PCollection of one, or the path of a model
    checkpoint: a path is read by each worker process (:func:`model_at`), so a large
    model is never pickled into the pipeline (a 66 MB FM model took ~100 s that way).
    With ``keep_origin=True`` each output is ``(block.origin, outputs)``, which
    ``WriteRowsInOrder`` uses to write the rows in input order.
    """

    def __init__(self, model: Model | beam.PCollection | str, keep_origin: bool = False):
        super().__init__()
        self.model, self.keep_origin = model, keep_origin

    def expand(self, blocks):
        side, loaded = _model_input(blocks.pipeline, self.model)
        keep = self.keep_origin
        if loaded:
            return blocks | "BeamML_Predict" >> beam.Map(lambda b: _predict(b, loaded(), keep))
        return blocks | "BeamML_Predict" >> beam.Map(_predict, *side, keep)


def _add_sums(parts: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


def _metrics(sums: dict[str, float], model: Model) -> dict[str, float]:
    return model.metrics_from_sums(sums) if sums else {"n_rows": 0.0}


class Evaluate(beam.PTransform):
    """Blocks in, one metrics dict out, in one mergeable pass over the data.

    ``model`` as for :class:`Predict` (a checkpoint path is read on the workers)."""

    def __init__(self, model: Model | beam.PCollection | str):
        super().__init__()
        self.model = model

    def expand(self, blocks):
        side, loaded = _model_input(blocks.pipeline, self.model)
        if loaded:
            sums = blocks | "BeamML_MetricSums" >> beam.Map(lambda b: loaded().metric_sums(b))
            finish = beam.Map(lambda s: _metrics(s, loaded()))
        else:
            sums = blocks | "BeamML_MetricSums" >> beam.Map(lambda b, m: m.metric_sums(b), *side)
            finish = beam.Map(_metrics, *side)
        return (
            sums | "BeamML_AddSums" >> beam.CombineGlobally(_add_sums) | "BeamML_Metrics" >> finish
        )
