"""Segmentation metrics on one image's maps (numpy arrays of the same shape, values in [0, 1]).

Binary metrics (Jaccard) binarise at 0.5. Fractional ones (fuzzy Dice, area error) use the maps as they are:
the fuzzy intersection of two fraction maps is their pixel-wise minimum (Zadeh's fuzzy set intersection), so
fuzzy Dice = 2 sum(min(p, t)) / (sum(p) + sum(t)), which equals the ordinary Dice on binary maps.
"""
from __future__ import annotations

import numpy as np

ISIC_JACCARD_THRESHOLD = 0.65  # ISIC 2018 task 1: a case scores 0 when its Jaccard falls below this


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    return pred, true


def jaccard(pred, true) -> float:
    """Intersection over union of the two maps binarised at 0.5; 1.0 when both are empty."""
    pred, true = _pair(pred, true)
    p, t = pred >= 0.5, true >= 0.5
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def thresholded_jaccard(scores) -> float:
    """ISIC 2018's score over cases: the mean Jaccard after setting every Jaccard below 0.65 to 0."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("thresholded_jaccard: no cases")
    return float(np.where(scores >= ISIC_JACCARD_THRESHOLD, scores, 0.0).mean())


def fuzzy_dice(pred, true) -> float:
    """Dice of two fraction maps with min as intersection; 1.0 when both are empty."""
    pred, true = _pair(pred, true)
    total = pred.sum() + true.sum()
    return 1.0 if total == 0 else float(2.0 * np.minimum(pred, true).sum() / total)


def area_error(pred, true) -> float:
    """|estimated area - true area| / true area, areas as sums of fractions (pixels)."""
    pred, true = _pair(pred, true)
    true_area = true.sum()
    if true_area <= 0:
        raise ValueError("area_error: the true map is empty (relative error undefined)")
    return float(abs(pred.sum() - true_area) / true_area)
