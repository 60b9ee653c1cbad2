"""Activity phantoms on the fine grid: a body with organ-like structure, and one tumour in it.

Coordinates are in mm, x to the right and y up, origin at the centre of the field of view. Uptake is relative to
the body's soft tissue (1.0); air is 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from dermlens.pet.shapes import random_efd, rasterise, scaled_outline


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def bounding_slices(x: np.ndarray, y: np.ndarray, cx: float, cy: float, reach: float) -> tuple[slice, slice]:
    """Rows and columns of the fine grid within ``reach`` mm of (cx, cy) (x increases along columns, y decreases
    along rows)."""
    c0, c1 = np.searchsorted(x[0], [cx - reach, cx + reach])
    r0, r1 = np.searchsorted(-y[:, 0], [-cy - reach, -cy + reach])
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


@lru_cache(maxsize=8)
def _linear_upsampler(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse) matrix of linear interpolation between coarse pixel centres (edges held constant)."""
    positions = (np.arange(fine) + 0.5) * coarse / fine - 0.5
    return np.stack([np.interp(positions, np.arange(coarse), np.eye(coarse)[j]) for j in range(coarse)], axis=1)


def smooth_noise(rng: np.random.Generator, coarse: int, fine: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-s.d. smooth random field: white noise on a ``coarse`` grid, Gaussian-smoothed, then
    linearly interpolated up to ``fine`` (two small matrix products)."""
    field = ndimage.gaussian_filter(rng.normal(size=(coarse, coarse)), sigma, mode="wrap")
    field = (field - field.mean()) / (field.std() + 1e-12)
    up = _linear_upsampler(coarse, fine)
    return up @ field @ up.T


def body_background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, fov_mm: float,
                    texture: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """(activity, body mask): an elliptical body outline, a chest (lungs, heart) or abdomen (liver, kidneys,
    spine) slice with jittered organs, a few random extra blobs, and a smooth multiplicative texture."""
    a, b = rng.uniform(0.36, 0.45) * fov_mm, rng.uniform(0.25, 0.35) * fov_mm
    tilt = rng.uniform(-0.1, 0.1)
    body = ellipse(x, y, 0.0, 0.0, a, b, tilt)
    activity = body.astype(np.float64)
    jitter = lambda scale: rng.normal(0.0, scale)  # noqa: E731

    def organ(cx, cy, sa, sb, uptake, angle=0.0):
        cx, cy = cx * a + jitter(4), cy * b + jitter(4)
        sa, sb = sa * a * rng.uniform(0.85, 1.15), sb * b * rng.uniform(0.85, 1.15)
        rows, cols = bounding_slices(x, y, cx, cy, max(sa, sb))
        inside = ellipse(x[rows, cols], y[rows, cols], cx, cy, sa, sb, angle + jitter(0.15)) & body[rows, cols]
        activity[rows, cols][inside] = uptake

    if rng.random() < 0.5:  # chest
        for side in (-1, 1):
            organ(side * 0.45, 0.05, 0.33, 0.62, rng.uniform(0.2, 0.4), side * 0.2)
        organ(0.12, -0.05, 0.17, 0.3, rng.uniform(1.5, 4.0), 0.5)  # heart (myocardium-like, often hot)
        organ(0.0, -0.75, 0.07, 0.15, rng.uniform(0.4, 0.8))  # spine
    else:  # abdomen
        organ(-0.35, 0.1, 0.45, 0.55, rng.uniform(1.5, 2.5), rng.uniform(-0.3, 0.3))  # liver
        for side in (-1, 1):
            organ(side * 0.5, -0.35, 0.11, 0.22, rng.uniform(1.5, 4.0), side * 0.3)  # kidneys
        organ(0.0, -0.75, 0.07, 0.15, rng.uniform(0.4, 0.8))  # spine
    for _ in range(rng.integers(1, 4)):  # bowel loops, vessels, lymph tissue...
        organ(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.15),
              rng.uniform(0.5, 2.5), rng.uniform(0, np.pi))
    fine = x.shape[0]
    activity *= np.clip(1.0 + texture * smooth_noise(rng, 32, fine, 1.0), 0.3, None)
    return activity * body, body


@dataclass
class Tumour:
    mask: np.ndarray  # boolean, fine grid
    uptake: np.ndarray  # activity inside the mask (0 outside), fine grid
    diameter_mm: float  # equivalent diameter: that of a circle of the same area
    tbr: float  # mean tumour uptake / mean background uptake it replaced
    centre_mm: tuple[float, float]


def place_tumour(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, background: np.ndarray, body: np.ndarray,
                 diameter_mm: float, tbr: float, harmonics: int, irregularity: float, heterogeneity: float,
                 max_tries: int = 200) -> Tumour:
    """A random EFD tumour of the given equivalent diameter, wholly inside the body, with uptake ``tbr`` times the
    mean background it covers, modulated by a smooth random pattern (mean 1, s.d. about ``heterogeneity``)."""
    pixel = float(x[0, 1] - x[0, 0])
    outline = scaled_outline(random_efd(rng, harmonics, irregularity), diameter_mm)
    reach = np.abs(outline).max() + 2 * pixel
    fine = x.shape[0]
    for _ in range(max_tries):
        r, c = rng.integers(0, fine, size=2)
        if not body[r, c]:
            continue
        cx, cy = float(x[r, c]), float(y[r, c])
        rows_, cols_ = bounding_slices(x, y, cx, cy, reach)
        r0, r1, c0, c1 = rows_.start, rows_.stop, cols_.start, cols_.stop
        if c0 <= 0 or r0 <= 0 or c1 >= fine or r1 >= fine:
            continue
        local = rasterise(outline + [cx, cy], x[r0:r1, c0:c1], y[r0:r1, c0:c1])
        if local.any() and body[r0:r1, c0:c1][local].all():
            break
    else:
        raise RuntimeError(f"could not place a {diameter_mm:.1f} mm tumour inside the body in {max_tries} tries")
    mask = np.zeros_like(body)
    mask[r0:r1, c0:c1] = local
    pattern = np.zeros((r1 - r0, c1 - c0))
    for _ in range(3):  # a few plane waves of about the tumour's size: hot and cold regions inside it
        wavelength = rng.uniform(0.5, 1.5) * diameter_mm
        direction = rng.uniform(0, 2 * np.pi)
        pattern += np.cos(2 * np.pi * ((x[r0:r1, c0:c1] - cx) * np.cos(direction) + (y[r0:r1, c0:c1] - cy)
                                       * np.sin(direction)) / wavelength + rng.uniform(0, 2 * np.pi))
    pattern = np.clip(1.0 + heterogeneity * pattern / np.sqrt(1.5), 0.2, None)
    pattern /= pattern[local].mean()
    local_background = float(background[r0:r1, c0:c1][local].mean())
    uptake = np.zeros_like(background)
    uptake[r0:r1, c0:c1] = np.where(local, tbr * local_background * pattern, 0.0)
    equivalent = 2.0 * np.sqrt(local.sum() * pixel**2 / np.pi)
    return Tumour(mask, uptake, float(equivalent), tbr, (cx, cy))
