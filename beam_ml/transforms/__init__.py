"""Beam transforms: Train, TrainPerKey, TrainStreaming, Derive, Predict, Evaluate.

Imported from their modules on first use (PEP 562), so a command that only predicts
does not import the training and streaming transforms.
"""

from __future__ import annotations

from typing import Any

from beam_ml._exports import export

__all__ = ["Train", "TrainPerKey", "TrainStreaming", "Derive", "Predict", "Evaluate"]
_WHERE = {
    "Train": "beam_ml.transforms.train",
    "TrainPerKey": "beam_ml.transforms.train",
    "TrainStreaming": "beam_ml.transforms.stream",
    "Derive": "beam_ml.transforms.models",
    "Predict": "beam_ml.transforms.models",
    "Evaluate": "beam_ml.transforms.models",
}


def __getattr__(name: str) -> Any:
    return export(globals(), _WHERE, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
