"""Series statistics: hand-computable values, the derive fallbacks, config checks."""

from __future__ import annotations

import numpy as np
import pytest

from beam_ml.algorithms.series_stats import SeriesStatsConfig, SeriesStatsState
from beam_ml.core.errors import NotEnoughDataError
from beam_ml.core.series import SeriesBlock


def _block():
    # Group 0: [1, 2, 3] and [5]; group 2: [-4, NaN]; group 1 has no series.
    return SeriesBlock.from_series(
        [[1.0, 2.0, 3.0], [-4.0, np.nan], [5.0]],
        ["2024-01-01", "2024-01-02", "2024-01-03"],
        "D",
        cat=[[0], [2], [0]],
    )


def test_statistics_per_group_are_those_of_numpy():
    state = SeriesStatsState(SeriesStatsConfig("D", (3,), group_by=0)).update(_block())
    assert state.counts["n_series"].tolist() == [2, 0, 1]
    assert state.counts["n_observed"].tolist() == [4, 0, 1]
    assert state.counts["n_missing"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(state.moments["mean"], [2.75, 0.0, -4.0])
    np.testing.assert_allclose(state.moments["scatter"], [np.var([1, 2, 3, 5]) * 4, 0.0, 0.0])
    np.testing.assert_allclose(state.moments["abs_sum"], [11.0, 0.0, 4.0])
    assert state.min_length[[0, 2]].tolist() == [1, 2] and state.max_length.tolist() == [3, 0, 2]
    assert state.n_seen == 3


def test_model_gives_each_series_its_group_and_the_whole_data_to_an_empty_group():
    state = SeriesStatsState(SeriesStatsConfig("D", (3,), group_by=0)).update(_block())
    model = state.derive()
    values = np.array([1, 2, 3, 5, -4.0])
    overall = [values.mean(), values.std(ddof=1), np.abs(values).mean()]
    np.testing.assert_allclose(model.table[1], overall)  # group 1 saw nothing
    np.testing.assert_allclose(model.table[0], [2.75, np.std([1, 2, 3, 5], ddof=1), 2.75])
    np.testing.assert_allclose(model.evaluate(_block())[:, 0], [2.75, -4.0, 2.75])
    sums = model.metric_sums(_block())
    assert sums["n_rows"] == 3 and sums["n_observed"] == 5
    errors = np.array([1 - 2.75, 2 - 2.75, 3 - 2.75, 0.0, 5 - 2.75])
    np.testing.assert_allclose(model.metrics_from_sums(sums)["rmse"], np.sqrt(np.mean(errors**2)))


def test_one_group_without_group_by_and_a_floor_on_the_scale():
    block = SeriesBlock.from_series([[0.0, 0.0], [0.0]], ["2024-01-01"] * 2, "D")
    model = SeriesStatsState(SeriesStatsConfig("D")).update(block).derive(minimum_scale=0.5)
    assert model.table.shape == (1, 3) and model.table[0, 2] == 0.5


def test_derive_needs_an_observed_value():
    state = SeriesStatsState(SeriesStatsConfig("D"))
    with pytest.raises(NotEnoughDataError, match="at least one observed target value"):
        state.derive()
    state.update(SeriesBlock.from_series([[np.nan]], ["2024-01-01"], "D"))
    with pytest.raises(NotEnoughDataError, match="seen 1 series and none"):
        state.derive()
    with pytest.raises(ValueError, match="'minimum_scale' parameter of SeriesStatsState.derive"):
        SeriesStatsState(SeriesStatsConfig("D", (3,))).update(_block()).derive(minimum_scale=0)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"time_freq": "Q"}, r"'time_freq' parameter of SeriesStatsConfig must be one of"),
        ({"time_freq": "D", "cardinality": (0,)}, r"'cardinality' .* tuple of ints >= 1"),
        ({"time_freq": "D", "group_by": 0}, r"'group_by' .* one of the 0 categorical features"),
        ({"time_freq": "D", "num_dynamic_feat": -1}, r"'num_dynamic_feat' .* int in \[0, inf\]"),
    ],
)
def test_config_checks(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SeriesStatsConfig(**kwargs)


def test_config_takes_a_list_from_a_checkpoint_header():
    assert SeriesStatsConfig("D", [3, 2]) == SeriesStatsConfig("D", (3, 2))
