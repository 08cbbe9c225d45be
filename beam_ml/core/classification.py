"""Binary classification pieces the linear learner and Factorization Machines share.

Label checks, the logistic loss and sigmoid, the threshold chosen from score
histograms for a criterion, and the area under the ROC curve from additive sums.

The two algorithms keep their own score histograms for thresholds (bin layouts are
part of their states' byte formats); what runs on those histograms is here. The AUC
sums are the metric sums of :meth:`beam_ml.core.state.Model.metric_sums`: plain
counts per bin, so the sums of blocks added up give the AUC of their union exactly
(as far as the bins go).

Examples
--------
>>> import numpy as np
>>> scores, positive = np.array([-1.0, 0.5, 0.2, 2.0]), np.array([False, False, True, True])
>>> auc_from_sums(auc_sums(scores, positive))
0.75
>>> hist = np.array([[[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]])  # (1, 2, 3): negatives, positives
>>> values, k = best_thresholds(hist, "accuracy")
>>> float(values[0]), int(k[0])
(0.8333333333333334, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from beam_ml.core.block import Block, origin_note
from beam_ml.core.errors import BadInputError

__all__ = [
    "AUC_BINS",
    "BINARY_LABELS",
    "CRITERIA",
    "LOGIT_RANGE",
    "auc_from_sums",
    "auc_sums",
    "best_thresholds",
    "binary_labels",
    "block_labels",
    "label_error",
    "log_loss",
    "logit_bins",
    "logit_edge",
    "sigmoid",
]

#: The threshold criteria :func:`best_thresholds` maximizes (SageMaker's names).
CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision")
#: Logit (raw score) bins cover [-LOGIT_RANGE, LOGIT_RANGE]; scores beyond fall in the end bins.
LOGIT_RANGE = 10.0
# 2^16 bins of 0.0003 in logit: a weak model's scores crowd into a narrow band, where
# 1,000 bins tied most pairs (AUC 0.554 for an exact 0.570, issue 24).
AUC_BINS = 65536
_AUC_KEYS = ("auc_pos_", "auc_neg_")

#: The first sentence of a bad binary label's error (see :func:`label_error`).
BINARY_LABELS = (
    "{owner}: the label at row {row} is {value}; it must be 0 or 1 (or -1/+1) for a "
    "binary_classifier."
)


# --- labels ------------------------------------------------------------------------------
def block_labels(block: Block, owner: str) -> np.ndarray:
    """The block's labels as float64, raising :class:`BadInputError` (ending with the
    block's origin) if it has none or they are not numbers."""
    if block.labels is None:
        raise BadInputError(
            f"{owner} needs labels; the block has no labels: give blocks as "
            "Block(features, labels) (readers: label_column=..., or --label_column for "
            "CSV/JSON input; LIBSVM files carry them)." + origin_note(block)
        )
    try:
        return np.asarray(block.labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"{owner} expects numeric labels." + origin_note(block)) from None


def label_error(
    owner: str, labels: np.ndarray, bad: np.ndarray, lead: str, where: str
) -> BadInputError:
    """The error for the ``bad`` (mask) rows of ``labels``: ``lead`` (a format string
    with ``{owner}``, ``{row}`` (the first bad row, from 0 within the block), ``{value}``
    (its label) and ``{labels}`` (the block's distinct labels, at most six)), then how
    many labels are bad and their values, then ``where`` (the block's origin)."""
    rows = np.flatnonzero(bad)
    row = int(rows[0])
    values = np.unique(labels[rows][:1000].astype(str))
    shown = ", ".join(values[:5].tolist()) + (", ..." if len(values) > 5 else "")
    distinct = np.unique(labels[:100_000])
    first = lead.format(
        owner=owner,
        row=row,
        value=repr(float(labels[row])),
        labels=", ".join(f"{v:g}" for v in distinct[:6]) + (", ..." if len(distinct) > 6 else ""),
    )
    return BadInputError(
        f"{first} {len(rows)} of the block's {len(labels)} labels are bad (rows are "
        f"numbered from 0 within the block; bad values: {shown})." + where
    )


def binary_labels(
    block: Block,
    owner: str,
    lead: str = BINARY_LABELS,
    nonfinite: str | None = None,
    one_convention: bool = False,
) -> np.ndarray:
    """The block's binary labels as float64 0/1: 0 and 1, or -1 and +1 (LIBSVM).

    Parameters
    ----------
    block : Block
    owner : str
        Who checks (a class name), for the error.
    lead : str
        The error's first sentence for a label other than -1, 0 or 1 (see
        :func:`label_error`).
    nonfinite : str, optional
        A first sentence of its own for NaN/inf labels, checked first.
    one_convention : bool
        Refuse a block mixing -1 and 0 (0/1 or -1/+1, not both): its -1 rows are bad.

    Raises
    ------
    BadInputError
        Naming the first bad row, its value, how many are bad, their values and the
        block's origin (file and offset), so the record can be found in the input.
    """
    labels = block_labels(block, owner)
    finite = np.isfinite(labels)
    if nonfinite is not None and not finite.all():
        raise label_error(owner, labels, ~finite, nonfinite, origin_note(block))
    bad = ~finite | ((labels != 0) & (labels != 1) & (labels != -1))
    if one_convention and not bad.any():
        negative = labels == -1
        if negative.any() and (labels == 0).any():
            bad = negative
    if bad.any():
        raise label_error(owner, labels, bad, lead, origin_note(block))
    return (labels > 0).astype(np.float64)


