"""Input specs: what states and models declare they take, and what merging checks."""

from __future__ import annotations

import numpy as np
import pytest

from beam_ml.algorithms.kmeans import KMeansConfig, KMeansState
from beam_ml.algorithms.pca import PCAConfig, PCAState
from beam_ml.core.block import Block, MatrixSpec
from beam_ml.core.errors import BadInputError, IncompatibleStateError
from beam_ml.core.state import Model


@pytest.mark.parametrize(
    "config", [PCAConfig(num_components=2), KMeansConfig(k=2)], ids=["pca", "kmeans"]
)
def test_a_state_knows_its_spec_from_its_first_block_and_merges_only_alike(config, rng):
    cls = PCAState if isinstance(config, PCAConfig) else KMeansState
    empty = cls(config)
    assert cls.BLOCK_KIND is Block and empty.input_spec is None
    four = cls(config).update(rng.normal(size=(20, 4)))
    five = cls(config).update(rng.normal(size=(20, 5)))
    assert four.input_spec == MatrixSpec(4)
    assert four.merge(empty).n_seen == 20 and empty.merge(four).input_spec == MatrixSpec(4)
    family = cls.FAMILY
    with pytest.raises(IncompatibleStateError, match=f"Cannot merge {family} states of 4 and 5 features."):  # fmt: skip
        four.merge(five)
    model = four.derive()
    assert model.input_spec == MatrixSpec(4) and model.n_features == 4
    with pytest.raises(BadInputError, match=f"X has 5 features, but {type(model).__name__} expects 4"):  # fmt: skip
        model.evaluate(np.ones((2, 5)))


class _Abstract(Model):
    FAMILY = "none"
    evaluate = metric_sums = metrics_from_sums = _payload = lambda self, *a: None
    _from_payload = classmethod(lambda cls, *a: None)


def test_a_model_must_declare_its_input_spec():
    class Declared(_Abstract):
        input_spec = MatrixSpec(7)

    class Neither(_Abstract):
        pass

    assert Declared().n_features == 7
    with pytest.raises(TypeError, match="abstract .*input_spec"):
        Neither()
