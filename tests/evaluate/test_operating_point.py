"""Choosing the operating points: the referral threshold for a sensitivity, then the non-neoplastic threshold."""
from __future__ import annotations

import numpy as np
import pytest

from dermlens.evaluate.operating_point import choose_non_neoplastic_threshold, choose_operating_point
from dermlens.taxonomy import ClassAssignment, TrainingClass, default_taxonomy
from dermlens.taxonomy.triage import NON_NEOPLASTIC, REFER, OperatingPoint


def _photos(rng, n_malignant=40, n_benign=60, n_non_neoplastic=60):
    """P(malignant), P(non-neoplastic) and the first-level truth of a validation set where rashes score high on
    P(non-neoplastic) and benign lesions low, with overlap."""
    top = np.array(["malignant"] * n_malignant + ["benign"] * n_benign + ["non_neoplastic"] * n_non_neoplastic)
    p_mal = np.where(top == "malignant", rng.uniform(0.2, 0.9, len(top)), rng.uniform(0.0, 0.4, len(top)))
    p_nn = np.where(top == "non_neoplastic", rng.uniform(0.3, 1.0, len(top)), rng.uniform(0.0, 0.5, len(top)))
    p_nn = np.minimum(p_nn, 1 - p_mal)
    return p_mal, p_nn, top


def test_the_second_threshold_separates_rashes_from_benign_lesions_among_photos_not_referred():
    p_mal, p_nn, top = _photos(np.random.default_rng(0))
    point = choose_non_neoplastic_threshold(OperatingPoint(threshold=0.25), p_mal, p_nn, top)
    kept = ~point.refers(p_mal)
    assert point.non_neoplastic_threshold is not None
    called = np.array([point.triage(m, n) == NON_NEOPLASTIC for m, n in zip(p_mal, p_nn)])
    rashes, benign = kept & (top == "non_neoplastic"), kept & (top == "benign")
    assert called[rashes].mean() == pytest.approx(point.non_neoplastic_recall)
    assert called[benign].mean() == pytest.approx(point.benign_called_non_neoplastic)
    assert point.non_neoplastic_recall > 0.7 and point.benign_called_non_neoplastic < 0.3
    # The referral calls, and so the sensitivity, are those of the first threshold alone.
    refer = np.array([point.triage(m, n) == REFER for m, n in zip(p_mal, p_nn)])
    assert np.array_equal(refer, p_mal >= 0.25)


def test_no_second_threshold_without_enough_non_neoplastic_photos():
    p_mal, p_nn, top = _photos(np.random.default_rng(1), n_non_neoplastic=5)
    point = choose_non_neoplastic_threshold(OperatingPoint(threshold=0.25), p_mal, p_nn, top)
    assert point.non_neoplastic_threshold is None


def test_choose_operating_point_sets_both_thresholds_from_class_probabilities():
    taxonomy = default_taxonomy()
    nodes = ["melanoma", "melanocytic_nevus", "psoriasis"]
    assert all(n in taxonomy for n in nodes)
    assignment = ClassAssignment(taxonomy, [TrainingClass(node=n, count=1) for n in nodes])
    rng = np.random.default_rng(2)
    p_mal, p_nn, top = _photos(rng)
    probs = np.stack([p_mal, 1 - p_mal - p_nn, p_nn], axis=1)
    labels = [{"malignant": "melanoma", "benign": "melanocytic_nevus", "non_neoplastic": "psoriasis"}[t] for t in top]
    point = choose_operating_point(taxonomy, assignment, probs, labels, target=0.9)
    assert point.sensitivity >= 0.9
    assert point.non_neoplastic_threshold is not None
    # Without rashes in the validation photos (dermoscopy), the point answers refer/reassure only.
    lesions = top != "non_neoplastic"
    point = choose_operating_point(taxonomy, assignment, probs[lesions], np.array(labels)[lesions].tolist(), 0.9)
    assert point.non_neoplastic_threshold is None
