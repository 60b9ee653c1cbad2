"""ISIC multi-class metrics against hand-computed fixtures."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import auc, balanced_accuracy_score, roc_curve

from dermlens.evaluate.isic_metrics import (
    accuracy,
    argmax_ties_wrong,
    balanced_multiclass_accuracy,
    isic_summary,
    partial_auc_above_sensitivity,
    per_class_auc,
)

# Row 1 ties between classes 0 and 1 (wrong); row 3 predicts 0 for a class-1 image (wrong).
Y = np.array([0, 0, 1, 1, 2])
P = np.array([
    [0.6, 0.3, 0.1],
    [0.4, 0.4, 0.2],
    [0.2, 0.7, 0.1],
    [0.5, 0.3, 0.2],
    [0.1, 0.1, 0.8],
])


def test_ties_count_as_wrong_in_balanced_accuracy():
    # recalls: class 0 = 1/2 (the tie is wrong), class 1 = 1/2, class 2 = 1  ->  mean 2/3
    assert balanced_multiclass_accuracy(Y, P) == pytest.approx(2 / 3)
    assert accuracy(Y, P) == pytest.approx(3 / 5)
    assert argmax_ties_wrong(P).tolist() == [0, -1, 1, 0, 2]


def test_uniform_probabilities_score_zero_not_one_over_c():
    uniform = np.full((6, 3), 1 / 3)
    assert balanced_multiclass_accuracy([0, 1, 2, 0, 1, 2], uniform) == 0.0


def test_only_classes_present_in_truth_are_averaged():
    # Class 2 never occurs in the truth: its (undefined) recall must not drag the mean down.
    y = np.array([0, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    assert balanced_multiclass_accuracy(y, p) == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_equals_sklearn_balanced_accuracy_without_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 40)
    p = rng.random((40, 4))  # continuous: ties have probability zero
    assert balanced_multiclass_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))


def test_per_class_auc_hand_computed():
    y = np.array([0, 0, 1, 1])
    scores1 = np.array([0.1, 0.4, 0.35, 0.8])
    p = np.stack([1 - scores1, scores1], axis=1)
    # class 1: positive/negative pairs (0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4) -> 3/4
    assert per_class_auc(y, p).tolist() == pytest.approx([0.75, 0.75])
    absent = per_class_auc(np.array([0, 0, 1, 1]), np.array([[0.5, 0.3, 0.2]] * 4))
    assert np.isnan(absent[2])


def test_partial_auc_above_80_percent_sensitivity_hand_computed():
    # ROC: (0,0) (0,.5) (.5,.5) (.5,1) (1,1). Sensitivity >= .8 only for FPR in [.5, 1], where TPR = 1:
    # area = 0.5 * (1 - 0.8) = 0.1.
    assert partial_auc_above_sensitivity([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.1)


def test_partial_auc_with_a_segment_crossing_the_threshold():
    # Five positives, two negatives; the tie at 0.6 (two positives, one negative) is a diagonal segment
    # (0, .6) -> (.5, 1.0) that crosses TPR .8 at FPR .25: triangle .25 * .2 / 2 = .025; then (.5, 1) -> (1, 1): .1.
    y = [1, 1, 1, 1, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.1]
    assert partial_auc_above_sensitivity(y, s) == pytest.approx(0.125)


def test_partial_auc_extremes_are_raw_not_mcclish():
    y = [0, 0, 0, 1, 1, 1]
    assert partial_auc_above_sensitivity(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) == pytest.approx(0.2)  # perfect
    assert partial_auc_above_sensitivity(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]) == pytest.approx(0.0)  # reversed
    with pytest.raises(ValueError):
        partial_auc_above_sensitivity([1, 1], [0.2, 0.3])


def _isic_2024_reference(y, s, min_tpr=0.8):
    """The ISIC 2024 challenge's formulation: flip labels and scores, then the area up to FPR' = 1 - min_tpr."""
    v_gt = 1 - np.asarray(y)
    v_pred = 1 - np.asarray(s, dtype=float)
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = roc_curve(v_gt, v_pred)
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr = np.append(tpr[:stop], np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]]))
    fpr = np.append(fpr[:stop], max_fpr)
    return auc(fpr, tpr)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_partial_auc_matches_the_isic_2024_formulation(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    s = np.round(rng.random(60) + 0.5 * y, 1)  # rounding makes ties, hence diagonal segments
    assert partial_auc_above_sensitivity(y, s) == pytest.approx(_isic_2024_reference(y, s), abs=1e-9)


def test_summary_reports_every_metric_per_class():
    summary = isic_summary(Y, P, ["a", "b", "c"])
    assert summary["balanced_multiclass_accuracy"] == pytest.approx(2 / 3)
    assert summary["n_ties"] == 1
    assert summary["support"] == [2, 2, 1]
    assert len(summary["auc"]) == len(summary["partial_auc_above_0.8_sensitivity"]) == 3
