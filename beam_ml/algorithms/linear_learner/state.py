"""The linear learner's state: moments, exact statistics, packed models."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.algorithms.linear_learner.config import LinearLearnerConfig
from beam_ml.algorithms.linear_learner.epochs import Epochs
from beam_ml.algorithms.linear_learner.exact import MAX_EXACT_FEATURES
from beam_ml.algorithms.linear_learner.losses import labels_for
from beam_ml.algorithms.linear_learner.model import LinearLearnerModel
from beam_ml.algorithms.linear_learner.packed import (
    HIST_ALL_ROWS,
    HIST_BINS,
    PackedNetwork,
    _blas_threads,
    bin_counts,
    row_range,
    rows_where,
)
from beam_ml.algorithms.linear_learner.selection import Selection
from beam_ml.algorithms.linear_learner.validation import (
    ValidationRows,
    _dense_row_keys,  # noqa: F401 (tests hash dense rows through this module)
    row_keys_of,
    validation_rows_kept,
)
from beam_ml.core.block import Block, MatrixSpec
from beam_ml.core.errors import IncompatibleStateError
from beam_ml.core.moments import Moments
from beam_ml.core.state import register
from beam_ml.nn.skeleton import GradientState, PendingRows, alias

_LOG = logging.getLogger("beam_ml.linear_learner")
_WARNED_HIGH_D: set[int] = set()


def _of_network(name: str) -> property:
    """The network's parameter ``name``, read and written through the state (the
    payload's array names)."""
    return property(
        lambda self: getattr(self.network, name),
        lambda self, value: setattr(self.network, name, value),
        doc=f"The packed network's ``{name}``.",
    )


