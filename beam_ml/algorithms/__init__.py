"""The algorithms; importing this package registers every state family."""

from beam_ml.algorithms.deepar import DeepARConfig, DeepARModel, DeepARState
from beam_ml.algorithms.factorization_machines import (
    FactorizationMachinesConfig,
    FactorizationMachinesModel,
    FactorizationMachinesState,
)
from beam_ml.algorithms.kmeans import KMeansConfig, KMeansModel, KMeansState
from beam_ml.algorithms.linear_learner import (
    LinearLearnerConfig,
    LinearLearnerModel,
    LinearLearnerState,
)
from beam_ml.algorithms.ntm import NTMConfig, NTMModel, NTMState
from beam_ml.algorithms.pca import PCAConfig, PCAModel, PCAState
from beam_ml.algorithms.series_stats import SeriesStatsConfig, SeriesStatsModel, SeriesStatsState
from beam_ml.algorithms.vocabulary import VocabularyConfig, VocabularyModel, VocabularyState

__all__ = [
    "DeepARConfig",
    "DeepARModel",
    "DeepARState",
    "FactorizationMachinesConfig",
    "FactorizationMachinesModel",
    "FactorizationMachinesState",
    "KMeansConfig",
    "KMeansModel",
    "KMeansState",
    "LinearLearnerConfig",
    "LinearLearnerModel",
    "LinearLearnerState",
    "NTMConfig",
    "NTMModel",
    "NTMState",
    "PCAConfig",
    "PCAModel",
    "PCAState",
    "SeriesStatsConfig",
    "SeriesStatsModel",
    "SeriesStatsState",
    "VocabularyConfig",
    "VocabularyModel",
    "VocabularyState",
]
