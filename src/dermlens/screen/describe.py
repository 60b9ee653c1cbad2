"""What a dermatologist compares between a patient's moles, measured on a candidate crop: colour, size, border and
pattern (the ABCD of dermoscopy, Nachbar et al. 1994, reduced to what a small wide-field crop still shows).

The crop is the screener's square crop (``screener.square_crop``), centred on the candidate; the lesion is the
darker-than-skin part near its centre (Otsu on CIELAB lightness inside the central disc), the skin a ring at the
crop's edge. Cheap (a 48 px copy of the crop), no learning; used by the ugly-duckling score (``score.py``) and
offered to the lesion head beside the embedding.
"""
from __future__ import annotations

import cv2
import numpy as np

SIDE = 48  # crops are measured at this size: a wide-field mole rarely holds more detail
NAMES = (
    "lightness", "red", "yellow",  # mean CIELAB inside the lesion
    "lightness_contrast", "red_contrast", "yellow_contrast",  # inside minus the skin ring
    "lightness_spread", "red_spread", "yellow_spread",  # colour variegation inside
    "skin_spread",  # how busy the surrounding skin is (hair, texture)
    "area_fraction", "compactness", "asymmetry", "border_sharpness", "texture", "centre_offset",
)
COLOUR = NAMES[:9]
SHAPE = ("compactness", "asymmetry", "border_sharpness")
PATTERN = ("texture",)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    r = np.hypot(xx - (SIDE - 1) / 2, yy - (SIDE - 1) / 2) / (SIDE / 2)
    return r, np.stack([xx, yy])


_RADIUS, _XY = _grid()


def lesion_mask(lab: np.ndarray) -> np.ndarray:
    """(SIDE, SIDE) bool: the dark central spot (Otsu on lightness within the central disc, the component holding
    the darkest central pixels); a central disc when that finds nothing sensible."""
    centre = _RADIUS < 0.7
    lightness = lab[..., 0]
    values = lightness[centre]
    lo, hi = float(values.min()), float(values.max())
    fallback = _RADIUS < 0.45
    if hi - lo < 1.0:
        return fallback
    scaled = np.clip((lightness - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(scaled[centre].reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = ((scaled <= t) & centre).astype(np.uint8)
    n, labels = cv2.connectedComponents(dark)
    if n < 2:
        return fallback
    core = labels[_RADIUS < 0.25]
    core = core[core > 0]
    label = np.bincount(core).argmax() if len(core) else np.bincount(labels[labels > 0]).argmax()
    mask = labels == label
    return mask if 0.02 < mask.mean() < 0.6 else fallback


def describe(crop: np.ndarray) -> np.ndarray:
    """(len(NAMES),) float32 descriptors of one (h, w, 3) uint8 RGB crop."""
    small = cv2.resize(np.ascontiguousarray(crop), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    mask = lesion_mask(lab)
    ring = _RADIUS > 0.85
    inside, skin = lab[mask], lab[ring]
    mean_in, mean_skin = inside.mean(0), skin.mean(0)
    area = float(mask.sum())
    m8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = max(sum(cv2.arcLength(c, True) for c in contours), 1.0)
    compactness = float(np.clip(4 * np.pi * area / perimeter ** 2, 0, 1.5))
    centroid = _XY[:, mask].mean(1)
    shift = np.float32([[1, 0, (SIDE - 1) / 2 - centroid[0]], [0, 1, (SIDE - 1) / 2 - centroid[1]]])
    centred = cv2.warpAffine(m8, shift, (SIDE, SIDE), flags=cv2.INTER_NEAREST)
    rotated = centred[::-1, ::-1]
    asymmetry = 1.0 - float((centred & rotated).sum()) / max(float((centred | rotated).sum()), 1.0)
    lightness = lab[..., 0]
    gx, gy = cv2.Sobel(lightness, cv2.CV_32F, 1, 0), cv2.Sobel(lightness, cv2.CV_32F, 0, 1)
    gradient = np.hypot(gx, gy)
    edge = cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    contrast = abs(float(mean_in[0] - mean_skin[0])) + 1.0
    border_sharpness = float(gradient[edge].mean()) / contrast if edge.any() else 0.0
    texture = float(np.abs(cv2.Laplacian(lightness, cv2.CV_32F))[mask].mean()) / contrast
    centre_offset = float(np.hypot(*(centroid - (SIDE - 1) / 2))) / SIDE
    return np.array([
        *mean_in, *(mean_in - mean_skin), *inside.std(0), float(skin[:, 0].std()),
        area / SIDE ** 2, compactness, asymmetry, border_sharpness, texture, centre_offset,
    ], dtype=np.float32)


def describe_all(crops) -> np.ndarray:
    """(n, len(NAMES)) for a list of crops."""
    return np.stack([describe(c) for c in crops]) if len(crops) else np.zeros((0, len(NAMES)), np.float32)


def head_features(descriptors: np.ndarray, contrast: np.ndarray, diameter: np.ndarray) -> np.ndarray:
    """What the descriptor lesion head reads: descriptors, log contrast and log size, and their squares (a logistic
    head with some curvature)."""
    base = np.column_stack([np.asarray(descriptors, np.float64), np.log(np.maximum(contrast, 1e-3)),
                            np.log(np.maximum(diameter, 1e-3))])
    return np.hstack([base, base ** 2])
