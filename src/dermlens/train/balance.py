"""Class imbalance: how often each training class is drawn, and how much its images weigh in the loss."""
from __future__ import annotations

import numpy as np
import torch


def class_balance(
    targets: list[int], n_classes: int, mode: str, class_groups: list[str] | None = None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(per-sample sampling weights or None, per-class loss weights).

    Full inverse-frequency balancing ("loss" or "sampler") equalises the classes, which is what balanced accuracy
    and the malignant-class sensitivity reward, but it shows a 80-image class sixty times per epoch (memorised) or
    weighs it sixty-fold (noisy gradients). "sqrt" splits the correction: sampling by 1/sqrt(n) and weighting the
    loss by 1/sqrt(n) together give the same expected balance with far gentler extremes.

    "tree" balances down the taxonomy instead, by sampling alone: each first-level group (``class_groups``: the
    Esteva class, e.g. benign melanocytic, inflammatory) is drawn in proportion to the square root of its images,
    and each training class within its group in proportion to the square root of its own. On a pool whose one
    atlas splits into 180 small inflammatory classes, per-class balancing would spend four draws in five on them
    and leave the 6,000 dermoscopic nevi and 1,200 melanomas a sliver; balancing the tree keeps the nine
    questions in proportion and still lifts the small classes (see docs/training.md).
    """
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    counts[counts == 0] = 1
    ones = torch.ones(n_classes)
    if mode == "none":
        return None, ones
    if mode == "loss":
        w = counts.sum() / (n_classes * counts)
        return None, torch.tensor(w, dtype=torch.float32)
    if mode == "sampler":
        return torch.tensor(1 / counts[targets], dtype=torch.double), ones
    if mode == "tree":
        if class_groups is None or len(class_groups) != n_classes:
            raise ValueError("balance 'tree' needs the first-level group of every training class")
        groups = sorted(set(class_groups))
        group_of = np.array([groups.index(g) for g in class_groups])
        group_counts = np.bincount(group_of, weights=counts, minlength=len(groups))
        root_in_group = np.array([np.sqrt(counts[group_of == group_of[c]]).sum() for c in range(n_classes)])
        class_share = np.sqrt(group_counts[group_of]) / np.sqrt(group_counts).sum() * np.sqrt(counts) / root_in_group
        return torch.tensor((class_share / counts)[targets], dtype=torch.double), ones
    if mode == "sqrt":
        w = 1 / np.sqrt(counts)
        # Mean 1 over the training set (not the re-sampled one); CrossEntropyLoss's weighted mean ignores the scale.
        loss_w = w / (w * counts).sum() * counts.sum()
        return torch.tensor(w[targets], dtype=torch.double), torch.tensor(loss_w, dtype=torch.float32)
    raise ValueError(f"balance must be none, sqrt, tree, loss or sampler; got {mode!r}")
