"""Losses for per-pixel logits.

``soft_cross_entropy`` is the cross-entropy between the true fraction f and the predicted one p:
-[f log p + (1 - f) log(1 - p)]. Its expectation over the posterior of f is minimised by p = E[f | image], the
posterior-mean estimate of Liu, Jha et al. (2021). ``binary_cross_entropy`` is the same loss on the binarised
mask (f >= 0.5): the conventional segmenter the paper compares against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    if logits.shape != fractions.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and fractions {tuple(fractions.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits, fractions.to(logits.dtype))


def binary_cross_entropy(logits: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    return soft_cross_entropy(logits, (fractions >= 0.5).to(logits.dtype))


LOSSES = {"fraction": soft_cross_entropy, "binary": binary_cross_entropy}
