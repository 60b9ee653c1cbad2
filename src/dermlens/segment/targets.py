"""Area-fraction targets: what share of each output pixel a finer-grid mask covers.

Resizing a mask with nearest-neighbour (or thresholding a bilinear resize) makes every edge pixel 0 or 1 and
throws away exactly the partial-volume information the fraction network is meant to learn.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def block_fraction(fine: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block: the exact area fraction for a grid ``factor`` times coarser."""
    fine = np.asarray(fine, dtype=np.float64)
    height, width = fine.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"mask of {height}x{width} is not a multiple of the factor {factor}")
    blocks = fine.reshape(*fine.shape[:-2], height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(-3, -1))


def area_fraction(mask: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Area fraction of a mask on a ``size`` = (width, height) grid, for any (also non-integer) scale factor.

    Pillow's BOX filter averages every source pixel by the area it shares with the output pixel, which is the
    area fraction when shrinking; when enlarging, each output pixel takes the value of the source pixel it lies in
    (edges keep their source-grid fractions). Values are in [0, 1] (a mask in 0..255 is scaled).
    """
    array = np.asarray(mask, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., 0]
    if array.max(initial=0) > 1:
        array = array / 255.0
    resized = Image.fromarray(array, mode="F").resize(tuple(size), Image.BOX)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
