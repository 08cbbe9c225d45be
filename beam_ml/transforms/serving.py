"""Serving beam_ml models with Beam's RunInference.

:class:`BeamMLModelHandler` is a ``ModelHandler`` for every derived model (PCA,
k-means, linear learner, FM): ``RunInference(BeamMLModelHandler(path))`` scores
blocks (one ``PredictionResult`` per block, its inference the block's
``model.evaluate`` array) or single rows (batched into one block per Beam batch, one
``PredictionResult`` per row). ``KeyedModelHandler`` works on top for ``(key, x)``.

The model is read from a checkpoint path on any Beam filesystem. RunInference's
``model_metadata_pcoll`` swaps it without a restart: :func:`announcement_metadata`
turns the continuous trainer's announcements into ``ModelMetadata``. The trainer
rewrites one model path every cycle, and RunInference reloads only when the
``model_id`` changes, so the id carries the snapshot (``path#snapshot=N``); the
handler reads the path without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, ModelMetadata, PredictionResult

from beam_ml.core.block import BlockKind, as_block
from beam_ml.core.state import Model

__all__ = ["BeamMLModelHandler", "announcement_metadata", "model_path_of"]

_SNAPSHOT = re.compile(r"#snapshot=\d+$")


def model_path_of(model_id: str) -> str:
    """The checkpoint path of a ``model_id`` (without its ``#snapshot=N`` suffix)."""
    return _SNAPSHOT.sub("", model_id)


def announcement_metadata(message: bytes | str | dict[str, Any]) -> ModelMetadata:
    """``ModelMetadata`` for one announcement of :class:`ContinuousTrainer` (the JSON
    it publishes, or that JSON decoded): ``model_id`` is the model path with the
    snapshot number, so each announced snapshot is loaded once."""
    record = message if isinstance(message, dict) else json.loads(message)
    if not record.get("model"):
        raise ValueError(
            "announcement_metadata expects an announcement naming a model path "
            f"(ContinuousTrainer(model_output=...)); got {record!r}."
        )
    snapshot = int(record["snapshot"])
    return ModelMetadata(
        model_id=f"{record['model']}#snapshot={snapshot}",
        model_name=f"{record.get('algorithm', 'beam_ml')}_snapshot_{snapshot}",
    )


class BeamMLModelHandler(ModelHandler[Any, PredictionResult, Model]):
    """RunInference for a beam_ml model checkpointed at ``model_path``.

    Examples are blocks (``Block``/``SeriesBlock``; each gives one result whose
    inference is ``model.evaluate(block)``) or single rows (1-D arrays of the model's
    features; a batch of them is scored as one block and each row gets its own row of
    outputs). The batch sizes are Beam's ``BatchElements`` arguments.
    """

    def __init__(
        self,
        model_path: str,
        *,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: float | None = None,
    ):
        super().__init__()
        self._model_path = model_path
        self._batching = {
            name: value
            for name, value in (
                ("min_batch_size", min_batch_size),
                ("max_batch_size", max_batch_size),
                ("max_batch_duration_secs", max_batch_duration_secs),
            )
            if value is not None
        }

    def load_model(self) -> Model:
        from beam_ml.io.checkpoints import read_checkpoint

        model, _ = read_checkpoint(model_path_of(self._model_path), kind="model")
        return model

    def update_model_path(self, model_path: str | None = None) -> None:
        if model_path:
            self._model_path = model_path

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return dict(self._batching)

    def run_inference(
        self,
        batch: Sequence[Any],
        model: Model,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        if inference_args:
            raise ValueError(
                f"BeamMLModelHandler takes no inference_args; got {sorted(inference_args)}."
            )
        model_id = self._model_path
        if all(isinstance(example, BlockKind) for example in batch):
            return [PredictionResult(b, model.evaluate(b), model_id) for b in batch]
        rows = _rows_block(batch, model)
        outputs = model.evaluate(rows)
        return [PredictionResult(x, y, model_id) for x, y in zip(batch, outputs, strict=True)]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(_num_bytes(example) for example in batch)

    def get_metrics_namespace(self) -> str:
        return "BeamML_RunInference"


def _rows_block(batch: Sequence[Any], model: Model) -> Any:
    """A batch of single rows as one block of the model's features."""
    owner = type(model).__name__
    rows = []
    for index, example in enumerate(batch):
        if isinstance(example, BlockKind):
            raise ValueError(
                f"{owner} serving expects a batch of blocks or a batch of rows; element "
                f"{index} is a block among rows (batch blocks and rows separately)."
            )
        row = np.asarray(example)
        if row.ndim != 1:
            raise ValueError(
                f"{owner} serving expects each row as a 1-D array of features; element "
                f"{index} has shape {row.shape}."
            )
        if row.shape[0] != model.n_features:
            raise ValueError(
                f"{owner} expects rows of {model.n_features} features; element {index} "
                f"has {row.shape[0]}."
            )
        rows.append(row)
    return as_block(np.stack(rows), n_features=model.n_features, owner=owner)


def _num_bytes(example: Any) -> int:
    features = getattr(example, "features", example)
    data = getattr(features, "data", features)  # scipy sparse: count its stored values
    return int(getattr(data, "nbytes", 0))
