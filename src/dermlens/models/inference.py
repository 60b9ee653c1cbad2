"""Running a network over batches: softmax over training classes, optional test-time augmentation, features."""
from __future__ import annotations

from collections.abc import Iterable

import torch


ORIENTATION_VIEWS = 8  # every flip and right-angle turn: the answer is then the same however the photo is turned
ONE_AT_A_TIME = 32  # photos: up to this many, `dermlens predict` averages orientations unless told otherwise


def default_tta(n_photos: int) -> int:
    """Views to average when the caller did not say: all eight for a few photos (someone waits for one answer per
    lesion, and 8 views cost ~0.1 s a photo), one for a batch run (eight times the work; ``--tta 8`` asks for it)."""
    return ORIENTATION_VIEWS if n_photos <= ONE_AT_A_TIME else 1


_VIEWS = (  # identity, flips, right-angle turns and the two diagonal mirrors: the dihedral group of the square
    lambda b: b,
    lambda b: b.flip(-1),
    lambda b: b.flip(-2),
    lambda b: b.rot90(1, (-2, -1)),
    lambda b: b.rot90(3, (-2, -1)),
    lambda b: b.rot90(2, (-2, -1)),
    lambda b: b.rot90(1, (-2, -1)).flip(-1),
    lambda b: b.rot90(1, (-2, -1)).flip(-2),
)


def tta_views(batch: torch.Tensor, n_views: int) -> list[torch.Tensor]:
    """Up to 8 dihedral views (identity, flips, right-angle rotations): lesions have no up or left. Only the views
    asked for are made (one view is the batch itself, no copy)."""
    return [view(batch) for view in _VIEWS[: max(1, min(n_views, len(_VIEWS)))]]


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
