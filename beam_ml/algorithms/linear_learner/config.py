"""The linear learner's configuration: what must match for two states to merge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from beam_ml.core.classification import CRITERIA
from beam_ml.core.constraints import (
    Constraints,
    Described,
    Interval,
    Options,
    validate_parameters,
)
from beam_ml.core.validation import check_int

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
SELECTION_CRITERIA = (*CRITERIA, "loss_function")
SOLVERS = ("auto", "exact", "packed")
# log10 learning-rate ranges of the 'auto' grid, per optimizer: steps are taken on
# standardized features (sgd) or are scale-free (adam, rmsprop).
_LR_RANGE = {"sgd": (-2.0, 1.5), "adam": (-3.5, 0.0), "rmsprop": (-3.5, 0.0)}
_LR_SINGLE = {"sgd": 0.5, "adam": 0.02, "rmsprop": 0.02}
_AUTO_OR_NON_NEGATIVE = Described(
    "'auto' or a float >= 0.0", Options(("auto",)), Interval(float, 0.0, None)
)


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

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "predictor_type": [Options(_PREDICTORS)],
        "feature_dim": [Interval(int, 1, None), None],
        "num_models": [Interval(int, 1, 1024)],
        "learning_rate": [
            Described(
                "'auto' or a float > 0.0",
                Options(("auto",)),
                Interval(float, 0.0, None, closed="neither"),
            )
        ],
        "wd": [_AUTO_OR_NON_NEGATIVE],
        "l1": [_AUTO_OR_NON_NEGATIVE],
        "optimizer": [Options(_OPTIMIZERS)],
        "beta_1": [Interval(float, 0.0, 1.0, closed="left")],
        "beta_2": [Interval(float, 0.0, 1.0, closed="left")],
        "mini_batch_size": [Interval(int, 1, None)],
        "normalize_data": [bool],
        "normalize_label": [bool, None],
        "num_point_for_scaler": [Interval(int, 0, None)],
        "use_bias": [bool],
        "positive_example_weight_mult": [
            Described(
                "a float > 0, 'balanced' or 'auto'",
                Interval(float, 0.0, None, closed="neither"),
                Options(("balanced", "auto")),
            )
        ],
        "quantile": [Interval(float, 0.0, 1.0, closed="neither")],
        "loss_insensitivity": [Interval(float, 0.0, None)],
        "huber_delta": [Interval(float, 0.0, None, closed="right")],
        "epochs": [Interval(int, 1, None)],
        "validation_fraction": [
            Described(
                "'auto' or a float in [0, 0.5]", Options(("auto",)), Interval(float, 0.0, 0.5)
            )
        ],
        "early_stopping_patience": [Interval(int, 1, None)],
        "early_stopping_tolerance": [Interval(float, 0.0, 1.0)],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        # num_classes and loss: what they accept depends on predictor_type.
        where = "LinearLearnerConfig"
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
