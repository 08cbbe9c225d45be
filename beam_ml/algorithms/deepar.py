"""DeepAR forecasting (SageMaker's built-in algorithm) as a mergeable, resumable state.

One global autoregressive LSTM (:mod:`beam_ml.nn.deepar`, MXNet Gluon) learns from
(context, prediction) *windows* cut from many related series, and forecasts any series
from its recent history (series never seen in training too) by sampling paths.

The state (DESIGN.md §4, §7) holds

* the network's parameters and Adam's moments, the step count;
* pending windows: sampled windows not yet in a full mini-batch, shuffled in a seeded
  random order within ``shuffle_buffer`` windows (series arrive one after another, and a
  mini-batch of one series' windows would follow that series);
* a reservoir of at most ``window_reservoir_size`` trained windows, a uniform sample of
  all windows trained (bottom-k of a hash of each window: two replicas' reservoirs merge
  into the sample of their union); each step replays ``replay_fraction`` of its
  mini-batch from it, so training continued on a trickle of new observations does not
  forget the older ones;
* per tracked series (blocks whose series carry an ``item_id``: series growing on a
  stream) a tail of the last ``max_lag + context_length + prediction_length - 1`` values,
  its next timestamp and scale statistics (observed values, their absolute sum), so the
  windows that end in new points reach back into the old ones.

Memory is bounded by the configuration and the number of tracked series, never by the
length of the history. Windows are chosen per series by a hash of the series (its
``item_id``, else its content) and the position: each possible forecast start with
probability ``windows_per_horizon / prediction_length``, every epoch afresh; so one
block or the same series one at a time take the same steps.

Merging averages replicas that share a start point (the seeded initialization or the
state they continue from), weighted by the windows each trained since then, Adam's
moments too (as FM's); reservoirs merge as samples, pending windows are pooled and
trained. It is approximate: the contract suite checks that merged replicas forecast
within a tolerance of one replica on all the data.

The model (:class:`DeepARModel`) keeps the parameters: ``predict`` gives SageMaker's
inference output (``mean``, ``quantiles``, ``samples``) for each series of a block,
``evaluate`` the mean forecast, and its metrics are computed on each series' last
``prediction_length`` values, forecast from the values before them (sMAPE, MASE,
mean weighted quantile loss, ND, RMSE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from beam_ml.core import forecast_metrics
from beam_ml.core.block import origin_note
from beam_ml.core.constraints import (
    Constraints,
    Described,
    Hidden,
    Interval,
    Options,
    validate_parameters,
)
from beam_ml.core.errors import BadInputError, IncompatibleStateError, NotEnoughDataError
from beam_ml.core.series import FREQUENCIES, SeriesBlock, SeriesSpec, is_frequency
from beam_ml.core.state import Model, register
from beam_ml.nn.deepar import (
    LIKELIHOODS,
    DeepARSettings,
    lags_for_frequency,
    parameter_shapes,
)
from beam_ml.nn.engine import check_device, runtime_option
from beam_ml.nn.skeleton import AveragingState, lazy_network

__all__ = ["DeepARConfig", "DeepARState", "DeepARModel", "resolve_auto"]

_AUTO = ("auto", "ignore")
_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_PATH_ROWS = 4096  # sample paths forecast at once (sample_paths)
_MASK64 = np.uint64(2**64 - 1)
_FLOAT = [Interval(float, 0.0, None, closed="neither")]


@dataclass(frozen=True)
class DeepARConfig:
    """What must match for two DeepAR states to merge (SageMaker's names and defaults).

    Parameters
    ----------
    time_freq : str
        The series' frequency: 'min', 'H', 'D', 'W' or 'M', optionally with a multiple.
    prediction_length : int
        Steps forecast.
    context_length : int, optional
        Steps the network is unrolled over before forecasting (default
        ``prediction_length``); the lags reach further back.
    epochs : int
        Passes over bounded input (a stream is one pass).
    likelihood : {'student-T', 'gaussian', 'negative-binomial', 'beta', 'deterministic-L1'}
        The distribution of a value given the network's state; negative-binomial for
        counts, beta for values in (0, 1), deterministic-L1 a point forecast.
    num_cells, num_layers : int
        The LSTM's cells per layer and layers.
    dropout_rate : float
        Dropout between the LSTM's layers in training.
    embedding_dimension : int
        Size of each categorical feature's embedding.
    cardinality : 'auto', 'ignore' or tuple of int
        Ids per categorical feature (``cat``): the sizes ('5,3'), 'ignore' (drops ``cat``)
        or 'auto' (the largest id + 1 of the data, found before training by
        :func:`resolve_auto`, which beam-ml train calls). A stream cannot infer them (it
        has not seen every id): give them.
    num_dynamic_feat : 'auto', 'ignore' or int
        Dynamic features per series; 'auto': as many as the first block has; 'ignore'
        drops ``dynamic_feat``.
    learning_rate : float
        Adam's step size.
    mini_batch_size : int
        Windows per step.
    early_stopping_patience : int, optional
        Epochs without improvement of the progressive loss after which further epochs
        leave the state unchanged (SageMaker stops training).
    num_eval_samples : int
        Sample paths per series for metrics and quantiles.
    test_quantiles : tuple of float
        Quantiles of the weighted quantile loss and of ``predict``.
    windows_per_horizon : float
        beam_ml's: expected windows per series per ``prediction_length`` of history and
        epoch.
    shuffle_buffer : int
        beam_ml's: windows are trained in a seeded random order within this many.
    window_reservoir_size : int
        beam_ml's: trained windows kept for replay (a uniform sample).
    replay_fraction : float
        beam_ml's: the part of every mini-batch drawn again from the reservoir.
    clip_gradient, weight_decay : float
        Adam's gradient clipping and L2 decay (GluonTS's 10 and 1e-8).
    scaling : {'mean', 'standard'}
        beam_ml's: GluonTS's mean scaling, or values centred on the context's mean and
        scaled by its mean absolute deviation (student-T, gaussian, deterministic-L1;
        :func:`beam_ml.nn.deepar.window_loc_scale`).
    seed : int
        Seed of the initialization, the windows and the forecasts' draws.
    device : str
        'cpu', 'gpu' or 'gpu:N' (a runtime option, never compared).
    """

    time_freq: str
    prediction_length: int
    context_length: int | None = None
    epochs: int = 1
    likelihood: str = "student-T"
    num_cells: int = 40
    num_layers: int = 2
    dropout_rate: float = 0.1
    embedding_dimension: int = 10
    cardinality: Any = "auto"
    num_dynamic_feat: Any = "auto"
    learning_rate: float = 0.001
    mini_batch_size: int = 128
    early_stopping_patience: int | None = None
    num_eval_samples: int = 100
    test_quantiles: tuple[float, ...] = _QUANTILES
    windows_per_horizon: float = 1.0
    shuffle_buffer: int = 1024
    window_reservoir_size: int = 1024
    replay_fraction: float = 0.25
    clip_gradient: float = 10.0
    weight_decay: float = 1e-8
    scaling: str = "mean"
    seed: int = 0
    device: str = runtime_option("cpu")

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "prediction_length": [Interval(int, 1, 100_000)],
        "context_length": [Interval(int, 1, 100_000), None],
        "epochs": [Interval(int, 1, None)],
        "likelihood": [Options(LIKELIHOODS)],
        "num_cells": [Interval(int, 1, 4096)],
        "num_layers": [Interval(int, 1, 16)],
        "dropout_rate": [Interval(float, 0.0, 1.0, closed="left")],
        "embedding_dimension": [Interval(int, 1, 4096)],
        "num_dynamic_feat": [Options(_AUTO), Interval(int, 0, None)],
        "learning_rate": _FLOAT,
        "mini_batch_size": [Interval(int, 1, None)],
        "early_stopping_patience": [Interval(int, 1, None), None],
        "num_eval_samples": [Interval(int, 1, 100_000)],
        "windows_per_horizon": _FLOAT,
        "shuffle_buffer": [Interval(int, 0, 10_000_000)],
        "window_reservoir_size": [Interval(int, 0, 10_000_000)],
        "replay_fraction": [Interval(float, 0.0, 1.0, closed="left")],
        "clip_gradient": _FLOAT,
        "weight_decay": [Described("a finite float >= 0", Interval(float, 0.0, None))],
        "seed": [Interval(int, 0, None)],
        "scaling": [Options(("mean", "standard"))],
        "cardinality": [Options(_AUTO), Hidden(tuple), Hidden(list)],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        where = "DeepARConfig"
        if not is_frequency(self.time_freq):
            raise ValueError(
                f"The 'time_freq' parameter of {where} must be one of {list(FREQUENCIES)}, "
                f"optionally with a multiple ('5min'). Got {self.time_freq!r} instead."
            )
        if isinstance(self.cardinality, (list, tuple)):
            object.__setattr__(self, "cardinality", tuple(self.cardinality))
            for size in self.cardinality:
                if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                    raise ValueError(
                        f"The 'cardinality' parameter of {where} must be 'auto', 'ignore' or a "
                        f"tuple of ints >= 1. Got {self.cardinality!r} instead."
                    )
        quantiles = tuple(float(q) for q in self.test_quantiles)
        if not quantiles or any(not 0.0 < q < 1.0 for q in quantiles):
            raise ValueError(
                f"The 'test_quantiles' parameter of {where} must be quantiles in (0, 1). "
                f"Got {self.test_quantiles!r} instead."
            )
        object.__setattr__(self, "test_quantiles", quantiles)
        check_device(self.device, "device", where)

    @property
    def context(self) -> int:
        return self.prediction_length if self.context_length is None else self.context_length

    @property
    def categories(self) -> tuple[int, ...]:
        """The embedded categorical features' sizes (none for 'auto' and 'ignore')."""
        return self.cardinality if isinstance(self.cardinality, tuple) else ()

    def settings(self, num_dynamic_feat: int) -> DeepARSettings:
        return DeepARSettings(
            freq=self.time_freq,
            context_length=self.context,
            prediction_length=self.prediction_length,
            likelihood=self.likelihood,
            num_cells=self.num_cells,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            embedding_dimension=self.embedding_dimension,
            cardinality=self.categories,
            num_dynamic_feat=num_dynamic_feat,
            learning_rate=self.learning_rate,
            clip_gradient=self.clip_gradient,
            weight_decay=self.weight_decay,
            seed=self.seed,
            scaling=self.scaling,
        )

    def spec(self, num_dynamic_feat: int | None) -> SeriesSpec:
        """What blocks must be: cat checked unless ignored, dynamic features once known."""
        cardinality = None if self.cardinality == "ignore" else self.categories
        dynamic = None if self.num_dynamic_feat == "ignore" else num_dynamic_feat
        return SeriesSpec(self.time_freq, cardinality, dynamic)

    @property
    def window(self) -> int:
        return max(lags_for_frequency(self.time_freq)) + self.context + self.prediction_length


