"""Operating points: thresholds on a score chosen for a target sensitivity (or specificity) on validation data."""
from __future__ import annotations

import math

import numpy as np


def _validate(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D and the same length; got {y.shape} and {s.shape}")
    if y.all() or not y.any():
        raise ValueError("need both positive and negative cases to set an operating point")
    return y, s


def sensitivity_specificity(y_true, scores, threshold: float) -> tuple[float, float]:
    """Call positive when score >= threshold."""
    y, s = _validate(y_true, scores)
    called = s >= threshold
    return float(called[y].mean()), float((~called[~y]).mean())


def threshold_for_sensitivity(y_true, scores, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (so specificity is as high as it can be)."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1]; got {target}")
    y, s = _validate(y_true, scores)
    positives = np.sort(s[y])[::-1]
    needed = math.ceil(target * len(positives) - 1e-9)
    return float(positives[needed - 1])


def threshold_for_specificity(y_true, scores, target: float) -> float:
    """The lowest threshold whose specificity is at least ``target`` (so sensitivity is as high as it can be)."""
    if not 0 < target <= 1:
        raise ValueError(f"target specificity must be in (0, 1]; got {target}")
    y, s = _validate(y_true, scores)
    negatives = np.sort(s[~y])
    needed = math.ceil(target * len(negatives) - 1e-9)
    # Negatives strictly below the threshold count as correct; step just above the needed-th lowest negative.
    return float(np.nextafter(negatives[needed - 1], np.inf))
