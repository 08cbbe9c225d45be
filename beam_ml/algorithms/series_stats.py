"""Scale statistics of a set of time series, per group, in one mergeable pass.

DeepAR scales each series by the mean absolute value of its context (GluonTS's
``MeanScaler``) and falls back to a default scale for a series with nothing to scale
by (all zeros or all missing); it also needs to know, before training, how long the
series are and which categorical ids occur. This state gathers those statistics from
:class:`~beam_ml.core.series.SeriesBlock` blocks, per *group* (the ids of one
categorical feature, ``group_by``) or over all series, and merges exactly:

* series, observed and missing values, shortest and longest target;
* the mean, the centred sum of squares (pairwise merge, Chan et al.) and the sum of
  absolute values of the observed targets.

``derive`` gives a :class:`SeriesStatsModel`: per group the level (mean), spread (std)
and scale (mean absolute value), the whole data's where a group saw no value. Its
``evaluate`` maps each series to its group's (mean, std, scale); its metrics score the
group mean as a forecast of every observed value (RMSE, MAE), the baseline a
forecaster must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from beam_ml.core.constraints import Constraints, Interval, check_value, validate_parameters
from beam_ml.core.errors import IncompatibleStateError, NotEnoughDataError
from beam_ml.core.series import FREQUENCIES, SeriesBlock, SeriesSpec, is_frequency
from beam_ml.core.state import Model, TrainingState, register

__all__ = ["SeriesStatsConfig", "SeriesStatsState", "SeriesStatsModel"]

# Per group, in the payload's order: counts, then moments, then lengths.
_COUNTS = ("n_series", "n_observed", "n_missing")
_MOMENTS = ("mean", "scatter", "abs_sum")
_NO_LENGTH = np.iinfo(np.int64).max


@dataclass(frozen=True)
class SeriesStatsConfig:
    """What must match for two series-statistics states to merge (DeepAR's names).

    Parameters
    ----------
    time_freq : str
        The series' frequency ('min', 'H', 'D', 'W', 'M', optionally with a multiple).
    cardinality : tuple of int
        The number of ids of each categorical feature (``cat``); () when the series
        have none.
    num_dynamic_feat : int
        Dynamic features per series (checked, not summarised).
    group_by : int, optional
        The categorical feature whose id groups the series; None: one group.
    """

    time_freq: str
    cardinality: tuple[int, ...] = ()
    num_dynamic_feat: int = 0
    group_by: int | None = None

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "num_dynamic_feat": [Interval(int, 0, None)],
        "group_by": [Interval(int, 0, None), None],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        where = "SeriesStatsConfig"
        # Lists from JSON (a checkpoint's header) become the tuple the spec compares.
        object.__setattr__(self, "cardinality", tuple(self.cardinality))
        for size in self.cardinality:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(
                    f"The 'cardinality' parameter of {where} must be a tuple of ints >= 1. "
                    f"Got {self.cardinality!r} instead."
                )
        if not is_frequency(self.time_freq):
            raise ValueError(
                f"The 'time_freq' parameter of {where} must be one of {list(FREQUENCIES)}, "
                f"optionally with a multiple ('5min'). Got {self.time_freq!r} instead."
            )
        if self.group_by is not None and self.group_by >= len(self.cardinality):
            raise ValueError(
                f"The 'group_by' parameter of {where} must name one of the "
                f"{len(self.cardinality)} categorical features. Got {self.group_by} instead."
            )

    @property
    def spec(self) -> SeriesSpec:
        return SeriesSpec(self.time_freq, self.cardinality, self.num_dynamic_feat)

    @property
    def n_groups(self) -> int:
        return 1 if self.group_by is None else self.cardinality[self.group_by]


def _merge_moments(
    n_a: np.ndarray, a: dict[str, np.ndarray], n_b: np.ndarray, b: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per group, the pairwise merge of (mean, scatter) and the sum of abs_sum."""
    n = n_a + n_b
    delta = b["mean"] - a["mean"]
    share = np.divide(n_b, n, out=np.zeros(n.shape), where=n > 0)
    return {
        "mean": a["mean"] + delta * share,
        "scatter": a["scatter"] + b["scatter"] + delta * delta * n_a * share,
        "abs_sum": a["abs_sum"] + b["abs_sum"],
    }


@register
class SeriesStatsState(TrainingState):
    """Per-group counts, moments and target lengths of the series seen (exact merge).

    Attributes
    ----------
    counts : dict of ndarray of shape (n_groups,), int64
        ``n_series``, ``n_observed`` and ``n_missing`` (target values).
    moments : dict of ndarray of shape (n_groups,), float64
        Of the observed targets: ``mean``, ``scatter`` (centred sum of squares) and
        ``abs_sum`` (sum of absolute values).
    min_length, max_length : ndarray of shape (n_groups,), int64
        Shortest and longest target (int64's largest and 0 for a group of no series).
    """

    FAMILY = "series_stats"
    SERIAL_VERSION = 1
    CONFIG = SeriesStatsConfig
    BLOCK_KIND = SeriesBlock

    def __init__(self, config: SeriesStatsConfig):
        super().__init__(config)
        g = config.n_groups
        self.counts = {name: np.zeros(g, dtype=np.int64) for name in _COUNTS}
        self.moments = {name: np.zeros(g) for name in _MOMENTS}
        self.min_length = np.full(g, _NO_LENGTH, dtype=np.int64)
        self.max_length = np.zeros(g, dtype=np.int64)

    @property
    def n_seen(self) -> int:
        return int(self.counts["n_series"].sum())

    @property
    def input_spec(self) -> SeriesSpec:
        return self.config.spec

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> SeriesStatsState:
        block = self._check(block)
        if block.n_rows == 0:
            return self
        g = self.config.n_groups
        group = np.zeros(block.n_rows, np.int64) if g == 1 else block.cat[:, self.config.group_by]
        lengths = block.lengths
        observed = ~np.isnan(block.values)
        where = np.repeat(group, lengths)[observed]  # the group of each observed value
        values = block.values[observed].astype(np.float64)
        n_b = np.bincount(where, minlength=g)
        mean_b = np.divide(np.bincount(where, values, g), n_b, out=np.zeros(g), where=n_b > 0)
        centred = values - mean_b[where]
        part = {
            "mean": mean_b,
            "scatter": np.bincount(where, centred * centred, g),
            "abs_sum": np.bincount(where, np.abs(values), g),
        }
        self.moments = _merge_moments(self.counts["n_observed"], self.moments, n_b, part)
        n_values = np.bincount(group, lengths, g).astype(np.int64)
        self.counts = {
            "n_series": self.counts["n_series"] + np.bincount(group, minlength=g),
            "n_observed": self.counts["n_observed"] + n_b,
            "n_missing": self.counts["n_missing"] + n_values - n_b,
        }
        np.minimum.at(self.min_length, group, lengths)
        np.maximum.at(self.max_length, group, lengths)
        return self

    def merge(self, other: SeriesStatsState) -> SeriesStatsState:
        self.check_mergeable(other)
        merged = SeriesStatsState(self.config)
        merged.moments = _merge_moments(
            self.counts["n_observed"], self.moments, other.counts["n_observed"], other.moments
        )
        merged.counts = {k: self.counts[k] + other.counts[k] for k in _COUNTS}
        merged.min_length = np.minimum(self.min_length, other.min_length)
        merged.max_length = np.maximum(self.max_length, other.max_length)
        return merged

    # --- models ----------------------------------------------------------------------
    def derive(self, minimum_scale: float = 1e-10) -> SeriesStatsModel:
        """The groups' level, spread and scale; the whole data's for an empty group.

        Parameters
        ----------
        minimum_scale : float
            The least scale reported (DeepAR's scaler floor: a group of zeros). Scales
            are value-weighted, as GluonTS's ``MeanScaler`` default scale: the sum of
            absolute values over the number of observed values.

        Raises
        ------
        NotEnoughDataError
            When no observed target value has been seen.
        """
        check_value(
            minimum_scale,
            "minimum_scale",
            "SeriesStatsState.derive",
            [Interval(float, 0.0, None, closed="neither")],
        )
        counts, m = self.counts["n_observed"], self.moments
        n = int(counts.sum())
        if n == 0:
            raise NotEnoughDataError(
                f"Series statistics need at least one observed target value; the state has "
                f"seen {self.n_seen} series and none."
            )
        # The whole data's moments: the groups' scatter plus that of their means about
        # the overall mean (centred terms only, so nothing cancels).
        mean = float(counts @ m["mean"]) / n
        scatter = float(m["scatter"].sum() + counts @ np.square(m["mean"] - mean))
        table = np.tile([mean, np.sqrt(scatter / max(n - 1, 1)), m["abs_sum"].sum() / n], (len(counts), 1))  # fmt: skip
        seen = counts > 0
        table[seen, 0] = m["mean"][seen]
        table[seen, 1] = np.sqrt(m["scatter"][seen] / np.maximum(counts[seen] - 1, 1))
        table[seen, 2] = m["abs_sum"][seen] / counts[seen]
        table[:, 2] = np.maximum(table[:, 2], minimum_scale)
        return SeriesStatsModel(
            spec=self.config.spec,
            group_by=self.config.group_by,
            table=table,
            n_observed=counts.copy(),
            n_seen=self.n_seen,
        )

    # --- serialization ---------------------------------------------------------------
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {**self.counts, **self.moments}
        arrays.update(min_length=self.min_length, max_length=self.max_length)
        return {}, arrays

    @classmethod
    def _from_payload(
        cls, config: SeriesStatsConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> SeriesStatsState:
        state = cls(config)
        shape = (config.n_groups,)
        for name in (*_COUNTS, *_MOMENTS, "min_length", "max_length"):
            if arrays[name].shape != shape:
                raise IncompatibleStateError(
                    f"series_stats payload array {name!r} has shape {arrays[name].shape}; "
                    f"the config's groups make it {shape}."
                )
        state.counts = {k: arrays[k].astype(np.int64) for k in _COUNTS}
        state.moments = {k: arrays[k].astype(np.float64) for k in _MOMENTS}
        state.min_length = arrays["min_length"].astype(np.int64)
        state.max_length = arrays["max_length"].astype(np.int64)
        return state


class SeriesStatsModel(Model):
    """Per-group level, spread and scale of the series' targets.

    Attributes
    ----------
    table : ndarray of shape (n_groups, 3)
        Per group: mean, standard deviation and scale (mean absolute value, at least
        the derive's ``minimum_scale``); the whole data's for a group with no value.
    n_observed : ndarray of shape (n_groups,), int64
        Observed target values of each group in the training data.
    group_by : int or None
        The categorical feature whose id picks a series' row of ``table``.
    """

    FAMILY = "series_stats"
    SERIAL_VERSION = 1
    METRICS = ("rmse", "mae", "n_rows")

    def __init__(
        self,
        spec: SeriesSpec,
        group_by: int | None,
        table: np.ndarray,
        n_observed: np.ndarray,
        n_seen: int = 0,
    ):
        self.spec, self.group_by = spec, group_by
        self.table, self.n_observed, self.n_seen = table, n_observed, n_seen

    @property
    def input_spec(self) -> SeriesSpec:
        return self.spec

    def _groups(self, block: SeriesBlock) -> np.ndarray:
        if self.group_by is None:
            return np.zeros(block.n_rows, dtype=np.int64)
        return block.cat[:, self.group_by]

    def evaluate(self, block: Any) -> np.ndarray:
        """Per series: its group's mean, std and scale; shape (n_series, 3)."""
        return self.table[self._groups(self._check(block))]

    def metric_sums(self, block: Any) -> dict[str, float]:
        """The errors of the group mean as a forecast of every observed value."""
        block = self._check(block)
        level = np.repeat(self.table[self._groups(block), 0], block.lengths)
        error = block.values - level
        error = error[~np.isnan(error)]
        return {
            "n_rows": float(block.n_rows),
            "n_observed": float(error.size),
            "sum_squared_error": float(np.dot(error, error)),
            "sum_absolute_error": float(np.abs(error).sum()),
        }

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """``rmse`` and ``mae`` per observed value; ``n_rows`` counts series."""
        n = sums.get("n_observed", 0.0)
        nan = float("nan")
        return {
            "n_rows": sums.get("n_rows", 0.0),
            "rmse": float(np.sqrt(sums["sum_squared_error"] / n)) if n else nan,
            "mae": sums["sum_absolute_error"] / n if n else nan,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "time_freq": self.spec.freq,
            "groups": len(self.table),
            "n_seen": self.n_seen,
            "mean": [round(float(v), 6) for v in self.table[:, 0]],
            "scale": [round(float(v), 6) for v in self.table[:, 2]],
        }

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "time_freq": self.spec.freq,
            "cardinality": list(self.spec.cardinality),
            "num_dynamic_feat": self.spec.num_dynamic_feat,
            "group_by": self.group_by,
            "n_seen": self.n_seen,
        }
        return meta, {"table": self.table, "n_observed": self.n_observed}

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SeriesStatsModel:
        config = SeriesStatsConfig(
            meta["time_freq"],
            tuple(meta["cardinality"]),
            meta["num_dynamic_feat"],
            meta["group_by"],
        )
        table, n_observed = arrays["table"], arrays["n_observed"]
        if table.shape != (config.n_groups, 3) or n_observed.shape != (config.n_groups,):
            raise IncompatibleStateError(
                f"series_stats model arrays of shapes {table.shape} and {n_observed.shape}; "
                f"its groups make them {(config.n_groups, 3)} and {(config.n_groups,)}."
            )
        return cls(config.spec, config.group_by, table, n_observed, int(meta["n_seen"]))

    def __repr__(self) -> str:
        return f"SeriesStatsModel(groups={len(self.table)}, time_freq={self.spec.freq!r})"


SeriesStatsState.MODEL = SeriesStatsModel
