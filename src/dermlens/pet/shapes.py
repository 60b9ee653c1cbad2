"""Tumour outlines from elliptic Fourier descriptors (Kuhl & Giardina 1982), as in Liu, Jha et al. (2021).

A closed contour is x(t) = sum_n a_n cos(nt) + b_n sin(nt), y(t) = sum_n c_n cos(nt) + d_n sin(nt), t in [0, 2 pi).
The first harmonic is an ellipse; a few higher harmonics with amplitudes falling as 1/n^2 make it lobulated but
(for the amplitudes drawn here) still a simple, star-shaped outline.
"""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath


def efd_contour(coefficients: np.ndarray, n_points: int = 256) -> np.ndarray:
    """Points (n_points, 2) of the contour given EFD ``coefficients`` of shape (harmonics, 4): rows (a, b, c, d)."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    n = np.arange(1, len(coefficients) + 1)[:, None]
    cos, sin = np.cos(n * t), np.sin(n * t)
    a, b, c, d = coefficients.T
    x = a @ cos + b @ sin
    y = c @ cos + d @ sin
    return np.stack([x, y], axis=1)


def polygon_area(points: np.ndarray) -> float:
    """Absolute area of a closed polygon (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def random_efd(rng: np.random.Generator, harmonics: int = 4, irregularity: float = 0.25,
               axis_ratio: tuple[float, float] = (0.55, 1.0)) -> np.ndarray:
    """EFD coefficients of a random lobulated blob with unit-ish size: an ellipse (semi-axes 1 and r) plus
    ``harmonics - 1`` higher harmonics of random amplitude ``irregularity / n^2``."""
    ratio = rng.uniform(*axis_ratio)
    angle = rng.uniform(0.0, np.pi)
    first = [np.cos(angle), -ratio * np.sin(angle), np.sin(angle), ratio * np.cos(angle)]
    rows = [first]
    for n in range(2, harmonics + 1):
        rows.append(rng.normal(0.0, irregularity / n**2, size=4))
    return np.asarray(rows)


def scaled_outline(coefficients: np.ndarray, diameter: float, n_points: int = 256) -> np.ndarray:
    """The contour rescaled so that its area is that of a circle of ``diameter`` (the equivalent diameter)."""
    points = efd_contour(coefficients, n_points)
    points -= points.mean(axis=0)
    area = polygon_area(points)
    return points * (np.pi * (diameter / 2.0) ** 2 / area) ** 0.5


def rasterise(points: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of grid points (arrays ``x``, ``y`` of equal shape, same units as ``points``) inside the polygon."""
    inside = PolygonPath(points).contains_points(np.column_stack([x.ravel(), y.ravel()]))
    return inside.reshape(x.shape)
