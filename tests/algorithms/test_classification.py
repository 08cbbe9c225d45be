"""The classification pieces the linear learner and Factorization Machines share (issue 16):
additive AUC sums, thresholds from score histograms, binary label checks, the logistic link."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from beam_ml import BadInputError, Block
from beam_ml.core.classification import (
    AUC_BINS,
    auc_from_sums,
    auc_sums,
    best_thresholds,
    binary_labels,
    log_loss,
    logit_bins,
    logit_edge,
    sigmoid,
)


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in {*a, *b}}


def test_auc_sums_add_over_blocks_and_match_sklearn_for_a_weak_model(rng):
    # A weak model: its scores crowd into a narrow band of logits (AUC near 0.57).
    z = rng.normal(size=30_000)
    positive = rng.random(30_000) < expit(0.3 * z)
    scores = 0.3 * z
    whole = auc_sums(scores, positive)
    parts = reduce(_add, (auc_sums(scores[i::3], positive[i::3]) for i in range(3)))
    assert parts == whole  # counts: exact
    exact = roc_auc_score(positive, scores)
    assert 0.54 < exact < 0.60
    assert auc_from_sums(parts) == pytest.approx(exact, abs=1e-3)
    # Keys: one per non-empty bin and class; other metric sums are ignored.
    assert all(k[:8] in ("auc_pos_", "auc_neg_") and len(k) == 13 for k in whole)
    assert sum(whole.values()) == 30_000
    assert auc_from_sums({**whole, "n_rows": 30_000.0, "tp": 5.0}) == auc_from_sums(whole)


def test_auc_by_hand_ties_and_empty_classes():
    # Positives 0.2 and 2.0 against negatives -1 and 0.5: 3 of 4 pairs ordered.
    scores = np.array([-1.0, 0.5, 0.2, 2.0])
    positive = np.array([False, False, True, True])
    assert auc_from_sums(auc_sums(scores, positive)) == 0.75
    # Ties (one bin, or beyond the +-10 range) count one half.
    assert auc_from_sums(auc_sums(np.array([1.0, 1.0]), np.array([True, False]))) == 0.5
    assert auc_from_sums(auc_sums(np.array([30.0, 12.0]), np.array([True, False]))) == 0.5
    assert np.isnan(auc_from_sums(auc_sums(scores, np.ones(4, dtype=bool))))
    assert np.isnan(auc_from_sums({}))


def test_logit_bins_and_edges():
    bins = logit_bins(np.array([-50.0, -10.0, -0.01, 0.0, 0.04, 9.99, 10.0, 50.0]), 400)
    np.testing.assert_array_equal(bins, [0, 0, 199, 200, 200, 399, 399, 399])
    assert logit_edge(0, 400) == -10.0 and logit_edge(200, 400) == 0.0
    assert logit_edge(400, 400) == 10.0
    assert logit_bins(np.array([0.0]), AUC_BINS)[0] == AUC_BINS // 2


# Negatives and positives in 4 score bins (thresholds k = 0..4: predict 1 iff bin >= k):
#   k      0    1    2    3    4
#   tp     5    5    4    2    0
#   fp     5    3    1    0    0
#   acc  .5   .7   .8   .7   .5
_HIST = np.array([[[2.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 2.0]]])


@pytest.mark.parametrize(
    ("criterion", "kwargs", "value", "k"),
    [
        ("accuracy", {}, 0.8, 2),
        # F1 = 2 tp / (2 tp + fn + fp): 10/15, 10/13, 8/10, 4/7, 0
        ("f_beta", {"f_beta": 1.0}, 0.8, 2),
        # F2 weighs recall: 5 tp / (5 tp + 4 fn + fp): 25/30, 25/28, 20/25, ...
        ("f_beta", {"f_beta": 2.0}, 25 / 28, 1),
        # recall >= 0.8 at k <= 2; the best precision among them is 4/5 (k = 2)
        ("precision_at_target_recall", {"target_recall": 0.8}, 0.8, 2),
        # precision >= 0.75 at k >= 2 (4/5, 2/2, none predicted: 1); the best recall 0.8
        ("recall_at_target_precision", {"target_precision": 0.75}, 0.8, 2),
    ],
)
def test_best_thresholds_on_a_hand_computed_histogram(criterion, kwargs, value, k):
    values, best_k = best_thresholds(
        np.concatenate([_HIST, _HIST[:, ::-1, ::-1]]), criterion, **kwargs
    )
    assert values[0] == pytest.approx(value) and best_k[0] == k
    assert values.shape == best_k.shape == (2,)


def test_best_thresholds_ties_unreachable_targets_and_unknown_criteria():
    # Accuracy 0.5 at every threshold: the largest one (predict no positives).
    flat = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    assert best_thresholds(flat, "accuracy")[1][0] == 2
    # Without positives no threshold reaches a recall: -inf, for the caller to handle.
    no_positives = np.array([[[1.0, 2.0], [0.0, 0.0]]])
    values, _ = best_thresholds(no_positives, "precision_at_target_recall", target_recall=0.5)
    assert values[0] == -np.inf
    with pytest.raises(ValueError, match="Unknown threshold criterion 'auc'"):
        best_thresholds(_HIST, "auc")


def test_binary_labels_accept_01_and_pm1_and_name_the_bad_row():
    features = np.zeros((6, 2))
    np.testing.assert_array_equal(
        binary_labels(Block(features, np.r_[0, 1, 1, 0, 1, 0]), "Owner"), [0, 1, 1, 0, 1, 0]
    )
    pm1 = binary_labels(Block(features, np.r_[-1, 1, 1, -1, 1, -1]), "Owner")
    np.testing.assert_array_equal(pm1, [0, 1, 1, 0, 1, 0])
    assert pm1.dtype == np.float64
    with pytest.raises(BadInputError) as info:
        binary_labels(
            Block(features, np.r_[0, 1, 2, np.nan, 7, 0], origin=("a.libsvm", 99)), "Owner"
        )
    message = str(info.value)
    assert message.startswith("Owner: the label at row 2 is 2.0; it must be 0 or 1 (or -1/+1)")
    assert "3 of the block's 6 labels are bad" in message and "2.0, 7.0, nan" in message
    assert "from a.libsvm and starts at offset 99" in message
    with pytest.raises(BadInputError, match="Owner needs labels; the block has no labels"):
        binary_labels(Block(features, None), "Owner")
    with pytest.raises(BadInputError, match="Owner expects numeric labels"):
        binary_labels(Block(features, np.array(["a"] * 6)), "Owner")


def test_binary_labels_own_wording_non_finite_first_and_one_convention():
    features = np.zeros((4, 2))
    lead = "{owner} wants 0/1; row {row} is {value}; the block has {labels}."
    nonfinite = "{owner} wants finite labels; row {row} is {value}."
    with pytest.raises(BadInputError, match=r"^O wants finite labels; row 3 is inf\. 1 of"):
        binary_labels(Block(features, np.r_[0, 2, 1, np.inf]), "O", lead, nonfinite)
    with pytest.raises(BadInputError, match=r"^O wants 0/1; row 1 is 2.0; the block has 0, 1, 2\."):
        binary_labels(Block(features, np.r_[0, 2, 1, 1]), "O", lead, nonfinite)
    mixed = Block(features, np.r_[0, -1, 1, -1])
    np.testing.assert_array_equal(binary_labels(mixed, "O"), [0, 0, 1, 0])  # allowed by default
    with pytest.raises(BadInputError, match=r"row 1 is -1.0; the block has -1, 0, 1\. 2 of"):
        binary_labels(mixed, "O", lead, one_convention=True)


def test_sigmoid_and_log_loss_match_references_in_the_tails():
    s = np.array([-800.0, -40.0, -5.0, 0.0, 3.0, 40.0, 800.0])
    np.testing.assert_allclose(sigmoid(s), expit(s), rtol=1e-15, atol=0)
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    reference = np.logaddexp(0.0, s) - y * s
    np.testing.assert_allclose(log_loss(s, y), reference, rtol=1e-14)
    # Broadcasting: scores (rows, models) against labels (rows, 1).
    assert log_loss(np.zeros((3, 2)), np.ones((3, 1))).shape == (3, 2)
    np.testing.assert_allclose(log_loss(np.zeros(1), np.ones(1)), [np.log(2.0)])
