"""The conventional delineation the paper compares against, and the volume of interest all methods share.

In the clinic a 40%-of-maximum threshold is applied inside a box the reader draws around the tumour (over the
whole image the maximum would often be the heart or a kidney). The evaluation gives every method the same box:
the true tumour's bounding box widened by a margin, so the comparison is about delineation, not detection.
"""
from __future__ import annotations

import math

import numpy as np

THRESHOLD_FRACTION = 0.4


def default_margin(fwhm_mm: float, pixel_mm: float) -> int:
    """Box margin in pixels: one FWHM plus a pixel, so the blurred tumour's tails fit inside."""
    return int(math.ceil(fwhm_mm / pixel_mm)) + 1


def tumour_voi(fraction: np.ndarray, margin: int) -> np.ndarray:
    """Boolean box: the bounding box of the pixels with any tumour, widened by ``margin`` pixels each side."""
    rows, cols = np.nonzero(np.asarray(fraction) > 0)
    if len(rows) == 0:
        raise ValueError("tumour_voi: the map holds no tumour")
    voi = np.zeros(np.shape(fraction), dtype=bool)
    voi[max(0, rows.min() - margin):rows.max() + margin + 1, max(0, cols.min() - margin):cols.max() + margin + 1] = True
    return voi


def threshold_max(image: np.ndarray, voi: np.ndarray, fraction: float = THRESHOLD_FRACTION) -> np.ndarray:
    """Binary map (float 0/1): pixels of the box at or above ``fraction`` of the box's maximum uptake."""
    image = np.asarray(image, dtype=np.float64)
    peak = image[voi].max()
    return ((image >= fraction * peak) & voi).astype(np.float32)
