"""Training on the tree's sums as well as the partition's classes (``--tree-loss-weight``).

The network answers over the partition's training classes (252 on the pooled data); at inference the tree sum
(``dermlens.taxonomy.TreeSum``) adds them up into Esteva's 3-way (benign / malignant / non-neoplastic) and 9-way
answers. Cross-entropy over the fine classes alone treats "psoriasis called eczema" and "psoriasis called
melanoma" as the same mistake. The coarse probabilities come for free from the same softmax, so this loss adds,
per image, the negative log-probability of its true 3-way node and of its true 9-way node::

    loss = cross_entropy(classes) + weight * (NLL(3-way node) + NLL(9-way node)) / 2

with each coarse probability the sum of the class probabilities under that node, computed in log space
(``logsumexp`` of the log-softmax over the node's classes) so that it stays finite for any logits. Moving
probability between classes under the true node leaves the coarse terms unchanged: they only push probability
across the nodes the triage is asked about.

A training class above a level (e.g. an ``own_only`` class at a first-level node, when one exists) is its own group
at that level, as ``train.balance`` groups it: every class belongs to exactly one group, so each level's group
probabilities sum to one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dermlens.taxonomy import Taxonomy, TrainingClass, tree_sum_matrix

__all__ = ["TreeSumLoss", "level_groups", "TREE_LEVELS"]

TREE_LEVELS = (1, 2)  # Esteva's 3-way (first level under the root) and 9-way (second level) answers


def level_groups(taxonomy: Taxonomy, classes: Sequence[TrainingClass], level: int) -> tuple[list[str], np.ndarray]:
    """(group node ids, the group index of every training class) at ``level`` of the tree.

    Read off the tree-sum matrix, so the groups are exactly the node probabilities inference reports; a class that
    no node at this level sums over (it lies above the level) forms a group of its own.
    """
    matrix = tree_sum_matrix(taxonomy, classes)  # (nodes, classes), rows in taxonomy pre-order
    row = {node_id: i for i, node_id in enumerate(taxonomy)}
    nodes = taxonomy.level_nodes(level)
    member = matrix[[row[n] for n in nodes]] if nodes else np.zeros((0, len(classes)))
    names, group_of = [n for n in nodes], np.full(len(classes), -1)
    for j in range(len(classes)):
        hits = np.flatnonzero(member[:, j])
        if len(hits):
            group_of[j] = hits[0]
        else:
            group_of[j] = len(names)
            names.append(classes[j].node)
    return names, group_of


class TreeSumLoss(torch.nn.Module):
    """Cross-entropy over the training classes plus ``tree_weight`` times the mean NLL of the true 3- and 9-way
    nodes. Same call and reduction as ``torch.nn.CrossEntropyLoss`` (a mean weighted by the class ``weight`` of
    each image), and ``per_image`` for the distributed step, which sums images over processes."""

    def __init__(self, taxonomy: Taxonomy, classes: Sequence[TrainingClass], tree_weight: float,
                 weight: torch.Tensor | None = None, label_smoothing: float = 0.0, levels: Sequence[int] = TREE_LEVELS):
        super().__init__()
        if not (tree_weight >= 0 and np.isfinite(tree_weight)):
            raise ValueError(f"tree-loss-weight must be a finite number >= 0; got {tree_weight}")
        self.tree_weight, self.label_smoothing, self.levels = float(tree_weight), label_smoothing, tuple(levels)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        for level in self.levels:
            _, group_of = level_groups(taxonomy, classes, level)
            in_group = torch.from_numpy(group_of[None, :] == np.arange(group_of.max() + 1)[:, None])
            # log of the 0/1 membership: added to log-probabilities, logsumexp then sums the group's classes only
            self.register_buffer(f"log_member_{level}", torch.zeros(in_group.shape).masked_fill(~in_group, -torch.inf))
            self.register_buffer(f"group_of_{level}", torch.from_numpy(group_of).long())

    def node_nll(self, logits: torch.Tensor, targets: torch.Tensor, level: int) -> torch.Tensor:
        """Per image: -log P(the true node at ``level``), P summed over that node's classes as the tree sum does."""
        log_probs = F.log_softmax(logits, dim=1)
        true_group = getattr(self, f"group_of_{level}")[targets]
        return -torch.logsumexp(log_probs + getattr(self, f"log_member_{level}")[true_group], dim=1)

    def tree_terms(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image: the mean over the levels of the true node's NLL (unweighted)."""
        return torch.stack([self.node_nll(logits, targets, level) for level in self.levels]).mean(0)

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image, each already multiplied by its class weight (as ``reduction="none"`` cross-entropy is)."""
        fine = F.cross_entropy(logits, targets, weight=self.weight, reduction="none",
                               label_smoothing=self.label_smoothing)
        image_weight = self.weight[targets] if self.weight is not None else torch.ones_like(fine)
        return fine + self.tree_weight * image_weight * self.tree_terms(logits, targets)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        image_weight = self.weight[targets] if self.weight is not None else torch.ones(len(targets), device=logits.device)
        return self.per_image(logits, targets).sum() / image_weight.sum()
