"""DeepAR's network (Salinas et al. 2020) on MXNet Gluon, in the manner of GluonTS.

One autoregressive LSTM over many related series. At every time step its input is

* the target's lags for the frequency (:func:`lags_for_frequency`, GluonTS's sets: the
  last 7 values and the same season in earlier cycles), divided by the series' scale;
* time features for the frequency (:func:`time_features`, GluonTS's, in [-0.5, 0.5])
  and the age ``log10(2 + t)`` of the step within its series;
* the dynamic features, the embeddings of the categorical ids and ``log(scale)``.

The scale is GluonTS's mean scaling: the mean absolute observed value of the window's
context (of the whole window when the context has none; 1 when nothing is observed).
With ``scaling='standard'`` (student-T, gaussian, deterministic-L1) values are also
centred: ``(y - loc) / scale`` with ``loc`` the context's mean and ``scale`` its mean
absolute deviation from it (at least 1e-3 of its mean absolute value). Mean scaling
leaves a series' daily swing a few percent of its level, so a series that repeats its
day almost exactly (M4 Hourly has such) needs the network's output to 1e-4 of the level
to beat seasonal naive; centred, the swing is of order 1.
The LSTM (``num_layers`` x ``num_cells``, dropout between layers) gives the arguments
of a distribution (:data:`LIKELIHOODS`) at every step; training minimises the negative
log-likelihood of the observed values of (context, prediction) windows, every step fed
the true past (teacher forcing). Forecasts are ancestral samples: the context is
unrolled, then each sampled value becomes the next step's lag.

Missing values (NaN) are not scored and enter the lags as 0, as GluonTS imputes them.
Windows shorter than the lags reach are padded in front (missing values).

MXNet is imported on first use (:func:`beam_ml.nn.engine.mxnet`); the input assembly,
the lags and the sampling are numpy, seeded, so forecasts do not depend on MXNet's
random state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from beam_ml.nn import engine

__all__ = [
    "LIKELIHOODS",
    "DeepARSettings",
    "DeepARNetwork",
    "lags_for_frequency",
    "time_features",
    "timestamps",
    "window_inputs",
    "window_loc_scale",
]

LIKELIHOODS = ("student-T", "gaussian", "negative-binomial", "beta", "deterministic-L1")
_ARGS = {"student-T": 3, "gaussian": 2, "negative-binomial": 2, "beta": 2, "deterministic-L1": 1}
_FREQ = re.compile(r"([1-9][0-9]*)?(min|H|D|W|M)")
_SECONDS = {"min": 60, "H": 3600, "D": 86400, "W": 604800}
_MIN_SCALE = 1e-10
_MIN_SIGMA = 1e-6


def _split(freq: str) -> tuple[int, str]:
    multiple, unit = _FREQ.fullmatch(freq).groups()
    return int(multiple or 1), unit


# --- lags ------------------------------------------------------------------------------------
def _around(middle: float, delta: int) -> list[float]:
    return [lag for lag in range(int(middle) - delta, int(middle) + delta + 1) if lag > 0]


def _hour_lags(multiple: float, cycles: int = 7) -> list[list[float]]:
    return [_around(k * 24 // multiple, 1) for k in range(1, cycles + 1)]


def _minute_lags(multiple: float, cycles: int = 3) -> list[list[float]]:
    return [_around(k * 60 // multiple, 2) for k in range(1, cycles + 1)]


def _day_lags(multiple: float, cycles: int = 4) -> list[list[float]]:
    weeks = [_around(k * 7 // multiple, 1) for k in range(1, cycles + 1)]
    return weeks + [_around(30 // multiple, 1)]


def _week_lags(multiple: float, cycles: int = 3) -> list[list[float]]:
    years = [_around(k * 52 // multiple, 1) for k in range(1, cycles + 1)]
    return years + [[4 // multiple, 8 // multiple, 12 // multiple]]


def _month_lags(multiple: float, cycles: int = 3) -> list[list[float]]:
    return [_around(k * 12 // multiple, 1) for k in range(1, cycles + 1)]


def lags_for_frequency(freq: str, lag_ub: int = 1200) -> list[int]:
    """GluonTS's ``get_lags_for_frequency``: 1..7, then the same season of earlier
    cycles (+-1 step; +-2 for minutes) up to ``lag_ub`` steps back."""
    n, unit = _split(freq)
    if unit == "M":
        lags = _month_lags(n)
    elif unit == "W":
        lags = _week_lags(n)
    elif unit == "D":
        lags = _day_lags(n) + _week_lags(n / 7.0)
    elif unit == "H":
        lags = _hour_lags(n) + _day_lags(n / 24.0) + _week_lags(n / (24.0 * 7))
    else:
        lags = (
            _minute_lags(n)
            + _hour_lags(n / 60.0)
            + _day_lags(n / (60.0 * 24))
            + _week_lags(n / (60.0 * 24 * 7))
        )
    seasonal = {int(lag) for group in lags for lag in group if 7 < lag <= lag_ub}
    return [1, 2, 3, 4, 5, 6, 7, *sorted(seasonal)]


# --- time ------------------------------------------------------------------------------------
def timestamps(first: np.ndarray, count: int, freq: str) -> np.ndarray:
    """(n, count) datetime64[s]: ``count`` steps of ``freq`` from each of ``first``."""
    n, unit = _split(freq)
    steps = np.arange(count, dtype=np.int64)
    first = np.asarray(first, dtype="datetime64[s]")
    if unit == "M":
        months = first.astype("datetime64[M]")
        offset = first - months.astype("datetime64[s]")  # keep the day and time of month
        shifted = months[:, None] + (steps * n).astype("timedelta64[M]")
        return shifted.astype("datetime64[s]") + offset[:, None]
    return first[:, None] + (steps * n * _SECONDS[unit]).astype("timedelta64[s]")


def _features_of(unit: str) -> tuple[str, ...]:
    return {
        "min": ("minute", "hour", "weekday", "monthday", "yearday"),
        "H": ("hour", "weekday", "monthday", "yearday"),
        "D": ("weekday", "monthday", "yearday"),
        "W": ("monthday", "week"),
        "M": ("month",),
    }[unit]


def n_time_features(freq: str) -> int:
    """Time features per step for ``freq``, the age included."""
    return len(_features_of(_split(freq)[1])) + 1


def time_features(stamps: np.ndarray, age: np.ndarray, freq: str) -> np.ndarray:
    """GluonTS's time features of ``stamps`` (datetime64[s], any shape), each in
    [-0.5, 0.5], and the age ``log10(2 + age)``: float32 of shape stamps.shape + (F,).

    Week of year is ``(day of year - 1) // 7`` (not ISO's), a close stand-in."""
    seconds = stamps.astype("datetime64[s]").astype(np.int64)
    days = seconds // 86400
    year_start = stamps.astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    month = stamps.astype("datetime64[M]")
    month_start = month.astype("datetime64[D]").astype(np.int64)
    yearday = days - year_start  # 0-based
    columns = {
        "minute": lambda: (seconds // 60 % 60) / 59.0,
        "hour": lambda: (seconds // 3600 % 24) / 23.0,
        "weekday": lambda: ((days + 3) % 7) / 6.0,  # 1970-01-01 was a Thursday
        "monthday": lambda: (days - month_start) / 30.0,
        "yearday": lambda: yearday / 365.0,
        "week": lambda: (yearday // 7) / 52.0,
        "month": lambda: (month.astype(np.int64) % 12) / 11.0,
    }
    names = _features_of(_split(freq)[1])
    out = np.empty(stamps.shape + (len(names) + 1,), dtype=np.float32)
    for i, name in enumerate(names):
        out[..., i] = columns[name]() - 0.5
    out[..., -1] = np.log10(2.0 + np.maximum(age, 0))
    return out


# --- windows to network inputs -------------------------------------------------------------
@dataclass(frozen=True)
class DeepARSettings:
    """The network's shape and training settings (the state's config, resolved)."""

    freq: str
    context_length: int
    prediction_length: int
    likelihood: str
    num_cells: int
    num_layers: int
    dropout_rate: float
    embedding_dimension: int
    cardinality: tuple[int, ...]
    num_dynamic_feat: int
    learning_rate: float
    clip_gradient: float
    weight_decay: float
    seed: int
    scaling: str = "mean"

    @property
    def lags(self) -> list[int]:
        return lags_for_frequency(self.freq)

    @property
    def max_lag(self) -> int:
        return max(self.lags)

    @property
    def window(self) -> int:
        """Values per training window: the lags' reach, the context, the prediction."""
        return self.max_lag + self.context_length + self.prediction_length

    @property
    def scaled(self) -> bool:
        return self.likelihood != "beta"  # beta's targets are in (0, 1) already

    @property
    def centred(self) -> bool:
        """Values centred as well as scaled (counts and beta's (0, 1) never are)."""
        return self.scaling == "standard" and self.likelihood not in ("beta", "negative-binomial")

    @property
    def input_size(self) -> int:
        return (
            len(self.lags)
            + n_time_feat_for(self)
            + self.num_dynamic_feat
            + self.embedding_dimension * len(self.cardinality)
            + 1  # log(scale)
        )


def parameter_shapes(settings: DeepARSettings) -> dict[str, tuple[int, ...]]:
    """The network's parameter names and shapes, without MXNet (to check a payload)."""
    s, gates = settings, 4 * settings.num_cells
    shapes: dict[str, tuple[int, ...]] = {
        f"embed{j}.weight": (size, s.embedding_dimension) for j, size in enumerate(s.cardinality)
    }
    for layer in range(s.num_layers):
        inputs = s.input_size if layer == 0 else s.num_cells
        prefix = f"rnn._unfused.{layer}."
        shapes[prefix + "i2h_weight"] = (gates, inputs)
        shapes[prefix + "h2h_weight"] = (gates, s.num_cells)
        shapes[prefix + "i2h_bias"] = (gates,)
        shapes[prefix + "h2h_bias"] = (gates,)
    shapes["proj.weight"] = (_ARGS[s.likelihood], s.num_cells)
    shapes["proj.bias"] = (_ARGS[s.likelihood],)
    return shapes


def n_time_feat_for(settings: DeepARSettings) -> int:
    return n_time_features(settings.freq)


def window_scale(target: np.ndarray, context: slice, scaled: bool) -> np.ndarray:
    """(n, 1) float32 mean scale of windows (n, W): the mean absolute observed value of
    the context, of the whole window where the context has none, 1 where nothing is."""
    if not scaled:
        return np.ones((target.shape[0], 1), dtype=np.float32)
    scale = np.ones(target.shape[0])
    for part in (target, target[:, context]):  # the context's mean where it has values
        observed = ~np.isnan(part)
        count = observed.sum(axis=1)
        total = np.where(observed, np.abs(part), 0.0).sum(axis=1)
        scale = np.where(count > 0, total / np.maximum(count, 1), scale)
    return np.maximum(scale, _MIN_SCALE).astype(np.float32)[:, None]


def window_loc_scale(
    target: np.ndarray, context: slice, settings: DeepARSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1) float32 ``loc`` and ``scale`` of windows (n, W): the values the network
    sees are ``(y - loc) / scale``. Mean scaling: ``loc`` 0, :func:`window_scale`.
    Centred: the mean and the mean absolute deviation of the context's observed values
    (the whole window's where the context has none), the deviation at least 1e-3 of the
    mean absolute value; ``loc`` 0 and ``scale`` 1 where nothing is observed."""
    if not settings.centred:
        return np.zeros((target.shape[0], 1), np.float32), window_scale(target, context, settings.scaled)  # fmt: skip
    loc, scale = np.zeros(target.shape[0]), np.ones(target.shape[0])
    for part in (target, target[:, context]):  # the context's where it has values
        observed = ~np.isnan(part)
        count = np.maximum(observed.sum(axis=1), 1)
        mean = np.where(observed, part, 0.0).sum(axis=1) / count
        spread = np.where(observed, np.abs(part - mean[:, None]), 0.0).sum(axis=1) / count
        size = np.where(observed, np.abs(part), 0.0).sum(axis=1) / count
        spread = np.maximum(spread, 1e-3 * size)
        has = observed.any(axis=1)
        loc = np.where(has, mean, loc)
        scale = np.where(has, np.where(spread > 0, spread, 1.0), scale)
    return loc.astype(np.float32)[:, None], np.maximum(scale, _MIN_SCALE).astype(np.float32)[:, None]  # fmt: skip


def window_inputs(
    settings: DeepARSettings,
    target: np.ndarray,
    first: np.ndarray,
    age: np.ndarray,
    dynamic: np.ndarray | None,
    steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step inputs of the first ``steps`` steps after the lags' reach of windows
    ``target`` (n, W >= max_lag + steps): (n, steps, inputs without the embeddings) and
    the (n, 1) loc and scale (:func:`window_loc_scale`). ``first`` (n,) is the timestamp and ``age`` (n,) the series index
    of each window's position 0; ``dynamic`` is (n, n_dynamic, W) or None."""
    s = settings
    L = s.max_lag
    loc, scale = window_loc_scale(target[:, : L + s.context_length], slice(L, None), s)
    lagged = _lag_matrix(np.nan_to_num((target - loc) / scale, nan=0.0), s.lags, L, steps)
    stamps = timestamps(first, L + steps, s.freq)[:, L:]
    ages = age[:, None] + np.arange(L, L + steps)[None, :]
    parts = [lagged, time_features(stamps, ages, s.freq)]
    if s.num_dynamic_feat:
        parts.append(np.transpose(dynamic[:, :, L : L + steps], (0, 2, 1)))
    parts.append(np.broadcast_to(np.log(scale)[:, :, None], (target.shape[0], steps, 1)))
    return np.concatenate(parts, axis=2).astype(np.float32), loc, scale


def _lag_matrix(values: np.ndarray, lags: list[int], start: int, steps: int) -> np.ndarray:
    """(n, steps, len(lags)): ``values[:, start + t - lag]``."""
    index = start + np.arange(steps)[:, None] - np.asarray(lags)[None, :]  # (steps, lags)
    return values[:, index]


# --- the network -----------------------------------------------------------------------------
class DeepARNetwork:
    """The Gluon network with its parameters and Adam's moments on one device.

    Not part of a state: a state keeps numpy arrays (:meth:`export`) and loads them here
    (:meth:`load`) to train or forecast. Parameter names are structural
    (``rnn.l0_i2h_weight``), the same in every process.
    """

    def __init__(self, settings: DeepARSettings, device: str = "cpu"):
        self.settings = settings
        self.mx = engine.mxnet()
        self.nd = self.mx.nd
        self.ctx = engine.context(device)
        self.block = _gluon_block(self.mx, settings)
        self.block.initialize(ctx=self.ctx)
        self.block.hybridize(static_alloc=True)
        self.params = dict(self.block._collect_params_with_prefix())
        self.names = sorted(self.params)

    # --- parameters ----------------------------------------------------------------------
    def initial(self) -> dict[str, np.ndarray]:
        """Seeded initial parameters (Xavier uniform for matrices, zero biases), drawn
        on the host so every replica starts from the same ones."""
        out = {}
        for i, name in enumerate(self.names):
            shape = self.params[name].shape
            if len(shape) < 2:
                out[name] = np.zeros(shape, dtype=np.float32)
                continue
            bound = math.sqrt(6.0 / (shape[0] + int(np.prod(shape[1:]))))
            out[name] = engine.initial_values(
                shape, "uniform", sigma=None, scale=bound, value=None,
                seed=self.settings.seed, stream=1000 + i,
            )  # fmt: skip
        return out

    def load(self, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            self.params[name].set_data(self.nd.array(values[name], ctx=self.ctx))

    def export(self) -> dict[str, np.ndarray]:
        return {name: self.params[name].data().asnumpy() for name in self.names}

    # --- training --------------------------------------------------------------------------
    def train(
        self,
        values: dict[str, np.ndarray],
        moments: dict[str, np.ndarray],
        batches: list[dict[str, np.ndarray]],
        first_step: int,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Adam steps ``first_step``, ``first_step + 1``... on ``batches`` of windows;
        returns the parameters, the moments (``mean.<name>``, ``var.<name>``) and per
        step (loss sum, observed values) of the windows *before* their step."""
        mx, nd, ctx = self.mx, self.nd, self.ctx
        self.load(values)
        slots = {
            name: [nd.array(moments[f"{k}.{name}"], ctx=ctx) for k in ("mean", "var")]
            for name in self.names
        }
        scores = np.zeros((len(batches), 2))
        s = self.settings
        for i, batch in enumerate(batches):
            step = first_step + i
            if s.dropout_rate:
                mx.random.seed((s.seed * 1_000_003 + step) % 2**31)  # dropout: replayable
            inputs, loc, scale = window_inputs(
                s, batch["target"], batch["first"], batch["age"], batch.get("dynamic"),
                s.context_length + s.prediction_length,
            )  # fmt: skip
            y = batch["target"][:, s.max_lag :]
            observed = ~np.isnan(y)
            count = max(int(observed.sum()), 1)
            cat = batch.get("cat", np.zeros((len(y), 1)))
            centred = np.nan_to_num(y - loc)  # loc is 0 unless centred
            arrays = [self._array(a) for a in (inputs, cat, centred, scale, observed)]
            with mx.autograd.record():
                total = self.block(*arrays)
                loss = total / count
            loss.backward()
            scores[i] = float(total.asscalar()), observed.sum()
            correction = math.sqrt(1.0 - 0.999**step) / (1.0 - 0.9**step)
            for name in self.names:
                param = self.params[name]
                mean, var = slots[name]
                weight = param.data()
                nd.adam_update(
                    weight,
                    param.grad(),
                    mean,
                    var,
                    out=weight,
                    lr=s.learning_rate * correction,
                    wd=s.weight_decay,
                    clip_gradient=s.clip_gradient,
                    beta1=0.9,
                    beta2=0.999,
                    epsilon=1e-8,
                )  # fmt: skip; MXNet's fused Adam, its optimizer's bias correction
        out_moments = {}
        for name in self.names:
            out_moments[f"mean.{name}"] = slots[name][0].asnumpy()
            out_moments[f"var.{name}"] = slots[name][1].asnumpy()
        return self.export(), out_moments, scores

    def _array(self, values: np.ndarray) -> Any:
        array = self.nd.from_numpy(np.ascontiguousarray(values, dtype=np.float32), zero_copy=True)
        return array if self.ctx == self.mx.cpu() else array.as_in_context(self.ctx)

    def _args(self, inputs: np.ndarray, cat: np.ndarray | None, state: Any) -> tuple[Any, Any]:
        """The distribution's arguments for (n, T, inputs) and the LSTM's state after."""
        x = self._array(inputs)
        if self.settings.cardinality:
            x = joined_inputs(self.nd, self.block.embedders, x, self._array(cat), inputs.shape[1])
        out, state = self.block.rnn(x, state)
        return self.block.proj(out), state

    # --- forecasting -------------------------------------------------------------------------
    def forecast(
        self,
        values: dict[str, np.ndarray],
        target: np.ndarray,
        first: np.ndarray,
        age: np.ndarray,
        cat: np.ndarray | None,
        dynamic: np.ndarray | None,
        num_samples: int,
        noise: np.ndarray,
    ) -> np.ndarray:
        """Sample paths (n, num_samples, prediction_length) after each history window.

        ``target`` (n, max_lag + context_length) ends at each series' last value;
        ``dynamic`` (n, n_dynamic, max_lag + context + prediction) reaches over the
        horizon; ``noise`` (n, num_samples, prediction_length, 2) uniform draws in (0, 1),
        the only randomness (seeded per series by the caller), so a series' paths do not
        depend on the others in its block."""
        s = self.settings
        nd, L, C, P = self.nd, s.max_lag, s.context_length, s.prediction_length
        self.load(values)
        n = target.shape[0]
        full = np.concatenate([target, np.full((n, P), np.nan, np.float32)], axis=1)
        inputs, loc, scale = window_inputs(s, full, first, age, dynamic, C + P)
        state = self.block.rnn.begin_state(batch_size=n, ctx=self.ctx)
        _, state = self._args(inputs[:, :C], cat, state)
        # Repeat every series' state, horizon inputs and history for its samples.
        repeat = lambda a: np.repeat(a, num_samples, axis=0)  # noqa: E731
        state = [nd.repeat(h, num_samples, axis=1) for h in state]
        history = repeat(np.nan_to_num((full - loc) / scale, nan=0.0))  # samples go in here
        horizon, loc_rep, scale_rep = repeat(inputs[:, C:]), repeat(loc)[:, 0], repeat(scale)
        cat_rep = None if cat is None else repeat(cat)
        u = noise.reshape(n * num_samples, P, 2)
        lags = np.asarray(s.lags)
        paths = np.empty((n * num_samples, P), dtype=np.float64)
        for k in range(P):
            t = L + C + k
            step_in = horizon[:, k : k + 1].copy()
            step_in[:, 0, : len(lags)] = history[:, t - lags]
            args, state = self._args(step_in, cat_rep, state)
            sample = _sample(
                s.likelihood, args.asnumpy()[:, 0].astype(np.float64), scale_rep, u[:, k]
            )
            paths[:, k] = sample + loc_rep
            history[:, t] = sample / scale_rep[:, 0]
        return paths.reshape(n, num_samples, P)


def _gluon_block(mx: Any, s: DeepARSettings) -> Any:
    gluon = mx.gluon
    steps = s.context_length + s.prediction_length

    class _Net(gluon.HybridBlock):
        """Embeddings, LSTM and projection; called, the masked NLL sum of a batch of
        windows (one cached graph: MXNet's per-operator cost is most of a small step)."""

        def __init__(self) -> None:
            super().__init__(prefix="deepar_")
            with self.name_scope():
                self.embedders = []
                for j, size in enumerate(s.cardinality):
                    emb = gluon.nn.Embedding(size, s.embedding_dimension, prefix=f"embed{j}_")
                    self.register_child(emb, f"embed{j}")
                    self.embedders.append(emb)
                self.rnn = gluon.rnn.LSTM(
                    s.num_cells,
                    s.num_layers,
                    layout="NTC",
                    dropout=s.dropout_rate,
                    input_size=s.input_size,
                    prefix="rnn_",
                )
                self.proj = gluon.nn.Dense(
                    _ARGS[s.likelihood], flatten=False, in_units=s.num_cells, prefix="proj_"
                )

        def hybrid_forward(self, F, x, cat, y, scale, mask):  # noqa: N803 (Gluon's name)
            x = joined_inputs(F, self.embedders, x, cat, steps)
            raw = self.proj(self.rnn(x))
            loss = F.sum(_nll(F, s.likelihood, raw, y, scale) * mask)
            return loss if self.embedders else loss + 0 * F.sum(cat)  # cat: always an input

    return _Net()


def joined_inputs(F: Any, embedders: list, x: Any, cat: Any, steps: int) -> Any:  # noqa: N803
    """The per-step inputs followed by the categorical embeddings, repeated per step."""
    if not embedders:
        return x
    parts = [
        emb(F.reshape(F.slice_axis(cat, axis=1, begin=j, end=j + 1), shape=(-1,)))
        for j, emb in enumerate(embedders)
    ]
    joined = F.concat(*parts, dim=1) if len(parts) > 1 else parts[0]
    return F.concat(x, F.broadcast_axis(F.expand_dims(joined, axis=1), axis=1, size=steps), dim=2)


# --- likelihoods -------------------------------------------------------------------------------
def _softplus(nd: Any, x: Any) -> Any:
    return nd.Activation(x, act_type="softrelu")


def _nll(nd: Any, likelihood: str, raw: Any, y: Any, scale: Any) -> Any:
    """Negative log-likelihood (n, T) of targets ``y`` (n, T) in their own units under
    the distributions of ``raw`` (n, T, args) scaled by ``scale`` (n, 1); for
    deterministic-L1 the absolute error in the scaled units."""
    z = nd.broadcast_div(y, scale)
    log_scale = nd.broadcast_like(nd.log(scale), z)
    if likelihood == "deterministic-L1":
        return nd.abs(z - nd.reshape(raw, shape=(0, 0)))
    args = nd.split(raw, num_outputs=_ARGS[likelihood], axis=2, squeeze_axis=True)
    first = args[0]
    if likelihood == "gaussian":
        sigma = _softplus(nd, args[1]) + _MIN_SIGMA
        d = (z - first) / sigma
        return 0.5 * d * d + nd.log(sigma) + 0.5 * math.log(2 * math.pi) + log_scale
    if likelihood == "student-T":
        sigma = _softplus(nd, args[1]) + _MIN_SIGMA
        nu = 2.0 + _softplus(nd, args[2])
        d = (z - first) / sigma
        return (
            nd.gammaln(nu / 2)
            - nd.gammaln((nu + 1) / 2)
            + 0.5 * nd.log(math.pi * nu)
            + nd.log(sigma)
            + (nu + 1) / 2 * nd.log1p(d * d / nu)
            + log_scale
        )
    if likelihood == "negative-binomial":
        mu = nd.broadcast_mul(_softplus(nd, first) + _MIN_SIGMA, scale)
        alpha = _softplus(nd, args[1]) + _MIN_SIGMA
        r = 1.0 / alpha
        return -(
            nd.gammaln(y + r)
            - nd.gammaln(y + 1.0)
            - nd.gammaln(r)
            + r * nd.log(r / (r + mu))
            + y * nd.log(mu / (r + mu))
        )
    # beta: targets in (0, 1), not scaled
    a = _softplus(nd, first) + _MIN_SIGMA
    b = _softplus(nd, args[1]) + _MIN_SIGMA
    yc = nd.clip(y, 1e-6, 1 - 1e-6)
    return -(
        (a - 1) * nd.log(yc)
        + (b - 1) * nd.log1p(-yc)
        - nd.gammaln(a)
        - nd.gammaln(b)
        + nd.gammaln(a + b)
    )


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sample(likelihood: str, raw: np.ndarray, scale: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One draw per row from the distributions of ``raw`` (m, args) scaled by ``scale``
    (m, 1), from uniforms ``u`` (m, 2): by inversion where the distribution allows,
    Student-t by Bailey's polar form (deterministic given ``u``)."""
    from scipy import special, stats

    scale = scale[:, 0].astype(np.float64)
    first = raw[:, 0]
    if likelihood == "deterministic-L1":
        return first * scale
    if likelihood == "gaussian":
        sigma = _np_softplus(raw[:, 1]) + _MIN_SIGMA
        return (first + sigma * special.ndtri(u[:, 0])) * scale
    if likelihood == "student-T":
        # Bailey's (1994) exact polar form from two uniforms: 40x faster than inverting
        # the CDF (scipy's stdtrit), which took a quarter of a forecast's time.
        sigma = _np_softplus(raw[:, 1]) + _MIN_SIGMA
        nu = 2.0 + _np_softplus(raw[:, 2])
        t = np.sqrt(nu * (u[:, 0] ** (-2.0 / nu) - 1.0)) * np.cos(2.0 * np.pi * u[:, 1])
        return (first + sigma * t) * scale
    if likelihood == "negative-binomial":
        mu = (_np_softplus(first) + _MIN_SIGMA) * scale
        alpha = _np_softplus(raw[:, 1]) + _MIN_SIGMA
        r = 1.0 / alpha
        return stats.nbinom.ppf(u[:, 0], r, r / (r + mu))
    a = _np_softplus(first) + _MIN_SIGMA
    b = _np_softplus(raw[:, 1]) + _MIN_SIGMA
    return special.betaincinv(a, b, u[:, 0])
