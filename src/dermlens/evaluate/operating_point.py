"""Operating points: thresholds on a score chosen for a target sensitivity (or specificity) on validation data.

The rule that applies a threshold is :func:`dermlens.taxonomy.triage.refers`; this module only chooses thresholds.
:func:`choose_operating_points` is the one place a model's points (pooled and per modality) are chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    ``probs`` of the images whose label nodes are ``label_nodes``), and the non-neoplastic threshold for the photos
    it does not refer (:func:`choose_non_neoplastic_threshold`)."""
    tree_sum = TreeSum(taxonomy, assignment.classes)
    p_malignant = tree_sum.node(probs, "malignant")
    top_level = np.array([taxonomy.ancestor_at_level(n, 1) for n in label_nodes])
    truth = top_level == "malignant"
    if truth.all() or not truth.any():
        return OperatingPoint(chosen_on="default 0.5: validation data lacks malignant or benign cases")
    threshold = _with_margin(threshold_for_sensitivity(truth, p_malignant, target), p_malignant)
    sens, spec = sensitivity_specificity(truth, p_malignant, threshold)
    point = OperatingPoint(
        node="malignant", threshold=threshold, target_sensitivity=target,
        sensitivity=sens, specificity=spec, chosen_on=f"validation ({len(truth)} images, {int(truth.sum())} malignant)",
    )
    if "non_neoplastic" in taxonomy:
        p_non_neoplastic = tree_sum.node(probs, "non_neoplastic")
        choose_non_neoplastic_threshold(point, p_malignant, p_non_neoplastic, top_level)
    return point


def _with_margin(threshold: float, scores: np.ndarray) -> float:
    """A threshold that is the score of one validation image: float noise between this computation and the
    predictor's (another batch size, float64 renormalisation, ONNX or bf16) would flip that image. Half-way down to
    the next lower score (or to 0) makes the same calls on validation data, with a margin on both sides."""
    lower = scores[scores < threshold]
    return float((threshold + (lower.max() if lower.size else 0.0)) / 2)


def choose_non_neoplastic_threshold(point: OperatingPoint, p_malignant, p_non_neoplastic, top_level,
                                    min_photos: int = 20) -> OperatingPoint:
    """Set ``point``'s second threshold: among validation photos the referral rule does not refer, the threshold on
    P(non-neoplastic) that best separates non-neoplastic from benign photos (balanced accuracy; the highest such
    threshold on ties, so the answer is given no more often than it helps). Left unset (refer/reassure only) when
    the photos hold fewer than ``min_photos`` non-neoplastic or benign photos, as dermoscopic sets do. The referral
    decision comes first, so the sensitivity for malignant photos is the one the referral threshold was chosen for.
    """
    p_malignant, p_non_neoplastic = np.asarray(p_malignant, float), np.asarray(p_non_neoplastic, float)
    top_level = np.asarray(top_level)
    kept = ~point.refers(p_malignant)
    non_neoplastic, benign = kept & (top_level == "non_neoplastic"), kept & (top_level == "benign")
    if min(non_neoplastic.sum(), benign.sum()) < min_photos:
        return point
    scores = p_non_neoplastic[non_neoplastic | benign]
    candidates = np.unique(scores)[::-1]  # highest first, so ties keep the highest threshold
    recall = np.array([refers(p_non_neoplastic[non_neoplastic], t).mean() for t in candidates])
    benign_called = np.array([refers(p_non_neoplastic[benign], t).mean() for t in candidates])
    best = int(np.argmax((recall + 1 - benign_called) / 2))
    point.non_neoplastic_threshold = _with_margin(float(candidates[best]), scores)
    point.non_neoplastic_recall = float(refers(p_non_neoplastic[non_neoplastic], point.non_neoplastic_threshold).mean())
    point.benign_called_non_neoplastic = float(refers(p_non_neoplastic[benign], point.non_neoplastic_threshold).mean())
    return point


POOLED = "pooled"  # the point for photos of unknown modality


@dataclass
class OperatingPoints:
    """The points chosen on one set of labelled photos: ``pooled`` (photos of unknown modality) and one per
    modality with photos of its own. ``untuned`` names each point the data could not choose, and why."""

    pooled: OperatingPoint
    per_modality: dict[str, OperatingPoint] = field(default_factory=dict)
    untuned: dict[str, str] = field(default_factory=dict)

    @property
    def tuned(self) -> dict[str, OperatingPoint]:
        """Every point the data chose, by name (``pooled`` or a modality)."""
        points = {} if POOLED in self.untuned else {POOLED: self.pooled}
        return {**points, **self.per_modality}

    def apply(self, config) -> dict[str, OperatingPoint]:
        """Write the tuned points into a model's config (``ModelConfig``); the others stay as they were. Returns
        the points replaced, by name, as they were before."""
        before = {POOLED: config.operating_point, **config.operating_points}
        if POOLED not in self.untuned:
            config.operating_point = self.pooled
        config.operating_points = {**config.operating_points, **self.per_modality}
        return {name: before[name] for name in self.tuned if name in before}


def choose_operating_points(
    taxonomy: Taxonomy, classes, probs: np.ndarray, label_nodes: Sequence[str], modalities: Sequence[str],
    target: float, *, chosen_with: str = "",
) -> OperatingPoints:
    """The one place that chooses a model's operating points from labelled photos (training's validation part,
    the study's fast model, ``dermlens operating-point``): the pooled point on every photo, and each modality's
    (``dermlens.models.modality.MODALITIES``) on the photos labelled with it. ``probs``: their class probabilities
    (the engine a user will run should give them); ``chosen_with``: added to each point's ``chosen_on``, e.g. the
    engine."""
    from dermlens.models.modality import MODALITIES

    assignment = classes if isinstance(classes, ClassAssignment) else ClassAssignment(taxonomy, classes)
    probs, label_nodes, modalities = np.asarray(probs), list(label_nodes), np.asarray(list(modalities), dtype=object)
    suffix = f", {chosen_with}" if chosen_with else ""

    def choose(mask: np.ndarray) -> OperatingPoint:
        op = choose_operating_point(taxonomy, assignment, probs[mask], [n for n, m in zip(label_nodes, mask) if m], target)
        if op.target_sensitivity is not None:
            op.chosen_on = op.chosen_on[:-1] + suffix + ")" if op.chosen_on.endswith(")") else op.chosen_on + suffix
        return op

    pooled = choose(np.ones(len(label_nodes), bool))
    points = OperatingPoints(pooled)
    if pooled.target_sensitivity is None:
        points.untuned[POOLED] = pooled.chosen_on
    for modality in MODALITIES:
        mask = modalities == modality
        if not mask.any():
            points.untuned[modality] = f"no {modality} photos in the data"
            continue
        op = choose(mask)
        if op.target_sensitivity is None:
            points.untuned[modality] = f"{modality} photos: {op.chosen_on}"
        else:
            points.per_modality[modality] = op
    return points
