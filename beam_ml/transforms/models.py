"""Transforms on states and models: Derive, Predict, Evaluate."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from beam_ml.core.state import Model

__all__ = ["Derive", "Predict", "Evaluate"]


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


def _predict(block: Any, model: Model, keep_origin: bool) -> Any:
    outputs = model.evaluate(block)
    return (block.origin, outputs) if keep_origin else outputs


class Predict(beam.PTransform):
    """Blocks in, one output array per block (``model.evaluate``) out.

    With ``keep_origin=True`` each output is ``(block.origin, outputs)``, which
    ``WriteRowsInOrder`` uses to write the rows in input order.
    """

    def __init__(self, model: Model | beam.PCollection, keep_origin: bool = False):
        super().__init__()
        self.model, self.keep_origin = model, keep_origin

    def expand(self, blocks):
        model = _as_side(blocks.pipeline, self.model)
        return blocks | "BeamML_Predict" >> beam.Map(_predict, model, self.keep_origin)


def _add_sums(parts: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


class Evaluate(beam.PTransform):
    """Blocks in, one metrics dict out, in one mergeable pass over the data."""

    def __init__(self, model: Model | beam.PCollection):
        super().__init__()
        self.model = model

    def expand(self, blocks):
        model = _as_side(blocks.pipeline, self.model)
        return (
            blocks
            | "BeamML_MetricSums" >> beam.Map(lambda b, m: m.metric_sums(b), m=model)
            | "BeamML_AddSums" >> beam.CombineGlobally(_add_sums)
            | "BeamML_Metrics"
            >> beam.Map(lambda s, m: m.metrics_from_sums(s) if s else {"n_rows": 0.0}, m=model)
        )
