"""Linear Learner in one pass: packed SGD models, the exact ridge path, late thresholds.

SageMaker's linear learner trains ``num_models`` linear models side by side ("model
packing"), each with its own learning rate and regularization, and keeps the one that
does best on validation data, usually after several epochs. Here one pass keeps
everything that choice needs, so it is made *after* training, by ``derive`` (several
epochs: see "Validation rows" below):

The packed models (every loss)
    ``num_models`` models, one column each of a ``(d, num_models)`` weight matrix (times
    the number of classes for softmax), trained by SGD, Adam or RMSProp on mini-batches
    of ``mini_batch_size`` rows. One mini-batch is one matrix product for all models
    forward and one backward; there is no Python loop over models or rows. Each model
    also keeps a polynomial-decay average of its iterates (Shamir & Zhang 2013), which
    converges in one pass where the last iterate still jitters; both the last and the
    averaged iterate of every model are *candidates*. Before each step every candidate
    predicts the mini-batch it is about to learn from (progressive validation, Blum et
    al. 1999), so the state holds an honest out-of-sample loss per candidate without a
    validation set. For classifiers it also holds each candidate's histogram of scores
    for positives and negatives, from which ``derive`` picks the decision threshold for
    any ``binary_classifier_model_selection_criteria`` (accuracy, F-beta, precision at
    a target recall ...) and the candidate that is best at it.

The exact path (squared loss)
    The state keeps ``n``, the mean and the *centred* scatter matrix of ``[x, y]`` in
    float64, merged with the pairwise formula (:mod:`beam_ml.core.numerics`). Ridge for
    any ``wd`` is then one Cholesky solve, and the elastic net for any (``l1``, ``wd``)
    is coordinate descent on the Gram matrix (Friedman, Hastie & Tibshirani 2010,
    "covariance updates"), with or without standardization, all without the data.
    Above :data:`MAX_EXACT_FEATURES` features the ``(d+1, d+1)`` matrix is not kept;
    the state says so and ``derive`` uses the packed models.

The objective and the scaling of ``wd`` and ``l1``
    Every path minimizes the same per-example *mean*, as SageMaker::

        J(w, b) = (1/n) sum_i weight_i * loss(y_i, x_i . w + b) + wd/2 ||w||^2 + l1 ||w||_1

    with ``squared_loss = (y - s)^2 / 2``, and the bias never regularized. With
    ``normalize_data`` the penalties apply to the weights of the standardized features
    (``(x - mean) / std``, population std); with ``normalize_label`` (regression) the
    loss is on ``(y - mean_y) / std_y``. So scikit-learn's ``ElasticNet(alpha,
    l1_ratio)`` is ``wd = alpha * (1 - l1_ratio)``, ``l1 = alpha * l1_ratio``, and
    ``Ridge(alpha)`` (a sum, not a mean) is ``wd = alpha / n``. The packed models use
    the same scaling, so a ``wd`` means the same thing on both paths.

Normalization in one pass
    As SageMaker, the mean and standard deviation of the first ``num_point_for_scaler``
    rows fix the standardization: those rows wait in the state, then every model steps
    through them and on. Later rows do not move it, so a drifting stream (elec2's
    columns that are constant for months) cannot turn into huge standardized values.
    The default sample is 1000 rows, not SageMaker's 10000: enough for the scale of
    dense columns (a few per cent, which a preconditioner tolerates), and measured
    better in one pass on one-hot data (a9a, adult with mini-batches of 1000: 1.2% and
    3.2% lower test log loss than with 10000 rows), where a larger sample standardizes
    very rare indicator columns into values of 30-60 whose spiky gradients make one
    pass noisier (a column that does not vary in the sample is centred, not scaled). The packed models are
    kept in the *original* feature space and every step is taken in the standardized
    one (a diagonal preconditioner and an implicit centring, computed as
    ``X^T r - mean * sum(r)``, so sparse blocks stay sparse); two workers' models can be
    averaged although their scaler samples differ.

Merging
    The Gram matrix, class counts, progressive loss sums and histograms merge exactly;
    two scaler samples merge into their union (pairwise formula). The packed models
    merge by an example-weighted average of weights, averaged weights and optimizer
    moments: *approximate* (one-shot parameter averaging, as DESIGN.md §4; the tests
    bound what it costs: four a9a quarters merged are within 1% of one pass). Rows that
    do not yet fill a mini-batch wait in the state (at most ``mini_batch_size - 1``
    after the scaler's sample), so updating with one block or row by row takes the
    same steps, and the state's size never depends on the number of rows.

Epochs
    A stream is one pass. For a bounded input ``epochs > 1`` makes :class:`~beam_ml.Train`
    pass over the same blocks again inside the same pipeline (the shared driver,
    :func:`beam_ml.transforms.epochs.continue_epochs`): every bundle's replica starts from
    :meth:`LinearLearnerState.continued` of the previous pass's state (the models,
    optimizer and scaler carry on; the row count, exact statistics, progressive losses
    and histograms start afresh, so they describe one pass), and the replicas merge as
    above. Progressive losses are then no longer held out: only the first pass's are.

Validation rows, best epochs and early stopping (issue 24)
    From epoch 2 on the progressive loss is on rows every model has learnt, and ranking
    by it picks the most overfit model (click-log-like rows, 5 epochs: test log loss
    0.91 where the base rate scores 0.45; BENCHMARKS.md). So with ``epochs > 1``
    (``validation_fraction`` 'auto' = 0.1; 0 for one pass) the rows whose content hash
    (:func:`beam_ml.nn.engine.row_keys`) falls in that fraction are *validation rows*,
    as SageMaker's validation channel: the same rows in every epoch, block and worker,
    never trained on and never in the scaler's sample. The state keeps a bounded uniform
    sample of them (the 10,000 of smallest hash, fewer above 800 features) with how
    often each occurred, which merges exactly (:class:`_ValidationRows`); set-aside
    rows it cannot keep train. At the end of every epoch (:meth:`continued`) every
    candidate is scored on all of them, exactly, and each keeps the parameters of its
    epoch with the lowest validation loss (a copy of its weights and bias: the state
    grows by the size of the packed models, never with the rows). ``derive`` then
    ranks the candidates' current parameters and their best epochs' on the validation
    rows, and chooses thresholds from the histograms of their scores there; so its pick
    never has a higher validation loss than the epoch-1 pick (on independent test
    rows: within noise, as the tests measure). When the best validation loss over all
    candidates has not improved by more than ``early_stopping_tolerance`` (relative)
    for ``early_stopping_patience`` epochs, the remaining configured epochs leave the
    models as they are (rows are counted, nothing trains; the log and
    :meth:`epoch_report` say so); the best over all candidates, not any candidate,
    because the smallest learning rates improve a little every epoch and would never
    stop. Training resumed on new rows past the configured ``epochs`` trains again.
    Without validation rows (``validation_fraction=0``) later epochs are ranked on each
    candidate's epoch-1 progressive loss, the only honest one, which cannot see them
    overfit. Per-epoch metrics (rows, rows trained, progressive and validation losses,
    early stopping) are kept in the state: :meth:`epoch_report`, ``describe()``, and
    the ``epoch_metrics`` field of a checkpoint's manifest (``beam-ml inspect``).

References
----------
Blum, Kalai & Langford, "Beating the hold-out", COLT 1999. Shamir & Zhang, "Stochastic
gradient descent for non-smooth optimization", ICML 2013. Friedman, Hastie & Tibshirani,
"Regularization paths for generalized linear models via coordinate descent", JSS 2010.
Liberty et al., "Elastic machine learning algorithms in Amazon SageMaker", SIGMOD 2020.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from beam_ml.core.block import Block, as_block, origin_note
from beam_ml.core.classification import (
    CRITERIA,
    auc_from_sums,
    auc_sums,
    best_thresholds,
    binary_labels,
    block_labels,
    label_error,
    log_loss,
    sigmoid,
)
from beam_ml.core.errors import IncompatibleStateError, NotEnoughDataError
from beam_ml.core.numerics import pairwise_mean
from beam_ml.core.sparse import csr_times, csr_transpose_times
from beam_ml.core.state import Model, TrainingState, register
from beam_ml.core.validation import check_bool, check_choice, check_int
from beam_ml.nn.engine import _mix64, row_keys

__all__ = ["LinearLearnerConfig", "LinearLearnerState", "LinearLearnerModel", "MAX_EXACT_FEATURES"]

_LOG = logging.getLogger("beam_ml.linear_learner")

_PREDICTORS = ("regressor", "binary_classifier", "multiclass_classifier")
_LOSSES = {
    "regressor": (
        "squared_loss",
        "absolute_loss",
        "eps_insensitive_squared_loss",
        "eps_insensitive_absolute_loss",
        "quantile_loss",
        "huber_loss",
    ),
    "binary_classifier": ("logistic", "hinge_loss"),
    "multiclass_classifier": ("softmax_loss",),
}
_DEFAULT_LOSS = {
    "regressor": "squared_loss",
    "binary_classifier": "logistic",
    "multiclass_classifier": "softmax_loss",
}
_OPTIMIZERS = ("auto", "sgd", "adam", "rmsprop")
_CRITERIA = (*CRITERIA, "loss_function")
_SOLVERS = ("auto", "exact", "packed")

#: Above this many features the exact path's (d+1) x (d+1) float64 matrix (512 MiB at
#: 8192) is not kept, and squared loss uses the packed models only.
MAX_EXACT_FEATURES = 8192
# log10 learning-rate ranges of the 'auto' grid, per optimizer: steps are taken on
# standardized features (sgd) or are scale-free (adam, rmsprop).
_LR_RANGE = {"sgd": (-2.0, 1.5), "adam": (-3.5, 0.0), "rmsprop": (-3.5, 0.0)}
_LR_SINGLE = {"sgd": 0.5, "adam": 0.02, "rmsprop": 0.02}
_AVERAGING_ETA = 3.0  # polynomial-decay averaging: weight (1+eta)/(t+eta) on iterate t
_ADAM_EPS = 1e-8
# Score histograms: 1000 bins of 0.02 on [-10, 10) plus one overflow bin each side; the
# edge between bins 500 and 501 is score 0 (probability 0.5).
_BINS_PER_UNIT = 50
_HIST_BINS = 1002
_HIST_CENTRE = 501
_HIST_ALL_ROWS = 2**17
_WARNED_HIGH_D: set[int] = set()
_DIVERGED = 1e8  # a step-space weight this large (or non-finite): the model diverged
_VALIDATION_ROWS = 10_000  # validation rows kept, at most (fewer above 800 features)
_MAX_EPOCH_METRICS = 1000  # per-epoch metrics kept (the latest)


def _validation_rows(d: int) -> int:
    """Validation rows a state keeps for ``d`` features: 10,000, down to 1,000 at 8,192+
    features (stored as CSR, at most ~8 MB of dense rows)."""
    return int(min(_VALIDATION_ROWS, max(1000, 2**23 // max(d, 1))))


def _edges() -> np.ndarray:
    """Score thresholds of the histogram, index k: predict positive iff bin >= k."""
    k = np.arange(_HIST_BINS + 1, dtype=np.float64)
    edges = (k - _HIST_CENTRE) / _BINS_PER_UNIT
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def _check_real(
    value: Any,
    name: str,
    where: str,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number in the interval, else raise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if low_open else value >= low):
        if value < high if high_open else value <= high:
            return float(value)
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    raise ValueError(
        f"The {name!r} parameter of {where} must be a float in {left}{low}, {high}{right}. "
        f"Got {value!r} instead."
    )


def _auto_or_real(value: Any, name: str, where: str, low: float, low_open: bool) -> None:
    if value != "auto":
        try:
            _check_real(value, name, where, low, low_open=low_open)
        except ValueError:
            raise ValueError(
                f"The {name!r} parameter of {where} must be 'auto' or a float "
                f"{'>' if low_open else '>='} {low}. Got {value!r} instead."
            ) from None


@dataclass(frozen=True)
class LinearLearnerConfig:
    """What must match for two linear learner states to merge (SageMaker names).

    Parameters
    ----------
    predictor_type : {'regressor', 'binary_classifier', 'multiclass_classifier'}
        The kind of label. Binary labels are 0/1 (or -1/+1, as in LIBSVM files);
        multiclass labels are 0 .. num_classes - 1.
    feature_dim : int, optional
        Number of features ``d``; inferred from the first block when omitted.
    num_classes : int, optional
        Number of classes (3 or more); required for multiclass_classifier, ignored otherwise.
    loss : {'auto', 'squared_loss', 'absolute_loss', 'eps_insensitive_squared_loss', 'eps_insensitive_absolute_loss', 'quantile_loss', 'huber_loss', 'logistic', 'hinge_loss', 'softmax_loss'}
        The training loss. 'auto' is squared_loss (regressor), logistic (binary) or
        softmax_loss (multiclass). squared_loss also keeps the exact statistics.
    num_models : int
        The most models trained side by side. Only hyperparameters left at 'auto' vary
        across them (learning rate on a log grid, wd over 0 and 1e-6 .. 1e-2); their
        distinct combinations, at most num_models, are trained.
    learning_rate : float | str
        Step size, or 'auto' for a grid of them (one per packed model).
    wd : float | str
        L2 regularization, per-example mean scaling (see the module notes), or 'auto'.
    l1 : float | str
        L1 regularization, same scaling; 'auto' means 0 for the packed models (the
        exact path takes any l1 at derive time).
    optimizer : {'auto', 'sgd', 'adam', 'rmsprop'}
        'auto' is sgd on standardized features when normalize_data, else adam.
    beta_1 : float
        Adam's first-moment decay.
    beta_2 : float
        Adam's second-moment decay (also RMSProp's decay).
    mini_batch_size : int
        Rows per optimizer step. Rows are carried across block boundaries, so the
        steps do not depend on how the input is cut into blocks.
    normalize_data : bool
        Take steps and apply wd/l1 in the space of features standardized with the mean
        and standard deviation of the first num_point_for_scaler rows (the exact path
        can choose at derive time, from the moments of all rows).
    normalize_label : bool, optional
        Standardize the label of a regressor (default: true for regressors, and never
        for classifiers, as SageMaker's 'auto').
    num_point_for_scaler : int
        The first rows, whose moments fix the standardization before any step (as
        SageMaker's scaler sample; its default is 10000, see the notes). 0: running
        moments of every row trained on, updated at every step.
    use_bias : bool
        Fit an intercept (never regularized). Without it, data is scaled but not centred.
    positive_example_weight_mult : float | str
        Weight of positive examples in a binary classifier's loss, or 'balanced'
        (negatives / positives, from the counts seen so far).
    quantile : float
        The quantile estimated by quantile_loss, in (0, 1).
    loss_insensitivity : float
        Half-width of the zero-loss band of the eps-insensitive losses.
    huber_delta : float
        Where huber_loss turns from quadratic to linear.
    epochs : int
        Passes over a bounded input (a stream is one pass); see the module notes.
    validation_fraction : float | str
        The share of rows, chosen by a hash of their content (the same rows in every
        epoch, block and worker), set aside from training as validation rows, in [0,
        0.5]; 'auto' is 0.1 when epochs > 1 and 0 for one pass (whose progressive
        validation is already out of sample). The state keeps at most 10,000 of them
        (fewer above 800 features), a uniform sample; set-aside rows past those train.
    early_stopping_patience : int
        Epochs without improvement of the best validation loss after which the
        remaining epochs leave the state as it is (needs validation rows).
    early_stopping_tolerance : float
        The relative improvement of the best validation loss that counts as one.
    """

    predictor_type: str
    feature_dim: int | None = None
    num_classes: int | None = None
    loss: str = "auto"
    num_models: int = 32
    learning_rate: float | str = "auto"
    wd: float | str = "auto"
    l1: float | str = "auto"
    optimizer: str = "auto"
    beta_1: float = 0.9
    beta_2: float = 0.999
    mini_batch_size: int = 1000
    normalize_data: bool = True
    normalize_label: bool | None = None
    num_point_for_scaler: int = 1000
    use_bias: bool = True
    positive_example_weight_mult: float | str = 1.0
    quantile: float = 0.5
    loss_insensitivity: float = 0.01
    huber_delta: float = 1.0
    epochs: int = 1
    validation_fraction: float | str = "auto"
    early_stopping_patience: int = 3
    early_stopping_tolerance: float = 0.001

    def __post_init__(self) -> None:
        where = "LinearLearnerConfig"
        check_choice(self.predictor_type, "predictor_type", where, _PREDICTORS)
        if self.feature_dim is not None:
            check_int(self.feature_dim, "feature_dim", where, 1)
        if self.predictor_type == "multiclass_classifier":
            if self.num_classes is None:
                raise ValueError(
                    "The 'num_classes' parameter of LinearLearnerConfig is required when "
                    "predictor_type='multiclass_classifier'."
                )
            check_int(self.num_classes, "num_classes", where, 3, 1_000_000)
        elif self.num_classes is not None:
            check_int(self.num_classes, "num_classes", where, 2, 1_000_000)
        allowed = ("auto", *_LOSSES[self.predictor_type])
        if self.loss not in allowed:
            raise ValueError(
                f"The 'loss' parameter of {where} must be one of {list(allowed)} for "
                f"predictor_type={self.predictor_type!r}. Got {self.loss!r} instead."
            )
        check_int(self.num_models, "num_models", where, 1, 1024)
        _auto_or_real(self.learning_rate, "learning_rate", where, 0.0, low_open=True)
        _auto_or_real(self.wd, "wd", where, 0.0, low_open=False)
        _auto_or_real(self.l1, "l1", where, 0.0, low_open=False)
        check_choice(self.optimizer, "optimizer", where, _OPTIMIZERS)
        _check_real(self.beta_1, "beta_1", where, 0.0, 1.0, high_open=True)
        _check_real(self.beta_2, "beta_2", where, 0.0, 1.0, high_open=True)
        check_int(self.mini_batch_size, "mini_batch_size", where, 1)
        check_bool(self.normalize_data, "normalize_data", where)
        if self.normalize_label is not None:
            check_bool(self.normalize_label, "normalize_label", where)
        check_int(self.num_point_for_scaler, "num_point_for_scaler", where, 0)
        check_bool(self.use_bias, "use_bias", where)
        if self.positive_example_weight_mult not in ("balanced", "auto"):
            try:
                _check_real(
                    self.positive_example_weight_mult,
                    "positive_example_weight_mult",
                    where,
                    0.0,
                    low_open=True,
                )
            except ValueError:
                raise ValueError(
                    f"The 'positive_example_weight_mult' parameter of {where} must be a "
                    f"float > 0, 'balanced' or 'auto'. Got "
                    f"{self.positive_example_weight_mult!r} instead."
                ) from None
        _check_real(self.quantile, "quantile", where, 0.0, 1.0, low_open=True, high_open=True)
        _check_real(self.loss_insensitivity, "loss_insensitivity", where, 0.0)
        _check_real(self.huber_delta, "huber_delta", where, 0.0, low_open=True)
        check_int(self.epochs, "epochs", where, 1)
        if self.validation_fraction != "auto":
            try:
                _check_real(self.validation_fraction, "validation_fraction", where, 0.0, 0.5)
            except ValueError:
                raise ValueError(
                    f"The 'validation_fraction' parameter of {where} must be 'auto' or a "
                    f"float in [0, 0.5]. Got {self.validation_fraction!r} instead."
                ) from None
        check_int(self.early_stopping_patience, "early_stopping_patience", where, 1)
        _check_real(self.early_stopping_tolerance, "early_stopping_tolerance", where, 0.0, 1.0)

    # --- what the fields resolve to ---------------------------------------------------
    @property
    def resolved_loss(self) -> str:
        return _DEFAULT_LOSS[self.predictor_type] if self.loss == "auto" else self.loss

    @property
    def resolved_optimizer(self) -> str:
        if self.optimizer == "auto":
            return "sgd" if self.normalize_data else "adam"
        return self.optimizer

    @property
    def scales_label(self) -> bool:
        """Whether a regressor's label is standardized (classifiers: never)."""
        if self.predictor_type != "regressor":
            return False
        return True if self.normalize_label is None else self.normalize_label

    @property
    def resolved_validation_fraction(self) -> float:
        """The share of rows set aside for validation ('auto': 0.1 if epochs > 1)."""
        if self.validation_fraction == "auto":
            return 0.1 if self.epochs > 1 else 0.0
        return float(self.validation_fraction)

    @property
    def n_outputs(self) -> int:
        """Scores per model: the number of classes for softmax, else 1."""
        return self.num_classes if self.predictor_type == "multiclass_classifier" else 1

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(learning_rate, wd, l1) of each packed model, each of shape (m,).

        Only 'auto' hyperparameters vary: learning rates on a log grid (lr-major), wd over
        0 and a log grid from 1e-6 to 1e-2; m = the number of distinct combinations, at
        most ``num_models``.
        """
        budget, opt = self.num_models, self.resolved_optimizer
        lr_auto, wd_auto = self.learning_rate == "auto", self.wd == "auto"
        if lr_auto and wd_auto:
            n_wd = 4 if budget >= 8 else (2 if budget >= 4 else 1)
            n_lr = -(-budget // n_wd)
        else:
            n_lr, n_wd = (budget, 1) if lr_auto else ((1, budget) if wd_auto else (1, 1))
        if not lr_auto:
            lrs = np.array([float(self.learning_rate)])
        elif n_lr == 1:
            lrs = np.array([_LR_SINGLE[opt]])
        else:
            lrs = np.logspace(*_LR_RANGE[opt], n_lr)
        if lr_auto and 1 < n_lr < 8:  # the middle of the 8-point grid, not its extremes
            lrs = np.logspace(*_LR_RANGE[opt], 8)[(8 - n_lr) // 2 :][:n_lr]
        if not wd_auto:
            wds = np.array([float(self.wd)])
        else:
            wds = np.r_[0.0, np.logspace(-6, -2, n_wd - 1)] if n_wd > 1 else np.array([0.0])
        pairs = np.array([(a, b) for a in lrs for b in wds][:budget])
        l1 = 0.0 if self.l1 == "auto" else float(self.l1)
        return pairs[:, 0].copy(), pairs[:, 1].copy(), np.full(len(pairs), l1)


# --- labels ------------------------------------------------------------------------------
def _labels(block: Block, config: LinearLearnerConfig, owner: str) -> np.ndarray:
    """The block's labels as float64, checked for the predictor type (binary -> 0/1).

    A bad label raises :class:`BadInputError` naming the first bad row of the block (0-based),
    its value, the labels the predictor type accepts, how many of the block's labels are bad
    and the block's origin (file and offset), so the record can be found in the input.
    """
    kind = config.predictor_type
    if kind == "binary_classifier":
        return binary_labels(block, owner)
    labels = block_labels(block, owner)
    bad = ~np.isfinite(labels)
    if kind == "multiclass_classifier":
        bad |= (labels < 0) | (labels >= config.num_classes) | (labels != np.round(labels))
        need = (
            f"an integer in [0, {config.num_classes - 1}] for a multiclass_classifier with "
            f"num_classes={config.num_classes}"
        )
    else:
        need = "a finite number for a regressor"
    if bad.any():
        lead = "{owner}: the label at row {row} is {value}; it must be " + need + "."
        raise label_error(owner, labels, bad, lead, origin_note(block))
    return labels


# --- losses ------------------------------------------------------------------------------
def _pointwise(
    loss: str, s: np.ndarray, y: np.ndarray, config: LinearLearnerConfig, grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (and its derivative in the score) for scores ``s`` (rows, c) and targets
    ``y`` (rows, 1) in training units (binary targets 0/1)."""
    if loss == "logistic":
        # The sigmoid through tanh (numpy's vectorized tanh is several times faster
        # than a where()).
        value = log_loss(s, y)
        if not grad:
            return value, None
        p = np.tanh(0.5 * s)
        p *= 0.5
        p += 0.5 - y
        return value, p
    if loss == "hinge_loss":
        sign = 2 * y - 1
        margin = 1 - sign * s
        return np.maximum(margin, 0), (-sign * (margin > 0)) if grad else None
    r = s - y
    if loss == "squared_loss":
        return 0.5 * r * r, r if grad else None
    if loss == "absolute_loss":
        return np.abs(r), np.sign(r) if grad else None
    if loss == "eps_insensitive_squared_loss":
        excess = np.maximum(np.abs(r) - config.loss_insensitivity, 0)
        return 0.5 * excess * excess, np.sign(r) * excess if grad else None
    if loss == "eps_insensitive_absolute_loss":
        excess = np.maximum(np.abs(r) - config.loss_insensitivity, 0)
        return excess, np.sign(r) * (excess > 0) if grad else None
    if loss == "quantile_loss":
        tau = config.quantile
        value = np.maximum(-tau * r, (1 - tau) * r)
        return value, np.where(r > 0, 1 - tau, -tau).astype(s.dtype) if grad else None
    if loss == "huber_loss":
        delta, a = config.huber_delta, np.abs(r)
        value = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
        return value, np.clip(r, -delta, delta) if grad else None
    raise AssertionError(loss)


def _softmax_loss(s: np.ndarray, y: np.ndarray, grad: bool) -> tuple[np.ndarray, Any, Any]:
    """Cross-entropy for scores (rows, c, k) and int classes (rows,): loss (rows, c),
    gradient (rows, c, k) and whether the arg-max is right (rows, c)."""
    shifted = s - s.max(axis=2, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=2, keepdims=True)
    rows = np.arange(len(y))
    value = np.log(total[:, :, 0]) - shifted[rows, :, y]
    correct = np.argmax(s, axis=2) == y[:, None]
    if not grad:
        return value, None, correct
    probs = exp / total
    probs[rows, :, y] -= 1
    return value, probs, correct


# --- moments -----------------------------------------------------------------------------
#: Multiply-adds of a mini-batch's forward product up to which the packed step runs
#: BLAS on one thread: waking OpenBLAS's threads for each small product costs more than
#: the product (the 64-feature dense benchmark: 20% faster end to end on 2 cores).
_ONE_THREAD_WORK = 2**24
_BLAS_CONTROL: Any = None  # threadpoolctl's BLAS controller, False if unavailable
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # updates running with the limit (several threads may train at once)
_BLAS_LIMIT: Any = None


def _blas_threads(work: int) -> Any:
    """A context that keeps BLAS on one thread for a training step of ``work``
    multiply-adds if it is small, via ``threadpoolctl`` when installed (it comes with
    scikit-learn); else, or for large steps, nothing changes."""
    global _BLAS_CONTROL
    if work > _ONE_THREAD_WORK:
        return contextlib.nullcontext()
    if _BLAS_CONTROL is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROL = ThreadpoolController().select(user_api="blas") or False
        except Exception:  # not installed, or an unknown BLAS: leave threads alone
            _BLAS_CONTROL = False
    if not _BLAS_CONTROL:
        return contextlib.nullcontext()
    return _one_blas_thread()


@contextlib.contextmanager
def _one_blas_thread() -> Any:
    """BLAS on one thread while any update needs it; the first sets the limit, the last
    restores the original thread counts (so concurrent updates cannot leave it set)."""
    global _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_LIMIT = _BLAS_CONTROL.limit(limits=1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


def _weighted_colsum(weights: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``weights @ a`` for (rows,) weights and a (rows, c) array, by ``einsum``.

    Not through BLAS: on a mini-batch, OpenBLAS's threaded gemv spends far more time
    waking its threads than computing (in a Beam pipeline, up to 40% of the training
    step on 2 cores). Same float32 sums in another order: the last bits may differ.
    """
    return np.einsum("i,ij->j", weights, a)


def _column_moments(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Column means and centred sums of squares (float64) of a dense or CSR block.

    For CSR the centred sum is taken over the stored entries plus the implicit zeros
    (``(rows - nnz_j) * mean_j^2``): every term is a square of a centred value, so no
    cancellation, and the block is never densified.
    """
    rows = x.shape[0]
    if sp.issparse(x):
        d = x.shape[1]
        mean = np.bincount(x.indices, weights=x.data, minlength=d) / rows
        stored = np.bincount(x.indices, minlength=d)
        centred = x.data.astype(np.float64) - mean[x.indices]
        m2 = np.bincount(x.indices, weights=centred * centred, minlength=d)
        return mean, m2 + (rows - stored) * mean * mean
    # float64 throughout: a constant column must come out with exactly zero variance.
    # Column sums as a product with a ones vector (BLAS), not a reduction with a cast.
    x = np.asarray(x, dtype=np.float64)
    ones = np.ones(rows)
    mean = ones @ x / rows
    centred = x - mean
    centred *= centred
    return mean, ones @ centred


def _merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    if n_a == 0:
        return n_b, mean_b.copy(), m2_b.copy()
    n, mean, delta, weight = pairwise_mean(n_a, mean_a, n_b, mean_b)
    return n, mean, m2_a + m2_b + weight * delta * delta


def _times(x: Any, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for a dense or CSR mini-batch ``x`` (b, d) and dense ``w`` (d, c); CSR
    through scipy's kernel without its per-call checks (:mod:`beam_ml.core.sparse`)."""
    if not sp.isspmatrix_csr(x):
        return x @ w if not sp.issparse(x) else np.asarray(x @ w)
    return csr_times(x.data, x.indices, x.indptr, x.shape[1], w)


def _transpose_times(x: Any, g: np.ndarray) -> np.ndarray:
    """``x.T @ g`` for a dense or CSR ``x`` (b, d) and dense ``g`` (b, c): (d, c)."""
    if not sp.isspmatrix_csr(x):
        return x.T @ g if not sp.issparse(x) else np.asarray(x.T @ g)
    return csr_transpose_times(x.data, x.indices, x.indptr, x.shape[1], g)


def _rows(x: Any, start: int, stop: int, copy: bool = False) -> Any:
    if sp.isspmatrix_csr(x):
        # Rows start:stop on the same arrays (half the cost of scipy's slicing, a copy).
        stop = min(stop, x.shape[0])
        lo, hi = int(x.indptr[start]), int(x.indptr[stop])
        return sp.csr_matrix(
            (x.data[lo:hi], x.indices[lo:hi], x.indptr[start : stop + 1] - lo),
            shape=(stop - start, x.shape[1]),
            copy=copy,
        )
    part = x[start:stop]
    return part.copy() if copy else part


def _rows_where(x: Any, mask: np.ndarray) -> Any:
    return x[np.flatnonzero(mask)] if sp.issparse(x) else x[mask]


def _stack(a: Any, b: Any) -> Any:
    if sp.issparse(a) or sp.issparse(b):
        return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)], format="csr")
    return np.vstack([a, b]) if a.dtype == b.dtype else np.vstack([a, b]).astype(np.float64)


# --- the elastic net on a Gram matrix --------------------------------------------------------
def _elastic_net(
    gram: np.ndarray,
    cross: np.ndarray,
    wd: float,
    l1: float,
    tol: float = 1e-13,
    max_sweeps: int = 10_000,
) -> np.ndarray:
    """argmin_w  w^T gram w / 2 - cross . w + wd/2 ||w||^2 + l1 ||w||_1.

    Cyclic coordinate descent with covariance updates: the gradient ``q = cross - gram w``
    is kept up to date with one column per changed coordinate, so a sweep costs O(d^2)
    and never touches the data.
    """
    d = len(cross)
    w, q = np.zeros(d), cross.astype(np.float64).copy()
    diag = np.diag(gram) + wd
    for _ in range(max_sweeps):
        biggest, largest = 0.0, 0.0
        for j in range(d):
            if diag[j] <= 0:
                continue
            rho = q[j] + gram[j, j] * w[j]
            new = math.copysign(max(abs(rho) - l1, 0.0), rho) / diag[j]
            change = new - w[j]
            if change != 0.0:
                q -= gram[:, j] * change
                w[j] = new
                biggest = max(biggest, abs(change))
            largest = max(largest, abs(new))
        if biggest <= tol * max(largest, 1e-300):
            return w
    _LOG.warning(
        "linear_learner: the elastic net did not converge in %d sweeps (last change %.3g "
        "of the largest weight); try normalize_data=True.",
        max_sweeps,
        biggest / max(largest, 1e-300),
    )
    return w


def _dense_row_keys(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`~beam_ml.nn.engine.row_keys` of dense rows, without building CSR rows:
    the same keys (a row's key does not depend on how it is stored)."""
    with np.errstate(over="ignore"):
        d = x.shape[1]
        columns = np.arange(d, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        entry = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        np.left_shift(entry, np.uint64(32), out=entry)
        np.bitwise_xor(entry, columns, out=entry)
        # splitmix64's finalizer (engine._mix64) in place: two buffers, no array per step.
        spare = np.empty_like(entry)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, 0)):
            np.right_shift(entry, np.uint64(shift), out=spare)
            np.bitwise_xor(entry, spare, out=entry)
            if factor:
                np.multiply(entry, np.uint64(factor), out=entry)
        entry[x == 0] = 0  # only stored (non-zero) entries are hashed
        rows = entry.sum(axis=1, dtype=np.uint64)
        label = y.astype(np.float64).view(np.uint64)
        return _mix64(rows + _mix64(label ^ np.uint64(0xD1B54A32D192ED03)))


class _ValidationRows:
    """The validation rows a state keeps: a bounded uniform sample of the rows whose hash
    falls in the validation fraction, with the number of times each was seen.

    A row is set aside when its :func:`~beam_ml.nn.engine.row_keys` hash (of its
    columns, values and label) is in the lowest ``fraction`` of the key space: the same
    rows in any block, worker or epoch. The sample keeps the ``size`` distinct rows of
    smallest key (a bottom-k sketch: uniform, and the same however the rows were split)
    and, unlike FM's merge sample, *how many times* each occurs, so repeated rows (a9a:
    26,008 distinct rows of 32,561) weigh as in the data. Counts are kept in two parts:
    ``base``, those of the epochs closed before this state's start (the same on every
    replica of an epoch, so a merge takes one side's), and ``added``, rows new in this
    epoch (summed by a merge: each replica saw other rows). Only the first epoch and
    training resumed on new rows (epochs past ``config.epochs``) add rows; later epochs
    of the same data only keep the sampled rows out of training. A set-aside row the
    sample cannot take (its key above the largest kept while the sample is full) trains
    like any other. Memory: ``size`` rows.
    """

    def __init__(self, size: int, n_features: int, fraction: float):
        self.size, self.n_features, self.fraction = size, n_features, fraction
        self.features = sp.csr_matrix((0, n_features), dtype=np.float32)
        self.labels = np.zeros(0)
        self.keys = np.zeros(0, dtype=np.uint64)
        self.base, self.added = np.zeros(0), np.zeros(0)

    @property
    def n_rows(self) -> int:
        """Rows in the sample, each as many times as seen."""
        return int(self.base.sum() + self.added.sum())

    @property
    def weights(self) -> np.ndarray:
        return self.base + self.added

    def set_aside(self, x: Any, y: np.ndarray, add: bool) -> np.ndarray | None:
        """Which rows of ``x`` (dense or CSR) train (a bool mask; None: all of them);
        with ``add`` the set-aside ones enter the sample."""
        keys = row_keys(x, y) if sp.issparse(x) else _dense_row_keys(x, y)
        held = keys < np.uint64(self.fraction * 2.0**64)  # fraction <= 0.5
        full = len(self.keys) == self.size
        if full:  # a key above the largest kept is not (and can never be) in the sample
            held &= keys <= self.keys[-1]
        if not held.any():
            return None
        if add:
            rows = np.flatnonzero(held)
            part = sp.csr_matrix(x[rows])
            self._union(part, y[rows], keys[rows], np.zeros(len(rows)), np.ones(len(rows)))
        return ~held

    def _union(self, x, y, keys, base, added) -> None:
        """Fold rows (with counts) in: equal keys add their counts, the ``size``
        smallest keys stay."""
        all_keys = np.concatenate([self.keys, keys])
        unique, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
        base_sum = np.bincount(inverse, weights=np.concatenate([self.base, base]))
        added_sum = np.bincount(inverse, weights=np.concatenate([self.added, added]))
        keep = slice(0, self.size)
        self.features = sp.vstack([self.features, x], format="csr")[first[keep]]
        self.labels = np.concatenate([self.labels, y])[first[keep]]
        self.keys = unique[keep]
        self.base, self.added = base_sum[keep], added_sum[keep]

    def merged(self, other: _ValidationRows) -> _ValidationRows:
        """Both sides' rows: ``added`` counts sum, ``base`` counts are this side's (the
        same start on both sides) or, for rows only the other side has, the other's."""
        out = self.copy()
        if len(other.keys):
            mine = np.isin(other.keys, self.keys)
            base = np.where(mine, 0.0, other.base)
            out._union(other.features, other.labels, other.keys, base, other.added)
        return out

    def restarted(self) -> _ValidationRows:
        """The sample at the start of the next epoch: every count is now ``base``."""
        out = self.copy()
        out.base, out.added = self.base + self.added, np.zeros_like(self.added)
        return out

    def copy(self) -> _ValidationRows:
        out = _ValidationRows(self.size, self.n_features, self.fraction)
        out.features, out.labels, out.keys = self.features.copy(), self.labels.copy(), self.keys
        out.base, out.added = self.base.copy(), self.added.copy()
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        x = self.features
        return {
            "validation_data": x.data,
            "validation_indices": x.indices.astype(np.int32),  # feature_dim < 2^31
            "validation_indptr": x.indptr.astype(np.int64),
            "validation_labels": self.labels,
            "validation_keys": self.keys,
            "validation_counts": np.stack([self.base, self.added]),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Any, size: int, n_features: int, fraction: float
    ) -> _ValidationRows:
        out = cls(size, n_features, fraction)
        if arrays.get("validation_keys") is None:  # states of before 2026-12-04: none
            return out
        indptr = arrays["validation_indptr"]
        out.features = sp.csr_matrix(
            (arrays["validation_data"], arrays["validation_indices"], indptr),
            shape=(len(indptr) - 1, n_features),
        )
        out.labels, out.keys = arrays["validation_labels"], arrays["validation_keys"]
        out.base, out.added = arrays["validation_counts"]
        rows = out.features.shape[0]
        if not (out.labels.shape == out.keys.shape == out.base.shape == (rows,)) or rows > size:
            raise IncompatibleStateError(
                f"The state's validation sample holds {rows} rows, {out.labels.shape[0]} "
                f"labels and {out.keys.shape[0]} keys; expected one of each, at most {size}."
            )
        if np.any(np.diff(out.keys) <= 0) or out.keys.dtype != np.uint64:
            raise IncompatibleStateError("The state's validation sample keys are not increasing.")
        return out


@register
class LinearLearnerState(TrainingState):
    """One-pass linear learner state: moments, exact statistics, packed models.

    Attributes
    ----------
    n : int
        Rows seen in this epoch (including those waiting for a full mini-batch).
    epoch : int
        1 for the first pass over the data; see :meth:`continued`.
    steps : int
        Optimizer steps taken (over all epochs).
    moments_n, moments_mean, moments_m2 : float, ndarray of shape (d + 1,)
        Count, mean and centred sum of squares of the features and the label over the
        scaler's sample (the first ``num_point_for_scaler`` rows; 0 while it fills).
    class_counts : ndarray of shape (n_classes,)
        Rows per class (classifiers), for 'balanced' weights.
    exact_mean, exact_scatter : ndarray of shape (d + 1,) and (d + 1, d + 1)
        Squared loss only: mean and centred scatter of ``[x, y]`` over all rows.
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
    validation : _ValidationRows or None
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
    CONTINUES_ON_RESUME = True  # new data trains the packed SGD models on (core/state.py)

    def __init__(self, config: LinearLearnerConfig):
        super().__init__(config)
        self.n = 0
        self.epoch = 1
        self.steps = 0
        self.stepped = 0  # rows trained on in this epoch
        self.d: int | None = None
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
        self.validation: _ValidationRows | None = None
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
    def has_exact(self) -> bool:
        """Whether the state holds the exact statistics (squared loss, d small enough)."""
        return getattr(self, "exact_scatter", None) is not None

    @property
    def n_pending(self) -> int:
        return 0 if self.pending_y is None else len(self.pending_y)

    def _allocate(self, d: int) -> None:
        m, cols = self.m, self.m * self.k
        self.d = d
        self.moments_n = 0.0
        self.moments_mean, self.moments_m2 = np.zeros(d + 1), np.zeros(d + 1)
        self.class_counts = np.zeros(2 if self._binary else (self.k if self._multiclass else 0))
        self.exact_mean = self.exact_scatter = None
        if self._loss == "squared_loss":
            if d <= MAX_EXACT_FEATURES:
                self.exact_mean, self.exact_scatter = np.zeros(d + 1), np.zeros((d + 1, d + 1))
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
        self.hist = np.zeros((2 * m, 2, _HIST_BINS)) if self._binary else None
        self.diverged = np.zeros(m, dtype=bool)
        fraction = self.config.resolved_validation_fraction
        if fraction > 0:
            self.validation = _ValidationRows(_validation_rows(d), d, fraction)
            # Per candidate (m last iterates, then m averages), its parameters at the end
            # of the epoch with its lowest validation loss so far: columns as [coef | avg].
            self.best_weights, self.best_bias = np.zeros((d, 2 * cols)), np.zeros(2 * cols)
            self.best_loss, self.best_epoch = np.full(2 * m, np.inf), np.zeros(2 * m)

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> LinearLearnerState:
        block = as_block(block, n_features=self.d, owner="LinearLearnerState")
        y = _labels(block, self.config, "LinearLearnerState")
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
        train = self.validation.set_aside(x, y, add)
        if train is None:
            return x, y
        return _rows_where(x, train), y[train]

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
                self.pending_x = _stack(self.pending_x, x)
                self.pending_y = np.concatenate([self.pending_y, y])
            else:
                self.pending_x, self.pending_y = _rows(x, 0, x.shape[0], copy=copy), y.copy()
            sample = self.config.num_point_for_scaler
            if self.n_pending < sample:
                return
            self._fix_scaler(self.pending_x[:sample], self.pending_y[:sample])
            x, y, copy = self.pending_x, self.pending_y, False
            self.pending_x = self.pending_y = None
        batch, start, rows = self.config.mini_batch_size, 0, x.shape[0]
        if self.n_pending:
            take = min(batch - self.n_pending, rows)
            self.pending_x = _stack(self.pending_x, _rows(x, 0, take))
            self.pending_y = np.concatenate([self.pending_y, y[:take]])
            start = take
            if self.n_pending == batch:
                px, py = self.pending_x, self.pending_y
                self.pending_x = self.pending_y = None
                self._step(px, py)
        while rows - start >= batch:
            self._step(_rows(x, start, start + batch), y[start : start + batch])
            start += batch
        if start < rows:
            # Copied: the state must not alias (or later see changes to) the caller's block.
            self.pending_x = _rows(x, start, rows, copy=copy)
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
            self._step(_rows(px, start, start + batch), py[start : start + batch])

    def _fix_scaler(self, x: Any, y: np.ndarray) -> None:
        mean, m2 = _column_moments(x)
        y_mean = float(y.mean())
        self.moments_n = float(x.shape[0])
        self.moments_mean = np.append(mean, y_mean)
        self.moments_m2 = np.append(m2, float(((y - y_mean) ** 2).sum()))

    def _absorb_exact(self, x: Any, y: np.ndarray) -> None:
        """Fold [x, y] into the exact mean and centred scatter (pairwise merge per chunk)."""
        d, rows = self.d, x.shape[0]
        step = max(1, 2**22 // (d + 1))  # bound the dense chunk at ~32 MiB
        for start in range(0, rows, step):
            part = x[start : start + step]
            part = part.toarray() if sp.issparse(part) else part
            z = np.empty((part.shape[0], d + 1))
            z[:, :d], z[:, d] = part, y[start : start + step]
            mean_b = z.mean(axis=0)
            z -= mean_b
            scatter_b = z.T @ z
            n_a = self.n + start
            if n_a == 0:
                self.exact_mean, self.exact_scatter = mean_b, scatter_b
                continue
            _, self.exact_mean, delta, weight = pairwise_mean(
                n_a, self.exact_mean, part.shape[0], mean_b
            )
            self.exact_scatter = self.exact_scatter + scatter_b + weight * np.outer(delta, delta)

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
        scores = _times(x, weights)
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
            last_loss, grad, last_ok = _softmax_loss(last.reshape(b, m, k), cls, True)
            avg_loss, _, avg_ok = _softmax_loss(avg.reshape(b, m, k), cls, False)
            grad = grad.reshape(b, cols)
            correct = np.concatenate([last_ok.sum(axis=0), avg_ok.sum(axis=0)])
        else:
            t_col = target.astype(dtype)[:, None]
            last_loss, grad = _pointwise(self._loss, last, t_col, cfg, True)
            avg_loss, _ = _pointwise(self._loss, avg, t_col, cfg, False)
            if self._binary:
                # Right answers at score 0: sum(1 - y) + (2y - 1) . [s > 0], one product.
                positive = (scores > 0).astype(dtype)
                correct = (b - y.sum()) + _weighted_colsum(2 * t_col[:, 0] - 1, positive)
                # A long pass's histograms sample its mini-batches: all in the first
                # 2^17 rows, then every 2nd, 4th ... (the stride doubles as the pass
                # does), each counted stride times: well over 10^5 rows for any
                # threshold, at a fraction of the cost of binning every score.
                stride = 1 << ((self.stepped - b) // _HIST_ALL_ROWS).bit_length()
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
        sums = [_weighted_colsum(per_row, last_loss), _weighted_colsum(per_row, avg_loss)]
        loss_sum = np.concatenate(sums).astype(np.float64)
        self.progress[0] += loss_sum
        self.progress[1] += t * loss_sum
        self.progress[2] += correct
        self.progress[3] += w_sum
        self.progress[4] += t * w_sum
        # Gradient in the standardized space z = (x - mean) / scale, computed without
        # centring x: z^T r = (x^T r - mean * sum(r)) / scale.
        grad /= b
        g_sum = _weighted_colsum(np.ones(b, dtype=grad.dtype), grad).astype(np.float64)
        g_x = np.asarray(_transpose_times(x, grad), dtype=np.float64)
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
        alpha = (1.0 + _AVERAGING_ETA) / (t + _AVERAGING_ETA)
        self.avg_coef += (self.coef - self.avg_coef) * alpha
        self.avg_intercept += (self.intercept - self.avg_intercept) * alpha
        # On standardized features and labels sensible weights are O(1)..O(100); far
        # beyond that (or non-finite) a model's learning rate is too large for the data.
        blown = ~(np.abs(moved) < _DIVERGED).all(axis=0) | ~(np.abs(step[d]) < _DIVERGED)
        if blown.any():
            self._diverge(blown)

    def _absorb_moments(self, x: Any, y: np.ndarray) -> None:
        """Fold a mini-batch into the scaler's moments."""
        mean_b, m2_b = _column_moments(x)
        y_mean = y.mean()
        self.moments_n, self.moments_mean, self.moments_m2 = _merge_moments(
            self.moments_n,
            self.moments_mean,
            self.moments_m2,
            float(x.shape[0]),
            np.append(mean_b, y_mean),
            np.append(m2_b, ((y - y_mean) ** 2).sum()),
        )

    def _direction(self, g: np.ndarray, t: int) -> np.ndarray:
        cfg = self.config
        if self._optimizer == "sgd":
            return g
        b2 = cfg.beta_2
        self.opt_v *= b2
        self.opt_v += (1 - b2) * g * g
        denom = np.sqrt(self.opt_v / (1 - b2**t)) + _ADAM_EPS
        if self._optimizer == "rmsprop":
            return g / denom
        b1 = cfg.beta_1
        self.opt_m *= b1
        self.opt_m += (1 - b1) * g
        return self.opt_m / (1 - b1**t) / denom

    def _histogram(self, scores: np.ndarray, y: np.ndarray, weight: float) -> None:
        """Add every candidate's scores (b, 2 m) to its negatives/positives histograms."""
        self.hist += weight * _bin_counts(scores, y)

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
                loss, _, _ = _softmax_loss(scores.reshape(b, 2 * m, k), cls, False)
            else:
                loss, _ = _pointwise(self._loss, scores, target[:, None], cfg, False)
            weight = self._example_weights(y)
            weight = count if weight is None else weight * count
            mean = weight @ loss / weight.sum()
        mean = np.where(np.isfinite(mean), mean, np.inf)
        counts = _bin_counts(scores, y, count) if hist and self._binary else None
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
            "progressive_loss": _finite(progressive.min()),
            "stopped": self.stopped,
        }
        if not self._validating():
            return entry, None
        losses, _ = self._validation_scores(*self._current(), hist=False)
        losses = np.where(np.tile(self.diverged, 2), np.inf, losses)
        entry.update(
            validation_rows=self.validation.n_rows,
            validation_loss=_finite(losses.min()),
            best_validation_loss=_finite(min(losses.min(), self.best_loss.min())),
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
            state.exact_mean = np.zeros_like(state.exact_mean)
            state.exact_scatter = np.zeros_like(state.exact_scatter)
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
        if self.has_exact and later.n:
            _, out.exact_mean, delta, weight = pairwise_mean(
                self.n, self.exact_mean, later.n, later.exact_mean
            )
            out.exact_scatter = (
                self.exact_scatter + later.exact_scatter + weight * np.outer(delta, delta)
            )
        elif self.has_exact:
            out.exact_mean, out.exact_scatter = self.exact_mean.copy(), self.exact_scatter.copy()
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
            _, self.exact_mean, delta, weight = pairwise_mean(
                self.n, self.exact_mean, other.n, other.exact_mean
            )
            self.exact_scatter = (
                self.exact_scatter + other.exact_scatter + weight * np.outer(delta, delta)
            )
        # The rows each side's packed models have learnt from (this epoch) weigh them.
        w_a, w_b = self.stepped, other.stepped
        if self.epoch == 1 and other.moments_n:  # two scaler samples: their union
            self.moments_n, self.moments_mean, self.moments_m2 = _merge_moments(
                self.moments_n,
                self.moments_mean,
                self.moments_m2,
                other.moments_n,
                other.moments_mean,
                other.moments_m2,
            )
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
        if self.validation is not None:  # exact: see _ValidationRows
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
            _CRITERIA,
        )
        _check_real(target_recall, "target_recall", where, 0.0, 1.0)
        _check_real(target_precision, "target_precision", where, 0.0, 1.0)
        _check_real(f_beta, "f_beta", where, 0.0, low_open=True)
        check_choice(solver, "solver", where, _SOLVERS)
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
        wd = _check_real(wd, "wd", where, 0.0)
        l1 = _check_real(l1, "l1", where, 0.0)
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
            w = _ridge(gram, cross, wd)
            solver = "ridge (closed form)"
        else:
            w = _elastic_net(gram, cross, wd, l1)
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
            threshold = float(_edges()[best_k[version]])
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
            "progressive_loss": _finite(progressive),
            "selected_on": basis,
            "parameters_of_epoch": int(epochs[version]),
        }
        if basis == "validation":
            info["validation_loss"] = _finite(losses[version])
            info["validation_rows"] = self.validation.n_rows
        elif basis == "epoch-1 progressive":
            info["epoch_1_progressive_loss"] = _finite(losses[version])
        if self._binary:
            info["criterion"] = criterion
            if value is not None:
                info["criterion_value"] = _finite(value)
        return self._model(
            weights[:, cols].copy(), bias[cols].copy(), threshold, f_beta, info
        )

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
                "progressive_loss": _finite(mean_loss[j]),
                "progressive_loss_averaged": _finite(mean_loss[m + j]),
                **(
                    {"progressive_accuracy_averaged": _finite(accuracy[m + j])}
                    if accuracy is not None
                    else {}
                ),
            }
            for j in range(m)
        ]
        if self._validating():
            for j, entry in enumerate(out["packed_models"]):
                entry["best_validation_loss_averaged"] = _finite(self.best_loss[m + j])
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
        state.moments_n = float(meta["moments_n"])
        for name in cls._ARRAYS:
            expected, found = getattr(state, name), arrays.get(name)
            if state.d != d or (expected is None) != (found is None) or (
                found is not None and found.shape != expected.shape
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
            state.validation = _ValidationRows.from_arrays(
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


def _ridge(gram: np.ndarray, cross: np.ndarray, wd: float) -> np.ndarray:
    """Solve (gram + wd I) w = cross: Cholesky, or least squares if singular (wd = 0)."""
    system = gram + wd * np.eye(len(cross))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(system), cross)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(system, cross, rcond=None)[0]


def _bin_counts(scores: np.ndarray, y: np.ndarray, weights: Any = None) -> np.ndarray:
    """Per column of ``scores`` (b, c): histograms of the scores of negatives and
    positives (0/1 ``y``), shape (c, 2, bins); each row counts ``weights`` (b,) times."""
    m = scores.shape[1]
    index = np.multiply(scores, _BINS_PER_UNIT)
    index += _HIST_CENTRE
    np.maximum(index, 0, out=index)  # (np.clip's wrapper costs more than the work here)
    np.minimum(index, _HIST_BINS - 1, out=index)
    index = index.astype(np.intp)
    index += np.arange(0, m * 2 * _HIST_BINS, 2 * _HIST_BINS)
    index += (y.astype(np.intp) * _HIST_BINS)[:, None]
    if weights is not None:
        weights = np.repeat(weights, m)  # row-major: each row's m columns
    counts = np.bincount(index.ravel(), weights, minlength=m * 2 * _HIST_BINS)
    return counts.reshape(m, 2, _HIST_BINS)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class LinearLearnerModel(Model):
    """A derived linear model.

    Attributes
    ----------
    coef : ndarray of shape (d, k)
        Weights in the original feature units (k = num_classes for multiclass, else 1).
    intercept : ndarray of shape (k,)
    predictor_type : str
    loss : str
    threshold : float
        Binary classifiers: predict 1 iff the score (logit for logistic, margin for
        hinge_loss) is at least this.
    f_beta : float
        The beta of the binary_f_beta / macro_f_beta metrics.
    info : dict
        How the model was chosen: solver, hyperparameters, progressive loss ...
    """

    FAMILY = "linear_learner"
    SERIAL_VERSION = 1
    _METRICS_BY_TYPE = {
        "regressor": ("mse", "rmse", "absolute_loss", "r2", "objective_loss", "n_rows"),
        "binary_classifier": (
            "binary_classification_accuracy",
            "precision",
            "recall",
            "binary_f_beta",
            "binary_classification_cross_entropy",
            "roc_auc_score",
            "objective_loss",
            "n_rows",
        ),
        "multiclass_classifier": (
            "multiclass_accuracy",
            "multiclass_top_k_accuracy",
            "macro_precision",
            "macro_recall",
            "macro_f_beta",
            "multiclass_cross_entropy",
            "objective_loss",
            "n_rows",
        ),
    }
    METRICS = tuple(dict.fromkeys(m for ms in _METRICS_BY_TYPE.values() for m in ms))
    _TOP_K = 3

    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        predictor_type: str,
        loss: str,
        threshold: float = 0.0,
        f_beta: float = 1.0,
        label_mean: float = 0.0,
        loss_params: dict[str, float] | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.predictor_type, self.loss = predictor_type, loss
        self.threshold, self.f_beta, self.label_mean = float(threshold), float(f_beta), label_mean
        self.loss_params = dict(loss_params or {})
        self.info = dict(info or {})
        # This model's metrics only (cross-entropy needs probabilities: logistic loss).
        self.METRICS = tuple(
            name
            for name in self._METRICS_BY_TYPE[predictor_type]
            if name != "binary_classification_cross_entropy" or loss == "logistic"
        )

    @property
    def n_features(self) -> int:
        return self.coef.shape[0]

    @property
    def n_seen(self) -> int:
        """Rows the state had seen when the model was derived."""
        return int(self.info.get("n_seen", 0))

    @property
    def num_classes(self) -> int:
        return self.coef.shape[1] if self.predictor_type == "multiclass_classifier" else 2

    def scores(self, block: Any) -> np.ndarray:
        """Raw scores ``x @ coef + intercept``, shape (rows, k)."""
        features = self._check(block).features
        return np.asarray(features @ self.coef, dtype=np.float64) + self.intercept

    def evaluate(self, block: Any) -> np.ndarray:
        """Regressor: (rows, 1) predictions. Binary: (rows, 2) score (probability for
        logistic, margin for hinge_loss) and predicted label. Multiclass: (rows, 1 + k)
        predicted class, then the class probabilities."""
        s = self.scores(block)
        if self.predictor_type == "regressor":
            return s
        if self.predictor_type == "binary_classifier":
            score = sigmoid(s[:, 0]) if self.loss == "logistic" else s[:, 0]
            return np.column_stack([score, (s[:, 0] >= self.threshold).astype(np.float64)])
        probs = _softmax(s)
        return np.column_stack([np.argmax(s, axis=1).astype(np.float64), probs])

    def metric_sums(self, block: Any) -> dict[str, float]:
        block = self._check(block)
        config = LinearLearnerConfig(
            predictor_type=self.predictor_type,
            num_classes=self.num_classes
            if self.predictor_type == "multiclass_classifier"
            else None,
            loss=self.loss,
            **self.loss_params,
        )
        y = _labels(block, config, "LinearLearnerModel")
        s = self.scores(block)
        sums: dict[str, float] = {"n_rows": float(len(y))}
        if self.predictor_type == "regressor":
            r = s[:, 0] - y
            value, _ = _pointwise(self.loss, s, y[:, None], config, False)
            shifted = y - self.label_mean  # centred near 0: the r2 sums do not cancel
            sums.update(
                sum_squared_error=float(r @ r),
                sum_absolute_error=float(np.abs(r).sum()),
                sum_label=float(shifted.sum()),
                sum_label_squared=float(shifted @ shifted),
                sum_objective=float(value.sum()),
            )
        elif self.predictor_type == "binary_classifier":
            predicted = s[:, 0] >= self.threshold
            positive = y > 0
            value, _ = _pointwise(self.loss, s, y[:, None], config, False)
            sums.update(
                tp=float((predicted & positive).sum()),
                fp=float((predicted & ~positive).sum()),
                fn=float((~predicted & positive).sum()),
                sum_objective=float(value.sum()),
            )
            if self.loss == "logistic":
                sums["sum_cross_entropy"] = sums["sum_objective"]
            sums.update(auc_sums(s[:, 0], positive))  # the logit, or hinge_loss's margin
        else:
            cls = y.astype(np.int64)
            value, _, correct = _softmax_loss(s[:, None, :], cls, False)
            top = np.argsort(-s, axis=1)[:, : self._TOP_K]
            predicted = np.argmax(s, axis=1)
            k = self.num_classes
            sums.update(
                correct=float(correct.sum()),
                top_k_correct=float((top == cls[:, None]).any(axis=1).sum()),
                sum_objective=float(value.sum()),
            )
            tp = np.bincount(cls[predicted == cls], minlength=k)
            pred_count = np.bincount(predicted, minlength=k)
            true_count = np.bincount(cls, minlength=k)
            for i in range(k):
                sums[f"tp_{i}"] = float(tp[i])
                sums[f"predicted_{i}"] = float(pred_count[i])
                sums[f"actual_{i}"] = float(true_count[i])
        return sums

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """SageMaker's metric names. ``objective_loss`` is the mean training loss on the
        original label scale (``squared_loss`` is half the squared error);
        ``roc_auc_score`` is computed from 2^16 bins of the score (logit or margin) over
        [-10, 10] (ties within a bin count half)."""
        n = sums.get("n_rows", 0.0)
        nan = float("nan")
        out: dict[str, float] = {"n_rows": n}
        if not n:
            return out
        out["objective_loss"] = sums["sum_objective"] / n
        if self.predictor_type == "regressor":
            mse = sums["sum_squared_error"] / n
            total = sums["sum_label_squared"] - sums["sum_label"] ** 2 / n
            out.update(
                mse=mse,
                rmse=math.sqrt(mse),
                absolute_loss=sums["sum_absolute_error"] / n,
                r2=1.0 - sums["sum_squared_error"] / total if total > 0 else nan,
            )
            return out
        if self.predictor_type == "binary_classifier":
            tp, fp, fn = sums["tp"], sums["fp"], sums["fn"]
            b2 = self.f_beta**2
            precision = tp / (tp + fp) if tp + fp else nan
            recall = tp / (tp + fn) if tp + fn else nan
            denom = (1 + b2) * tp + b2 * fn + fp
            out.update(
                binary_classification_accuracy=(n - fp - fn) / n,
                precision=precision,
                recall=recall,
                binary_f_beta=(1 + b2) * tp / denom if denom else nan,
                roc_auc_score=auc_from_sums(sums),
            )
            if "sum_cross_entropy" in sums:
                out["binary_classification_cross_entropy"] = sums["sum_cross_entropy"] / n
            return out
        k = self.num_classes
        tp = np.array([sums.get(f"tp_{i}", 0.0) for i in range(k)])
        predicted = np.array([sums.get(f"predicted_{i}", 0.0) for i in range(k)])
        actual = np.array([sums.get(f"actual_{i}", 0.0) for i in range(k)])
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(actual > 0, tp / actual, 0.0)
            b2 = self.f_beta**2
            denom = b2 * precision + recall
            f = np.where(denom > 0, (1 + b2) * precision * recall / denom, 0.0)
        present = actual > 0
        out.update(
            multiclass_accuracy=sums["correct"] / n,
            multiclass_top_k_accuracy=sums["top_k_correct"] / n,
            macro_precision=float(precision[present].mean()) if present.any() else nan,
            macro_recall=float(recall[present].mean()) if present.any() else nan,
            macro_f_beta=float(f[present].mean()) if present.any() else nan,
            multiclass_cross_entropy=sums["sum_objective"] / n,
        )
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "predictor_type": self.predictor_type,
            "loss": self.loss,
            "n_features": self.n_features,
            **self.info,
        }
        if self.predictor_type == "binary_classifier":
            out["threshold_score"] = self.threshold
            if self.loss == "logistic":
                out["threshold_probability"] = float(sigmoid(np.array([self.threshold]))[0])
        return out

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "predictor_type": self.predictor_type,
            "loss": self.loss,
            "threshold": self.threshold,
            "f_beta": self.f_beta,
            "label_mean": self.label_mean,
            "loss_params": self.loss_params,
            "info": self.info,
        }
        return meta, {"coef": self.coef, "intercept": self.intercept}

    @classmethod
    def _from_payload(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> LinearLearnerModel:
        return cls(arrays["coef"], arrays["intercept"], **meta)

    def __repr__(self) -> str:
        return (
            f"LinearLearnerModel(predictor_type={self.predictor_type!r}, loss={self.loss!r}, "
            f"n_features={self.n_features}, solver={self.info.get('solver')!r})"
        )


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


LinearLearnerState.MODEL = LinearLearnerModel
