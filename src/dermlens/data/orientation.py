"""Preprocessing that commutes exactly with flips and right-angle turns, for orientation averaging.

Orientation averaging (``models.inference.tta_views``: the eight flips and right-angle turns of the model input,
averaged) answers the same for a photo and its quarter turn only if turning the photo turns the model input. The
eval transform does not quite: PIL resizes in two passes rounded to 8 bits in between, horizontal first whatever
the photo's orientation, and a centre crop with an odd margin keeps one pixel more on one side. Turned 90 degrees,
a photo's input then differs by rounding and a pixel's shift, and its answer with it.

:class:`OrientationExactResize` removes both. It resizes every photo lying on its long side (a portrait photo is
transposed, resized, transposed back; a square one is resized both ways and the two averaged) to a shorter side of
``size`` and a longer side of ``size`` plus an even number of pixels, so the centre crop's margins are equal. PIL's
resize is exactly mirror-symmetric (checked by the tests), so flips need nothing more. A photo far larger than the
network reads is first averaged over odd blocks of pixels on a centred crop (PIL's ``reduce``, an integer mean:
exact too), so a 12-megapixel phone photo costs no more than with the eval transform. The result differs from the
eval transform's by at most a pixel's shift at the crop and half a pixel of aspect.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from dermlens.data.transforms import Preprocessing, _finish


def even_margin_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``size`` and the longer ``size`` plus an even number of pixels,
    closest to the photo's aspect (a centre crop to ``size`` then leaves equal margins)."""
    short, long = min(width, height), max(width, height)
    long_out = size + max(0, 2 * int(round((long * size / short - size) / 2)))
    return (long_out, size) if width >= height else (size, long_out)


def block_mean(image: Image.Image, factor: int) -> Image.Image:
    """The mean of ``factor`` x ``factor`` blocks (``factor`` odd) over a centred crop with equal margins (an integer
    mean, so it commutes exactly with flips and turns); the photo itself when ``factor`` <= 1."""
    if factor <= 1:
        return image
    if factor % 2 == 0:
        raise ValueError(f"block_mean needs an odd factor (even margins); got {factor}")
    box = []
    for side in image.size:
        blocks = side // factor
        if (side - blocks * factor) % 2:  # with an odd factor one block fewer makes the margin even
            blocks -= 1
        box.append(((side - blocks * factor) // 2, blocks * factor))
    (left, width), (top, height) = box
    return image.reduce(factor, box=(left, top, left + width, top + height))


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


class OrientationExactResize(torch.nn.Module):
    """PIL RGB photo -> float tensor (3, H, W) in [0, 1], resized so that turning or flipping the photo turns or
    flips the result exactly (see the module's docstring). ``squash``: to ``size`` x ``size`` (a model whose eval
    geometry squashes); otherwise the shorter side to ``size`` with even margins for the centre crop."""

    def __init__(self, size: int, squash: bool = False, reduce_above: float = 2.0):
        super().__init__()
        self.size, self.squash, self.reduce_above = size, squash, reduce_above

    def forward(self, image: Image.Image) -> torch.Tensor:
        image = image if image.mode == "RGB" else image.convert("RGB")
        factor = int(min(image.size) // (self.reduce_above * self.size))
        image = block_mean(image, factor if factor % 2 else factor - 1)
        width, height = (self.size, self.size) if self.squash else even_margin_size(*image.size, self.size)
        if image.width == image.height:  # no long side: both pass orders, averaged (exact: integers)
            straight = _pixels(TF.resize(image, [height, width], antialias=True)).int()
            across = _pixels(TF.resize(image.transpose(Image.Transpose.TRANSPOSE), [width, height], antialias=True))
            return (straight + across.transpose(-1, -2).int()).float().div_(2 * 255)
        if image.height > image.width:  # portrait: resized on its long side, then turned back
            lying = TF.resize(image.transpose(Image.Transpose.TRANSPOSE), [width, height], antialias=True)
            return _pixels(lying).transpose(-1, -2).float().div_(255)
        return _pixels(TF.resize(image, [height, width], antialias=True)).float().div_(255)


def build_orientation_exact_transform(pre: Preprocessing) -> T.Compose:
    """The eval transform (``data.transforms.build_eval_transform``) made exactly equivariant to flips and
    right-angle turns: PIL RGB image -> normalised float tensor (3, size, size)."""
    squash = pre.resize == "squash"
    steps: list = [OrientationExactResize(pre.size, squash=squash)]
    if not squash:
        steps.append(T.CenterCrop(pre.size))
    return T.Compose(steps + _finish(pre))


__all__ = ["OrientationExactResize", "block_mean", "build_orientation_exact_transform", "even_margin_size"]
