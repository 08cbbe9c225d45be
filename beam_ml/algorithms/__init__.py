"""The algorithms; importing this package registers every state family."""

from beam_ml.algorithms.kmeans import KMeansConfig, KMeansModel, KMeansState
from beam_ml.algorithms.pca import PCAConfig, PCAModel, PCAState

__all__ = ["KMeansConfig", "KMeansModel", "KMeansState", "PCAConfig", "PCAModel", "PCAState"]
