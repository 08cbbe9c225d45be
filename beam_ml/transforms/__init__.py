"""Beam transforms: Train, TrainPerKey, Derive, Predict, Evaluate."""

from beam_ml.transforms.models import Derive, Evaluate, Predict
from beam_ml.transforms.train import Train, TrainPerKey

__all__ = ["Train", "TrainPerKey", "Derive", "Predict", "Evaluate"]
