"""Factorization Machines (Rendle 2010) trained by mini-batch SGD (numpy or MXNet), in one pass.

A Factorization Machine scores a row ``x`` of ``d`` (usually sparse) features as::

    score(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j

with a bias ``w0``, linear weights ``w`` (d,) and factors ``V`` (d, num_factors): every
pairwise interaction is modelled through the factors, so interactions between features
that never occur together in training are still estimated. ``predictor_type`` chooses
the logistic loss on 0/1 labels (``binary_classifier``; -1/+1 as in LIBSVM files is
accepted too) or the squared loss (``regressor``), as SageMaker's built-in algorithm.

The state (DESIGN.md §4) holds the parameters with their optimizer state (SGD, Adam or
AdaGrad, :mod:`beam_ml.nn.engine`), the step count, the rows not yet in a full
mini-batch, per-feature example counts and progressive-validation sums (every mini-batch
is scored before the step that learns from it: an honest running estimate of the loss on
unseen data, and the score histogram that a derived classification threshold comes from).

* ``update(block)`` cuts the rows into mini-batches of exactly ``mini_batch_size`` rows,
  whatever the block boundaries, so one block or the same rows one by one give the same
  SGD steps. Sparse input stays sparse: a step touches only the columns its rows use.
* ``merge`` averages replicas that share their seeded initialization, row by row,
  weighted by the examples that touched each row, after rotating one replica's factors
  onto the other's (the model is invariant to rotating the latent space, and replicas
  grown from a small initialization on different data settle in different
  orientations). ``finish_round`` then scales each row's merged step between the
  replicas' average and their sum (and adds up AdaGrad's histories), choosing on a
  bounded sample of rows set aside from training (``merge_holdout``,
  ``merge_sample_size``; ``derive`` learns them too): an average of ``r`` replicas
  makes ``1/r`` of the progress of one model early in training. It is approximate: the
  test suite measures what merging 2 and 4 replicas costs against one replica on all
  the data.
* ``derive`` returns a :class:`FactorizationMachinesModel` (numpy only:
  predicting needs no MXNet) with the bias, linear weights and factors as arrays, and
  ``recommend`` for the top-N items of a user.

``epochs > 1`` needs bounded input: ``Train`` then runs the further epochs over the same
blocks, each replica starting from the previous epoch's state (:mod:`beam_ml.transforms.epochs`).

Notes
-----
Memory: the state holds ``feature_dim * (1 + num_factors)`` float32 parameters, as many
again per optimizer slot (Adam 2, AdaGrad 1, SGD 0), one int64 example count and one
int32 replica count per feature, fewer than ``shuffle_buffer`` (or ``mini_batch_size``)
pending rows and at most
``merge_sample_size`` sampled rows: 2^20 features, 10 factors and Adam take 150 MB
(and ~1 MB of sample at 40 non-zeros a row), whatever the number of rows. A step costs
O(nnz * num_factors) for the batch's non-zeros plus one gather and one scatter of the
records of its distinct columns.

Weight decay is applied *lazily* and *per example*: a mini-batch decays the rows of the
features it uses, each by ``wd`` once for every row it occurs in, in the scale of the
mean gradient. The objective is thus the mean over rows of the loss plus ``wd`` times the
squared norms of the row's features' parameters, the per-example regularization of SGD
matrix factorization, and it does not depend on ``mini_batch_size``. (MXNet's lazy
decay, which SageMaker's names come from, adds ``wd * w`` once per mini-batch whatever
the rows using the feature: ``mini_batch_size / touches`` times stronger for a rare
feature, so ``mini_batch_size`` 1000 and ``factors_wd`` 1e-5 there is about 0.01 here.)

The defaults differ from SageMaker's where SageMaker's do not learn (issue 15, measured
in BENCHMARKS.md): with ``linear_lr`` 0.001 and ``factors_lr`` 0.0001, Adam moves a
parameter by at most about the rate per step, so 10 epochs of 80k ratings (800 steps)
left the factors at their initial scale and the biases short (RMSE 1.09 where a bias
model scores 0.96). Here ``linear_lr = factors_lr = 0.01`` with ``linear_wd = 0.01``,
``factors_wd = 0.1`` (per example, above). SageMaker's values can still be set.

On the CPU the step is numpy with the gradient written out (:class:`~beam_ml.nn.fm.NumpyFMTrainer`);
on a GPU, MXNet's autograd (:mod:`beam_ml.nn.fm`); both take the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from beam_ml.core.block import Block, MatrixSpec, origin_note
from beam_ml.core.classification import (
    CRITERIA,
    auc_from_sums,
    auc_sums,
    best_thresholds,
    binary_labels,
    block_labels,
    label_error,
    log_loss,
    logit_bins,
    logit_edge,
    sigmoid,
)
from beam_ml.core.constraints import (
    Constraints,
    Described,
    Interval,
    Options,
    check_value,
    validate_parameters,
)
from beam_ml.core.errors import BadInputError, IncompatibleStateError, NotEnoughDataError
from beam_ml.core.plan import ResumePlan
from beam_ml.core.state import Model, register
from beam_ml.core.validation import check_choice, check_int
from beam_ml.nn.engine import (
    INIT_METHODS,
    OPTIMIZERS,
    MergeSample,
    OptimizerSpec,
    ParameterTable,
    check_device,
    initial_values,
    runtime_option,
)
from beam_ml.nn.fm import fm_scores
from beam_ml.nn.skeleton import AveragingState, PendingRows, alias, lazy_network

__all__ = [
    "FactorizationMachinesConfig",
    "FactorizationMachinesState",
    "FactorizationMachinesModel",
]

_PREDICTORS = ("binary_classifier", "regressor")
_SLOT_NAMES = {"adam": ("mean", "var"), "adagrad": ("history",), "sgd": ()}
_CRITERIA = ("loss_function", *CRITERIA)
_PV_BINS = 400  # progressive validation's logit histogram (threshold choice)
_STREAM = {"bias": 0, "linear": 1, "factors": 2}
# The step scales a round's merge tries (finish_round): 0 the average, 1 the sum. Factors
# grown from a small initialization grow multiplicatively (each one's gradient scales with
# the others), so one model taking all the steps moves them further than the sum of short
# independent runs: their scale reaches 4 early in training on the ratings set (measured
# with the test set as oracle), so the grid goes past it, coarsely.
_LINEAR_GRID = np.linspace(0.0, 1.0, 9)
_FACTOR_GRID = np.concatenate([np.linspace(0.0, 2.0, 17), [2.5, 3.0, 4.0, 6.0, 8.0]])
_REGRESSOR_METRICS = ("rmse", "mae", "r2", "n_rows")
_CLASSIFIER_METRICS = (
    "binary_classification_accuracy",
    "binary_classification_cross_entropy",
    "binary_f_beta",
    "precision",
    "recall",
    "roc_auc_score",
    "n_rows",
)


# The float checks' messages as users know them ("a finite float >= 0 or None").
_NON_NEGATIVE = [Described("a finite float >= 0", Interval(float, 0.0, None))]
_OPTIONAL_NON_NEGATIVE = [
    Described("a finite float >= 0 or None", Interval(float, 0.0, None), None)
]
_OPTIONAL_FLOAT = [Described("a finite float or None", Interval(float, None, None), None)]


def _init_constraints(group: str) -> Constraints:
    return {
        f"{group}_lr": _NON_NEGATIVE,
        f"{group}_wd": _NON_NEGATIVE,
        f"{group}_init_method": [Options(INIT_METHODS)],
        f"{group}_init_sigma": _NON_NEGATIVE,
        f"{group}_init_scale": _OPTIONAL_NON_NEGATIVE,
        f"{group}_init_value": _OPTIONAL_FLOAT,
    }


@dataclass(frozen=True)
class FactorizationMachinesConfig:
    """What must match for two Factorization Machines states to merge (SageMaker names).

    Parameters
    ----------
    feature_dim : int
        Number of input features ``d`` (columns; 2^20 and more for hashed features).
    num_factors : int
        Dimension of each feature's factor vector (SageMaker suggests 64).
    predictor_type : {'binary_classifier', 'regressor'}
        Logistic loss on 0/1 labels (-1/+1 accepted) or squared loss on real labels.
    epochs : int
        Passes over bounded input; a stream is one pass.
    mini_batch_size : int
        Rows per SGD step, independent of how the input is cut into blocks.
    shuffle_buffer : int, optional
        Rows are trained in a seeded random order within windows of this many rows
        (beam_ml's addition; 0 or at most ``mini_batch_size``: in arrival order).
        Default: 10,000 when ``epochs > 1`` (bounded input, read again every epoch),
        else 0 (a stream's rows train as they come). SGD follows the order of its
        input: ratings sorted by user trained to RMSE 0.940 in 10 epochs where shuffled
        ones reach 0.891, windows of 10,000 rows 0.893. Up to this many rows wait in the
        state (``derive`` learns them).
    clip_gradient : float, optional
        Clip each rescaled gradient entry to [-clip_gradient, clip_gradient].
    eps : float, optional
        Added to Adam's and AdaGrad's denominators (default 1e-8).
    rescale_grad : float, optional
        Multiplies the summed mini-batch gradient; default 1 / rows in the mini-batch.
    bias_lr : float
        Learning rate of the bias.
    linear_lr : float
        Learning rate of the linear weights.
    factors_lr : float
        Learning rate of the factors.
    bias_wd : float
        L2 weight decay of the bias.
    linear_wd : float
        L2 weight decay of the linear weights, per example that uses the feature.
    factors_wd : float
        L2 weight decay of the factors, per example that uses the feature.
    bias_init_method : {'normal', 'uniform', 'constant'}
        Initialization of the bias.
    bias_init_scale : float, optional
        Half-width of the uniform initialization (needed for 'uniform').
    bias_init_sigma : float
        Standard deviation of the normal initialization.
    bias_init_value : float, optional
        Constant initial value (needed for 'constant').
    linear_init_method : {'normal', 'uniform', 'constant'}
        Initialization of the linear weights.
    linear_init_scale : float, optional
        Half-width of the uniform initialization (needed for 'uniform').
    linear_init_sigma : float
        Standard deviation of the normal initialization.
    linear_init_value : float, optional
        Constant initial value (needed for 'constant').
    factors_init_method : {'normal', 'uniform', 'constant'}
        Initialization of the factors.
    factors_init_scale : float, optional
        Half-width of the uniform initialization (needed for 'uniform').
    factors_init_sigma : float
        Standard deviation of the normal initialization.
    factors_init_value : float, optional
        Constant initial value (needed for 'constant').
    optimizer : {'adam', 'adagrad', 'sgd'}
        The update rule (beam_ml's addition; SageMaker does not name its optimizer).
    seed : int
        Seed of the initialization, shared by every replica of a state.
    merge_holdout : float
        Fraction of the rows set aside (chosen by a hash of their content, so the same
        rows everywhere) to check how a merge of replicas is finished (``finish_round``;
        beam_ml's addition); 0 turns the check off: plain averaging.
    merge_sample_size : int
        At most this many set-aside rows are kept (a uniform sample of them); the others
        train as usual. The kept rows never train a replica (they judge its merges) but
        the derived model learns them: one pass over them on a copy at ``derive``.
    device : str
        'cpu', 'gpu' or 'gpu:N': where the mini-batch steps run. A runtime option, not a
        hyperparameter: it is kept with the config (so a checkpoint says where it was
        trained) but never compared, so states trained on different devices merge.

    Notes
    -----
    The defaults are SageMaker's documented ones except the linear and factor rates and
    decays, which learn with Adam where SageMaker's do not (see the module notes; the
    decays are per example that uses a feature).
    """

    feature_dim: int
    num_factors: int
    predictor_type: str
    epochs: int = 1
    mini_batch_size: int = 1000
    shuffle_buffer: int | None = None
    clip_gradient: float | None = None
    eps: float | None = None
    rescale_grad: float | None = None
    bias_lr: float = 0.1
    linear_lr: float = 0.01
    factors_lr: float = 0.01
    bias_wd: float = 0.01
    linear_wd: float = 0.01
    factors_wd: float = 0.1
    bias_init_method: str = "normal"
    bias_init_scale: float | None = None
    bias_init_sigma: float = 0.01
    bias_init_value: float | None = None
    linear_init_method: str = "normal"
    linear_init_scale: float | None = None
    linear_init_sigma: float = 0.01
    linear_init_value: float | None = None
    factors_init_method: str = "normal"
    factors_init_scale: float | None = None
    factors_init_sigma: float = 0.001
    factors_init_value: float | None = None
    optimizer: str = "adam"
    seed: int = 0
    merge_holdout: float = 0.01
    merge_sample_size: int = 2000
    device: str = runtime_option("cpu")

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "feature_dim": [Interval(int, 1, 2**31 - 1)],
        "num_factors": [Interval(int, 1, 10_000)],
        "predictor_type": [Options(_PREDICTORS)],
        "epochs": [Interval(int, 1, None)],
        "mini_batch_size": [Interval(int, 1, None)],
        "shuffle_buffer": [Interval(int, 0, 10_000_000), None],
        "clip_gradient": _OPTIONAL_NON_NEGATIVE,
        "eps": _OPTIONAL_NON_NEGATIVE,
        "rescale_grad": _OPTIONAL_NON_NEGATIVE,
        **_init_constraints("bias"),
        **_init_constraints("linear"),
        **_init_constraints("factors"),
        "optimizer": [Options(OPTIMIZERS)],
        "seed": [Interval(int, 0, None)],
        "merge_holdout": _NON_NEGATIVE,
        "merge_sample_size": [Interval(int, 0, 1_000_000)],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        where = "FactorizationMachinesConfig"
        for group in ("bias", "linear", "factors"):
            method = getattr(self, f"{group}_init_method")
            for needed, param in (("uniform", "scale"), ("constant", "value")):
                if method == needed and getattr(self, f"{group}_init_{param}") is None:
                    raise ValueError(
                        f"The '{group}_init_{param}' parameter of {where} is required when "
                        f"{group}_init_method={needed!r}."
                    )
        if self.merge_holdout > 0.5:
            raise ValueError(
                f"The 'merge_holdout' parameter of {where} must be at most 0.5 (a fraction of "
                f"the rows set aside from training). Got {self.merge_holdout!r} instead."
            )
        check_device(self.device, "device", where)

    @property
    def shuffle_rows(self) -> int:
        """The shuffle window in rows, the default resolved."""
        if self.shuffle_buffer is None:
            return 10_000 if self.epochs > 1 else 0
        return self.shuffle_buffer

    @property
    def classifier(self) -> bool:
        return self.predictor_type == "binary_classifier"

    @property
    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(
            name=self.optimizer,
            eps=1e-8 if self.eps is None else self.eps,
            clip_gradient=self.clip_gradient,
            rescale_grad=self.rescale_grad,
        )

    def initial(self, group: str, shape: tuple[int, ...]) -> np.ndarray:
        """Seeded initial values of a parameter group: 'bias', 'linear' or 'factors'."""
        return initial_values(
            shape,
            getattr(self, f"{group}_init_method"),
            sigma=getattr(self, f"{group}_init_sigma"),
            scale=getattr(self, f"{group}_init_scale"),
            value=getattr(self, f"{group}_init_value"),
            seed=self.seed,
            stream=_STREAM[group],
        )


# --- labels and features -------------------------------------------------------------------------
def _labels(block: Block, classifier: bool, owner: str) -> np.ndarray:
    """float32 labels of a validated block: 0/1 for a classifier. Errors end with the
    block's file and offset, so the record can be found in the input."""
    if classifier:
        labels = binary_labels(block, owner, _BAD_LABEL, _NONFINITE_LABEL, one_convention=True)
        return labels.astype(np.float32)
    labels = block_labels(block, owner)
    bad = ~np.isfinite(labels)
    if bad.any():
        raise label_error(owner, labels, bad, _NONFINITE_LABEL, origin_note(block))
    return labels.astype(np.float32)


_NONFINITE_LABEL = "{owner} expects finite labels; the label of row {row} is {value}."
_BAD_LABEL = (
    "{owner} with predictor_type='binary_classifier' expects labels 0 and 1 (or -1 and +1, "
    "not -1 with 0); the label of row {row} is {value} and the block has labels {labels}."
)


def _csr(features: Any, owner: str) -> sp.csr_matrix:
    """Features as float32 CSR with one entry per (row, column); never changes the input."""
    if sp.issparse(features):
        x = features if sp.isspmatrix_csr(features) else sp.csr_matrix(features)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if not x.has_canonical_format:
            x = x.copy() if x is features else x
            x.sum_duplicates()  # a repeated column is one feature, not a self-interaction
        if x.nnz and (x.indices.min() < 0 or x.indices.max() >= x.shape[1]):
            raise BadInputError(
                f"{owner}: a sparse block has column indices outside [0, {x.shape[1]})."
            )
        return x
    return sp.csr_matrix(np.asarray(features, dtype=np.float32))


@register
class FactorizationMachinesState(AveragingState):
    """Factorization Machines state: parameters, optimizer state, steps and pending rows.

    Attributes
    ----------
    table : ParameterTable or None
        One record per feature: ``[w_i, v_i (num_factors)]`` and its optimizer state,
        float32 (None until the first block).
    bias : ParameterTable or None
        The bias ``w0`` and its optimizer state.
    steps : int
        SGD steps taken (Adam's bias correction).
    pending : PendingRows
        Rows after the last full mini-batch.
    n_before, epoch : int
        The start point this state continues from: rows seen in earlier epochs and the
        epoch index. Replicas merge only with replicas of the same start point.
    n_rows : int
        Rows folded in since the start point.
    progressive : ndarray of shape (3,), float64
        Progressive validation over the rows scored before their step, on first sight
        only (the first of ``epochs`` passes, issue 24: later passes score rows the model
        has learnt, which flattered an overfit model's loss and threshold): rows, summed
        loss (log loss or squared error), correct predictions at 0.5 (classifier).
    progressive_hist : ndarray of shape (2, 400), float64, or None
        Classifier: the pre-step scores of negatives (row 0) and positives (row 1),
        binned by logit in [-10, 10].

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from beam_ml import Block, FactorizationMachinesConfig, FactorizationMachinesState
    >>> config = FactorizationMachinesConfig(
    ...     feature_dim=4, num_factors=2, predictor_type="regressor", mini_batch_size=3
    ... )
    >>> x = sp.csr_matrix(np.eye(4, dtype=np.float32))
    >>> state = FactorizationMachinesState(config).update(Block(x, np.arange(4.0)))
    >>> state.n_seen, state.steps, state.pending.n_rows
    (4, 1, 1)
    >>> state.derive().evaluate(x).shape
    (4, 1)
    """

    FAMILY = "factorization_machines"
    BLOCK_KIND = Block
    SERIAL_VERSION = 1
    CONFIG = FactorizationMachinesConfig
    # New data trains the factors on; a round's merged step is scaled (finish_round).
    PLAN = ResumePlan(resume="continue", finishes_rounds=True, epochs="epochs")

    PROGRESSIVE = ("progressive", "progressive_hist")
    START_POINTS_DIFFER = (
        "Cannot average factorization_machines replicas that continue from different start "
        "points (epoch {mine.epoch} after {mine.n_before} rows vs epoch {theirs.epoch} after "
        "{theirs.n_before} rows); SGD replicas must share theirs."
    )

    # The progressive sums' earlier names, which are the payload's array names.
    pv, pv_hist = alias("progressive"), alias("progressive_hist")

    def __init__(self, config: FactorizationMachinesConfig):
        super().__init__(config)
        self.table: ParameterTable | None = None
        self.bias: ParameterTable | None = None
        self.pending = PendingRows(
            config.mini_batch_size, config.feature_dim, config.shuffle_rows, config.seed
        )
        self.sample = MergeSample(
            config.merge_sample_size, config.feature_dim, config.merge_holdout
        )
        self.progressive_hist = np.zeros((2, _PV_BINS)) if config.classifier else None
        self._trainer: Any = None

    @property
    def n_features(self) -> int:
        return self.config.feature_dim

    @property
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.config.feature_dim)

    # --- training --------------------------------------------------------------------------
    @lazy_network("_trainer")
    def _trainer_for_device(self) -> Any:
        from beam_ml.nn.fm import fm_trainer  # a GPU loads MXNet here, on first training

        c = self.config
        return fm_trainer(
            c.device,
            c.feature_dim,
            c.num_factors,
            c.classifier,
            c.optimizer_spec,
            c.bias_lr,
            c.bias_wd,
            c.linear_lr,
            c.linear_wd,
            c.factors_lr,
            c.factors_wd,
        )

    def _allocate(self) -> None:
        c = self.config
        slots = c.optimizer_spec.slots
        params = np.empty((c.feature_dim, 1 + c.num_factors), dtype=np.float32)
        params[:, :1] = c.initial("linear", (c.feature_dim, 1))
        params[:, 1:] = c.initial("factors", (c.feature_dim, c.num_factors))
        self.table = ParameterTable.initial(params, slots)
        self.bias = ParameterTable.initial(c.initial("bias", (1, 1)), slots)

    def update(self, block: Any) -> FactorizationMachinesState:
        """Fold a labelled block in (dense or CSR rows of ``feature_dim`` columns)."""
        checked = self._check(block)
        labels = _labels(checked, self.config.classifier, self.owner)
        features = _csr(checked.features, self.owner)
        if features.shape[0] == 0:
            return self
        trainer = self._trainer_for_device()  # a missing GPU fails before anything changes
        if self.table is None:
            self._allocate()
        rows = features.shape[0]
        features, labels = self.sample.set_aside(features, labels)  # never trained on
        self._train(trainer, self.pending.feed(features, labels))
        self.n_rows += rows
        return self

    def _train(self, trainer: Any, batches: list[tuple[Any, np.ndarray]]) -> None:
        first_sight = self._first_sight
        for features, labels in batches:
            self.steps += 1
            _, _, _, scores = trainer.step(self.table, self.bias, features, labels, self.steps)
            if first_sight:
                self._progressive_validation(scores, labels)

    def _progressive_validation(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = scores.astype(np.float64)
        self.progressive[0] += scores.shape[0]
        if self.config.classifier:
            self.progressive[1] += float(log_loss(scores, labels).sum())
            self.progressive[2] += float(((scores >= 0) == (labels > 0)).sum())
            np.add.at(
                self.progressive_hist, (labels.astype(np.int64), logit_bins(scores, _PV_BINS)), 1
            )
        else:
            self.progressive[1] += float(np.square(scores - labels).sum())

    # --- merging and epochs ----------------------------------------------------------------
    def _pristine(self) -> bool:
        return self.table is None and self.n_seen == 0 and self.pending.n_rows == 0

    def _average(
        self, merged: FactorizationMachinesState, other: FactorizationMachinesState
    ) -> None:
        """Example-weighted average of two replicas, ``other``'s factors aligned to this
        one's first (approximate; see the module notes). ``a.merge(b)`` and
        ``b.merge(a)`` differ by a rotation of the factors: the same predictions."""
        if self.table is not None and other.table is not None:
            # Factors (columns 1:) in the same orientation before averaging (engine.py).
            merged.table = self.table.merged(other.table.aligned_to(self.table, start=1))
        elif other.table is not None:
            merged.table = other.table.copy()
        if other.bias is not None:
            merged.bias = other.bias.copy() if self.bias is None else self.bias.merged(other.bias)
        merged.sample = self.sample.merged(other.sample)
        if other.pending.n_rows:
            batches = merged.pending.feed(other.pending.features, other.pending.labels)
            if batches:
                merged._train(merged._trainer_for_device(), batches)

    def _copy(
        self, config: FactorizationMachinesConfig | None = None
    ) -> FactorizationMachinesState:
        out = FactorizationMachinesState(config or self.config)
        out.table = None if self.table is None else self.table.copy()
        out.bias = None if self.bias is None else self.bias.copy()
        out.steps, out.n_before, out.epoch, out.n_rows = (
            self.steps,
            self.n_before,
            self.epoch,
            self.n_rows,
        )
        out.pending = self.pending.copy()
        out.sample = self.sample.copy()
        out.progressive = self.progressive.copy()
        out.progressive_hist = (
            None if self.progressive_hist is None else self.progressive_hist.copy()
        )
        return out

    def continued(self) -> FactorizationMachinesState:
        """The start point of the next epoch: this state with its last partial mini-batch
        trained, its rows counted as seen before, and per-feature counts restarted (they
        weight the merge of the next epoch's replicas)."""
        out = self._copy()
        batches = out.pending.flush()
        if batches:
            out._train(out._trainer_for_device(), batches)
        out._next_pass()
        if out.table is not None:
            out.table, out.bias = out.table.restarted(), out.bias.restarted()
        out.sample = out.sample.restarted()
        return out

    def finish_round(self, start: FactorizationMachinesState | None) -> FactorizationMachinesState:
        """Scale this merge's step from ``start`` between the replicas' average and their sum.

        The merge averages: a row that ``r`` replicas trained moves by the mean of their
        steps, which is right near convergence (every step points at the same optimum) but
        ``1/r`` of the progress early on, when one model trained on all the rows would have
        taken all of them; with ``epochs``, merged replicas then need ~``r`` times the epochs
        of one model. Each row's step from ``start`` is scaled by ``1 + t (r - 1)``
        (``t = 0``: the average, 1: the sum), one ``t`` in [0, 1] for the bias and linear
        weights and one in [0, 8] for the factors, chosen on the merge sample (rows set
        aside, never trained on): the pair whose loss there beats the average's by the
        most and by more than twice the paired standard error, else ``t = 0``. AdaGrad's
        histories always add up (:meth:`_summed_histories`). Measured in BENCHMARKS.md.
        """
        if self.table is None:
            return self
        others = np.maximum(self.table.trained_by() - 1, 0)  # r - 1 per row
        if not others.any():
            return self  # one replica: nothing was averaged
        if start is None:  # the seeded initialization every replica began at
            start = FactorizationMachinesState(self.config)
            start._allocate()
        if start.table is None:
            return self
        out = self._summed_histories(start)
        if self.sample.n_rows < 2:
            return out
        sample = self.sample
        columns, local = np.unique(sample.features.indices, return_inverse=True)
        rows = sp.csr_matrix(
            (sample.features.data, local.astype(np.int64), sample.features.indptr),
            shape=(sample.n_rows, len(columns)),
        )
        labels = sample.labels.astype(np.float64)
        w = self.table.width
        merged = self.table.params[columns].astype(np.float64)
        extra = others[columns, None] * (merged - start.table.params[columns])
        bias = float(self.bias.params[0, 0])
        bias_extra = max(int(self.bias.trained_by()[0]) - 1, 0) * (
            bias - float(start.bias.params[0, 0])
        )

        def losses(t_linear: float, t_factors: float) -> np.ndarray:
            params = merged + extra * np.array([t_linear] + [t_factors] * (w - 1))
            v = params[:, 1:]
            scores = fm_scores(
                rows, bias + t_linear * bias_extra, params[:, 0], v, np.einsum("ij,ij->i", v, v)
            )
            if self.config.classifier:
                return log_loss(scores, labels)
            return np.square(scores - labels)

        base = losses(0.0, 0.0)
        best, chosen = 0.0, (0.0, 0.0)
        for t_linear in _LINEAR_GRID:
            for t_factors in _FACTOR_GRID:
                if t_linear == t_factors == 0.0:
                    continue
                gain = losses(t_linear, t_factors) - base
                mean, error = gain.mean(), gain.std(ddof=1) / np.sqrt(gain.shape[0])
                if mean < -2 * error and mean < best:
                    best, chosen = mean, (t_linear, t_factors)
        if chosen == (0.0, 0.0):
            return out
        out = out._copy() if out is self else out
        scale = np.array([chosen[0]] + [chosen[1]] * (w - 1), dtype=np.float32)
        out.table.extend_steps(start.table, slice(0, w), scale)
        out.bias.extend_steps(start.bias, slice(0, 1), np.float32(chosen[0]))
        return out

    def _summed_histories(self, start: FactorizationMachinesState) -> FactorizationMachinesState:
        """AdaGrad's history sums every example's squared gradient: the merge averaged the
        replicas' increments, one model taking all their steps would have added them up
        (and stepped as cautiously as that sum says, in later epochs and at ``derive``).
        Adam's moments are averages, SGD has no state: unchanged."""
        if self.config.optimizer != "adagrad":
            return self
        out = self._copy()
        for table, before in ((out.table, start.table), (out.bias, start.bias)):
            table.extend_steps(before, slice(table.width, 2 * table.width), 1.0)
        return out

    # --- models ------------------------------------------------------------------------------
    def derive(
        self,
        binary_classifier_model_selection_criteria: str = "loss_function",
        target_recall: float = 0.8,
        target_precision: float = 0.8,
        f_beta: float = 1.0,
        threshold: float | None = None,
    ) -> FactorizationMachinesModel:
        """The Factorization Machine learned so far (pending rows included, state unchanged).

        Parameters
        ----------
        binary_classifier_model_selection_criteria : {'loss_function', 'accuracy', 'f_beta', 'precision_at_target_recall', 'recall_at_target_precision'}
            Classifier: the decision threshold maximizing this on the progressive
            validation scores (each training row scored before its step, on its first
            sight only: the first of ``epochs`` passes); 'loss_function' keeps
            probability 0.5 (SageMaker FM's).
        target_recall : float
            The recall precision_at_target_recall must reach.
        target_precision : float
            The precision recall_at_target_precision must reach.
        f_beta : float
            The beta of the f_beta criterion and of the model's binary_f_beta metric.
        threshold : float, optional
            Classifier: a probability threshold to use as is, overriding the criterion.

        Raises
        ------
        NotEnoughDataError
            When the state has seen no rows.
        """
        where = "FactorizationMachinesState.derive"
        if self.n_seen == 0 or self.table is None:
            raise NotEnoughDataError("A Factorization Machine needs at least one labelled row.")
        criterion = check_choice(
            binary_classifier_model_selection_criteria,
            "binary_classifier_model_selection_criteria",
            where,
            _CRITERIA,
        )
        for name, value in (
            ("target_recall", target_recall),
            ("target_precision", target_precision),
        ):
            check_value(value, name, where, _NON_NEGATIVE)
        check_value(f_beta, "f_beta", where, _NON_NEGATIVE)
        check_value(threshold, "threshold", where, _OPTIONAL_NON_NEGATIVE)
        learned = self
        if self.sample.n_rows or self.pending.n_rows:
            # On a copy, so deriving never changes the state: the merge sample's rows
            # (held out to judge merges) and the rows still waiting for a mini-batch or
            # a shuffle window are learnt too, so the model loses none.
            learned = self._copy()
            trainer = self._trainer_for_device()
            learned._train(trainer, learned.pending.feed(self.sample.features, self.sample.labels))
            learned._train(trainer, learned.pending.flush())
        params = learned.table.params.copy()  # (d, 1 + k)
        bias = float(learned.bias.values[0, 0])
        if threshold is None:
            threshold = self._threshold(criterion, target_recall, target_precision, f_beta)
        rows = self.progressive[0]
        return FactorizationMachinesModel(
            bias=bias,
            linear=np.ascontiguousarray(params[:, 0]),
            factors=np.ascontiguousarray(params[:, 1:]),
            predictor_type=self.config.predictor_type,
            threshold=float(threshold),
            f_beta=float(f_beta),
            n_seen=self.n_seen,
            progressive_loss=float(self.progressive[1] / rows) if rows else float("nan"),
        )

    def _threshold(
        self, criterion: str, target_recall: float, target_precision: float, beta: float
    ) -> float:
        """The probability threshold maximizing ``criterion`` on the progressive scores."""
        if (
            criterion == "loss_function"
            or self.progressive_hist is None
            or self.progressive[0] == 0
        ):
            return 0.5
        values, best = best_thresholds(
            self.progressive_hist[None], criterion, target_recall, target_precision, beta
        )
        if not np.isfinite(values[0]):
            return 0.5  # no threshold reaches the target
        # Predicting 1 from bin k upwards (k = bins: never).
        logit = logit_edge(int(best[0]), _PV_BINS)
        return float(sigmoid(np.array(logit))) if best[0] < _PV_BINS else 1.0

    # --- serialization -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # The trainer holds MXNet handles of this process; a copy rebuilds its own.
        return {**self.__dict__, "_trainer": None}

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "steps": self.steps,
            "n_before": self.n_before,
            "epoch": self.epoch,
            "n_rows": self.n_rows,
        }
        slot_names = _SLOT_NAMES[self.config.optimizer]
        arrays: dict[str, np.ndarray] = {"pv": self.progressive}
        if self.progressive_hist is not None:
            arrays["pv_hist"] = self.progressive_hist
        arrays.update(self.pending.to_arrays("pending"))
        arrays.update(self.sample.to_arrays("sample"))
        if self.table is not None:
            arrays.update(self.bias.to_arrays("bias", slot_names))
            arrays.update(self.table.to_arrays("features", slot_names))
        return meta, arrays

    @classmethod
    def _from_payload(
        cls,
        config: FactorizationMachinesConfig,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
    ) -> FactorizationMachinesState:
        state = cls(config)
        state.steps, state.n_before = int(meta["steps"]), int(meta["n_before"])
        state.epoch, state.n_rows = int(meta["epoch"]), int(meta["n_rows"])
        state.progressive = arrays["pv"].astype(np.float64)
        if config.classifier:
            state.progressive_hist = arrays["pv_hist"].astype(np.float64)
        if (
            state.progressive.shape != (3,)
            or config.classifier
            and state.progressive_hist.shape != (2, _PV_BINS)
        ):
            raise IncompatibleStateError("Factorization Machines payload: misshapen pv/pv_hist.")
        state.pending = PendingRows.from_arrays(
            arrays, "pending", config.mini_batch_size, config.feature_dim,
            config.shuffle_rows, config.seed,
        )  # fmt: skip
        state.sample = MergeSample.from_arrays(
            arrays, "sample", config.merge_sample_size, config.feature_dim, config.merge_holdout
        )
        if "features" in arrays:
            slot_names = _SLOT_NAMES[config.optimizer]
            state.bias = ParameterTable.from_arrays(arrays, "bias", slot_names)
            state.table = ParameterTable.from_arrays(arrays, "features", slot_names)
            expected = (config.feature_dim, 1 + config.num_factors)
            if state.table.params.shape != expected or state.bias.params.shape != (1, 1):
                raise IncompatibleStateError(
                    f"Factorization Machines payload has parameters of shape "
                    f"{state.table.params.shape}, expected {expected}."
                )
        return state


class FactorizationMachinesModel(Model):
    """A derived Factorization Machine (numpy only).

    Attributes
    ----------
    bias : float
    linear : ndarray of shape (d,), float32
    factors : ndarray of shape (d, num_factors), float32
    predictor_type : str
        'binary_classifier' or 'regressor'.
    threshold : float
        Classifier: rows with probability >= threshold are labelled 1.
    f_beta : float
        The beta of the ``binary_f_beta`` metric.
    n_seen : int
    progressive_loss : float
        Mean loss of the training rows scored before their step (log loss or squared
        error): an estimate of the loss on unseen data in the first epoch.
    """

    FAMILY = "factorization_machines"
    SERIAL_VERSION = 1
    #: Every metric name; a model reports those of its predictor type (``metrics``).
    METRICS = ("rmse", "mae", "r2", *_CLASSIFIER_METRICS)

    def __init__(
        self,
        bias: float,
        linear: np.ndarray,
        factors: np.ndarray,
        predictor_type: str,
        threshold: float = 0.5,
        f_beta: float = 1.0,
        n_seen: int = 0,
        progressive_loss: float = float("nan"),
    ):
        self.bias = float(bias)
        self.linear = linear
        self.factors = factors
        self.predictor_type = predictor_type
        self.threshold = threshold
        self.f_beta = f_beta
        self.n_seen = n_seen
        self.progressive_loss = progressive_loss
        # score() accepts the metrics this model reports.
        self.METRICS = _CLASSIFIER_METRICS if self.classifier else _REGRESSOR_METRICS
        # sum_f v_if^2 per feature: the self-interaction each row's pairwise term removes.
        self._sq_norms = np.einsum("ij,ij->i", factors, factors)  # (d,)

    @property
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.linear.shape[0])

    @property
    def num_factors(self) -> int:
        return self.factors.shape[1]

    @property
    def classifier(self) -> bool:
        return self.predictor_type == "binary_classifier"

    def scores(self, features: Any) -> np.ndarray:
        """The raw scores (logits for a classifier) of the rows, shape (rows,)."""
        from beam_ml.nn.fm import fm_scores

        return fm_scores(features, self.bias, self.linear, self.factors, self._sq_norms)

    def evaluate(self, block: Any) -> np.ndarray:
        """Classifier: (rows, 2) of probability and predicted label; regressor: (rows, 1)."""
        scores = self.scores(self._check(block).features)
        if not self.classifier:
            return scores[:, None]
        probability = sigmoid(scores)
        return np.column_stack([probability, (probability >= self.threshold).astype(np.float64)])

    def metric_sums(self, block: Any) -> dict[str, float]:
        checked = self._check(block)
        labels = _labels(checked, self.classifier, type(self).__name__).astype(np.float64)
        scores = self.scores(checked.features)
        sums = {"n_rows": float(labels.shape[0])}
        if not self.classifier:
            shifted = labels - self.bias  # near the mean: the r2 sums do not cancel
            sums.update(
                sum_squared_error=float(np.square(scores - labels).sum()),
                sum_absolute_error=float(np.abs(scores - labels).sum()),
                sum_shifted_label=float(shifted.sum()),
                sum_shifted_label_squared=float(np.square(shifted).sum()),
            )
            return sums
        predicted = sigmoid(scores) >= self.threshold
        positive = labels > 0
        sums.update(
            sum_log_loss=float(log_loss(scores, labels).sum()),
            true_positives=float((predicted & positive).sum()),
            false_positives=float((predicted & ~positive).sum()),
            false_negatives=float((~predicted & positive).sum()),
            true_negatives=float((~predicted & ~positive).sum()),
        )
        sums.update(auc_sums(scores, positive))
        return sums

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """SageMaker's FM metrics: ``rmse`` (and ``mae``, ``r2``) for a regressor; ``binary_classification_accuracy``,
        ``binary_classification_cross_entropy``, ``binary_f_beta``, ``precision``,
        ``recall`` and ``roc_auc_score`` (from 2^16 logit bins) for a classifier."""
        n = sums.get("n_rows", 0.0)
        nan = float("nan")
        if not self.classifier:
            # Sums of states older than MAE and r2 lack them: those two are NaN then.
            total = sums.get("sum_shifted_label_squared", nan) - sums.get(
                "sum_shifted_label", nan
            ) ** 2 / max(n, 1.0)
            return {
                "n_rows": n,
                "rmse": float(np.sqrt(sums["sum_squared_error"] / n)) if n else nan,
                "mae": sums.get("sum_absolute_error", nan) / n if n else nan,
                "r2": 1.0 - sums["sum_squared_error"] / total if n and total > 0 else nan,
            }
        tp, fp = sums["true_positives"], sums["false_positives"]
        fn, tn = sums["false_negatives"], sums["true_negatives"]
        b2 = self.f_beta**2
        return {
            "n_rows": n,
            "binary_classification_accuracy": (tp + tn) / n if n else nan,
            "binary_classification_cross_entropy": sums["sum_log_loss"] / n if n else nan,
            "binary_f_beta": (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp) if tp else 0.0,
            "precision": tp / (tp + fp) if tp + fp else nan,
            "recall": tp / (tp + fn) if tp + fn else nan,
            "roc_auc_score": auc_from_sums(sums),
        }

    def recommend(
        self, user: Any, items: Any, n: int = 10, exclude: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best-scoring items for one user, scoring every item at once.

        Parameters
        ----------
        user : array-like of shape (d,) or (1, d), or a one-row CSR matrix
            The user's features (e.g. the one-hot column of the user id, plus context).
        items : array of int of shape (n_items,), or a matrix of shape (n_items, d)
            The items' feature columns (one-hot items), or their feature rows. User and
            item features must use different columns: a pair's row is their sum.
        n : int
            How many items to return.
        exclude : array of int, optional
            Positions in ``items`` never to return (e.g. items the user already rated).

        Returns
        -------
        positions : ndarray of shape (n,), int64
            Positions in ``items``, best first.
        scores : ndarray of shape (n,), float64
            Their predictions (probabilities for a classifier).

        Notes
        -----
        ``score(u + i) = score(u) + score(i) - w0 + <V^T x_u, V^T x_i>``: the user's part is
        computed once and each item costs O(nnz_i * k), one matrix product for all items.
        """
        x_u = sp.csr_matrix(
            user if sp.issparse(user) else np.atleast_2d(np.asarray(user, dtype=np.float32))
        )
        if x_u.shape != (1, self.n_features):
            raise BadInputError(
                f"recommend expects one user row of {self.n_features} features; "
                f"got shape {x_u.shape}."
            )
        user_score = float(self.scores(x_u)[0])
        user_factors = np.asarray(x_u @ self.factors, dtype=np.float64).ravel()  # (k,)
        items_array = items if sp.issparse(items) else np.asarray(items)
        if not sp.issparse(items_array) and items_array.ndim == 1:
            columns = items_array.astype(np.int64)
            if columns.size and (columns.min() < 0 or columns.max() >= self.n_features):
                raise BadInputError(f"recommend: item columns must be in [0, {self.n_features}).")
            item_factors = self.factors[columns].astype(np.float64)  # (n_items, k)
            # A one-hot item has no pairwise term of its own.
            item_scores = self.bias + self.linear[columns].astype(np.float64)
        else:
            item_rows = self._check(items_array).features
            item_factors = np.asarray(item_rows @ self.factors, dtype=np.float64)  # (n_items, k)
            item_scores = self.scores(item_rows)
        scores = user_score + item_scores - self.bias + item_factors @ user_factors  # (n_items,)
        if exclude is not None:
            scores = scores.copy()
            scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        count = check_int(n, "n", "FactorizationMachinesModel.recommend", 1)
        count = min(count, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, count - 1)[:count] if count else np.zeros(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        values = sigmoid(scores[top]) if self.classifier else scores[top]
        return top.astype(np.int64), values

    def describe(self) -> dict[str, Any]:
        described = {
            "predictor_type": self.predictor_type,
            "n_features": self.n_features,
            "num_factors": self.num_factors,
            "n_seen": self.n_seen,
            "threshold": self.threshold if self.classifier else None,
            "progressive_validation_loss": self.progressive_loss,
            "bias": self.bias,
        }
        if not self.classifier:  # the loss is the mean squared error; evaluate says rmse
            loss = self.progressive_loss
            described["progressive_validation_rmse"] = float(np.sqrt(loss)) if loss >= 0 else loss
        return described

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "bias": self.bias,
            "predictor_type": self.predictor_type,
            "threshold": self.threshold,
            "f_beta": self.f_beta,
            "n_seen": self.n_seen,
            "progressive_loss": self.progressive_loss,
        }
        return meta, {"linear": self.linear, "factors": self.factors}

    @classmethod
    def _from_payload(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> FactorizationMachinesModel:
        linear, factors = arrays["linear"], arrays["factors"]
        if factors.ndim != 2 or linear.shape != (factors.shape[0],):
            raise IncompatibleStateError(
                "Factorization Machines model arrays have shapes "
                f"{linear.shape} and {factors.shape}."
            )
        return cls(
            bias=float(meta["bias"]),
            linear=linear,
            factors=factors,
            predictor_type=str(meta["predictor_type"]),
            threshold=float(meta["threshold"]),
            f_beta=float(meta["f_beta"]),
            n_seen=int(meta["n_seen"]),
            progressive_loss=float(meta["progressive_loss"]),
        )

    def __repr__(self) -> str:
        return (
            f"FactorizationMachinesModel(predictor_type={self.predictor_type!r}, "
            f"n_features={self.n_features}, num_factors={self.num_factors}, n_seen={self.n_seen})"
        )


FactorizationMachinesState.MODEL = FactorizationMachinesModel
