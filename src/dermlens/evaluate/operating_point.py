"""Operating points: thresholds on a score chosen for a target sensitivity (or specificity) on validation data.

The rule that applies a threshold is :func:`dermlens.taxonomy.triage.refers`; this module only chooses thresholds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from dermlens.taxonomy import ClassAssignment, OperatingPoint, Taxonomy, TreeSum, refers


def _validate(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D and the same length; got {y.shape} and {s.shape}")
    if y.all() or not y.any():
        raise ValueError("need both positive and negative cases to set an operating point")
    return y, s


def sensitivity_specificity(y_true, scores, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the triage rule (refer when score >= threshold)."""
    y, s = _validate(y_true, scores)
    called = refers(s, threshold)
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


def choose_operating_point(
    taxonomy: Taxonomy, assignment: ClassAssignment, probs: np.ndarray, label_nodes: Sequence[str], target: float
) -> OperatingPoint:
    """Referral threshold on P(malignant) reaching ``target`` sensitivity on validation data (class probabilities
    ``probs`` of the images whose label nodes are ``label_nodes``)."""
    p_malignant = TreeSum(taxonomy, assignment.classes).node(probs, "malignant")
    truth = np.array([taxonomy.ancestor_at_level(n, 1) == "malignant" for n in label_nodes])
    if truth.all() or not truth.any():
        return OperatingPoint(chosen_on="default 0.5: validation data lacks malignant or benign cases")
    threshold = threshold_for_sensitivity(truth, p_malignant, target)
    # That is the score of one malignant validation image: float noise between this computation and the
    # predictor's (another batch size, float64 renormalisation, ONNX or bf16) would turn it into "reassure". Half-way
    # down to the next lower score (or to 0) makes the same calls on validation data, with a margin on both sides.
    lower = p_malignant[p_malignant < threshold]
    threshold = float((threshold + (lower.max() if lower.size else 0.0)) / 2)
    sens, spec = sensitivity_specificity(truth, p_malignant, threshold)
    return OperatingPoint(
        node="malignant", threshold=threshold, target_sensitivity=target,
        sensitivity=sens, specificity=spec, chosen_on=f"validation ({len(truth)} images, {int(truth.sum())} malignant)",
    )
