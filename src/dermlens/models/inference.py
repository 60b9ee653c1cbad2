"""Running a network over batches: softmax over training classes, optional test-time augmentation, features."""
from __future__ import annotations

from collections.abc import Iterable

import torch


def tta_views(batch: torch.Tensor, n_views: int) -> list[torch.Tensor]:
    """Up to 8 dihedral views (identity, flips, right-angle rotations): lesions have no up or left."""
    views = [
        batch,
        batch.flip(-1),
        batch.flip(-2),
        batch.rot90(1, (-2, -1)),
        batch.rot90(3, (-2, -1)),
        batch.rot90(2, (-2, -1)),
        batch.rot90(1, (-2, -1)).flip(-1),
        batch.rot90(1, (-2, -1)).flip(-2),
    ]
    return views[: max(1, min(n_views, len(views)))]


@torch.inference_mode()
def predict_batch(model: torch.nn.Module, batch: torch.Tensor, tta: int = 1) -> torch.Tensor:
    """Class probabilities (batch, n_classes), averaged over ``tta`` views."""
    batch = batch.contiguous(memory_format=torch.channels_last)
    probs = [model(view).float().softmax(-1) for view in tta_views(batch, tta)]
    return torch.stack(probs).mean(0)


@torch.inference_mode()
def predict_loader(model: torch.nn.Module, batches: Iterable, tta: int = 1, progress=None) -> torch.Tensor:
    """Probabilities for every image a loader yields; batches are tensors or (tensor, target) pairs."""
    model.eval()
    device = next(model.parameters()).device  # a GPU under torchrun; on CPU the moves below are no-ops
    out = []
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(predict_batch(model, images.to(device), tta).cpu())
        if progress is not None:
            progress.update(len(images))
    return torch.cat(out) if out else torch.empty(0)
