"""Lesion measurements from a fraction map, in pixels (and mm when the scale is known).

- ``area_px``: the sum of fractions, the tissue-fraction estimate of the area (edge pixels count by their share);
  ``mask_area_px``: pixels of the binary mask (fraction >= 0.5), as threshold-based tools report it.
- ``longest_diameter_px``: the largest distance between two points of the lesion (maximum Feret diameter),
  taken over the corners of the mask's pixels on its convex hull.
- ``asymmetry_major`` / ``asymmetry_minor``: after aligning the lesion's principal axes (second moments of the
  fraction map) with the image axes, the share of the lesion's area that does not overlap its mirror image about
  each axis: 0 for a perfect ellipse, towards 1 for very lopsided shapes (the 'A' of the ABCD rule, measured as in
  Stoecker et al. 1992).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

COLUMNS = ["area_px", "mask_area_px", "longest_diameter_px", "asymmetry_major", "asymmetry_minor"]


def _principal_angle(fraction: np.ndarray) -> float:
    """Angle (radians, from the x axis) of the major principal axis of the fraction map's mass."""
    ys, xs = np.indices(fraction.shape)
    mass = fraction.sum()
    cx, cy = (fraction * xs).sum() / mass, (fraction * ys).sum() / mass
    dx, dy = xs - cx, ys - cy
    cov = np.array([[(fraction * dx * dx).sum(), (fraction * dx * dy).sum()],
                    [(fraction * dx * dy).sum(), (fraction * dy * dy).sum()]]) / mass
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, np.argmax(values)]
    return float(np.arctan2(major[1], major[0]))


def longest_diameter(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    # the four corners of every pixel on the boundary of the hull: a one-pixel lesion is 1.41 px across, not 0
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]).astype(float)
    try:
        corners = corners[ConvexHull(corners).vertices]
    except QhullError:  # all points on a line
        pass
    diffs = corners[:, None, :] - corners[None, :, :]
    return float(np.sqrt((diffs**2).sum(-1)).max())


def asymmetry(fraction: np.ndarray) -> tuple[float, float]:
    """(about the major axis, about the minor axis); NaN for an empty map."""
    mass = fraction.sum()
    if mass <= 0:
        return float("nan"), float("nan")
    # centre the mass in a square canvas big enough for any rotation, then turn the major axis horizontal
    cy, cx = ndimage.center_of_mass(fraction)
    side = int(np.ceil(np.hypot(*fraction.shape))) + 2
    canvas = np.zeros((side, side), dtype=np.float64)
    canvas[: fraction.shape[0], : fraction.shape[1]] = fraction
    canvas = ndimage.shift(canvas, ((side - 1) / 2 - cy, (side - 1) / 2 - cx), order=1)
    angle = np.degrees(_principal_angle(fraction))
    aligned = ndimage.rotate(canvas, angle, reshape=False, order=1).clip(0, 1)
    total = aligned.sum()
    about_major = np.abs(aligned - aligned[::-1, :]).sum() / (2 * total)  # mirror top <-> bottom
    about_minor = np.abs(aligned - aligned[:, ::-1]).sum() / (2 * total)  # mirror left <-> right
    return float(about_major), float(about_minor)


def measure(fraction: np.ndarray, mm_per_pixel: float | None = None) -> dict[str, float]:
    """Measurements of one lesion's fraction map (values in [0, 1]); see the module docstring."""
    fraction = np.clip(np.asarray(fraction, dtype=np.float64), 0, 1)
    mask = fraction >= 0.5
    major, minor = asymmetry(fraction)
    result = {
        "area_px": float(fraction.sum()),
        "mask_area_px": float(mask.sum()),
        "longest_diameter_px": longest_diameter(mask),
        "asymmetry_major": major,
        "asymmetry_minor": minor,
    }
    if mm_per_pixel:
        result["area_mm2"] = result["area_px"] * mm_per_pixel**2
        result["longest_diameter_mm"] = result["longest_diameter_px"] * mm_per_pixel
    return result
