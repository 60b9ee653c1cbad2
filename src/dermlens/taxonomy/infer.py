"""Summing training-class probabilities up the taxonomy (Esteva et al.'s inference procedure).

A node's probability is the total probability of the training classes at or below it. That turns a fine-grained
classifier into a "malignant vs benign" or nine-class answer without retraining, and lets the display show any
level. It is one matrix product, kept here in numpy so that it is the same for torch, ONNX and plain-array callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from dermlens.taxonomy.partition import ClassAssignment

if TYPE_CHECKING:
    from dermlens.taxonomy.partition import TrainingClass
    from dermlens.taxonomy.tree import Taxonomy

__all__ = ["TreeSum", "tree_sum_matrix", "node_probabilities", "NodeProbabilities"]

# Softmax outputs can be a hair below zero after float16 export; anything clearly negative is a caller passing
# logits, which would sum to meaningless numbers.
_NEGATIVE_TOLERANCE = 1e-6


def tree_sum_matrix(taxonomy: "Taxonomy", classes: Sequence["TrainingClass"]) -> np.ndarray:
    """Matrix ``M`` (n_nodes, n_classes), rows in taxonomy pre-order, with ``M[i, j] = 1`` when class j's node is
    node i or lies below it; ``node_probs = class_probs @ M.T``.

    The same rule serves ``own_only`` classes: such a class at node N adds to N and N's ancestors and to none of
    N's children, which is exactly "N is at or below the row's node". Overlapping classes are rejected, since they
    would count the same probability twice.
    """
    ClassAssignment(taxonomy, classes)  # validates node ids and that no image belongs to two classes
    row = {node_id: i for i, node_id in enumerate(taxonomy)}
    matrix = np.zeros((len(row), len(classes)), dtype=np.float64)
    for j, cls in enumerate(classes):
        for node_id in (cls.node, *taxonomy.ancestors(cls.node)):
            matrix[row[node_id], j] = 1.0
    return matrix


@dataclass(frozen=True)
class NodeProbabilities:
    """Probabilities of every taxonomy node, for one image (``values`` 1-D) or a batch (2-D, images by nodes)."""

    node_ids: tuple[str, ...]
    values: np.ndarray

    def __post_init__(self):
        if self.values.shape[-1] != len(self.node_ids):
            raise ValueError(f"values have {self.values.shape[-1]} columns for {len(self.node_ids)} node ids")
        object.__setattr__(self, "_column", {n: i for i, n in enumerate(self.node_ids)})

    def __getitem__(self, node_id: str):
        """Probability of ``node_id``: a float for a single image, an array over the batch otherwise."""
        try:
            column = self._column[node_id]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in these probabilities") from None
        value = self.values[..., column]
        return float(value) if self.values.ndim == 1 else value

    def to_dict(self, row: int | None = None) -> dict[str, float]:
        """``{node_id: probability}`` for one image (``row`` picks it from a batch)."""
        if self.values.ndim == 2:
            if row is None:
                raise ValueError("these are batch probabilities; pass row= to pick one image")
            vector = self.values[row]
        else:
            vector = self.values
        return {n: float(p) for n, p in zip(self.node_ids, vector)}

    def select(self, node_ids: Sequence[str]) -> "NodeProbabilities":
        """Restrict to some nodes, e.g. ``taxonomy.level_nodes(1)`` for the three-way benign/malignant answer."""
        unknown = [n for n in node_ids if n not in self._column]  # type: ignore[attr-defined]
        if unknown:
            raise KeyError(f"no nodes {unknown} in these probabilities")
        columns = [self._column[n] for n in node_ids]  # type: ignore[attr-defined]
        return NodeProbabilities(tuple(node_ids), self.values[..., columns])


class TreeSum:
    """The tree sum of one model: built once from its training classes, applied to every batch it predicts.

    ``TreeSum(taxonomy, classes)(class_probs)`` gives (batch, nodes) node probabilities in taxonomy pre-order;
    ``.node(class_probs, "malignant")`` one node's column. Every caller (predictor, training, study, saliency,
    screening) sums through this class, so the rule and its input checks live here only.
    """

    def __init__(self, taxonomy: "Taxonomy", classes: Sequence["TrainingClass"]):
        self.taxonomy = taxonomy
        self.classes = list(classes)
        self.node_ids = tuple(taxonomy)
        self.matrix = tree_sum_matrix(taxonomy, self.classes)  # (nodes, classes)
        self._row = {n: i for i, n in enumerate(self.node_ids)}

    def __call__(self, class_probs) -> np.ndarray:
        """Node probabilities, shape ``(nodes,)`` or ``(batch, nodes)`` like the input."""
        return self._checked(class_probs) @ self.matrix.T

    def node(self, class_probs, node_id: str) -> np.ndarray:
        """One node's probability for every row of ``class_probs``."""
        return self._checked(class_probs) @ self.matrix[self.row(node_id)]

    def row(self, node_id: str) -> int:
        try:
            return self._row[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in taxonomy {self.taxonomy.version}") from None

    def _checked(self, class_probs) -> np.ndarray:
        probs = np.asarray(class_probs, dtype=np.float64)
        n = len(self.classes)
        if probs.ndim not in (1, 2) or probs.shape[-1] != n:
            raise ValueError(f"class probabilities must have shape ({n},) or (batch, {n}) for {n} training classes, "
                             f"got {probs.shape}")
        if not np.all(np.isfinite(probs)):
            raise ValueError("class probabilities contain NaN or infinity")
        if probs.size and probs.min() < -_NEGATIVE_TOLERANCE:
            raise ValueError(
                f"class probabilities contain negative values (min {probs.min():.3g}); apply softmax to logits first"
            )
        return probs


def node_probabilities(
    taxonomy: "Taxonomy", classes: Sequence["TrainingClass"], class_probs
) -> NodeProbabilities:
    """Sum class probabilities (shape ``(n_classes,)`` or ``(batch, n_classes)``) up to every node.

    Nodes with no class at or below them get 0. Rows are not required to sum to 1 (a caller may pass a subset
    of an ensemble), but negative values are refused because they mean logits were passed instead of softmax.
    """
    return NodeProbabilities(tuple(taxonomy), TreeSum(taxonomy, classes)(class_probs))
