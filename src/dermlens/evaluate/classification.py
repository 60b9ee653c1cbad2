"""Classification figures for a labelled set, at every level the taxonomy offers.

Probabilities arrive per taxonomy node (the tree sum of the model's training classes), so one model is scored on
the dataset's own classes (e.g. HAM10000's seven), on the three root classes and on the nine first-level ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.evaluate.operating_point import sensitivity_specificity
from dermlens.taxonomy import Taxonomy


# The paper's binary tasks: (positive node, negative node), scored by P(positive node).
BINARY_TASKS = {
    "carcinoma_vs_keratosis": ("malignant_epidermal", "benign_keratosis"),
    "melanoma_vs_nevus": ("melanoma", "melanocytic_nevus"),
    "malignant_vs_benign": ("malignant", "benign"),
}
# Tasks whose sensitivity/specificity at the model's referral threshold mean something (the threshold is on
# P(malignant), so it answers "malignant vs benign" and, within melanocytic lesions, "melanoma vs nevus").
TRIAGED_TASKS = ("malignant_vs_benign", "melanoma_vs_nevus")


def _argmax_among(node_probs: np.ndarray, node_ids: list[str], candidates: list[str]) -> np.ndarray:
    columns = [node_ids.index(c) for c in candidates]
    return np.asarray(candidates)[node_probs[:, columns].argmax(1)]


def binary_task(
    node_probs: np.ndarray, node_ids: list[str], truth_nodes: Sequence[str], taxonomy: Taxonomy,
    positive: str, negative: str, threshold: float | Sequence[float] | None = None, groups=None, n_boot: int = 1000,
    threshold_node: str = "malignant",
) -> dict | None:
    """Positive-vs-negative among images under either node; None when a side is empty.

    The ROC uses P(positive node); sensitivity and specificity use the triage rule, P(threshold_node) >= threshold,
    because that is the call a user of the model actually gets. ``threshold`` is one value, or one per image (each
    image's modality has its own operating point).
    """
    under = lambda node, top: node == top or top in taxonomy.ancestors(node)  # noqa: E731
    pos = np.array([under(n, positive) for n in truth_nodes])
    neg = np.array([under(n, negative) for n in truth_nodes])
    keep = pos | neg
    if pos.sum() == 0 or neg.sum() == 0:
        return None
    y, score = pos[keep], node_probs[keep, node_ids.index(positive)]
    g = None if groups is None else np.asarray(groups)[keep]
    result = {
        "task": f"{positive} vs {negative}", "n_positive": int(y.sum()), "n_negative": int((~y).sum()),
        "auc": float(roc_auc_score(y, score)),
        "auc_ci95": bootstrap_ci(roc_auc_score, [y, score], n=n_boot, groups=g),
    }
    if threshold is not None:
        per_image = np.ndim(threshold) > 0  # each image's own operating point (its modality's), as predict applies
        triage = node_probs[keep, node_ids.index(threshold_node)]
        if per_image:
            # P >= t  <=>  P - t >= 0 exactly in IEEE arithmetic, so a margin over 0 is the same referral rule
            triage, cut = triage - np.asarray(threshold, dtype=float)[keep], 0.0
        else:
            cut = threshold
        sens, spec = sensitivity_specificity(y, triage, cut)
        result.update(threshold="per image" if per_image else threshold, threshold_node=threshold_node,
                      sensitivity=sens, specificity=spec)
        for i, name in enumerate(("sensitivity_ci95", "specificity_ci95")):
            result[name] = bootstrap_ci(
                lambda a, b, i=i: sensitivity_specificity(a, b, cut)[i], [y, triage], n=n_boot, groups=g
            )
    return result


def multiclass(node_probs: np.ndarray, node_ids: list[str], truth: Sequence[str], classes: list[str], n_boot: int = 1000, groups=None) -> dict:
    predicted = _argmax_among(node_probs, node_ids, classes)
    truth = np.asarray(truth)
    return {
        "classes": classes,
        "n": int(len(truth)),
        "accuracy": float((predicted == truth).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "balanced_accuracy_ci95": bootstrap_ci(balanced_accuracy_score, [truth, predicted], n=n_boot, groups=groups),
        "confusion": confusion_matrix(truth, predicted, labels=classes).tolist(),
    }


def resolvable_node(taxonomy: Taxonomy, node: str, class_nodes: Sequence[str]) -> str | None:
    """The finest node at or above ``node`` that the model can answer for (some training class lies at or below it).

    PH2's 'common nevus' is scored as melanocytic_nevus by a model whose classes stop there; a label with no class
    anywhere below its first-level ancestor (eczema, for a model trained on dermoscopy alone) gives None.
    """
    covered = set(class_nodes)
    for c in class_nodes:
        covered.update(taxonomy.ancestors(c))
    for candidate in [node] + taxonomy.ancestors(node):
        if taxonomy.depth(candidate) < 2:
            return None
        if candidate in covered:
            return candidate
    return None


def evaluate_node_probabilities(
    node_probs: np.ndarray, node_ids: list[str], truth_nodes: Sequence[str], taxonomy: Taxonomy,
    threshold: float | None = None, groups=None, n_boot: int = 1000, class_nodes: Sequence[str] | None = None,
) -> dict:
    """Every figure the data allows: dataset classes, 3-way, 9-way, malignant-vs-benign and the paper's tasks.

    ``class_nodes`` (the model's training classes) lets dataset labels finer than the model's classes be scored at
    the finest level the model resolves; labels the model cannot resolve below the first level are left out of
    the dataset-class figures and counted in ``n_unresolvable``.
    """
    truth_nodes = list(truth_nodes)
    report: dict = {"n_images": len(truth_nodes)}
    resolved = [resolvable_node(taxonomy, n, class_nodes) if class_nodes else n for n in truth_nodes]
    keep = np.array([r is not None for r in resolved])
    report["n_unresolvable"] = int((~keep).sum())
    dataset_classes = sorted({r for r in resolved if r is not None})
    if len(dataset_classes) > 1:
        report["dataset_classes"] = multiclass(
            node_probs[keep], node_ids, [r for r in resolved if r is not None], dataset_classes, n_boot,
            None if groups is None else np.asarray(groups)[keep],
        )
    for level, name in ((1, "three_way"), (2, "nine_way")):
        truth = [taxonomy.ancestor_at_level(n, level) for n in truth_nodes]
        classes = sorted({t for t in truth if t})
        if len(classes) > 1 and all(truth):
            # Score over all the level's classes the model knows, not only those present in the data.
            report[name] = multiclass(node_probs, node_ids, truth, taxonomy.level_nodes(level), n_boot, groups)
            report[name]["classes_present"] = classes
    for key, (positive, negative) in BINARY_TASKS.items():
        thr = threshold if key in TRIAGED_TASKS else None
        result = binary_task(node_probs, node_ids, truth_nodes, taxonomy, positive, negative, thr, groups, n_boot)
        if result:
            report[key] = result
    return report
