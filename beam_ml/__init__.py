"""beam_ml: SageMaker's streaming algorithms as Apache Beam transforms.

Each algorithm is a mergeable training state; one generic CombineFn makes it a Beam
transform. Train once, derive many models::

    states = blocks | beam_ml.Train(beam_ml.PCAConfig(num_components=10))
    models = states | beam_ml.Derive(num_components=5)
    metrics = blocks | beam_ml.Evaluate(models)

The names below are imported on first use (PEP 562), so ``import beam_ml`` and the
``beam-ml`` command start without importing Apache Beam until they need it.
"""

from __future__ import annotations

from typing import Any

from beam_ml._exports import export
from beam_ml.version import __version__

_EXPORTS = {
    "beam_ml.algorithms.pca": ["PCAConfig", "PCAState", "PCAModel"],
    "beam_ml.algorithms.kmeans": ["KMeansConfig", "KMeansState", "KMeansModel"],
    "beam_ml.algorithms.linear_learner": [
        "LinearLearnerConfig",
        "LinearLearnerState",
        "LinearLearnerModel",
    ],
    "beam_ml.algorithms.factorization_machines": [
        "FactorizationMachinesConfig",
        "FactorizationMachinesState",
        "FactorizationMachinesModel",
    ],
    "beam_ml.algorithms.ntm": ["NTMConfig", "NTMState", "NTMModel"],
    "beam_ml.transforms.epochs": ["TrainEpochs"],
    "beam_ml.core.block": ["Block", "as_block"],
    "beam_ml.core.series": ["SeriesBlock"],
    "beam_ml.core.combine": ["StateCombineFn", "StateCoder"],
    "beam_ml.core.runner": ["pipeline_options"],
    "beam_ml.core.errors": [
        "BeamMLError",
        "BadInputError",
        "NotEnoughDataError",
        "IncompatibleStateError",
        "CorruptStateError",
    ],
    "beam_ml.core.state": ["TrainingState", "Model", "families", "load_state", "load_model"],
    "beam_ml.io.checkpoints": [
        "WriteCheckpoint",
        "ReadCheckpoint",
        "write_checkpoint",
        "read_checkpoint",
    ],
    "beam_ml.io.sources": ["ReadBlocks"],
    "beam_ml.io.pipes": ["ReadPipe", "PipeFeed"],
    "beam_ml.io.sql": ["ReadSql"],
    "beam_ml.io.kafka": ["ReadKafka", "KafkaFeed"],
    "beam_ml.io.pubsub": ["ReadPubSub", "PubSubFeed"],
    "beam_ml.io.kinesis": ["ReadKinesis", "KinesisFeed"],
    "beam_ml.io.records": ["DecodeRecords", "record_spec"],
    "beam_ml.transforms.continuous": ["ContinuousTrainer", "TrainContinuously"],
    "beam_ml.transforms.serving": ["BeamMLModelHandler", "announcement_metadata"],
    "beam_ml.transforms": [
        "Train",
        "TrainPerKey",
        "TrainStreaming",
        "Derive",
        "Predict",
        "Evaluate",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    return export(globals(), _WHERE, name)


def __dir__() -> list[str]:
    return sorted(__all__)
