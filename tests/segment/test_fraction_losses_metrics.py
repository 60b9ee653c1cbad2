"""The shared tissue-fraction losses and metrics (dermlens.segment) on hand-made maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dermlens.segment.losses import LOSSES, binary_cross_entropy, soft_cross_entropy
from dermlens.segment.metrics import area_error, fuzzy_dice, jaccard, thresholded_jaccard


def _loss_at(probability: float, fraction: torch.Tensor) -> float:
    return float(soft_cross_entropy(torch.full_like(fraction, float(torch.logit(torch.tensor(probability)))),
                                    fraction))


def test_soft_cross_entropy_is_minimised_at_the_true_fraction():
    fraction = torch.full((1, 1, 4, 4), 0.3)
    assert _loss_at(0.3, fraction) < _loss_at(0.29, fraction)
    assert _loss_at(0.3, fraction) < _loss_at(0.31, fraction)
    assert _loss_at(0.3, fraction) < _loss_at(0.0 + 1e-3, fraction)  # not at the binarised target 0
    at_truth = torch.full_like(fraction, float(torch.logit(torch.tensor(0.3))), requires_grad=True)
    soft_cross_entropy(at_truth, fraction).backward()
    assert at_truth.grad.abs().max() < 1e-6


def test_soft_cross_entropy_expected_over_a_posterior_is_minimised_at_its_mean():
    # Two equally likely truths, 0.2 and 0.9: the expected loss is stationary at the posterior mean 0.55 only.
    truths = [torch.full((1, 1, 2, 2), 0.2), torch.full((1, 1, 2, 2), 0.9)]

    def gradient(probability: float) -> float:
        logit = torch.full((1, 1, 2, 2), float(torch.logit(torch.tensor(probability))), requires_grad=True)
        sum(soft_cross_entropy(logit, t) for t in truths).backward()
        return float(logit.grad.sum())

    assert abs(gradient(0.55)) < 1e-6
    assert gradient(0.5) < -1e-3 and gradient(0.6) > 1e-3


def test_binary_cross_entropy_binarises_the_targets_at_one_half():
    logits = torch.tensor([[[[0.3, -1.2, 2.0, 0.0]]]])
    fractions = torch.tensor([[[[0.49, 0.5, 0.9, 0.1]]]])
    expected = soft_cross_entropy(logits, torch.tensor([[[[0.0, 1.0, 1.0, 0.0]]]]))
    assert float(binary_cross_entropy(logits, fractions)) == pytest.approx(float(expected))
    assert float(binary_cross_entropy(logits, fractions)) != pytest.approx(float(soft_cross_entropy(logits, fractions)))
    assert LOSSES["fraction"] is soft_cross_entropy and LOSSES["binary"] is binary_cross_entropy
    with pytest.raises(ValueError, match="differ in shape"):
        soft_cross_entropy(logits, fractions[..., :2])


def test_fuzzy_dice_on_hand_made_maps():
    maps = np.array([[0.2, 0.7], [1.0, 0.0]])
    assert fuzzy_dice(maps, maps) == pytest.approx(1.0)
    assert fuzzy_dice(np.array([[1.0, 0.0]]), np.array([[0.0, 0.6]])) == pytest.approx(0.0)
    # 2 * (min(0.5, 1) + min(1, 0)) / (1.5 + 1) = 0.4
    assert fuzzy_dice(np.array([0.5, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.4)
    # On binary maps it is the ordinary Dice: 2 * 1 / (2 + 1)
    assert fuzzy_dice(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])) == pytest.approx(2 / 3)
    assert fuzzy_dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError):
        fuzzy_dice(np.zeros(3), np.zeros(4))


def test_area_error_on_hand_numbers():
    truth = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert area_error(np.array([[1.0, 1.0], [1.0, 0.0]]), truth) == pytest.approx(0.25)
    assert area_error(np.array([[1.0, 1.0], [1.0, 1.5]]), truth) == pytest.approx(0.125)
    # Spatially wrong but the same total: the area is right.
    assert area_error(np.array([[0.5, 0.5], [0.5, 2.5]]), truth) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="empty"):
        area_error(truth, np.zeros_like(truth))


def test_jaccard_binarises_at_one_half():
    # binarised: pred [0, 1, 1], truth [1, 1, 0] -> intersection 1, union 3
    assert jaccard(np.array([0.49, 0.5, 1.0]), np.array([1.0, 0.7, 0.2])) == pytest.approx(1 / 3)
    assert jaccard(np.array([0.6, 0.9]), np.array([1.0, 0.51])) == pytest.approx(1.0)
    assert jaccard(np.zeros(4), np.full(4, 0.4)) == 1.0  # both empty after binarising


def test_thresholded_jaccard_on_hand_numbers():
    assert thresholded_jaccard([0.9, 0.6, 0.7]) == pytest.approx((0.9 + 0.0 + 0.7) / 3)
    assert thresholded_jaccard([0.65, 0.649]) == pytest.approx(0.65 / 2)
    with pytest.raises(ValueError):
        thresholded_jaccard([])

