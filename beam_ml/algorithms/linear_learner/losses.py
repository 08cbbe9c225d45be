"""The linear learner's labels and losses (per row, in training units)."""

from __future__ import annotations

from typing import Any

import numpy as np

from beam_ml.algorithms.linear_learner.config import LinearLearnerConfig
from beam_ml.core.block import Block, origin_note
from beam_ml.core.classification import binary_labels, block_labels, label_error, log_loss


# --- labels ------------------------------------------------------------------------------
def labels_for(block: Block, config: LinearLearnerConfig, owner: str) -> np.ndarray:
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
def pointwise_loss(
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


def softmax_loss(s: np.ndarray, y: np.ndarray, grad: bool) -> tuple[np.ndarray, Any, Any]:
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


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