@register
class LinearLearnerState(Epochs, Selection, GradientState):
    """One-pass linear learner state: moments, exact statistics, packed models.

    Attributes
    ----------
    n : int
        Rows seen in this epoch (including those waiting for a full mini-batch).
    epoch : int
        1 for the first pass over the data; see :meth:`continued`.
    steps : int
        Optimizer steps taken (over all epochs).
    scaler : Moments
        Count, mean and per-column centred sums of squares of the features and the label
        over the scaler's sample (the first ``num_point_for_scaler`` rows; 0 while it
        fills); stored as ``moments_n``, ``moments_mean`` and ``moments_m2``.
    class_counts : ndarray of shape (n_classes,)
        Rows per class (classifiers), for 'balanced' weights.
    exact : Moments or None
        Squared loss only: mean and centred scatter of ``[x, y]`` over all rows of the
        epoch, ``exact_mean`` and ``exact_scatter`` of shape (d + 1,) and (d + 1, d + 1).
    network : PackedNetwork
        The packed models (allocated with d), which the state feeds mini-batches; their
        parameters read and write through the state under the payload's names:
    coef, intercept : ndarray of shape (d, m * k) and (m * k,)
        The packed models' last iterates in the original feature and label units.
    avg_coef, avg_intercept : same shapes
        Their polynomial-decay averages.
    opt_m, opt_v : ndarray of shape (d + 1, m * k) or None
        The optimizer's moments (Adam: both; RMSProp: ``opt_v``).
    progressive : ndarray of shape (5, 2 m)
        Per candidate (m last iterates, then m averages): progressive loss sum,
        step-weighted loss sum, right answers, weight sum, step-weighted weight sum.
    progressive_hist : ndarray of shape (2 m, 2, 1002)
        Binary classifiers: per candidate, the histograms of its progressive scores for
        negatives and positives, each mini-batch weighted by its step number (which
        favours the later, better models a threshold is chosen for); past 2^17 rows a
        pass, a doubling share of mini-batches is skipped (and the rest weighted up).
    diverged : ndarray of shape (m,), bool
        Models whose weights blew up (too large a learning rate): frozen at zero and
        never selected (a best-epoch copy from before is still a candidate).
    validation : ValidationRows or None
        With ``validation_fraction > 0``: the validation rows kept, with their counts.
    best_weights, best_bias : ndarray of shape (d, 2 m k) and (2 m k,)
        Per candidate ([last iterates | averages]), its parameters at the end of the
        epoch with its lowest validation loss so far: ``best_loss``, ``best_epoch`` (2 m,).
    first_loss : ndarray of shape (2 m,)
        Each candidate's progressive loss of epoch 1 (once it has ended).
    patience_wait, stopped_epoch : int
        Epochs without improvement; the epoch after which early stopping held (0: none).
    epoch_metrics : list of dict
        The closed epochs' metrics (see :meth:`epoch_report`).

    Examples
    --------
    >>> import numpy as np
    >>> from beam_ml import Block, LinearLearnerConfig, LinearLearnerState
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(5000, 3))
    >>> y = (x @ [1.0, -2.0, 0.5] + rng.logistic(size=5000) > 0).astype(float)
    >>> config = LinearLearnerConfig(predictor_type="binary_classifier", mini_batch_size=100)
    >>> state = LinearLearnerState(config).update(Block(x[:2500], y[:2500]))
    >>> state = state.merge(LinearLearnerState(config).update(Block(x[2500:], y[2500:])))
    >>> model = state.derive(binary_classifier_model_selection_criteria="f_beta")
    >>> model.evaluate(x[:2]).shape  # probability, predicted label
    (2, 2)
    >>> bool(model.score("binary_classification_accuracy", Block(x, y)) > 0.8)
    True
    """

    FAMILY = "linear_learner"
    BLOCK_KIND = Block
    SERIAL_VERSION = 1
    CONFIG = LinearLearnerConfig

    # The progressive sums' earlier names, which are the payload's array names.
    progress, hist = alias("progressive"), alias("progressive_hist")
    coef, intercept = _of_network("coef"), _of_network("intercept")
    avg_coef, avg_intercept = _of_network("avg_coef"), _of_network("avg_intercept")
    opt_m, opt_v, diverged = _of_network("opt_m"), _of_network("opt_v"), _of_network("diverged")

    def __init__(self, config: LinearLearnerConfig):
        super().__init__(config)
        self.n = 0
        self.epoch = 1
        self.steps = 0
        self.stepped = 0  # rows trained on in this epoch
        self.d: int | None = None
        self.exact: Moments | None = None  # allocated with d (squared loss)
        self.network: PackedNetwork | None = None  # allocated with d
        lr, wd, l1 = config.grid()
        self._lr, self._wd, self._l1 = lr, wd, l1
        self.m, self.k = len(lr), config.n_outputs
        self._scaling_cache: tuple | None = None
        self._loss = config.resolved_loss
        self._optimizer = config.resolved_optimizer
        self._binary = config.predictor_type == "binary_classifier"
        self._multiclass = config.predictor_type == "multiclass_classifier"
        # Rows waiting for a full mini-batch (or for the scaler's sample to fill).
        self.pending = PendingRows(config.mini_batch_size, config.feature_dim or 0, rows=row_range)
        # Validation and early stopping (see the module notes); per-epoch metrics.
        self.validation: ValidationRows | None = None
        self.best_weights = self.best_bias = self.best_loss = self.best_epoch = None
        self.first_loss: np.ndarray | None = None
        self.patience_wait = 0
        self.stopped_epoch = 0
        self.epoch_metrics: list[dict[str, Any]] = []
        if config.feature_dim is not None:
            self._allocate(config.feature_dim)

    @property
    def n_seen(self) -> int:
        return self.n

    @property
    def n_features(self) -> int | None:
        return self.d

    @property
    def input_spec(self) -> MatrixSpec | None:
        return None if self.d is None else MatrixSpec(self.d)

    @property
    def epochs_done(self) -> int:
        return self.epoch - 1  # the linear learner's epoch counts from 1

    @property
    def has_exact(self) -> bool:
        """Whether the state holds the exact statistics (squared loss, d small enough)."""
        return self.exact is not None

    # The moments under the names of the payload's arrays (and of states before Moments).
    @property
    def exact_mean(self) -> np.ndarray | None:
        return None if self.exact is None else self.exact.mean

    @exact_mean.setter
    def exact_mean(self, value: np.ndarray | None) -> None:
        if value is not None:
            self.exact.mean = value

    @property
    def exact_scatter(self) -> np.ndarray | None:
        return None if self.exact is None else self.exact.m2

    @exact_scatter.setter
    def exact_scatter(self, value: np.ndarray | None) -> None:
        if value is not None:
            self.exact.m2 = value

    @property
    def moments_n(self) -> float:
        return self.scaler.n

    @property
    def moments_mean(self) -> np.ndarray:
        return self.scaler.mean

    @moments_mean.setter
    def moments_mean(self, value: np.ndarray) -> None:
        self.scaler.mean = value

    @property
    def moments_m2(self) -> np.ndarray:
        return self.scaler.m2

    @moments_m2.setter
    def moments_m2(self, value: np.ndarray) -> None:
        self.scaler.m2 = value

    @property
    def n_pending(self) -> int:
        return self.pending.n_rows

    @property
    def pending_x(self) -> Any:
        """The rows waiting, dense or CSR (None: none)."""
        return self.pending.features if self.n_pending else None

    @property
    def pending_y(self) -> np.ndarray | None:
        return self.pending.labels if self.n_pending else None

    def _allocate(self, d: int) -> None:
        m, cols = self.m, self.m * self.k
        self.d = d
        self.scaler = Moments(0.0, np.zeros(d + 1), np.zeros(d + 1))
        self.class_counts = np.zeros(2 if self._binary else (self.k if self._multiclass else 0))
        self.exact = None
        if self._loss == "squared_loss":
            if d <= MAX_EXACT_FEATURES:
                self.exact = Moments.zeros(d + 1, scatter=True)
            elif d not in _WARNED_HIGH_D:  # once per process, not per copy or merge
                _WARNED_HIGH_D.add(d)
                _LOG.warning(
                    "linear_learner: %d features is more than the exact path's %d (a "
                    "(d+1) x (d+1) float64 matrix of %.1f GiB); squared loss uses the "
                    "packed models only.",
                    d,
                    MAX_EXACT_FEATURES,
                    (d + 1) ** 2 * 8 / 2**30,
                )
        self.network = PackedNetwork(self.config, d, (self._lr, self._wd, self._l1))
        self.progressive = np.zeros((5, 2 * m))
        self.progressive_hist = np.zeros((2 * m, 2, HIST_BINS)) if self._binary else None
        fraction = self.config.resolved_validation_fraction
        if fraction > 0:
            self.validation = ValidationRows(validation_rows_kept(d), d, fraction)
            # Per candidate (m last iterates, then m averages), its parameters at the end
            # of the epoch with its lowest validation loss so far: columns as [coef | avg].
            self.best_weights, self.best_bias = np.zeros((d, 2 * cols)), np.zeros(2 * cols)
            self.best_loss, self.best_epoch = np.full(2 * m, np.inf), np.zeros(2 * m)

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> LinearLearnerState:
        block = self._check(block)
        y = labels_for(block, self.config, "LinearLearnerState")
        x = block.features
        if x.shape[0] == 0:
            return self
        if self.d is None:
            self._allocate(x.shape[1])
        if x.dtype.kind not in "f":
            x = x.astype(np.float64)
        if self.has_exact:
            self._absorb_exact(x, y)
        self.n += x.shape[0]
        if self.stopped:  # early stopping: the rows count, the models stay as they are
            return self
        if self.validation is not None:
            x, y = self._set_aside(x, y)
        with _blas_threads(self.d * 2 * self.m * self.k * self.config.mini_batch_size):
            self._feed(x, y, copy=True)
        return self

    def _set_aside(self, x: Any, y: np.ndarray) -> tuple[Any, np.ndarray]:
        """The rows to train on; those whose hash falls in the validation fraction go
        to the validation sample instead (never trained on, never in the scaler)."""
        # Rows are added in the first epoch and on new data (training resumed past the
        # configured epochs), never again when the same rows come round.
        add = self.epoch == 1 or self.epoch > self.config.epochs
        train = self.validation.set_aside(x, y, row_keys_of(x, y), add)
        if train is None:
            return x, y
        return rows_where(x, train), y[train]

    def _warming(self) -> bool:
        """Whether rows still wait for the scaler's sample to fill (no step taken yet)."""
        return self.config.num_point_for_scaler > 0 and self.epoch == 1 and not self.moments_n

    def _feed(self, x: Any, y: np.ndarray, copy: bool) -> None:
        """Train on full mini-batches of (pending rows + x); keep the rest pending.

        Until ``num_point_for_scaler`` rows have arrived every row waits: the scaler is
        fixed from exactly the first ``num_point_for_scaler`` rows, then all of them are
        trained on, as SageMaker does with its scaler sample.
        """
        if self._warming():
            self.pending.hold(x, y, copy)
            sample = self.config.num_point_for_scaler
            if self.n_pending < sample:
                return
            self._fix_scaler(self.pending_x[:sample], self.pending_y[:sample])
            (x, y), copy = self.pending.take(), False
        for rows, labels in self.pending.feed(x, y, copy):
            self._step(rows, labels)

    def _flush(self) -> None:
        """Train on every pending row now, the last mini-batch short."""
        if not self.n_pending:
            return
        if self._warming():  # fewer rows than the scaler's sample: they are the sample
            self._fix_scaler(self.pending_x, self.pending_y)
        for rows, labels in self.pending.flush():
            self._step(rows, labels)

    def _step(self, x: Any, y: np.ndarray) -> None:
        """One mini-batch: the scaler and class counts take it in (epoch 1), the network
        steps on it, and its progressive losses and score histograms are kept."""
        cfg, b = self.config, x.shape[0]
        if self.epoch == 1 and cfg.num_point_for_scaler == 0:  # a running scaler
            self._absorb_moments(x, y)
        if self.class_counts.size and self.epoch == 1:
            self.class_counts += np.bincount(y.astype(np.int64), minlength=self.class_counts.size)
        scaling = self._scaling()
        self.steps += 1
        self.stepped += b
        t = self.steps
        out = self.network.step(x, y, t, scaling, self._example_weights(y))
        self.progressive[0] += out.loss
        self.progressive[1] += t * out.loss
        self.progressive[2] += out.correct
        self.progressive[3] += out.weight
        self.progressive[4] += t * out.weight
        if self._binary:
            # A long pass's histograms sample its mini-batches: all in the first 2^17
            # rows, then every 2nd, 4th ... (the stride doubles as the pass does), each
            # counted stride times: well over 10^5 rows for any threshold, at a fraction
            # of the cost of binning every score.
            stride = 1 << ((self.stepped - b) // HIST_ALL_ROWS).bit_length()
            if t % stride == 0:
                self.progressive_hist += t * stride * bin_counts(out.scores, y)

    def _scaling(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(feature mean, feature scale, label mean, label scale) of the step space."""
        if self._scaling_cache is None or self._scaling_cache[0] != self.moments_n:
            self._scaling_cache = (self.moments_n, self._compute_scaling())
        return self._scaling_cache[1]

    def _compute_scaling(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        d, cfg = self.d, self.config
        n = max(self.moments_n, 1.0)
        std = np.sqrt(np.maximum(self.moments_m2, 0) / n)
        # A column that has (almost) not varied yet is centred but not scaled: dividing by
        # a rounding-level std would turn its first real change into a huge step.
        constant = std <= 1e-7 * np.abs(self.moments_mean) + 1e-12
        std = np.where(constant, 1.0, std)
        if cfg.normalize_data:
            mean = self.moments_mean[:d] if cfg.use_bias else np.zeros(d)
            scale = std[:d]
        else:
            mean, scale = np.zeros(d), np.ones(d)
        if cfg.scales_label:
            y_mean = float(self.moments_mean[d]) if cfg.use_bias else 0.0
            y_scale = float(std[d])
        else:
            y_mean, y_scale = 0.0, 1.0
        return mean, scale, y_mean, y_scale

    def _example_weights(self, y: np.ndarray) -> np.ndarray | None:
        if not self._binary:
            return None
        mult = self.config.positive_example_weight_mult
        if mult == "balanced":
            neg, pos = self.class_counts
            mult = neg / pos if pos > 0 and neg > 0 else 1.0
        elif mult == "auto":
            mult = 1.0
        return None if mult == 1.0 else np.where(y > 0, float(mult), 1.0)

    def _fix_scaler(self, x: Any, y: np.ndarray) -> None:
        columns = Moments.of_columns(x)
        y_mean = float(y.mean())
        self.scaler = Moments(
            float(x.shape[0]),
            np.append(columns.mean, y_mean),
            np.append(columns.m2, float(((y - y_mean) ** 2).sum())),
        )

    def _absorb_exact(self, x: Any, y: np.ndarray) -> None:
        """Fold [x, y] into the exact mean and centred scatter (pairwise merge per chunk)."""
        d, rows = self.d, x.shape[0]
        step = max(1, 2**22 // (d + 1))  # bound the dense chunk at ~32 MiB
        for start in range(0, rows, step):
            part = x[start : start + step]
            part = part.toarray() if sp.issparse(part) else part
            z = np.empty((part.shape[0], d + 1))
            z[:, :d], z[:, d] = part, y[start : start + step]
            self.exact = self.exact.merged(Moments.of_rows(z, overwrite=True))

    def _absorb_moments(self, x: Any, y: np.ndarray) -> None:
        """Fold a mini-batch into the scaler's moments."""
        columns = Moments.of_columns(x)
        y_mean = y.mean()
        block = Moments(
            float(x.shape[0]),
            np.append(columns.mean, y_mean),
            np.append(columns.m2, ((y - y_mean) ** 2).sum()),
        )
        self.scaler = self.scaler.merged(block)

    # --- merging ---------------------------------------------------------------------
    def merge(self, other: LinearLearnerState) -> LinearLearnerState:
        self.check_mergeable(other)
        if None not in (self.d, other.d) and self.d != other.d:
            raise IncompatibleStateError(
                f"Cannot merge linear_learner states of {self.d} and {other.d} features."
            )
        # A side without rows (a fresh accumulator, or the start of an epoch) adds nothing.
        if other.n == 0 or other.d is None:
            return self._copy()
        if self.n == 0 or self.d is None:
            return other._copy()
        if self.epoch != other.epoch:
            raise IncompatibleStateError(
                f"Cannot merge linear_learner states of epochs {self.epoch} and {other.epoch}."
            )
        if self._warming() and not other._warming():
            # Rows still waiting for a scaler are trained with the other side's.
            merged = other._copy()
            merged._absorb_state(self)
        else:
            merged = self._copy()
            merged._absorb_state(other)
        return merged

    def _absorb_state(self, other: LinearLearnerState) -> None:
        if self.has_exact:
            self.exact = self.exact.merged(other.exact)
        # The rows each side's packed models have learnt from (this epoch) weigh them.
        w_a, w_b = self.stepped, other.stepped
        if self.epoch == 1 and other.moments_n:  # two scaler samples: their union
            self.scaler = self.scaler.merged(other.scaler)
        if self.epoch == 1:
            self.class_counts = self.class_counts + other.class_counts
        if w_b > 0:
            self.network.average_in(other.network, w_b / (w_a + w_b))
        self.steps = max(self.steps, other.steps)
        self.stepped += other.stepped
        if self.validation is not None:  # exact: see ValidationRows
            self.validation = self.validation.merged(other.validation)
        # Best-epoch parameters, early stopping and the epoch record are set by
        # continued() alone, the same on every replica of an epoch: this side's.
        self.progressive = self.progressive + other.progressive
        if self.progressive_hist is not None:
            self.progressive_hist = self.progressive_hist + other.progressive_hist
        self.n += other.n
        diverged = self.diverged | other.diverged
        if (diverged != self.diverged).any() or (diverged != other.diverged).any():
            self.network.freeze(diverged)
        if other.n_pending:
            self._feed(other.pending_x, other.pending_y, copy=True)

    def _copy(self) -> LinearLearnerState:
        meta, arrays = self._payload(report=False)
        return type(self)._from_payload(
            self.config, {"n_seen": self.n, **meta}, {k: v.copy() for k, v in arrays.items()}
        )

    # --- serialization ---------------------------------------------------------------
    _ARRAYS = (
        "moments_mean",
        "moments_m2",
        "class_counts",
        "exact_mean",
        "exact_scatter",
        "coef",
        "intercept",
        "avg_coef",
        "avg_intercept",
        "opt_m",
        "opt_v",
        "progress",
        "hist",
        "diverged",
    )

    # Absent from states written before validation rows (2026-12-04): read with defaults.
    _VALIDATION_ARRAYS = ("best_weights", "best_bias", "best_loss", "best_epoch")

    def _payload(self, report: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"epoch": self.epoch, "steps": self.steps, "stepped": self.stepped}
        arrays: dict[str, np.ndarray] = {}
        if self.d is None:
            return meta, arrays
        meta.update(d=self.d, moments_n=self.moments_n, pending_rows=self.n_pending)
        # Closed epochs, then (in bytes, for manifests and `inspect`) the current one.
        epochs = self.epoch_metrics + ([self._epoch_entry()[0]] if report and self.n else [])
        meta.update(patience_wait=self.patience_wait, stopped_epoch=self.stopped_epoch)
        meta["epoch_metrics"] = epochs
        for name in self._ARRAYS + self._VALIDATION_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        if self.first_loss is not None:
            arrays["first_loss"] = self.first_loss
        if self.validation is not None:
            arrays.update(self.validation.to_arrays())
        if self.n_pending:
            arrays["pending_y"] = self.pending_y
            if sp.issparse(self.pending_x):
                meta["pending_sparse"] = True
                arrays["pending_data"] = self.pending_x.data
                arrays["pending_indices"] = self.pending_x.indices
                arrays["pending_indptr"] = self.pending_x.indptr
            else:
                arrays["pending_x"] = self.pending_x
        return meta, arrays

    @classmethod
    def _from_payload(
        cls, config: LinearLearnerConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> LinearLearnerState:
        # A declared feature_dim allocates at construction: it must be the stored d.
        if config.feature_dim is not None and config.feature_dim != meta.get("d"):
            raise IncompatibleStateError(
                f"linear_learner state payload holds {meta.get('d')} features; the config "
                f"declares feature_dim={config.feature_dim}."
            )
        state = cls(config)
        state.n = int(meta["n_seen"])
        state.epoch, state.steps = int(meta["epoch"]), int(meta["steps"])
        state.stepped = int(meta["stepped"])
        if "d" not in meta:
            return state
        d = int(meta["d"])
        if arrays["coef"].shape != (d, state.m * state.k):  # before allocating d rows
            raise IncompatibleStateError(
                f"linear_learner state payload has coef of shape {arrays['coef'].shape}; "
                f"the config expects {(d, state.m * state.k)}."
            )
        if state.d is None:
            state._allocate(d)
        state.scaler.n = float(meta["moments_n"])
        if state.exact is not None:
            state.exact.n = state.n  # the exact statistics count the epoch's rows
        for name in cls._ARRAYS:
            expected, found = getattr(state, name), arrays.get(name)
            if (
                state.d != d
                or (expected is None) != (found is None)
                or (found is not None and found.shape != expected.shape)
            ):
                raise IncompatibleStateError(
                    f"linear_learner state payload has {name} of shape "
                    f"{getattr(found, 'shape', None)}; the config expects "
                    f"{getattr(expected, 'shape', None)}."
                )
            setattr(state, name, found)
        state.diverged = state.diverged.astype(bool)
        state.patience_wait = int(meta.get("patience_wait", 0))
        state.stopped_epoch = int(meta.get("stopped_epoch", 0))
        epochs = meta.get("epoch_metrics", [])
        state.epoch_metrics = [e for e in epochs if e["epoch"] < state.epoch]
        state.first_loss = arrays.get("first_loss")
        if state.first_loss is not None and state.first_loss.shape != (2 * state.m,):
            raise IncompatibleStateError(
                f"linear_learner state payload has first_loss of shape "
                f"{state.first_loss.shape}; the config expects {(2 * state.m,)}."
            )
        if state.validation is not None:
            for name in cls._VALIDATION_ARRAYS:
                found, expected = arrays.get(name), getattr(state, name)
                if found is not None and found.shape != expected.shape:
                    raise IncompatibleStateError(
                        f"linear_learner state payload has {name} of shape {found.shape}; "
                        f"the config expects {expected.shape}."
                    )
                if found is not None:
                    setattr(state, name, found)
            state.validation = ValidationRows.from_arrays(
                arrays, state.validation.size, d, state.validation.fraction
            )
        if int(meta["pending_rows"]):
            labels = arrays["pending_y"]
            if meta.get("pending_sparse"):
                rows = sp.csr_matrix(
                    (arrays["pending_data"], arrays["pending_indices"], arrays["pending_indptr"]),
                    shape=(len(labels), d),
                )
            else:
                rows = arrays["pending_x"]
            state.pending.features, state.pending.labels = rows, labels
        return state


LinearLearnerState.MODEL = LinearLearnerModel
