"""The linear learner's epochs: validation rows, best epochs, early stopping (issue 24)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from beam_ml.algorithms.linear_learner.losses import pointwise_loss, softmax_loss
from beam_ml.algorithms.linear_learner.packed import bin_counts, finite_or_none
from beam_ml.core.moments import Moments

if TYPE_CHECKING:
    from beam_ml.algorithms.linear_learner.state import LinearLearnerState

_LOG = logging.getLogger("beam_ml.linear_learner")
_MAX_EPOCH_METRICS = 1000  # per-epoch metrics kept (the latest)


class Epochs:
    """Epochs of the packed models, a part of :class:`LinearLearnerState` (see the package
    notes, "Validation rows, best epochs and early stopping"): scoring every candidate on
    the validation rows when an epoch closes, keeping each one's best epoch, early
    stopping, the per-epoch metrics, and ``continued`` / ``followed_by``."""

    @property
    def stopped(self) -> bool:
        """Whether early stopping holds the models (only within the configured epochs:
        training resumed on new rows past them trains again)."""
        return self.stopped_epoch > 0 and self.epoch <= self.config.epochs

    def _validating(self) -> bool:
        return self.validation is not None and self.validation.n_rows > 0

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's parameters: (d, 2 m k) weights [coef | avg_coef], biases."""
        return self.network.candidates()

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
            state.progressive[:] = 0.0
            if state.progressive_hist is not None:
                state.progressive_hist[:] = 0.0
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
        out.progressive = self.progressive + later.progressive
        if out.progressive_hist is not None:
            out.progressive_hist = self.progressive_hist + later.progressive_hist
        return out