# --- windows: one float64 row each ---------------------------------------------------------------
@dataclass(frozen=True)
class WindowLayout:
    """A window as one float64 row: its key, first timestamp (seconds), series index of
    position 0 (age), categorical ids, target (``window`` values, NaN where missing or
    before the series) and dynamic features (``n_dynamic`` x ``window``)."""

    window: int
    n_cat: int
    n_dynamic: int

    @property
    def width(self) -> int:
        return 3 + self.n_cat + self.window * (1 + self.n_dynamic)

    def pack(self, key, first, age, cat, target, dynamic) -> np.ndarray:
        n = target.shape[0]
        rows = np.empty((n, self.width))
        if n == 0:
            return rows
        rows[:, 0], rows[:, 1], rows[:, 2] = key, first, age
        rows[:, 3 : 3 + self.n_cat] = cat if self.n_cat else 0
        t0 = 3 + self.n_cat
        rows[:, t0 : t0 + self.window] = target
        if self.n_dynamic:
            rows[:, t0 + self.window :] = dynamic.reshape(n, -1)
        return rows

    def unpack(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        t0 = 3 + self.n_cat
        out = {
            "first": rows[:, 1].astype(np.int64).astype("datetime64[s]"),
            "age": rows[:, 2].astype(np.int64),
            "target": rows[:, t0 : t0 + self.window].astype(np.float32),
        }
        if self.n_cat:
            out["cat"] = rows[:, 3:t0].astype(np.int64)
        if self.n_dynamic:
            out["dynamic"] = (
                rows[:, t0 + self.window :]
                .reshape(-1, self.n_dynamic, self.window)
                .astype(np.float32)
            )
        return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64s: a well-spread hash, vectorized."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def _uniform(x: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) from uint64 hashes."""
    return ((_mix(x) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _digest(*parts: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b"|".join(parts), digest_size=8).digest(), "little")


def series_keys(block: SeriesBlock, seed: int) -> np.ndarray:
    """(n_series,) uint64: each series' identity, from its item id if it has one,
    else from its start, categorical ids and values."""
    ids = getattr(block, "item_id", None)
    keys = np.empty(block.n_rows, dtype=np.uint64)
    salt = str(seed).encode()
    for i in range(block.n_rows):
        if ids is not None:
            keys[i] = _digest(salt, b"id", str(ids[i]).encode())
        else:
            cat = b"" if block.cat is None else block.cat[i].tobytes()
            keys[i] = _digest(salt, block.start[i].tobytes(), cat, block.target(i).tobytes())
    return keys


def _months(stamp: Any) -> int:
    """Months since 1970 of a timestamp (datetime64 or seconds)."""
    if not isinstance(stamp, np.datetime64):
        stamp = np.int64(stamp).astype("datetime64[s]")
    return int(stamp.astype("datetime64[M]").astype(np.int64))


def step_seconds(freq: str) -> int | None:
    """Seconds between two values of ``freq`` (None for months)."""
    from beam_ml.nn.deepar import _SECONDS, _split

    n, unit = _split(freq)
    return None if unit == "M" else n * _SECONDS[unit]


def shifted(start: np.ndarray, steps: np.ndarray, freq: str) -> np.ndarray:
    """``start`` (datetime64[s]) moved by ``steps`` (int, may be negative) of ``freq``."""
    seconds = step_seconds(freq)
    if seconds is not None:
        return start + (steps * seconds).astype("timedelta64[s]")
    n = int(freq[:-1] or 1)
    months = start.astype("datetime64[M]")
    day = start - months.astype("datetime64[s]")
    return (months + (steps * n).astype("timedelta64[M]")).astype("datetime64[s]") + day


# --- the state ---------------------------------------------------------------------------------
_META_INT = ("steps", "n_before", "epoch", "n_rows", "n_windows", "shuffles", "num_dynamic")
_WINDOW_SETS = ("pending", "reservoir")


@register
class DeepARState(AveragingState):
    """DeepAR's state: network parameters, Adam's moments, pending and replayed windows,
    tails of tracked series (see the module notes).

    Attributes
    ----------
    params, moments : dict of ndarray or None
        The network's parameters and Adam's moments (``mean.<name>``, ``var.<name>``);
        None until the first block.
    steps : int
        Adam steps taken.
    pending : ndarray of shape (n, width), float64
        Windows waiting for a mini-batch (fewer than ``shuffle_buffer`` or
        ``mini_batch_size``), rows of :class:`WindowLayout`.
    reservoir : ndarray of shape (m, width), float64
        Trained windows, at most ``window_reservoir_size``: those of smallest key.
    n_before, epoch, n_rows, n_windows : int
        The start point (series seen before it, its epoch) and, since then, series folded
        in and windows trained (the merge weight).
    progressive : ndarray of shape (3,)
        Windows, summed negative log-likelihood and observed values of every window
        before its step, on the first pass over the data.
    tracked : dict of ndarray
        Per tracked series: ``id`` (uint64 key), ``tail`` (m, window - 1), ``next``
        (timestamp of the value after the tail, seconds), ``length`` (values seen),
        ``n_observed`` and ``abs_sum`` (scale statistics).
    """

    FAMILY = "deepar"
    SERIAL_VERSION = 1
    CONFIG = DeepARConfig
    BLOCK_KIND = SeriesBlock
    START_POINTS_DIFFER = (
        "Cannot average deepar replicas that continue from different start points (epoch "
        "{mine.epoch} after {mine.n_before} series vs epoch {theirs.epoch} after "
        "{theirs.n_before} series); replicas must share theirs."
    )

    def __init__(self, config: DeepARConfig):
        super().__init__(config)
        self.params: dict[str, np.ndarray] | None = None
        self.moments: dict[str, np.ndarray] | None = None
        self.num_dynamic: int = -1  # unknown until the first block ('auto')
        if isinstance(config.num_dynamic_feat, int):
            self.num_dynamic = config.num_dynamic_feat
        elif config.num_dynamic_feat == "ignore":
            self.num_dynamic = 0
        self.steps = self.n_before = self.epoch = self.n_rows = self.n_windows = 0
        self.shuffles = 0
        # Early stopping: this pass's loss sums (NLL, observed values), the best pass's
        # mean loss, passes since it, and whether training has stopped.
        self.early = np.array([0.0, 0.0, np.inf, 0.0, 0.0])
        self.pending = np.zeros((0, 0))
        self.reservoir = np.zeros((0, 0))
        self.progressive = np.zeros(3)
        self.tracked = _no_tracked(config.window)
        self._network: Any = None

    # --- properties ---------------------------------------------------------------------
    @property
    def input_spec(self) -> SeriesSpec | None:
        """None until the first block says how many dynamic features ('auto')."""
        return None if self.num_dynamic < 0 else self.config.spec(self.num_dynamic)

    def _check(self, block: Any) -> SeriesBlock:
        spec = self.input_spec or self.config.spec(None)
        if self.config.cardinality == "auto" and getattr(block, "n_cat", 0):
            raise BadInputError(_AUTO_CARDINALITY.format(block.n_cat) + origin_note(block))
        return SeriesBlock.validate(block, owner=type(self).__name__, spec=spec)

    @property
    def layout(self) -> WindowLayout:
        return WindowLayout(
            self.config.window, len(self.config.categories), max(self.num_dynamic, 0)
        )

    @property
    def settings(self) -> DeepARSettings:
        return self.config.settings(max(self.num_dynamic, 0))

    @lazy_network("_network")
    def _net(self) -> Any:
        from beam_ml.nn.deepar import DeepARNetwork

        return DeepARNetwork(self.settings, self.config.device)

    def _allocate(self) -> None:
        net = self._net()
        self.params = net.initial()
        self.moments = {
            f"{k}.{name}": np.zeros_like(v)
            for name, v in self.params.items()
            for k in ("mean", "var")
        }
        width = self.layout.width
        self.pending, self.reservoir = np.zeros((0, width)), np.zeros((0, width))

    # --- training -------------------------------------------------------------------------
    def update(self, block: Any) -> DeepARState:
        """Fold a :class:`SeriesBlock` in: sample its windows, train full mini-batches."""
        block = self._check(block)
        if block.n_rows == 0:
            return self
        _check_targets(block, self.config.likelihood, type(self).__name__)
        if self.num_dynamic < 0:  # 'auto': the first block says; a missing GPU fails first
            from beam_ml.nn.deepar import DeepARNetwork

            settings = self.config.settings(block.n_dynamic)
            self._network = DeepARNetwork(settings, self.config.device)
            self.num_dynamic = block.n_dynamic
        if self.params is None:
            self._allocate()
        windows = self._windows(block)
        self.n_rows += block.n_rows
        if not self.stopped:
            self._feed(windows)
        return self

    def _windows(self, block: SeriesBlock) -> np.ndarray:
        """The windows sampled from ``block`` (tracked series extended by their tails)."""
        c, layout = self.config, self.layout
        keys = series_keys(block, c.seed)
        values, offsets, start = block.values, block.offsets, block.start
        known, base = None, np.zeros(block.n_rows, np.int64)
        dynamic = block.dynamic_feat if layout.n_dynamic else None
        # Series with ids extend their tracked tails on a pass over new data only: a
        # further epoch reads the same values again, which the tails would drop as old.
        if getattr(block, "item_id", None) is not None and self._first_sight:
            values, offsets, start, known, base = self._extend_tracked(block, keys)
        lengths = np.diff(offsets)
        P, before = c.prediction_length, c.window - c.prediction_length
        # Candidate forecast starts: every position s in [1, length - P] (new ones only for
        # tracked series), each kept with probability windows_per_horizon / P.
        low = np.ones(block.n_rows, np.int64) if known is None else np.maximum(known - P + 1, 1)
        high = lengths - P + 1
        count = np.maximum(high - low, 0)
        series = np.repeat(np.arange(block.n_rows), count)
        s = low[series] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        absolute = (s + base[series]).astype(np.uint64)
        with np.errstate(over="ignore"):  # a hash: wrapping is intended
            mix = keys[series] ^ _mix(absolute + np.uint64(self.epoch) * np.uint64(2**40))
        keep = _uniform(mix) < min(1.0, c.windows_per_horizon / P)
        series, s, mix = series[keep], s[keep], mix[keep]
        position = s - before  # series index of each window's position 0
        index = position[:, None] + np.arange(c.window)[None, :]
        inside = (index >= 0) & (index < lengths[series][:, None])
        flat = offsets[series][:, None] + np.clip(index, 0, None)
        flat = np.minimum(flat, len(values) - 1)
        target = np.where(inside, values[flat], np.nan)
        dyn = None
        if layout.n_dynamic:
            dyn = np.where(inside[:, None, :], dynamic[:, flat].transpose(1, 0, 2), 0.0)
        first = shifted(start[series], position, c.time_freq).astype(np.int64)
        cat = None
        if layout.n_cat:
            cat = block.cat[series]
        return layout.pack(_uniform(_mix(mix)), first, position + base[series], cat, target, dyn)

    def _extend_tracked(self, block: SeriesBlock, keys: np.ndarray) -> tuple[Any, ...]:
        """Series with ids: each piece preceded by its series' tail (NaN over a gap;
        values not after the tail's end are dropped), the tails and statistics updated.
        Returns the joined values, offsets, starts, the positions of each already seen
        and the series index of each one's position 0."""
        c, t = self.config, self.tracked
        if self.layout.n_dynamic:
            raise BadInputError(
                "DeepARState tracks series by item_id without dynamic features; give "
                "blocks with item_id no dynamic_feat (or whole series without item_id)."
            )
        step = step_seconds(c.time_freq)
        keep = c.window - 1
        parts, offsets, starts, known, base = [], [0], [], [], []
        index = {int(k): i for i, k in enumerate(t["id"])}
        for i in range(block.n_rows):
            piece = block.target(i).astype(np.float64)
            start = block.start[i]
            row = index.get(int(keys[i]))
            if row is None:
                row = index[int(keys[i])] = len(t["id"])
                for name, empty in _tracked_row(keep).items():
                    t[name] = np.concatenate([t[name], empty])
                t["id"][row], t["next"][row] = keys[i], start.astype(np.int64)
            seen = int(t["length"][row])
            head = t["tail"][row, keep - min(seen, keep) :]
            if seen:  # values before the tail's end are dropped, a gap is missing values
                ahead = start.astype(np.int64) - t["next"][row]
                if step:
                    gap = int(ahead // step)
                else:
                    months = _months(start) - _months(t["next"][row])
                    gap = months // int(c.time_freq[:-1] or 1)
                piece = piece[-gap:] if gap < 0 else np.concatenate([np.full(gap, np.nan), piece])
            joined = np.concatenate([head, piece])
            first = shifted(np.array([t["next"][row]], "datetime64[s]"), np.array([-len(head)]), c.time_freq)  # fmt: skip
            parts.append(joined)
            offsets.append(offsets[-1] + len(joined))
            starts.append(first[0])
            known.append(len(head))
            base.append(seen - len(head))
            observed = piece[~np.isnan(piece)]
            t["n_observed"][row] += observed.size
            t["abs_sum"][row] += np.abs(observed).sum()
            t["length"][row] = seen + len(piece)
            tail = joined[len(joined) - min(len(joined), keep) :]
            t["tail"][row] = np.concatenate([np.full(keep - len(tail), np.nan), tail])
            t["next"][row] = shifted(first, np.array([len(joined)]), c.time_freq)[0].astype(np.int64)  # fmt: skip
        return (
            np.concatenate(parts) if parts else np.zeros(0),
            np.asarray(offsets, np.int64),
            np.asarray(starts, "datetime64[s]"),
            np.asarray(known, np.int64),
            np.asarray(base, np.int64),
        )

    def _feed(self, windows: np.ndarray) -> None:
        """Queue windows; train every full mini-batch (shuffled within the buffer)."""
        c = self.config
        pending = np.concatenate([self.pending, windows]) if len(self.pending) else windows
        batches = []
        fresh = self._fresh_per_step
        buffer = max(c.shuffle_buffer, fresh)
        while len(pending) >= buffer:
            window = pending[:buffer]
            order = np.random.default_rng([c.seed, 7, self.shuffles]).permutation(buffer)
            self.shuffles += 1
            window = window[order]
            full = buffer // fresh * fresh
            batches.extend(window[i : i + fresh] for i in range(0, full, fresh))
            pending = np.concatenate([window[full:], pending[buffer:]])
        self.pending = pending.copy() if pending is windows else pending
        self._train(batches)

    @property
    def _fresh_per_step(self) -> int:
        c = self.config
        replay = int(round(c.replay_fraction * c.mini_batch_size)) if c.window_reservoir_size else 0
        return max(c.mini_batch_size - replay, 1)

    def _train(self, batches: list[np.ndarray]) -> None:
        if not batches:
            return
        c, layout = self.config, self.layout
        replay = c.mini_batch_size - self._fresh_per_step
        steps = []
        for i, fresh in enumerate(batches):
            rows = fresh
            if replay and len(self.reservoir):
                rng = np.random.default_rng([c.seed, 11, self.steps + i])
                pick = rng.integers(0, len(self.reservoir), min(replay, len(self.reservoir)))
                rows = np.concatenate([fresh, self.reservoir[pick]])
            steps.append(layout.unpack(rows))
            # Windows join the reservoir once trained (the next steps may replay them).
            self.reservoir = _bottom_k(self.reservoir, fresh, c.window_reservoir_size)
        # The reservoir a step replays from must be the one before it; replay draws above
        # used the reservoir as it grew, step by step, which is what one pass does.
        self.params, self.moments, scores = self._net().train(
            self.params, self.moments, steps, self.steps + 1
        )
        self.steps += len(batches)
        self.early[:2] += scores.sum(axis=0)
        self.n_windows += sum(len(b) for b in batches)
        if self._first_sight:
            self.progressive += [
                sum(len(b) for b in batches),
                scores[:, 0].sum(),
                scores[:, 1].sum(),
            ]

    # --- merging and epochs ------------------------------------------------------------------
    def _pristine(self) -> bool:
        return self.params is None and self.n_seen == 0

    def _average(self, merged: DeepARState, other: DeepARState) -> None:
        """Window-weighted average of two replicas of one start point (approximate)."""
        a, b = self.n_windows, other.n_windows
        share = 0.5 if a + b == 0 else b / (a + b)
        for table, theirs in ((merged.params, other.params), (merged.moments, other.moments)):
            for name in table:
                table[name] = ((1 - share) * table[name] + share * theirs[name]).astype(np.float32)
        merged.early[:2] += other.early[:2]
        merged.n_windows += other.n_windows
        merged.shuffles = max(self.shuffles, other.shuffles)
        merged.reservoir = _bottom_k(
            self.reservoir, other.reservoir, self.config.window_reservoir_size
        )
        merged.tracked = _merged_tracked(self.tracked, other.tracked)
        if len(other.pending):
            merged._feed(other.pending)

    def _copy(self, config: DeepARConfig | None = None) -> DeepARState:
        out = DeepARState(config or self.config)
        out.params = None if self.params is None else {k: v.copy() for k, v in self.params.items()}
        out.moments = (
            None if self.moments is None else {k: v.copy() for k, v in self.moments.items()}
        )
        for name in _META_INT:
            setattr(out, name, getattr(self, name))
        out.early = self.early.copy()
        out.pending, out.reservoir = self.pending.copy(), self.reservoir.copy()
        out.progressive = self.progressive.copy()
        out.tracked = {k: v.copy() for k, v in self.tracked.items()}
        out._network = self._network
        return out

    def _flushed(self) -> DeepARState:
        """A copy with its pending windows trained (the last mini-batch short)."""
        out = self._copy()
        if len(out.pending):
            rng = np.random.default_rng([self.config.seed, 7, out.shuffles])
            out.shuffles += 1
            pending = out.pending[rng.permutation(len(out.pending))]
            fresh = out._fresh_per_step
            out.pending = pending[:0]
            out._train([pending[i : i + fresh] for i in range(0, len(pending), fresh)])
        return out

    def continued(self) -> DeepARState:
        """The start of the next pass: pending windows trained, this pass closed. With
        ``early_stopping_patience``, a pass whose mean loss (each window scored before
        its step) is not below the best pass's counts; after ``patience`` such passes
        training stops: further epochs leave the parameters as they are."""
        out = self._flushed()
        patience = self.config.early_stopping_patience
        nll, observed, best, stale, stopped = out.early
        if patience is not None and observed > 0 and not stopped:
            loss = nll / observed
            best, stale = (loss, 0.0) if loss < best else (best, stale + 1)
            stopped = float(stale >= patience)
        out.early = np.array([0.0, 0.0, best, stale, stopped])
        out.n_windows = 0
        out._next_pass()
        if out._first_sight:  # the next pass reads new data, not another epoch: it trains
            out.early[3:] = 0.0
        return out

    @property
    def stopped(self) -> bool:
        """Whether early stopping ended training (further epochs train nothing)."""
        return bool(self.early[4])

    # --- models --------------------------------------------------------------------------
    def derive(self, num_eval_samples: int | None = None) -> DeepARModel:
        """The forecaster learned so far (pending windows trained on a copy)."""
        if self.n_seen == 0 or self.params is None:
            raise NotEnoughDataError("DeepAR needs at least one series to train on.")
        learned = self._flushed() if len(self.pending) else self
        if learned.steps == 0:
            raise NotEnoughDataError(
                "DeepAR has not trained a step: no series is longer than prediction_length "
                f"({self.config.prediction_length})."
            )
        return DeepARModel(
            self.config,
            max(self.num_dynamic, 0),
            {k: v.copy() for k, v in learned.params.items()},
            n_seen=self.n_seen,
            num_eval_samples=num_eval_samples or self.config.num_eval_samples,
        )

    # --- serialization ---------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # The network holds MXNet handles of this process; a copy rebuilds its own.
        return {**self.__dict__, "_network": None}

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {name: int(getattr(self, name)) for name in _META_INT}
        arrays: dict[str, np.ndarray] = {"progressive": self.progressive, "early": self.early}
        # Window sets are written at their capacity (NaN rows after the count): the
        # state's size depends on its config only, however many windows wait.
        for name in _WINDOW_SETS:
            rows = getattr(self, name)
            meta[f"n_{name}"] = len(rows)
            if self.params is not None:
                padded = np.full((self._capacity(name), rows.shape[1]), np.nan)
                padded[: len(rows)] = rows
                rows = padded
            arrays[name] = rows
        for name, value in (self.params or {}).items():
            arrays[f"param.{name}"] = value
        for name, value in (self.moments or {}).items():
            arrays[f"adam.{name}"] = value
        for name, value in self.tracked.items():
            arrays[f"tracked.{name}"] = value
        return meta, arrays

    @classmethod
    def _from_payload(cls, config: DeepARConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> DeepARState:  # fmt: skip
        state = cls(config)
        for name in _META_INT:
            value = int(meta[name])
            if value < (-1 if name == "num_dynamic" else 0):
                raise IncompatibleStateError(f"The deepar state's {name} is {value}.")
            setattr(state, name, value)
        state.progressive = arrays["progressive"].astype(np.float64)
        state.early = arrays["early"].astype(np.float64)
        if state.early.shape != (5,):
            raise IncompatibleStateError(
                "The deepar state's early-stopping sums are not 5 numbers."
            )
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param.")}
        if params:
            _check_parameters(params, state.settings)
            state.params = params
            state.moments = {k[5:]: v for k, v in arrays.items() if k.startswith("adam.")}
            shapes = {f"{m}.{p}": v.shape for p, v in params.items() for m in ("mean", "var")}
            if {k: v.shape for k, v in state.moments.items()} != shapes:
                raise IncompatibleStateError("The deepar state's Adam moments do not match its parameters.")  # fmt: skip
        state.tracked = {k[8:]: v for k, v in arrays.items() if k.startswith("tracked.")}
        empty = _no_tracked(config.window)
        m = len(state.tracked.get("id", ()))
        shapes = {k: (m, *v.shape[1:]) for k, v in empty.items()}
        if {k: v.shape for k, v in state.tracked.items()} != shapes:
            raise IncompatibleStateError(
                f"The deepar state's tracked series arrays do not fit: expected {shapes}."
            )
        if state.progressive.shape != (3,):
            raise IncompatibleStateError("The deepar state's progressive sums are not 3 numbers.")
        width = state.layout.width
        for name in _WINDOW_SETS:
            rows, count = arrays[name], int(meta[f"n_{name}"])
            expected = (state._capacity(name), width) if params else (0, 0)
            if rows.shape != expected or not 0 <= count <= expected[0]:
                raise IncompatibleStateError(
                    f"The deepar state's {name} windows have shape {rows.shape} and count "
                    f"{count}; its config makes {expected}."
                )
            setattr(state, name, rows[:count].copy())
        return state

    def _capacity(self, name: str) -> int:
        """Most windows a set holds: pending fewer than a shuffle buffer."""
        if name == "reservoir":
            return self.config.window_reservoir_size
        return max(self.config.shuffle_buffer, self._fresh_per_step) - 1


def _check_parameters(params: dict[str, np.ndarray], settings: DeepARSettings) -> None:
    expected = parameter_shapes(settings)
    found = {name: value.shape for name, value in params.items()}
    if found != expected or any(v.dtype != np.float32 for v in params.values()):
        raise IncompatibleStateError(
            "The deepar parameters do not fit the config's network: found "
            f"{sorted(found.items())[:3]}..., expected {sorted(expected.items())[:3]}... "
            "(float32)."
        )


def _check_targets(block: SeriesBlock, likelihood: str, owner: str) -> None:
    values = block.values
    observed = values[~np.isnan(values)]
    if likelihood == "negative-binomial" and (observed < 0).any():
        bad = int(np.flatnonzero(values < 0)[0])
        raise BadInputError(
            f"{owner} with likelihood='negative-binomial' expects counts >= 0; "
            f"{_where(block, bad)} is {values[bad]}."
        )
    if likelihood == "beta" and ((observed <= 0) | (observed >= 1)).any():
        bad = int(np.flatnonzero((values <= 0) | (values >= 1))[0])
        raise BadInputError(
            f"{owner} with likelihood='beta' expects targets in (0, 1); "
            f"{_where(block, bad)} is {values[bad]}."
        )


def _where(block: SeriesBlock, position: int) -> str:
    series = int(np.searchsorted(block.offsets, position, side="right")) - 1
    return f"'target' of series {series} at time {position - int(block.offsets[series])}"


def _bottom_k(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` windows of smallest key (column 0) of ``a`` and ``b``, each once."""
    rows = np.concatenate([a, b]) if len(a) else b
    if not len(rows):
        return rows
    _, first = np.unique(rows[:, 0], return_index=True)  # sorted by key, duplicates once
    return rows[first[:k]]


def _no_tracked(window: int) -> dict[str, np.ndarray]:
    return {
        name: np.zeros((0, *shape), dtype)
        for name, (shape, dtype) in {
            "id": ((), np.uint64),
            "tail": ((window - 1,), np.float64),
            "next": ((), np.int64),
            "length": ((), np.int64),
            "n_observed": ((), np.int64),
            "abs_sum": ((), np.float64),
        }.items()
    }


def _tracked_row(keep: int) -> dict[str, np.ndarray]:
    row = {k: np.zeros((1, *v.shape[1:]), v.dtype) for k, v in _no_tracked(keep + 1).items()}
    row["tail"][:] = np.nan
    return row


def _merged_tracked(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both replicas' tracked series; where both track one, the one further along."""
    joined = {k: np.concatenate([a[k], b[k]]) for k in a}
    order = np.lexsort((-joined["length"], joined["id"]))
    ids = joined["id"][order]
    first = order[np.concatenate([[True], ids[1:] != ids[:-1]])] if len(ids) else order
    return {k: v[first] for k, v in joined.items()}


# --- the model -----------------------------------------------------------------------------------
class DeepARModel(Model):
    """A DeepAR forecaster: the network's parameters and its configuration.

    ``evaluate(block)`` gives each series' mean forecast of the ``prediction_length``
    steps after its last value, shape (n_series, prediction_length); ``predict`` the
    SageMaker inference output. Metrics hold each series' last ``prediction_length``
    values out: sMAPE, MASE (seasonal naive scale of the history), mean weighted
    quantile loss over ``test_quantiles``, ND and RMSE.
    """

    FAMILY = "deepar"
    SERIAL_VERSION = 1
    METRICS = ("sMAPE", "MASE", "mean_wQuantileLoss", "ND", "RMSE", "n_rows")

    def __init__(
        self,
        config: DeepARConfig,
        num_dynamic: int,
        params: dict[str, np.ndarray],
        n_seen: int = 0,
        num_eval_samples: int | None = None,
    ):
        self.config, self.num_dynamic, self.params, self.n_seen = (
            config,
            num_dynamic,
            params,
            n_seen,
        )
        self.num_eval_samples = num_eval_samples or config.num_eval_samples
        self._network: Any = None

    @property
    def input_spec(self) -> SeriesSpec:
        return self.config.spec(self.num_dynamic)

    @property
    def prediction_length(self) -> int:
        return self.config.prediction_length

    @lazy_network("_network")
    def _net(self) -> Any:
        from beam_ml.nn.deepar import DeepARNetwork

        return DeepARNetwork(self.config.settings(self.num_dynamic), self.config.device)

    def sample_paths(self, block: Any, num_samples: int | None = None, horizon_given: bool = False) -> np.ndarray:  # fmt: skip
        """(n_series, num_samples, prediction_length) sample paths after each series'
        last value (with ``horizon_given``: after all but its last
        ``prediction_length`` values, whose dynamic features then reach over the
        horizon; otherwise the last dynamic features are carried forward).

        The draws of a series depend on its values and the config's seed only, not on
        the other series of the block."""
        block = self._check(block)
        c, settings = self.config, self.config.settings(self.num_dynamic)
        S = num_samples or self.num_eval_samples
        P, history = c.prediction_length, settings.max_lag + c.context
        lengths = block.lengths
        if horizon_given and (lengths <= P).any():
            short = int(np.flatnonzero(lengths <= P)[0])
            raise BadInputError(
                f"{type(self).__name__} scores forecasts of the last {P} values after the "
                f"values before them; series {short} has only {lengths[short]} values."
            )
        end = lengths - (P if horizon_given else 0)  # forecast after position end - 1
        position = end - history
        index = position[:, None] + np.arange(history + P)[None, :]
        inside_hist = (index >= 0) & (index < end[:, None])
        flat = block.offsets[:-1, None] + np.clip(index, 0, None)
        flat = np.minimum(flat, max(len(block.values) - 1, 0))
        target = np.where(inside_hist, block.values[flat], np.nan)[:, :history].astype(np.float32)
        dynamic = None
        if self.num_dynamic:
            # Over the horizon the given features (horizon_given), else the last ones
            # carried forward: a SeriesBlock's features end with its target.
            reach = np.minimum(np.maximum(index, 0), lengths[:, None] - 1)
            flat = block.offsets[:-1, None] + reach
            dynamic = np.where((index >= 0)[:, None, :], block.dynamic_feat[:, flat].transpose(1, 0, 2), 0.0)  # fmt: skip
        first = shifted(block.start, position, c.time_freq)
        cat = block.cat if settings.cardinality else None
        keys = series_keys(block, c.seed)
        paths = np.zeros((block.n_rows, S, P))
        # Series in chunks of about _PATH_ROWS paths: the repeated states and histories
        # of a block's paths (~1.4 MB a series at 100 samples, hourly lags) stay bounded.
        chunk = max(1, _PATH_ROWS // S)
        for begin in range(0, block.n_rows, chunk):
            part = slice(begin, min(begin + chunk, block.n_rows))
            noise = np.stack([  # one generator per series: block-independent draws
                np.random.default_rng([int(keys[i]), int(end[i])]).random((S, P, 2))
                for i in range(part.start, part.stop)
            ])  # fmt: skip
            paths[part] = self._net().forecast(
                self.params, target[part], first[part], position[part],
                None if cat is None else cat[part], None if dynamic is None else dynamic[part],
                S, np.clip(noise, 1e-12, 1 - 1e-12),
            )  # fmt: skip
        return paths

    def evaluate(self, block: Any) -> np.ndarray:
        """Each series' mean forecast: shape (n_series, prediction_length)."""
        return self.sample_paths(block).mean(axis=1)

    def predict(
        self,
        block: Any,
        num_samples: int | None = None,
        quantiles: Any = None,
        output_types: Any = ("mean", "quantiles"),  # fmt: skip
    ) -> list[dict[str, Any]]:
        """SageMaker's inference output per series: ``{"mean": [...], "quantiles":
        {"0.1": [...], ...}, "samples": [[...], ...]}`` (the ``output_types`` asked)."""
        paths = self.sample_paths(block, num_samples)
        quantiles = self.config.test_quantiles if quantiles is None else quantiles
        out = []
        levels = np.quantile(paths, [float(q) for q in quantiles], axis=1) if len(paths) else None
        for i in range(paths.shape[0]):
            row: dict[str, Any] = {}
            if "mean" in output_types:
                row["mean"] = paths[i].mean(axis=0).tolist()
            if "quantiles" in output_types:
                row["quantiles"] = {str(q): levels[j, i].tolist() for j, q in enumerate(quantiles)}
            if "samples" in output_types:
                row["samples"] = paths[i].tolist()
            out.append(row)
        return out

    def metric_sums(self, block: Any) -> dict[str, float]:
        """Additive sums (:mod:`beam_ml.core.forecast_metrics`) of the forecast of each
        series' last ``prediction_length`` values from the values before them: the
        median path for sMAPE, MASE and ND (GluonTS's and M4's point), the mean for
        RMSE, the sample quantiles for the weighted quantile losses."""
        block = self._check(block)
        paths = self.sample_paths(block, horizon_given=True)
        P, n = self.config.prediction_length, block.n_rows
        truth = block.values[(block.offsets[1:, None] - P + np.arange(P)[None, :])] if n else np.zeros((0, P))  # fmt: skip
        history = [block.target(i)[:-P] for i in range(n)]
        quantiles = self.config.test_quantiles
        levels = np.quantile(paths, quantiles, axis=1) if n else np.zeros((len(quantiles), 0, P))
        sums = forecast_metrics.metric_sums(
            truth,
            np.median(paths, axis=1) if n else truth,
            insample=history,
            season=forecast_metrics.season_of(self.config.time_freq),
            quantile_forecasts=dict(zip(quantiles, levels, strict=True)),
        )
        mean = paths.mean(axis=1) if n else truth
        sums["squared_error"] = forecast_metrics.metric_sums(truth, mean)["squared_error"]
        sums["n_rows"] = float(n)
        return sums

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        return {"n_rows": sums.get("n_rows", 0.0), **forecast_metrics.metrics_from_sums(sums)}

    def describe(self) -> dict[str, Any]:
        return {
            "time_freq": self.config.time_freq,
            "prediction_length": self.config.prediction_length,
            "likelihood": self.config.likelihood,
            "n_seen": self.n_seen,
            "parameters": int(sum(v.size for v in self.params.values())),
        }

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from beam_ml.core.state import config_to_dict

        meta = {
            "config": config_to_dict(self.config),
            "num_dynamic": self.num_dynamic,
            "n_seen": self.n_seen,
            "num_eval_samples": self.num_eval_samples,
        }
        meta["config"]["test_quantiles"] = list(self.config.test_quantiles)
        if isinstance(self.config.cardinality, tuple):
            meta["config"]["cardinality"] = list(self.config.cardinality)
        return meta, {f"param.{k}": v for k, v in self.params.items()}

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> DeepARModel:
        config = DeepARConfig(**meta["config"])
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param.")}
        num_dynamic = int(meta["num_dynamic"])
        if num_dynamic < 0:
            raise IncompatibleStateError(f"The deepar model's num_dynamic is {num_dynamic}.")
        _check_parameters(params, config.settings(num_dynamic))
        return cls(config, int(meta["num_dynamic"]), params, int(meta["n_seen"]), int(meta["num_eval_samples"]))  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_network": None}

    def __repr__(self) -> str:
        return (
            f"DeepARModel(time_freq={self.config.time_freq!r}, "
            f"prediction_length={self.config.prediction_length}, n_seen={self.n_seen})"
        )


DeepARState.MODEL = DeepARModel


# --- 'auto' from the data --------------------------------------------------------------------
_AUTO_CARDINALITY = (
    "DeepARState expects 0 'cat' values per series; the block has {}: with "
    "cardinality='auto' got series with 'cat', the embeddings' sizes come from all the "
    "data before training (deepar.resolve_auto(config, blocks); beam-ml train does it), "
    "or give cardinality (a stream must)."
)


def resolve_auto(config: DeepARConfig, blocks: Iterable[SeriesBlock]) -> DeepARConfig:
    """``config`` with 'auto' made what the data say, as SageMaker does: ``cardinality``
    the largest id + 1 of each categorical feature over all ``blocks`` (left 'auto' when
    they have no ``cat``), ``num_dynamic_feat`` their number of dynamic features. Reads
    the blocks only as far as it must (all of them for ``cat`` ids); blocks that disagree
    on how many ``cat`` or ``dynamic_feat`` they have are a BadInputError naming where."""
    cardinality, dynamic = config.cardinality == "auto", config.num_dynamic_feat == "auto"
    found: tuple[int, int] | None = None
    highest = None
    for block in blocks if cardinality or dynamic else ():
        block = SeriesBlock.validate(block, owner="resolve_auto")
        if found is None:
            found = (block.n_cat, block.n_dynamic)
        elif (block.n_cat, block.n_dynamic) != found:
            raise BadInputError(
                "DeepAR's 'auto' cardinality and num_dynamic_feat: the series disagree, "
                f"{found[0]} 'cat' and {found[1]} 'dynamic_feat' in the first, "
                f"{block.n_cat} and {block.n_dynamic} in others" + origin_note(block)
            )
        if not (cardinality and block.n_cat):
            break  # the first block tells all the rest
        if block.n_rows:
            top = block.cat.max(axis=0)
            highest = top if highest is None else np.maximum(highest, top)
    changes: dict[str, Any] = {}
    if dynamic and found is not None:
        changes["num_dynamic_feat"] = found[1]
    if highest is not None:
        changes["cardinality"] = tuple(int(h) + 1 for h in highest)
    return replace(config, **changes) if changes else config


DeepARState.resolve_auto = staticmethod(resolve_auto)  # type: ignore[attr-defined]
