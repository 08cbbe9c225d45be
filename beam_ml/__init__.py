"""beam_ml: SageMaker's streaming algorithms as Apache Beam transforms.

Each algorithm is a mergeable training state; one generic CombineFn makes it a Beam
transform. Train once, derive many models::

    states = blocks | beam_ml.Train(beam_ml.PCAConfig(num_components=10))
    models = states | beam_ml.Derive(num_components=5)
    metrics = blocks | beam_ml.Evaluate(models)
"""

from beam_ml.algorithms import PCAConfig, PCAModel, PCAState
from beam_ml.core.block import Block, as_block
from beam_ml.core.combine import StateCoder, StateCombineFn
from beam_ml.core.errors import (
    BadInputError,
    BeamMLError,
    CorruptStateError,
    IncompatibleStateError,
    NotEnoughDataError,
)
from beam_ml.core.state import Model, TrainingState, families, load_model, load_state
from beam_ml.io.checkpoints import ReadCheckpoint, WriteCheckpoint, read_checkpoint, write_checkpoint
from beam_ml.transforms import Derive, Evaluate, Predict, Train, TrainPerKey
from beam_ml.version import __version__

__all__ = [
    "__version__",
    "Block",
    "as_block",
    "TrainingState",
    "Model",
    "families",
    "load_state",
    "load_model",
    "StateCombineFn",
    "StateCoder",
    "Train",
    "TrainPerKey",
    "Derive",
    "Predict",
    "Evaluate",
    "WriteCheckpoint",
    "ReadCheckpoint",
    "write_checkpoint",
    "read_checkpoint",
    "PCAConfig",
    "PCAState",
    "PCAModel",
    "BeamMLError",
    "BadInputError",
    "NotEnoughDataError",
    "IncompatibleStateError",
    "CorruptStateError",
]
