"""The algorithms; importing this package registers every state family."""

from beam_ml.algorithms.pca import PCAConfig, PCAModel, PCAState

__all__ = ["PCAConfig", "PCAModel", "PCAState"]
