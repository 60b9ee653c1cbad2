"""Multi-class metrics as the ISIC challenges define them.

- Balanced multi-class accuracy (ISIC 2018/2019 goal metric): the mean over the classes present in the truth of
  each class's recall, the prediction being the argmax. When the highest probability is shared by two or more
  classes the image counts as wrong: an undecided answer is not a correct one (and a submission of uniform
  probabilities must score zero, not 1/C).
- One-vs-rest AUC per class.
- Partial AUC above a sensitivity (ISIC 2024's primary metric, ``min_tpr=0.8``): the area of the ROC region with
  true-positive rate at least 0.8, left raw (its maximum is 0.2) rather than McClish-standardised to [0.5, 1].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def _check(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"need integer targets (n,) and probabilities (n, classes); got {y.shape} and {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"targets must be class indices in [0, {p.shape[1]}); got {y.min()}..{y.max()}")
    return y.astype(int), p


def argmax_ties_wrong(probs) -> np.ndarray:
    """Argmax per row, or -1 where the maximum is shared (such rows match no class)."""
    p = np.asarray(probs, dtype=float)
    top = p.max(1, keepdims=True)
    tied = (p == top).sum(1) > 1
    return np.where(tied, -1, p.argmax(1))


def accuracy(y_true, probs) -> float:
    y, p = _check(y_true, probs)
    return float((argmax_ties_wrong(p) == y).mean())


def balanced_multiclass_accuracy(y_true, probs) -> float:
    """Mean recall over the classes that occur in ``y_true``; ties count as wrong."""
    y, p = _check(y_true, probs)
    predicted = argmax_ties_wrong(p)
    recalls = [float((predicted[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls))


def per_class_recall(y_true, probs) -> np.ndarray:
    """Recall of each column (NaN for classes absent from ``y_true``); ties count as wrong."""
    y, p = _check(y_true, probs)
    predicted = argmax_ties_wrong(p)
    return np.array([float((predicted[y == c] == c).mean()) if (y == c).any() else np.nan for c in range(p.shape[1])])


def per_class_auc(y_true, probs) -> np.ndarray:
    """One-vs-rest ROC AUC of each column; NaN where a class has no positives or no negatives."""
    y, p = _check(y_true, probs)
    out = np.full(p.shape[1], np.nan)
    for c in range(p.shape[1]):
        positive = y == c
        if positive.any() and not positive.all():
            out[c] = roc_auc_score(positive, p[:, c])
    return out


def _area_above(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """Integral over FPR of max(TPR - level, 0) along the piecewise-linear ROC curve."""
    area = 0.0
    for x0, y0, x1, y1 in zip(fpr[:-1], tpr[:-1], fpr[1:], tpr[1:]):
        if x1 == x0:
            continue
        a, b = y0 - level, y1 - level
        if a >= 0 and b >= 0:
            area += (x1 - x0) * (a + b) / 2
        elif a > 0 or b > 0:  # the segment crosses the level: only the triangle above it counts
            above, below = max(a, b), min(a, b)
            area += (x1 - x0) * above / (above - below) * above / 2
    return float(area)


def partial_auc_above_sensitivity(y_true, scores, min_sensitivity: float = 0.8) -> float:
    """Raw partial ROC area where sensitivity >= ``min_sensitivity`` (in [0, 1 - min_sensitivity])."""
    if not 0 <= min_sensitivity < 1:
        raise ValueError(f"min_sensitivity must be in [0, 1); got {min_sensitivity}")
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        raise ValueError("partial AUC needs positive and negative cases")
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=float), drop_intermediate=False)
    return _area_above(fpr, tpr, min_sensitivity)


def per_class_partial_auc(y_true, probs, min_sensitivity: float = 0.8) -> np.ndarray:
    y, p = _check(y_true, probs)
    out = np.full(p.shape[1], np.nan)
    for c in range(p.shape[1]):
        positive = y == c
        if positive.any() and not positive.all():
            out[c] = partial_auc_above_sensitivity(positive, p[:, c], min_sensitivity)
    return out


def isic_summary(y_true, probs, classes: Sequence[str], min_sensitivity: float = 0.8) -> dict:
    """Everything above for one set of predictions, JSON-ready (NaN becomes None)."""
    y, p = _check(y_true, probs)
    clean = lambda values: [None if np.isnan(v) else float(v) for v in values]  # noqa: E731
    auc = per_class_auc(y, p)
    pauc = per_class_partial_auc(y, p, min_sensitivity)
    return {
        "classes": list(classes),
        "n": int(len(y)),
        "support": np.bincount(y, minlength=p.shape[1]).tolist(),
        "balanced_multiclass_accuracy": balanced_multiclass_accuracy(y, p),
        "accuracy": accuracy(y, p),
        "n_ties": int((argmax_ties_wrong(p) == -1).sum()),
        "recall": clean(per_class_recall(y, p)),
        "auc": clean(auc),
        "mean_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else None,
        f"partial_auc_above_{min_sensitivity:g}_sensitivity": clean(pauc),
        "partial_auc_min_sensitivity": min_sensitivity,
    }
