"""Predictions in SageMaker's response shapes (``predict --output_format sagemaker``).

One JSON object per input record, one per line (SageMaker batch transform's
``application/jsonlines``), in input order; a record set aside is an empty line, as in
the CSV output. The objects are those SageMaker's built-in algorithms answer with:

- linear learner, factorization machines: ``{"score": s, "predicted_label": l}``
  (binary: ``score`` is the probability, or the margin under the hinge loss), ``{"score":
  s}`` (regressor), ``{"score": [p0, p1, ...], "predicted_label": l}`` (multiclass);
- PCA: ``{"projection": [...]}``;
- K-Means: ``{"closest_cluster": c, "distance_to_cluster": d}``;
- NTM: ``{"topic_weights": [...]}`` (its predict columns are ``topic_weight_<k>``);
- DeepAR: ``{"mean": [...], "quantiles": {"0.1": [...], ...}, "samples": [[...], ...]}``
  per series (the output types asked), from the columns of :func:`forecast_columns`.

Lines are formatted by ``numpy.savetxt`` with one row template per model, the same
machinery as the CSV output.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["forecast_columns", "forecast_outputs", "row_formatter", "sagemaker_shape"]

_NUMBER = "%.9g"


def _vector(name: str, n: int) -> str:
    return f'"{name}": [' + ", ".join([_NUMBER] * n) + "]"


def _ntm_shape(columns: Sequence[str]) -> tuple[list[int], str]:
    """NTM's response: each document's topic weights (predict's columns
    ``topic_weight_<k>``, in topic order)."""
    return list(range(len(columns))), "{" + _vector("topic_weights", len(columns)) + "}"


#: Families whose response is not told by their output columns alone.
_BY_FAMILY: dict[str, Callable[[Sequence[str]], tuple[list[int], str]]] = {"ntm": _ntm_shape}


#: DeepAR's inference output types (SageMaker's ``output_types``), in response order.
OUTPUT_TYPES = ("mean", "quantiles", "samples")


def forecast_columns(
    prediction_length: int,
    output_types: Sequence[str],
    quantiles: Sequence[float],
    num_samples: int,
) -> list[str]:
    """The columns of a forecast per series: ``mean_<t>``, ``quantile_<q>_<t>``,
    ``sample_<s>_<t>`` (t, s from 1) for the output types asked."""
    steps = range(1, prediction_length + 1)
    columns = []
    if "mean" in output_types:
        columns += [f"mean_{t}" for t in steps]
    if "quantiles" in output_types:
        columns += [f"quantile_{q}_{t}" for q in quantiles for t in steps]
    if "samples" in output_types:
        columns += [f"sample_{s}_{t}" for s in range(1, num_samples + 1) for t in steps]
    return columns


def forecast_outputs(
    model: Any,
    block: Any,
    output_types: Sequence[str],
    quantiles: Sequence[float],
    num_samples: int,
) -> np.ndarray:
    """(n_series, columns of :func:`forecast_columns`): a forecaster's sample paths
    (``model.sample_paths``) summarized as SageMaker's DeepAR answers."""
    paths = model.sample_paths(block, num_samples)  # (n_series, samples, steps)
    n = paths.shape[0]
    parts = []
    if "mean" in output_types:
        parts.append(paths.mean(axis=1))
    if "quantiles" in output_types:
        levels = np.quantile(paths, [float(q) for q in quantiles], axis=1) if n else paths[:0]
        parts.append(np.transpose(levels, (1, 0, 2)).reshape(n, -1))
    if "samples" in output_types:
        parts.append(paths.reshape(n, -1))
    return np.concatenate(parts, axis=1)


def _deepar_shape(columns: Sequence[str]) -> tuple[list[int], str]:
    """DeepAR's response from :func:`forecast_columns`' names."""
    groups: dict[str, dict[str, int]] = {}
    for column in columns:
        kind, *key, _ = column.split("_")
        group = groups.setdefault(kind, {})
        group["_".join(key)] = group.get("_".join(key), 0) + 1

    def values(n: int) -> str:
        return "[" + ", ".join([_NUMBER] * n) + "]"

    fields = []
    if "mean" in groups:
        fields.append('"mean": ' + values(groups["mean"][""]))
    if "quantile" in groups:
        fields.append('"quantiles": {' + ", ".join(f'"{q}": {values(n)}' for q, n in groups["quantile"].items()) + "}")  # fmt: skip
    if "sample" in groups:
        fields.append('"samples": [' + ", ".join(values(n) for n in groups["sample"].values()) + "]")  # fmt: skip
    return list(range(len(columns))), "{" + ", ".join(fields) + "}"


_BY_FAMILY["deepar"] = _deepar_shape


def sagemaker_shape(family: str, columns: Sequence[str]) -> tuple[list[int], str]:
    """(order of the output columns, ``savetxt`` row template) of a model whose
    ``evaluate`` gives ``columns`` (the names ``predict`` writes in its CSV header)."""
    if family in _BY_FAMILY:
        return _BY_FAMILY[family](columns)
    columns = list(columns)
    if all(re.fullmatch(r"projection_\d+", c) for c in columns):
        return list(range(len(columns))), "{" + _vector("projection", len(columns)) + "}"
    if columns == ["cluster", "distance"]:
        return [0, 1], '{"closest_cluster": %d, "distance_to_cluster": ' + _NUMBER + "}"
    if columns == ["score"]:
        return [0], '{"score": ' + _NUMBER + "}"
    if len(columns) == 2 and columns[1] == "predicted_label":  # binary: score or probability
        return [0, 1], '{"score": ' + _NUMBER + ', "predicted_label": %d}'
    if columns[0] == "predicted_label" and all(c.startswith("probability_") for c in columns[1:]):
        n = len(columns) - 1
        return [*range(1, n + 1), 0], "{" + _vector("score", n) + ', "predicted_label": %d}'
    raise ValueError(f"no SageMaker response shape is known for a {family} model's {columns}")


def row_formatter(family: str, columns: Sequence[str]) -> Callable[[np.ndarray], bytes]:
    """``outputs (rows, columns) -> JSON lines`` in SageMaker's shape for this model."""
    order, template = sagemaker_shape(family, columns)
    return _Rows(order, template)


class _Rows:
    """Picklable row formatter (it travels to the workers with the sink)."""

    def __init__(self, order: list[int], template: str):
        self.order, self.template = order, template

    def __call__(self, outputs: np.ndarray) -> bytes:
        outputs = np.asarray(outputs)
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        buffer = io.BytesIO()
        np.savetxt(buffer, outputs[:, self.order], fmt=self.template)
        return buffer.getvalue()
