"""Choosing training classes from the taxonomy, as Esteva et al. did.

Training on every leaf would give classes with a handful of images; training on the nine first-level classes
would throw away the fine structure that helps a network learn. Esteva et al. walk down the tree from the root and
stop at the first node whose subtree holds fewer than ``max_class_size`` images: each such node becomes one class,
so classes are as fine as possible while none is larger than the bound (except a leaf, which cannot be split).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dermlens.taxonomy.tree import Taxonomy

__all__ = ["TrainingClass", "partition", "ClassAssignment", "esteva_max_class_size"]

# Esteva et al. partitioned 129,450 images with max_class_size 1,000.
ESTEVA_MAX_CLASS_SIZE, ESTEVA_N_IMAGES = 1000, 129_450


def esteva_max_class_size(n_images: int) -> float:
    """The paper's partition threshold in proportion to the data (HAM10000's 10,015 images: 77)."""
    return float(max(1, round(n_images * ESTEVA_MAX_CLASS_SIZE / ESTEVA_N_IMAGES)))


@dataclass(frozen=True)
class TrainingClass:
    """One output of the classifier.

    ``node`` is the taxonomy node the class stands for. Normally its images are all those labelled anywhere in
    the node's subtree. ``own_only`` marks the exception: an inner node that had to be split but has images
    labelled exactly at it (e.g. "melanoma" without a subtype) keeps those images as a class of their own, which
    must not claim the images of its children.
    """

    node: str
    count: int
    own_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the config stored next to model weights."""
        return {"node": self.node, "count": self.count, "own_only": self.own_only}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingClass":
        return cls(node=str(d["node"]), count=int(d["count"]), own_only=bool(d.get("own_only", False)))


def _validated_counts(taxonomy: Taxonomy, label_counts: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(str(k) for k in label_counts if k not in taxonomy)
    if unknown:
        raise KeyError(f"label counts name nodes not in the taxonomy: {unknown}")
    counts = {}
    for node_id, count in label_counts.items():
        try:
            valid = not isinstance(count, (bool, str)) and int(count) == count and count >= 0
        except (TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise ValueError(f"label count for {node_id!r} must be a non-negative integer, got {count!r}")
        counts[node_id] = int(count)
    return counts


def partition(taxonomy: Taxonomy, label_counts: Mapping[str, int], max_class_size: float) -> list[TrainingClass]:
    """Partition labelled images into training classes (Esteva et al.'s algorithm), in pre-order.

    ``label_counts`` maps the node each image is labelled at to how many images are labelled there (labels may
    sit at inner nodes, e.g. HAM10000's ``bkl`` at ``benign_keratosis``). ``max_class_size`` is exclusive: a
    subtree with fewer images becomes one class. ``float('inf')`` yields a single class at the root; ``1`` yields
    one class per labelled node. Nodes without images yield no class, so the model never has an output it was
    not trained on.
    """
    if isinstance(max_class_size, bool) or not isinstance(max_class_size, numbers.Real) or math.isnan(max_class_size):
        raise ValueError(f"max_class_size must be a number >= 1, got {max_class_size!r}")
    if max_class_size < 1:
        raise ValueError(f"max_class_size must be >= 1, got {max_class_size!r}")
    counts = _validated_counts(taxonomy, label_counts)

    totals: dict[str, int] = {}
    for node_id in reversed(list(taxonomy)):  # reverse pre-order visits children before their parent
        totals[node_id] = counts.get(node_id, 0) + sum(totals[c] for c in taxonomy.children(node_id))

    classes: list[TrainingClass] = []
    stack = [taxonomy.root]
    while stack:  # explicit stack in pre-order, so deep trees cannot hit the recursion limit
        node_id = stack.pop()
        total = totals[node_id]
        if total == 0:
            continue
        if total < max_class_size or taxonomy.is_leaf(node_id):
            classes.append(TrainingClass(node_id, total, own_only=False))
            continue
        own = counts.get(node_id, 0)
        if own:
            classes.append(TrainingClass(node_id, own, own_only=True))
        stack.extend(reversed(taxonomy.children(node_id)))
    return classes


class ClassAssignment:
    """Which training class each label node trains as, and how class outputs sum up to nodes.

    Built from a partition (or from the class list stored with a model), it checks that the classes do not
    overlap, because an image claimed by two classes would get two contradictory targets.
    """

    def __init__(self, taxonomy: Taxonomy, classes: Sequence[TrainingClass]):
        self.taxonomy = taxonomy
        self.classes: tuple[TrainingClass, ...] = tuple(classes)
        self._index: dict[str, int] = {}
        for index, cls in enumerate(self.classes):
            if cls.node not in taxonomy:
                raise KeyError(f"training class {index} names node {cls.node!r}, which is not in the taxonomy")
            covered = [cls.node] if cls.own_only else taxonomy.descendants(cls.node)
            for node_id in covered:
                previous = self._index.get(node_id)
                if previous is not None:
                    raise ValueError(
                        f"training classes overlap: node {node_id!r} belongs to class {previous} "
                        f"({self.classes[previous].node!r}) and class {index} ({cls.node!r})"
                    )
                self._index[node_id] = index

    def __len__(self) -> int:
        return len(self.classes)

    def class_index(self, label_node: str) -> int:
        """Index of the class an image labelled at ``label_node`` trains as.

        ValueError when no class covers the node: the partition was made from counts without that label, so the
        model has no output for it and such images must not be silently trained as something else.
        """
        self.taxonomy[label_node]  # KeyError naming an unknown node
        try:
            return self._index[label_node]
        except KeyError:
            raise ValueError(
                f"label node {label_node!r} is not covered by any training class "
                f"(the partition had no images labelled in its subtree)"
            ) from None