# --- the logistic link -------------------------------------------------------------------
def sigmoid(scores: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-s)`` without overflow, accurate in both tails (float64)."""
    e = np.exp(-np.abs(scores))
    return np.where(scores >= 0, 1.0, e) / (1.0 + e)


def log_loss(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The logistic loss ``log(1 + e^s) - y s`` of scores (logits) for 0/1 labels,
    elementwise (broadcasting), stably.

    Notes
    -----
    In place on one new array: numpy's vectorized exp/log1p are several times faster
    than ``logaddexp`` or a ``where()``, and this runs on every training mini-batch.
    """
    value = np.abs(scores)
    np.negative(value, out=value)
    np.exp(value, out=value)
    np.log1p(value, out=value)
    value += np.maximum(scores, 0)
    value -= labels * scores
    return value


def logit_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each score among ``bins`` equal bins over [-LOGIT_RANGE, LOGIT_RANGE]
    (scores beyond go to the end bins), int64."""
    width = 2 * LOGIT_RANGE / bins
    return np.clip(((scores + LOGIT_RANGE) / width).astype(np.int64), 0, bins - 1)


def logit_edge(k: int, bins: int) -> float:
    """The lower edge of :func:`logit_bins`' bin ``k`` (``k = bins``: the upper end)."""
    return -LOGIT_RANGE + k * 2 * LOGIT_RANGE / bins


# --- thresholds --------------------------------------------------------------------------
def best_thresholds(
    hist: np.ndarray,
    criterion: str,
    target_recall: float = 0.8,
    target_precision: float = 0.8,
    f_beta: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the best value of ``criterion`` over all thresholds, and the
    threshold index achieving it (predict positive iff the score's bin >= k).

    Parameters
    ----------
    hist : ndarray of shape (c, 2, bins)
        Per candidate, the score histograms of negatives then positives (any bin layout
        in score order; counts may be weighted).
    criterion : str
        One of :data:`CRITERIA`.

    Returns
    -------
    values : ndarray of shape (c,)
        The criterion's best value; -inf where no threshold reaches the target recall
        or precision.
    best_k : ndarray of shape (c,), int
        In [0, bins]: ``bins`` predicts no positives. Ties: the largest threshold (fewest
        positives) among the best.

    Notes
    -----
    All candidates and thresholds at once: (c, bins + 1) arrays of true and false
    positives from reversed cumulative sums. With no rows, accuracy is 0 everywhere.
    """
    neg, pos = hist[:, 0], hist[:, 1]
    zeros = np.zeros((len(hist), 1))
    tp = np.concatenate([np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    fp = np.concatenate([np.cumsum(neg[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    n_pos, n_neg = pos.sum(axis=1, keepdims=True), neg.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_pos > 0, tp / n_pos, 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        if criterion == "accuracy":
            value = (tp + n_neg - fp) / np.maximum(n_pos + n_neg, 1e-300)
        elif criterion == "f_beta":
            b2 = f_beta * f_beta
            denom = (1 + b2) * tp + b2 * (n_pos - tp) + fp
            value = np.where(denom > 0, (1 + b2) * tp / denom, 0.0)
        elif criterion == "precision_at_target_recall":
            value = np.where(recall >= target_recall, precision, -np.inf)
        elif criterion == "recall_at_target_precision":
            value = np.where(precision >= target_precision, recall, -np.inf)
        else:
            raise ValueError(f"Unknown threshold criterion {criterion!r}; one of {CRITERIA}.")
    best_k = value.shape[1] - 1 - np.argmax(value[:, ::-1], axis=1)
    return value[np.arange(len(value)), best_k], best_k


# --- area under the ROC curve ------------------------------------------------------------
def auc_sums(scores: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """Additive AUC sums of a block: per class, the count of its scores in each of
    :data:`AUC_BINS` logit bins (non-empty bins only, keys ``auc_pos_00042``,
    ``auc_neg_…``).

    ``scores`` are raw scores in logit units (a hinge loss's margin does as well: only
    their order counts, to 0.0003 within ±10); ``positive`` is a boolean mask."""
    bins = logit_bins(np.asarray(scores), AUC_BINS)
    sums: dict[str, float] = {}
    for prefix, mask in zip(_AUC_KEYS, (positive, ~positive), strict=True):
        counts = np.bincount(bins[mask], minlength=AUC_BINS)
        sums.update({f"{prefix}{b:05d}": float(counts[b]) for b in np.flatnonzero(counts)})
    return sums


def _binned(sums: dict[str, Any], prefix: str) -> np.ndarray:
    counts = np.zeros(AUC_BINS)
    for name, value in sums.items():
        if name.startswith(prefix):
            counts[int(name[len(prefix) :])] += value
    return counts


def auc_from_sums(sums: dict[str, Any]) -> float:
    """ROC AUC from added-up :func:`auc_sums` (other keys are ignored): the probability
    that a positive scores above a negative, ties within a bin counting one half. NaN
    without both classes."""
    pos, neg = (_binned(sums, prefix) for prefix in _AUC_KEYS)
    pairs = pos.sum() * neg.sum()
    if not pairs:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / pairs)
