"""Beam transforms: Train, TrainPerKey, TrainStreaming, Derive, Predict, Evaluate."""

from beam_ml.transforms.models import Derive, Evaluate, Predict
from beam_ml.transforms.stream import TrainStreaming
from beam_ml.transforms.train import Train, TrainPerKey

__all__ = ["Train", "TrainPerKey", "TrainStreaming", "Derive", "Predict", "Evaluate"]
