"""A derived linear model: scores, outputs and metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from beam_ml.algorithms.linear_learner.config import LinearLearnerConfig
from beam_ml.algorithms.linear_learner.losses import (
    labels_for,
    pointwise_loss,
    softmax,
    softmax_loss,
)
from beam_ml.core.block import MatrixSpec
from beam_ml.core.classification import auc_from_sums, auc_sums, sigmoid
from beam_ml.core.state import Model


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
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.coef.shape[0])

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
        probs = softmax(s)
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
        y = labels_for(block, config, "LinearLearnerModel")
        s = self.scores(block)
        sums: dict[str, float] = {"n_rows": float(len(y))}
        if self.predictor_type == "regressor":
            r = s[:, 0] - y
            value, _ = pointwise_loss(self.loss, s, y[:, None], config, False)
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
            value, _ = pointwise_loss(self.loss, s, y[:, None], config, False)
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
            value, _, correct = softmax_loss(s[:, None, :], cls, False)
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
