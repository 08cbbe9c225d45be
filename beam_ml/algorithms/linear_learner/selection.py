"""Models from a linear learner state: the exact solve or the packed candidate, and its threshold."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from beam_ml.algorithms.linear_learner.config import SELECTION_CRITERIA, SOLVERS
from beam_ml.algorithms.linear_learner.exact import MAX_EXACT_FEATURES, solve
from beam_ml.algorithms.linear_learner.model import LinearLearnerModel
from beam_ml.algorithms.linear_learner.packed import finite_or_none, score_edges
from beam_ml.core.classification import best_thresholds
from beam_ml.core.errors import NotEnoughDataError
from beam_ml.core.validation import check_bool, check_choice, check_float, check_int

if TYPE_CHECKING:
    pass

_LOG = logging.getLogger("beam_ml.linear_learner")


class Selection:
    """``derive`` and ``describe``, a part of :class:`LinearLearnerState`: the exact path's
    ridge or elastic net from the Gram matrix, or the packed candidate (and a binary
    classifier's threshold) that is best on the progressive or validation losses."""

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
        check_float(target_recall, "target_recall", where, 0.0, 1.0)
        check_float(target_precision, "target_precision", where, 0.0, 1.0)
        check_float(f_beta, "f_beta", where, 0.0, closed="right")
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
        cfg, n = self.config, self.n
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
        wd = check_float(wd, "wd", where, 0.0)
        l1 = check_float(l1, "l1", where, 0.0)
        normalize_data = cfg.normalize_data if normalize_data is None else normalize_data
        normalize_label = cfg.scales_label if normalize_label is None else normalize_label
        check_bool(normalize_data, "normalize_data", where)
        check_bool(normalize_label, "normalize_label", where)
        coef, intercept, method, nonzero = solve(
            self.exact, wd, l1, normalize_data, normalize_label, cfg.use_bias
        )
        info = {
            "solver": "exact",
            "method": method,
            "wd": wd,
            "l1": l1,
            "normalize_data": normalize_data,
            "normalize_label": normalize_label,
            "nonzero_coefficients": nonzero,
        }
        return self._model(coef[:, None], np.array([intercept]), 0.0, f_beta, info)

    def _candidate_losses(self) -> np.ndarray:
        """Each candidate's step-weighted progressive loss (inf for diverged models)."""
        p = self.progressive
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
            return losses, self.progressive_hist, weights, bias, epochs, "epoch-1 progressive"
        return self._candidate_losses(), self.progressive_hist, weights, bias, epochs, "progressive"

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
        p, m = self.progressive, self.m
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
        return self.progressive[2] / rows if rows else np.full(2 * self.m, np.nan)
