"""The last hidden layer of a network: what the study's fast mode trains heads on and what t-SNE maps.

Every dermlens backbone is a timm model, so ``forward_features`` followed by ``forward_head(pre_logits=True)`` gives
the pooled vector that the classifier reads (1280 numbers for EfficientNet-Lite0), with dropout off in eval mode.
A classifier ``Linear`` applied to it gives exactly the model's logits.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.inference_mode()
def pre_logits(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """(batch, n_features): the input of the classification head."""
    model.eval()
    batch = batch.contiguous(memory_format=torch.channels_last)
    return model.forward_head(model.forward_features(batch), pre_logits=True).float()


@torch.inference_mode()
def extract_features(model: torch.nn.Module, batches: Iterable, progress=None) -> torch.Tensor:
    """Pre-logit features for every image a loader yields; batches are tensors or (tensor, ...) tuples."""
    out = []
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(pre_logits(model, images))
        if progress is not None:
            progress.update(len(images))
    return torch.cat(out) if out else torch.empty(0)


def classifier_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's final ``Linear`` (timm's ``get_classifier``); the fast study copies a trained head into it."""
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"{type(model).__name__}: classifier is {type(head).__name__}, expected a Linear layer")
    return head
