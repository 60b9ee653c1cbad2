"""Saliency maps: which pixels of the photo moved the model's answer.

Two methods, both computed with Captum on the network exactly as :class:`dermlens.predict.Predictor` runs it:

- ``"input_gradient"``: the gradient of the target's score with respect to the photo's pixels, L1 norm over the
  three colour channels, as in Esteva et al. (Nature 2017, Extended Data Fig. 3). Sharp but noisy.
- ``"gradcam"``: Grad-CAM (Selvaraju et al. 2017) on the last convolutional feature map (timm's
  ``forward_features`` output, whatever the backbone), upsampled to the input. Coarse but stable.

The gradient is taken with respect to the pixels in [0, 1] *before* colour constancy and normalisation, so the map
is about the photo rather than about a normalised tensor. The score explained is the target's logit, or for a
target that several training classes sum into (an inner taxonomy node such as ``"malignant"``) the log-sum-exp of
their logits, which is the one-class logit generalised.

    sal = saliency_map(predictor, image, target_class="malignant", method="gradcam")
    sal.heatmap            # (size, size) float32 in [0, 1] over what the network saw
    overlay(image, sal)    # PIL image: that region of the photo with the map on top
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from dermlens.data.io import load_image
from dermlens.data.transforms import Preprocessing, ShadesOfGray, eval_geometry


METHODS = ("gradcam", "input_gradient")


@dataclass
class Saliency:
    """A saliency map and what it explains."""

    heatmap: np.ndarray  # (size, size) float32 in [0, 1], over the network's input
    raw: np.ndarray  # (size, size) float32, before normalisation (comparable across images of one method)
    method: str
    target: str  # taxonomy node explained
    class_indices: list[int]  # training classes whose logits make up the score
    probability: float  # the model's probability of the target for this image
    view_box: tuple[int, int, int, int]  # (left, top, right, bottom) of the photo the network saw
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# The network as a function of pixels
# ----------------------------------------------------------------------------------------------------------------


def pixel_transform(pre: Preprocessing) -> T.Compose:
    """PIL RGB -> float tensor (3, size, size) in [0, 1]: the eval geometry, nothing else."""
    return T.Compose(eval_geometry(pre) + [T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def pixel_to_input(pre: Preprocessing) -> torch.nn.Module:
    """[0, 1] pixels -> network input: the differentiable rest of ``build_eval_transform``."""
    steps: list[torch.nn.Module] = [ShadesOfGray()] if pre.color_constancy == "shades_of_gray" else []
    return torch.nn.Sequential(*steps, T.Normalize(mean=list(pre.mean), std=list(pre.std)))


class _TargetScore(torch.nn.Module):
    """pixels -> network -> one score per image. ``features`` is an identity on the last conv feature map, a layer
    for Grad-CAM to hook that exists for every timm backbone. ``class_indices=None`` explains the top class."""

    def __init__(self, model: torch.nn.Module, to_input: torch.nn.Module, class_indices: list[int] | None):
        super().__init__()
        self.model = model
        self.to_input = to_input
        self.features = torch.nn.Identity()
        self.class_indices = class_indices
        self.last_logits: torch.Tensor | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.to_input(pixels).contiguous(memory_format=torch.channels_last)
        logits = self.model.forward_head(self.features(self.model.forward_features(x)))
        self.last_logits = logits.detach()
        if self.class_indices is None:
            return logits.gather(1, logits.detach().argmax(1, keepdim=True)).squeeze(1)
        return logits[:, self.class_indices].logsumexp(-1)


def resolve_target(predictor, target_class: int | str | None) -> tuple[str | None, list[int] | None]:
    """(node, training-class indices) for a class index, a training-class node or any taxonomy node above one.

    ``None`` stays ``None``: the top class of each image, decided in the forward pass.
    """
    classes = predictor.config.classes
    if target_class is None:
        return None, None
    if isinstance(target_class, (int, np.integer)) and not isinstance(target_class, bool):
        if not 0 <= int(target_class) < len(classes):
            raise ValueError(f"target class index {target_class} out of range: the model has {len(classes)} classes")
        return classes[int(target_class)].node, [int(target_class)]
    if isinstance(target_class, str):
        exact = [i for i, c in enumerate(classes) if c.node == target_class]
        if exact:
            return target_class, exact
        if target_class not in predictor.taxonomy:
            raise ValueError(f"unknown target {target_class!r}: not a taxonomy node")
        row = predictor.tree_sum.matrix[predictor.tree_sum.row(target_class)]
        indices = [int(i) for i in np.flatnonzero(row)]
        if not indices:
            raise ValueError(f"the model has no training class at or below {target_class!r}")
        return target_class, indices
    raise TypeError(f"target_class must be None, an int or a node id, not {type(target_class).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------------------------


def network_view_box(size: tuple[int, int], pre: Preprocessing) -> tuple[int, int, int, int]:
    """The part of a ``size`` = (width, height) photo that the eval geometry keeps (a centred square or all)."""
    width, height = size
    if pre.resize == "squash":
        return 0, 0, width, height
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _normalise(raw: torch.Tensor) -> np.ndarray:
    """Map to [0, 1] by a high percentile, so that one hot pixel does not wash out the rest."""
    values = raw.detach().float()
    scale = torch.quantile(values.flatten(), 0.995) if values.numel() > 1 else values.max()
    if not torch.isfinite(scale) or scale <= 0:
        scale = values.max()
    if not torch.isfinite(scale) or scale <= 0:
        return np.zeros(values.shape, dtype=np.float32)
    return (values / scale).clamp(0, 1).numpy().astype(np.float32)


def saliency_map(
    predictor,
    image,
    target_class: int | str | None = None,
    method: str = "gradcam",
    smooth: float = 0.0,
) -> Saliency:
    """Saliency of ``target_class`` for one photo.

    Args:
        predictor: a :class:`dermlens.predict.Predictor` (its PyTorch model, preprocessing and taxonomy are used;
            make it with ``engine="torch"`` when its predictions go next to the map, so both come from one network).
        image: anything :func:`dermlens.data.io.load_image` reads (path, bytes, PIL image, array).
        target_class: ``None`` (the image's top class), a class index, a training-class node id, or any taxonomy
            node that training classes sum into (e.g. ``"malignant"``).
        method: ``"gradcam"`` or ``"input_gradient"``.
        smooth: Gaussian sigma in input pixels applied before normalisation (0: none). Input gradients are
            speckled; a sigma of 1-3 makes them readable as an overlay.
    """
    from captum.attr import LayerAttribution, LayerGradCam, Saliency as InputGradient

    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose from {METHODS}")
    photo = load_image(image)
    pre: Preprocessing = predictor.config.preprocessing
    node, indices = resolve_target(predictor, target_class)
    score = _TargetScore(predictor.model, pixel_to_input(pre), indices)
    pixels = pixel_transform(pre)(photo).unsqueeze(0).requires_grad_()

    with torch.enable_grad():
        if method == "input_gradient":
            grads = InputGradient(score).attribute(pixels, abs=True)  # (1, 3, H, W) |d score / d pixel|
            raw = grads[0].sum(0)  # L1 over colour channels
        else:
            cam = LayerGradCam(score, score.features).attribute(pixels, relu_attributions=True)  # (1, 1, h, w)
            raw = LayerAttribution.interpolate(cam, tuple(pixels.shape[-2:]), interpolate_mode="bilinear")[0, 0]
            raw = raw.clamp_min(0)  # bilinear upsampling of a ReLU map stays >= 0; this guards rounding only
    raw = raw.detach()
    if smooth > 0:
        kernel = 2 * int(round(3 * smooth)) + 1
        raw = T.functional.gaussian_blur(raw[None, None], [kernel, kernel], [smooth, smooth])[0, 0]

    logits = score.last_logits
    assert logits is not None
    probs = logits.float().softmax(-1)[0]
    if indices is None:
        top = int(probs.argmax())
        node, indices = predictor.config.classes[top].node, [top]
    return Saliency(
        heatmap=_normalise(raw),
        raw=raw.float().numpy(),
        method=method,
        target=node,
        class_indices=indices,
        probability=float(probs[indices].sum()),
        view_box=network_view_box(photo.size, pre),
    )


# ----------------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------------


def overlay(
    image,
    saliency: Saliency,
    alpha: float = 0.55,
    colormap: str = "jet",
    max_side: int = 512,
    min_side: int = 224,
) -> Image.Image:
    """The part of the photo the network saw, with the heatmap blended on top where it is high.

    The blend weight is ``alpha * heat``, so unimportant regions show the photo untouched. The result's longer
    side is the region's own, clamped to [min_side, max_side].
    """
    import matplotlib

    photo = load_image(image)
    region = photo.crop(saliency.view_box)
    longer = max(region.size)
    side = min(max_side, max(min_side, longer))
    scale = side / longer
    out_size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    region = region.resize(out_size, Image.BILINEAR)
    heat = Image.fromarray(saliency.heatmap.astype(np.float32)).resize(out_size, Image.BILINEAR)
    heat_array = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)[..., None]
    colours = matplotlib.colormaps[colormap](heat_array[..., 0])[..., :3].astype(np.float32) * 255
    base = np.asarray(region, dtype=np.float32)
    weight = alpha * heat_array
    blended = base * (1 - weight) + colours * weight
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def saliency_overlay(
    predictor,
    pil_image,
    target_class: int | str | None = None,
    method: str = "gradcam",
    **overlay_options,
) -> Image.Image:
    """One call for a picture: :func:`saliency_map` then :func:`overlay` (input gradients lightly smoothed)."""
    smooth = overlay_options.pop("smooth", 2.0 if method == "input_gradient" else 0.0)
    sal = saliency_map(predictor, pil_image, target_class=target_class, method=method, smooth=smooth)
    return overlay(pil_image, sal, **overlay_options)
