"""The linear learner's state: moments, exact statistics, packed models."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.algorithms.linear_learner.config import (
    SELECTION_CRITERIA,
    SOLVERS,
    LinearLearnerConfig,
    check_real,
)
from beam_ml.algorithms.linear_learner.exact import (
    MAX_EXACT_FEATURES,
    elastic_net,
    ridge,
)
from beam_ml.algorithms.linear_learner.losses import labels_for, pointwise_loss, softmax_loss
from beam_ml.algorithms.linear_learner.model import LinearLearnerModel
from beam_ml.algorithms.linear_learner.packed import (
    ADAM_EPS,
    AVERAGING_ETA,
    DIVERGED,
    HIST_ALL_ROWS,
    HIST_BINS,
    _blas_threads,
    bin_counts,
    row_range,
    rows_where,
    score_edges,
    stack_rows,
    times,
    transpose_times,
    weighted_colsum,
)
from beam_ml.algorithms.linear_learner.validation import (
    ValidationRows,
    _dense_row_keys,  # noqa: F401 (tests hash dense rows through this module)
    row_keys_of,
    validation_rows_kept,
)
from beam_ml.core.block import as_block
from beam_ml.core.classification import best_thresholds
from beam_ml.core.errors import IncompatibleStateError, NotEnoughDataError
from beam_ml.core.moments import Moments
from beam_ml.core.state import register
from beam_ml.core.validation import check_bool, check_choice, check_int
from beam_ml.nn.skeleton import GradientState

_LOG = logging.getLogger("beam_ml.linear_learner")
_WARNED_HIGH_D: set[int] = set()
_MAX_EPOCH_METRICS = 1000  # per-epoch metrics kept (the latest)


@register
class LinearLearnerState(GradientState):
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
    coef, intercept : ndarray of shape (d, m * k) and (m * k,)
        The packed models' last iterates in the original feature and label units.
    avg_coef, avg_intercept : same shapes
        Their polynomial-decay averages.
    progress : ndarray of shape (5, 2 m)
        Per candidate (m last iterates, then m averages): progressive loss sum,
        step-weighted loss sum, right answers, weight sum, step-weighted weight sum.
    hist : ndarray of shape (2 m, 2, 1002)
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
    SERIAL_VERSION = 1
    CONFIG = LinearLearnerConfig

    def __init__(self, config: LinearLearnerConfig):
        super().__init__(config)
        self.n = 0
        self.epoch = 1
        self.steps = 0
        self.stepped = 0  # rows trained on in this epoch
        self.d: int | None = None
        self.exact: Moments | None = None  # allocated with d (squared loss)
        lr, wd, l1 = config.grid()
        self._lr, self._wd, self._l1 = lr, wd, l1
        self.m, self.k = len(lr), config.n_outputs
        # Per weight column (m models x k outputs), for the step.
        self._lr_cols, self._wd_cols, self._l1_cols = (np.repeat(v, self.k) for v in (lr, wd, l1))
        self._scaling_cache: tuple | None = None
        self._loss = config.resolved_loss
        self._optimizer = config.resolved_optimizer
        self._binary = config.predictor_type == "binary_classifier"
        self._multiclass = config.predictor_type == "multiclass_classifier"
        self.pending_x: Any = None
        self.pending_y: np.ndarray | None = None
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
        return 0 if self.pending_y is None else len(self.pending_y)

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
        self.coef, self.intercept = np.zeros((d, cols)), np.zeros(cols)
        self.avg_coef, self.avg_intercept = np.zeros((d, cols)), np.zeros(cols)
        adaptive = self._optimizer in ("adam", "rmsprop")
        self.opt_m = np.zeros((d + 1, cols)) if self._optimizer == "adam" else None
        self.opt_v = np.zeros((d + 1, cols)) if adaptive else None
        self.progress = np.zeros((5, 2 * m))
        self.hist = np.zeros((2 * m, 2, HIST_BINS)) if self._binary else None
        self.diverged = np.zeros(m, dtype=bool)
        fraction = self.config.resolved_validation_fraction
        if fraction > 0:
            self.validation = ValidationRows(validation_rows_kept(d), d, fraction)
            # Per candidate (m last iterates, then m averages), its parameters at the end
            # of the epoch with its lowest validation loss so far: columns as [coef | avg].
            self.best_weights, self.best_bias = np.zeros((d, 2 * cols)), np.zeros(2 * cols)
            self.best_loss, self.best_epoch = np.full(2 * m, np.inf), np.zeros(2 * m)

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> LinearLearnerState:
        block = as_block(block, n_features=self.d, owner="LinearLearnerState")
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

    @property
    def stopped(self) -> bool:
        """Whether early stopping holds the models (only within the configured epochs:
        training resumed on new rows past them trains again)."""
        return self.stopped_epoch > 0 and self.epoch <= self.config.epochs

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
            if self.n_pending:
                self.pending_x = stack_rows(self.pending_x, x)
                self.pending_y = np.concatenate([self.pending_y, y])
            else:
                self.pending_x, self.pending_y = row_range(x, 0, x.shape[0], copy=copy), y.copy()
            sample = self.config.num_point_for_scaler
            if self.n_pending < sample:
                return
            self._fix_scaler(self.pending_x[:sample], self.pending_y[:sample])
            x, y, copy = self.pending_x, self.pending_y, False
            self.pending_x = self.pending_y = None
        batch, start, rows = self.config.mini_batch_size, 0, x.shape[0]
        if self.n_pending:
            take = min(batch - self.n_pending, rows)
            self.pending_x = stack_rows(self.pending_x, row_range(x, 0, take))
            self.pending_y = np.concatenate([self.pending_y, y[:take]])
            start = take
            if self.n_pending == batch:
                px, py = self.pending_x, self.pending_y
                self.pending_x = self.pending_y = None
                self._step(px, py)
        while rows - start >= batch:
            self._step(row_range(x, start, start + batch), y[start : start + batch])
            start += batch
        if start < rows:
            # Copied: the state must not alias (or later see changes to) the caller's block.
            self.pending_x = row_range(x, start, rows, copy=copy)
            self.pending_y = y[start:].copy()

    def _flush(self) -> None:
        """Train on every pending row now, the last mini-batch short."""
        if not self.n_pending:
            return
        px, py = self.pending_x, self.pending_y
        self.pending_x = self.pending_y = None
        if self._warming():  # fewer rows than the scaler's sample: they are the sample
            self._fix_scaler(px, py)
        batch = self.config.mini_batch_size
        for start in range(0, len(py), batch):
            self._step(row_range(px, start, start + batch), py[start : start + batch])

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

    def _step(self, x: Any, y: np.ndarray) -> None:
        """One mini-batch: every candidate predicts it, then every model learns from it.

        Shapes: x (b, d); weights (d, 2 m k) = [last iterates | averages]; scores
        (b, 2 m k). All models' forward pass is one product, the backward pass another;
        the rest is elementwise work on the scores in the input's precision.
        """
        cfg, d, m, k = self.config, self.d, self.m, self.k
        b, cols = x.shape[0], self.m * self.k
        if self.epoch == 1 and cfg.num_point_for_scaler == 0:  # a running scaler
            self._absorb_moments(x, y)
        if self.class_counts.size and self.epoch == 1:
            self.class_counts += np.bincount(y.astype(np.int64), minlength=self.class_counts.size)
        mean, scale, y_mean, y_scale = self._scaling()
        self.steps += 1
        self.stepped += b
        t = self.steps
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        weights = np.concatenate([self.coef, self.avg_coef], axis=1).astype(dtype)
        scores = times(x, weights)
        scores += np.concatenate([self.intercept, self.avg_intercept]).astype(dtype)
        if cfg.scales_label:
            scores -= y_mean
            scores /= y_scale
            target = (y - y_mean) / y_scale
        else:
            target = y
        last, avg = scores[:, :cols], scores[:, cols:]
        # Progressive validation: the candidates' losses on rows they have not learnt yet.
        if self._multiclass:
            cls = y.astype(np.int64)
            last_loss, grad, last_ok = softmax_loss(last.reshape(b, m, k), cls, True)
            avg_loss, _, avg_ok = softmax_loss(avg.reshape(b, m, k), cls, False)
            grad = grad.reshape(b, cols)
            correct = np.concatenate([last_ok.sum(axis=0), avg_ok.sum(axis=0)])
        else:
            t_col = target.astype(dtype)[:, None]
            last_loss, grad = pointwise_loss(self._loss, last, t_col, cfg, True)
            avg_loss, _ = pointwise_loss(self._loss, avg, t_col, cfg, False)
            if self._binary:
                # Right answers at score 0: sum(1 - y) + (2y - 1) . [s > 0], one product.
                positive = (scores > 0).astype(dtype)
                correct = (b - y.sum()) + weighted_colsum(2 * t_col[:, 0] - 1, positive)
                # A long pass's histograms sample its mini-batches: all in the first
                # 2^17 rows, then every 2nd, 4th ... (the stride doubles as the pass
                # does), each counted stride times: well over 10^5 rows for any
                # threshold, at a fraction of the cost of binning every score.
                stride = 1 << ((self.stepped - b) // HIST_ALL_ROWS).bit_length()
                if t % stride == 0:
                    self._histogram(scores, y, t * stride)
            else:
                correct = np.zeros(2 * m)
        sample_w = self._example_weights(y)
        if sample_w is None:
            per_row, w_sum = np.ones(b, dtype=dtype), float(b)
        else:
            per_row, w_sum = sample_w.astype(dtype), float(sample_w.sum())
            grad = grad * per_row[:, None]
        # Column sums as products with a vector, not reductions with a cast.
        sums = [weighted_colsum(per_row, last_loss), weighted_colsum(per_row, avg_loss)]
        loss_sum = np.concatenate(sums).astype(np.float64)
        self.progress[0] += loss_sum
        self.progress[1] += t * loss_sum
        self.progress[2] += correct
        self.progress[3] += w_sum
        self.progress[4] += t * w_sum
        # Gradient in the standardized space z = (x - mean) / scale, computed without
        # centring x: z^T r = (x^T r - mean * sum(r)) / scale.
        grad /= b
        g_sum = weighted_colsum(np.ones(b, dtype=grad.dtype), grad).astype(np.float64)
        g_x = np.asarray(transpose_times(x, grad), dtype=np.float64)
        g_x -= np.outer(mean, g_sum)
        g_x /= scale[:, None]
        ratio = (scale / y_scale)[:, None]
        w_z = self.coef * ratio  # the weights in the step space, which wd and l1 act on
        wd, lr, l1 = self._wd_cols, self._lr_cols, self._l1_cols
        if wd.any():
            g_x += w_z * wd
        g = np.vstack([g_x, g_sum[None, :] if cfg.use_bias else np.zeros((1, cols))])
        step = self._direction(g, t) * -lr
        if self.diverged.any():
            step[:, np.repeat(self.diverged, k)] = 0.0
        moved = w_z + step[:d]
        if l1.any():  # proximal (soft-threshold) step for the L1 term
            moved = np.sign(moved) * np.maximum(np.abs(moved) - lr * l1, 0.0)
        dz = moved - w_z
        self.coef += dz / ratio
        if cfg.use_bias:
            self.intercept += y_scale * (step[d] - (mean / scale) @ dz)
        alpha = (1.0 + AVERAGING_ETA) / (t + AVERAGING_ETA)
        self.avg_coef += (self.coef - self.avg_coef) * alpha
        self.avg_intercept += (self.intercept - self.avg_intercept) * alpha
        # On standardized features and labels sensible weights are O(1)..O(100); far
        # beyond that (or non-finite) a model's learning rate is too large for the data.
        blown = ~(np.abs(moved) < DIVERGED).all(axis=0) | ~(np.abs(step[d]) < DIVERGED)
        if blown.any():
            self._diverge(blown)

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

    def _direction(self, g: np.ndarray, t: int) -> np.ndarray:
        cfg = self.config
        if self._optimizer == "sgd":
            return g
        b2 = cfg.beta_2
        self.opt_v *= b2
        self.opt_v += (1 - b2) * g * g
        denom = np.sqrt(self.opt_v / (1 - b2**t)) + ADAM_EPS
        if self._optimizer == "rmsprop":
            return g / denom
        b1 = cfg.beta_1
        self.opt_m *= b1
        self.opt_m += (1 - b1) * g
        return self.opt_m / (1 - b1**t) / denom

    def _histogram(self, scores: np.ndarray, y: np.ndarray, weight: float) -> None:
        """Add every candidate's scores (b, 2 m) to its negatives/positives histograms."""
        self.hist += weight * bin_counts(scores, y)

    # --- validation and early stopping ------------------------------------------------
    def _validating(self) -> bool:
        return self.validation is not None and self.validation.n_rows > 0

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's parameters: (d, 2 m k) weights [coef | avg_coef], biases."""
        weights = np.concatenate([self.coef, self.avg_coef], axis=1)
        return weights, np.concatenate([self.intercept, self.avg_intercept])

    def _validation_scores(
        self, weights: np.ndarray, bias: np.ndarray, hist: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each candidate's mean loss (2 m,) on the validation rows, in the units of the
        progressive loss, and (binary, ``hist``) its histograms of their scores (weight
        1 per row). Exact: every validation row, in float64."""
        cfg, m, k = self.config, self.m, self.k
        x = self.validation.features.astype(np.float64)
        if 4 * x.nnz > x.shape[0] * x.shape[1]:  # dense rows: one BLAS product
            x = x.toarray()
        y = self.validation.labels.astype(np.float64)
        count = self.validation.weights  # each row as many times as it was seen
        b = len(y)
        scores = np.asarray(x @ weights) + bias
        _, _, y_mean, y_scale = self._scaling()
        target = y
        if cfg.scales_label:
            scores = (scores - y_mean) / y_scale
            target = (y - y_mean) / y_scale
        with np.errstate(over="ignore", invalid="ignore"):
            if self._multiclass:
                cls = y.astype(np.int64)
                loss, _, _ = softmax_loss(scores.reshape(b, 2 * m, k), cls, False)
            else:
                loss, _ = pointwise_loss(self._loss, scores, target[:, None], cfg, False)
            weight = self._example_weights(y)
            weight = count if weight is None else weight * count
            mean = weight @ loss / weight.sum()
        mean = np.where(np.isfinite(mean), mean, np.inf)
        counts = bin_counts(scores, y, count) if hist and self._binary else None
        return mean, counts

    def _close_epoch(self) -> None:
        """At the end of an epoch: score every candidate on the validation rows, keep the
        parameters of each one's best epoch, count epochs without improvement (early
        stopping) and record the epoch's metrics."""
        cfg = self.config
        if self.epoch == 1 and self.first_loss is None:
            self.first_loss = self._candidate_losses()  # the only honest progressive loss
        entry, losses = self._epoch_entry()
        if losses is not None:
            before = float(self.best_loss.min())
            better = losses < self.best_loss
            weights, bias = self._current()
            cols = np.repeat(better, self.k)
            self.best_weights[:, cols] = weights[:, cols]
            self.best_bias[cols] = bias[cols]
            self.best_loss = np.where(better, losses, self.best_loss)
            self.best_epoch = np.where(better, float(self.epoch), self.best_epoch)
            after = float(self.best_loss.min())
            improved = after < before * (1 - cfg.early_stopping_tolerance) or (
                math.isinf(before) and math.isfinite(after)
            )
            entry["improved"] = bool(improved)
            if not self.stopped_epoch and self.epoch < cfg.epochs:
                self.patience_wait = 0 if improved else self.patience_wait + 1
                if self.patience_wait >= cfg.early_stopping_patience:
                    self.stopped_epoch = self.epoch
                    _LOG.info(
                        "linear_learner: early stopping after epoch %d (best validation loss "
                        "%.6g, no relative improvement above %g in %d epochs); epochs %d-%d "
                        "leave the models as they are.",
                        self.epoch,
                        after,
                        cfg.early_stopping_tolerance,
                        self.patience_wait,
                        self.epoch + 1,
                        cfg.epochs,
                    )
            entry["stopping"] = bool(self.stopped_epoch)
        self.epoch_metrics = (self.epoch_metrics + [entry])[-_MAX_EPOCH_METRICS:]

    def _epoch_entry(self) -> tuple[dict[str, Any], np.ndarray | None]:
        """This epoch's metrics so far, and the candidates' validation losses (or None)."""
        progressive = self._candidate_losses() if self.stepped else np.full(2 * self.m, np.inf)
        entry: dict[str, Any] = {
            "epoch": self.epoch,
            "rows": self.n,
            "rows_trained": self.stepped,
            "progressive_loss": finite_or_none(progressive.min()),
            "stopped": self.stopped,
        }
        if not self._validating():
            return entry, None
        losses, _ = self._validation_scores(*self._current(), hist=False)
        losses = np.where(np.tile(self.diverged, 2), np.inf, losses)
        entry.update(
            validation_rows=self.validation.n_rows,
            validation_loss=finite_or_none(losses.min()),
            best_validation_loss=finite_or_none(min(losses.min(), self.best_loss.min())),
        )
        return entry, losses

    def epoch_report(self) -> list[dict[str, Any]]:
        """Per epoch: rows, rows trained on, the best candidate's progressive loss (on
        rows seen before from epoch 2 on: not a selection measure), its validation loss
        at the end of the epoch and the best so far, whether the epoch was skipped by
        early stopping ('stopped') and whether stopping holds after it ('stopping');
        the current epoch last."""
        if self.d is None:
            return []
        return [*self.epoch_metrics, self._epoch_entry()[0]]

    def _diverge(self, columns: np.ndarray) -> None:
        models = columns.reshape(self.m, self.k).any(axis=1) & ~self.diverged
        if models.any():  # expected for the top of the 'auto' learning-rate grid
            _LOG.info(
                "linear_learner: packed model(s) %s diverged (learning rate %s too large); "
                "they are frozen at zero and never selected.",
                np.flatnonzero(models).tolist(),
                self._lr[models].tolist(),
            )
        self._freeze(self.diverged | models)

    def _freeze(self, diverged: np.ndarray) -> None:
        self.diverged = diverged
        cols = np.repeat(diverged, self.k)
        for array in (self.coef, self.avg_coef, self.opt_m, self.opt_v):
            if array is not None:
                array[:, cols] = 0.0
        self.intercept[cols] = 0.0
        self.avg_intercept[cols] = 0.0

    # --- epochs ----------------------------------------------------------------------
    def continued(self) -> LinearLearnerState:
        """The state that starts the next pass over the same data (a new object).

        The packed models, their optimizer state and the step count carry on, and the
        moments stay fixed (so every worker steps in the same space); the row count,
        exact statistics, progressive losses and histograms start from zero, so after
        the pass they describe one pass over the data, not several. The epoch that ends
        here is closed: its candidates are scored on the validation rows, each keeps
        the parameters of its best epoch, early stopping counts, its metrics are kept.
        The same start state gives the same result on every worker.
        """
        state = self._copy()
        state._flush()
        if state.d is not None:
            state._close_epoch()
        state.epoch += 1
        state.n = state.stepped = 0
        if state.has_exact:
            state.exact = Moments.zeros(state.d + 1, scatter=True)
        if state.d is not None:
            state.progress[:] = 0.0
            if state.hist is not None:
                state.hist[:] = 0.0
        if state.validation is not None:
            state.validation = state.validation.restarted()
        return state

    def followed_by(self, later: LinearLearnerState) -> LinearLearnerState:
        """This state extended by ``later``, trained on new rows from :meth:`continued`.

        The packed models and their optimizer state are ``later``'s (they went on from
        this state's); row counts, exact statistics, progressive losses and histograms
        add up, so the result describes one pass over the old rows and the new ones.
        """
        out = later._copy()
        out.epoch = self.epoch
        # later's record of this state's epoch (closed by continued()) is the new one's.
        out.epoch_metrics = [e for e in out.epoch_metrics if e["epoch"] < out.epoch]
        out.n = self.n + later.n
        out.stepped = self.stepped + later.stepped
        if self.d is None or later.d is None:
            return out
        if self.has_exact:
            out.exact = self.exact.merged(later.exact)
        out.progress = self.progress + later.progress
        if out.hist is not None:
            out.hist = self.hist + later.hist
        return out

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
            share = w_b / (w_a + w_b)
            for name in ("coef", "intercept", "avg_coef", "avg_intercept", "opt_m", "opt_v"):
                mine = getattr(self, name)
                if mine is not None:
                    setattr(self, name, mine + (getattr(other, name) - mine) * share)
        self.steps = max(self.steps, other.steps)
        self.stepped += other.stepped
        if self.validation is not None:  # exact: see ValidationRows
            self.validation = self.validation.merged(other.validation)
        # Best-epoch parameters, early stopping and the epoch record are set by
        # continued() alone, the same on every replica of an epoch: this side's.
        self.progress = self.progress + other.progress
        if self.hist is not None:
            self.hist = self.hist + other.hist
        self.n += other.n
        diverged = self.diverged | other.diverged
        if (diverged != self.diverged).any() or (diverged != other.diverged).any():
            self._freeze(diverged)
        if other.n_pending:
            self._feed(other.pending_x, other.pending_y, copy=True)

    def _copy(self) -> LinearLearnerState:
        meta, arrays = self._payload(report=False)
        return type(self)._from_payload(
            self.config, {"n_seen": self.n, **meta}, {k: v.copy() for k, v in arrays.items()}
        )

    # --- models ----------------------------------------------------------------------
    def derive(
        self,
        binary_classifier_model_selection_criteria: str = "accuracy",
        target_recall: float = 0.8,
        target_precision: float = 0.8,
        f_beta: float = 1.0,
        wd: float | None = None,
        l1: float | None = None,
        normalize_data: bool | None = None,
        normalize_label: bool | None = None,
        solver: str = "auto",
        model_index: int | None = None,
    ) -> LinearLearnerModel:
        """The model chosen by these parameters, computed from the state alone.

        Parameters
        ----------
        binary_classifier_model_selection_criteria : {'accuracy', 'f_beta', 'precision_at_target_recall', 'recall_at_target_precision', 'loss_function'}
            Binary classifiers: the candidate and its decision threshold maximize this
            on the progressive (held-out) scores, or on the validation rows when the
            state has them (see the module notes); 'loss_function' takes the lowest
            loss and the threshold 0.5 (score 0 for hinge_loss).
        target_recall : float
            The recall precision_at_target_recall must reach.
        target_precision : float
            The precision recall_at_target_precision must reach.
        f_beta : float
            The beta of the f_beta criterion and of the model's binary_f_beta metric.
        wd : float, optional
            Exact path: the L2 penalty (default: the config's wd, or for 'auto' the wd
            of the packed model with the lowest progressive loss).
        l1 : float, optional
            Exact path: the L1 penalty; above 0 gives the elastic net (default: the
            config's l1, 0 for 'auto').
        normalize_data : bool, optional
            Exact path: standardize features before penalizing (default: the config's).
        normalize_label : bool, optional
            Exact path: standardize the label (default: the config's).
        solver : {'auto', 'exact', 'packed'}
            'exact' solves squared loss from the Gram matrix; 'packed' selects a packed
            model; 'auto' is exact when the state has the exact statistics.
        model_index : int, optional
            Packed path: take this packed model's averaged iterate instead of selecting.

        Returns
        -------
        LinearLearnerModel
            Its ``info`` says how it was chosen: solver ('exact' or 'packed'), the
            packed model and iterate, hyperparameters, progressive loss, criterion value,
            ``selected_on`` ('progressive', 'validation' or 'epoch-1 progressive'), the
            validation loss and the epoch whose parameters it has.

        Raises
        ------
        NotEnoughDataError
            When the state has seen no rows (the exact path needs two).
        ValueError
            For exact-path parameters on a state without the exact statistics, or on
            the packed path.
        """
        where = "LinearLearnerState.derive"
        criterion = check_choice(
            binary_classifier_model_selection_criteria,
            "binary_classifier_model_selection_criteria",
            where,
            SELECTION_CRITERIA,
        )
        check_real(target_recall, "target_recall", where, 0.0, 1.0)
        check_real(target_precision, "target_precision", where, 0.0, 1.0)
        check_real(f_beta, "f_beta", where, 0.0, low_open=True)
        check_choice(solver, "solver", where, SOLVERS)
        if self.n == 0:
            raise NotEnoughDataError("The linear learner state has seen no rows.")
        exact_args = {
            "wd": wd,
            "l1": l1,
            "normalize_data": normalize_data,
            "normalize_label": normalize_label,
        }
        if solver == "exact" and not self.has_exact:
            raise ValueError(
                "solver='exact' needs the exact statistics, kept for loss='squared_loss' "
                f"with at most {MAX_EXACT_FEATURES} features; this state has "
                f"loss={self._loss!r} and {self.d} features, so only its packed models."
            )
        if solver != "packed" and self.has_exact and model_index is None:
            return self._derive_exact(f_beta=f_beta, **exact_args)
        given = [name for name, value in exact_args.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to the exact path only; the packed models were "
                "trained with the config's settings (see describe()['packed_models'])."
            )
        state = self
        if self.n_pending:  # learn the last, short mini-batch on a copy
            state = self._copy()
            state._flush()
        return state._derive_packed(criterion, target_recall, target_precision, f_beta, model_index)

    def _derive_exact(self, wd, l1, normalize_data, normalize_label, f_beta) -> LinearLearnerModel:
        cfg, d, n = self.config, self.d, self.n
        where = "LinearLearnerState.derive"
        if n < 2:
            raise NotEnoughDataError(
                f"The exact path needs at least 2 rows; the state has seen {n}."
            )
        best = self._best_by_loss()
        if wd is None:
            wd = float(self._wd[best % self.m]) if cfg.wd == "auto" else float(cfg.wd)
        if l1 is None:
            l1 = 0.0 if cfg.l1 == "auto" else float(cfg.l1)
        wd = check_real(wd, "wd", where, 0.0)
        l1 = check_real(l1, "l1", where, 0.0)
        normalize_data = cfg.normalize_data if normalize_data is None else normalize_data
        normalize_label = cfg.scales_label if normalize_label is None else normalize_label
        check_bool(normalize_data, "normalize_data", where)
        check_bool(normalize_label, "normalize_label", where)
        mean, scatter = self.exact_mean, self.exact_scatter
        if not cfg.use_bias:  # the uncentred second moments: no intercept to absorb the mean
            scatter = scatter + n * np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(self.exact_scatter), 0) / n)
        scale = np.where(std[:d] > 0, std[:d], 1.0) if normalize_data else np.ones(d)
        y_scale = float(std[d]) if normalize_label and std[d] > 0 else 1.0
        gram = scatter[:d, :d] / (n * np.outer(scale, scale))
        cross = scatter[:d, d] / (n * scale * y_scale)
        if l1 == 0.0:
            w = ridge(gram, cross, wd)
            solver = "ridge (closed form)"
        else:
            w = elastic_net(gram, cross, wd, l1)
            solver = "elastic net (coordinate descent on the Gram matrix)"
        coef = w * y_scale / scale
        intercept = float(mean[d] - mean[:d] @ coef) if cfg.use_bias else 0.0
        info = {
            "solver": "exact",
            "method": solver,
            "wd": wd,
            "l1": l1,
            "normalize_data": normalize_data,
            "normalize_label": normalize_label,
            "nonzero_coefficients": int(np.count_nonzero(w)),
        }
        return self._model(coef[:, None], np.array([intercept]), 0.0, f_beta, info)

    def _candidate_losses(self) -> np.ndarray:
        """Each candidate's step-weighted progressive loss (inf for diverged models)."""
        p = self.progress
        loss = np.where(p[4] > 0, p[1] / np.where(p[4] > 0, p[4], 1.0), np.inf)
        loss = np.where(np.isfinite(loss), loss, np.inf)
        return np.where(np.tile(self.diverged, 2), np.inf, loss)

    def _best_by_loss(self) -> int:
        return int(np.argmin(self._selection()[0][: 2 * self.m]))

    def _selection(self) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray, np.ndarray, str]:
        """What candidates are ranked on: per version (the 2 m candidates' current
        parameters, then, with validation rows, each one's best epoch's), its loss,
        score histograms (binary), weights (d, versions * k), biases and epoch, and the
        basis: 'validation', 'epoch-1 progressive' (later epochs' progressive losses are
        on rows seen before) or 'progressive' (epoch 1)."""
        weights, bias = self._current()
        diverged = np.tile(self.diverged, 2)
        # Early stopping: the current parameters are those of the epoch it stopped after.
        epochs = np.full(2 * self.m, float(self.stopped_epoch if self.stopped else self.epoch))
        if self._validating():
            losses, hist = self._validation_scores(weights, bias)
            losses = np.where(diverged, np.inf, losses)
            best, best_hist = self._validation_scores(self.best_weights, self.best_bias)
            best = np.where(np.isfinite(self.best_loss), best, np.inf)
            return (
                np.concatenate([losses, best]),
                None if hist is None else np.concatenate([hist, best_hist]),
                np.concatenate([weights, self.best_weights], axis=1),
                np.concatenate([bias, self.best_bias]),
                np.concatenate([epochs, self.best_epoch]),
                "validation",
            )
        if self.epoch > 1 and self.first_loss is not None:
            _LOG.warning(
                "linear_learner: no validation rows (validation_fraction=0): the models "
                "after %d epochs are ranked on epoch 1's progressive loss and nothing "
                "checks whether later epochs overfit (measured: worse than the base rate "
                "on click-like rows); give validation_fraction > 0.",
                self.epoch,
            )
            losses = np.where(diverged, np.inf, self.first_loss)
            return losses, self.hist, weights, bias, epochs, "epoch-1 progressive"
        return self._candidate_losses(), self.hist, weights, bias, epochs, "progressive"

    def _derive_packed(
        self, criterion, target_recall, target_precision, f_beta, model_index
    ) -> LinearLearnerModel:
        m, k = self.m, self.k
        losses, hist, weights, bias, epochs, basis = self._selection()
        threshold, value = 0.0, None
        if model_index is not None:
            j = check_int(model_index, "model_index", "LinearLearnerState.derive", 0, m - 1)
            version = m + j
        elif self._binary and criterion != "loss_function":
            values, best_k = best_thresholds(
                hist, criterion, target_recall, target_precision, f_beta
            )
            values = np.where(np.isfinite(losses), values, -np.inf)
            if basis == "epoch-1 progressive":
                # This epoch's histograms are of rows seen before: they set the
                # threshold of the candidate chosen by epoch 1's loss, not the choice.
                version = int(np.argmin(losses))
            else:  # best criterion first; among equals, the lower loss
                version = int(np.lexsort((losses, -values))[0])
            threshold = float(score_edges()[best_k[version]])
            value = float(values[version])
        else:
            version = int(np.argmin(losses))
        if self._binary and model_index is None and criterion == "loss_function":
            threshold = 0.0
        candidate = version % (2 * m)
        j, averaged = candidate % m, candidate >= m
        cols = slice(version * k, (version + 1) * k)
        progressive = self._candidate_losses()[candidate] if version < 2 * m else np.inf
        info = {
            "solver": "packed",
            "model": j,
            "iterate": "averaged" if averaged else "last",
            "learning_rate": float(self._lr[j]),
            "wd": float(self._wd[j]),
            "l1": float(self._l1[j]),
            "optimizer": self._optimizer,
            "progressive_loss": finite_or_none(progressive),
            "selected_on": basis,
            "parameters_of_epoch": int(epochs[version]),
        }
        if basis == "validation":
            info["validation_loss"] = finite_or_none(losses[version])
            info["validation_rows"] = self.validation.n_rows
        elif basis == "epoch-1 progressive":
            info["epoch_1_progressive_loss"] = finite_or_none(losses[version])
        if self._binary:
            info["criterion"] = criterion
            if value is not None:
                info["criterion_value"] = finite_or_none(value)
        return self._model(weights[:, cols].copy(), bias[cols].copy(), threshold, f_beta, info)

    def _model(self, coef, intercept, threshold, f_beta, info) -> LinearLearnerModel:
        cfg = self.config
        info = {"n_seen": self.n, "epoch": self.epoch, **info}
        label_mean = float(self.moments_mean[self.d]) if self.moments_n else 0.0
        if self.has_exact:
            label_mean = float(self.exact_mean[self.d])
        return LinearLearnerModel(
            coef=coef,
            intercept=intercept,
            predictor_type=cfg.predictor_type,
            loss=self._loss,
            threshold=threshold,
            f_beta=f_beta,
            label_mean=label_mean,
            loss_params={
                "quantile": cfg.quantile,
                "loss_insensitivity": cfg.loss_insensitivity,
                "huber_delta": cfg.huber_delta,
            },
            info=info,
        )

    def describe(self) -> dict[str, Any]:
        """Per packed model: hyperparameters and progressive metrics (for people)."""
        out: dict[str, Any] = {
            "n_seen": self.n,
            "epoch": self.epoch,
            "steps": self.steps,
            "n_features": self.d,
            "loss": self._loss,
            "optimizer": self._optimizer,
            "exact_statistics": self.has_exact,
        }
        if self._loss == "squared_loss" and not self.has_exact and self.d is not None:
            out["exact_statistics_note"] = (
                f"{self.d} features > {MAX_EXACT_FEATURES}: no (d+1) x (d+1) matrix kept"
            )
        if self.d is None:
            return out
        p, m = self.progress, self.m
        mean_loss = p[0] / np.where(p[3] > 0, p[3], 1.0)
        accuracy = self.progressive_accuracy()
        out["packed_models"] = [
            {
                "model": j,
                "learning_rate": float(self._lr[j]),
                "wd": float(self._wd[j]),
                "l1": float(self._l1[j]),
                "diverged": bool(self.diverged[j]),
                "progressive_loss": finite_or_none(mean_loss[j]),
                "progressive_loss_averaged": finite_or_none(mean_loss[m + j]),
                **(
                    {"progressive_accuracy_averaged": finite_or_none(accuracy[m + j])}
                    if accuracy is not None
                    else {}
                ),
            }
            for j in range(m)
        ]
        if self._validating():
            for j, entry in enumerate(out["packed_models"]):
                entry["best_validation_loss_averaged"] = finite_or_none(self.best_loss[m + j])
                entry["best_epoch_averaged"] = int(self.best_epoch[m + j])
        out["validation_rows"] = 0 if self.validation is None else self.validation.n_rows
        out["early_stopping"] = {
            "patience": self.config.early_stopping_patience,
            "tolerance": self.config.early_stopping_tolerance,
            "epochs_without_improvement": self.patience_wait,
            "stopped_after_epoch": self.stopped_epoch or None,
        }
        out["epoch_metrics"] = self.epoch_report()
        return out

    def progressive_accuracy(self) -> np.ndarray | None:
        """Per candidate (m last iterates, then m averages): the share of rows it
        classified right before learning them (prequential accuracy); None for
        regressors. Binary: at score 0 (probability 0.5)."""
        if self.d is None or not (self._binary or self._multiclass):
            return None
        rows = self.stepped  # the rows every candidate has predicted
        return self.progress[2] / rows if rows else np.full(2 * self.m, np.nan)

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
            state.pending_y = arrays["pending_y"]
            if meta.get("pending_sparse"):
                state.pending_x = sp.csr_matrix(
                    (arrays["pending_data"], arrays["pending_indices"], arrays["pending_indptr"]),
                    shape=(len(state.pending_y), d),
                )
            else:
                state.pending_x = arrays["pending_x"]
        return state


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


LinearLearnerState.MODEL = LinearLearnerModel
