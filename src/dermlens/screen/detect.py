"""Candidate spots in a wide-field photo: where the skin is locally darker in a round, mole-sized patch.

After Soenksen et al. (Sci. Transl. Med. 2021), who ran OpenCV's SimpleBlobDetector on a contrast-enhanced photo,
with the steps that keep it sane on real skin:

    RGB ─► log luminance (pigment and shadows multiply light, so the log turns both into offsets; the same mole
           gives the same number on very light and very dark skin)
        ─► CLAHE (local contrast; lifts the low-contrast shadows and dark skin)
        ─► morphological closing (DullRazor-style black-hat removal of hair, tattoo lines and freckles: dark
           things narrower than the kernel)
        ─► minus the local skin level (a median far wider than a mole: removes shadows, skin tone, blotches)
        ─► divided by the photo's robust noise level (a z-score of "darker than the skin around it")
        ─► SimpleBlobDetector at several thresholds, filtered by size, circularity, convexity and inertia
           (drops clothing edges and long strokes), at two scales
        ─► boxes from the blob's own extent, non-maximum suppression of overlapping boxes.

Candidates are deliberately generous; the lesion/not-lesion head (``dermlens.screen.lesion_head``) sorts them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.ndimage import median_filter
from torchvision.ops import nms

from dermlens.extras import require

cv2 = require("cv2", "screen", "dermlens screen")  # OpenCV is the optional [screen] extra


Z_TO_GREY = 6.0  # the z-map goes to 8 bits for SimpleBlobDetector: z 0-42 in steps of 1/6


@dataclass(frozen=True)
class DetectorConfig:
    work_size: int = 1024  # the photo's longer side is brought to at most this many pixels
    min_diameter: float = 12.0  # smallest spot, pixels at work size (freckles are smaller)
    max_diameter_fraction: float = 0.15  # largest spot, as a fraction of the working image's longer side
    clahe_clip: float = 2.0  # CLAHE clip limit (0: no CLAHE)
    clahe_tiles: int = 8
    hair_kernel: int = 7  # closing kernel (px at work size): dark lines thinner than this vanish
    background_kernel: int = 15  # median over (kernel x 8) px at work size: the local skin level
    min_contrast: float = 4.0  # z-score a spot must reach to count
    colour_weight: float = 0.5  # spots that differ from the skin in colour count at this weight (0: darkness only)
    min_circularity: float = 0.25
    min_convexity: float = 0.6
    min_inertia: float = 0.15
    scales: tuple[float, ...] = (1.0, 0.5)
    nms_iou: float = 0.3
    box_margin: float = 0.2  # boxes are grown by this fraction of their size on every side

    def __post_init__(self):
        if not 0 < self.min_contrast < 255 / Z_TO_GREY:
            raise ValueError(f"min_contrast must be in (0, {255 / Z_TO_GREY:.0f}), got {self.min_contrast}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    """A spot the detector found: ``box`` is [x0, y0, x1, y1] in the input photo's pixels."""

    box: list[int]
    contrast: float  # peak z-score of darkness relative to the local skin
    diameter: float  # pixels in the input photo


def _skin_level(channel: np.ndarray, kernel: int) -> np.ndarray:
    """The local skin value of a channel: the median over a window far wider than a mole (so a mole sitting in it
    does not move it), taken at 1/8 resolution and interpolated back."""
    h, w = channel.shape
    small = cv2.resize(channel, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    level = median_filter(small, size=min(kernel, *small.shape), mode="reflect")
    return cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)


def _in_noise_units(signal: np.ndarray, kernel: int) -> np.ndarray:
    """``signal`` over the photo's robust spread, raised locally where the skin is busier (deep shadow on dark
    skin, where 8-bit steps are coarse in the log; fabric texture), so that busy areas need a stronger spot."""
    deviation = np.abs(signal)
    global_noise = max(1.4826 * float(np.median(deviation[::3, ::3])), 2e-3)
    local = 1.4826 * _skin_level(deviation, kernel)
    return (signal / np.maximum(local, global_noise)).astype(np.float32)


def darkness_map(rgb: np.ndarray, config: DetectorConfig = DetectorConfig()) -> np.ndarray:
    """(h, w) float32: how much darker than the surrounding skin each pixel is, in units of the photo's noise."""
    rgb = rgb.astype(np.float32)
    luminance = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    log_l = np.log(luminance + 4.0)  # +4: black pixels and sensor noise do not explode
    lo, hi = np.percentile(log_l[::3, ::3], [0.5, 99.5])  # a subsample is as good and 9x cheaper
    if hi - lo < 1e-3:  # a flat photo (all black, all white): nothing stands out anywhere
        return np.zeros(luminance.shape, np.float32)
    scaled = np.clip((log_l - lo) / (hi - lo), 0, 1)
    if config.clahe_clip > 0:
        tiles = (config.clahe_tiles, config.clahe_tiles)
        as16 = np.round(scaled * 65535).astype(np.uint16)
        scaled = cv2.createCLAHE(config.clahe_clip, tiles).apply(as16).astype(np.float32) / 65535
    k = config.hair_kernel | 1
    cleaned = cv2.morphologyEx(scaled, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return _in_noise_units(_skin_level(cleaned, config.background_kernel) - cleaned, config.background_kernel)


def colour_map(rgb: np.ndarray, config: DetectorConfig = DetectorConfig()) -> np.ndarray:
    """(h, w) float32: how far each pixel's hue and saturation (CIELAB a*, b*) are from the surrounding skin's, in
    noise units. Finds the pink, tan and pale lesions that are barely darker than the skin."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    a, b = lab[..., 1], lab[..., 2]
    distance = np.hypot(a - _skin_level(a, config.background_kernel), b - _skin_level(b, config.background_kernel))
    k = config.hair_kernel | 1  # opening: thin coloured lines (hair, tattoo strokes) are narrower than the kernel
    distance = cv2.morphologyEx(distance, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return _in_noise_units(distance - _skin_level(distance, config.background_kernel), config.background_kernel)


def spot_map(rgb: np.ndarray, config: DetectorConfig = DetectorConfig()) -> np.ndarray:
    """The map the blob detector reads: the stronger of darkness and (down-weighted: skin has more colour blotches
    than dark spots) colour difference."""
    z = darkness_map(rgb, config)
    return np.maximum(z, config.colour_weight * colour_map(rgb, config)) if config.colour_weight > 0 else z


def _blob_detector(min_d: float, max_d: float, config: DetectorConfig) -> cv2.SimpleBlobDetector:
    p = cv2.SimpleBlobDetector_Params()
    p.blobColor = 255  # bright blobs on the z-map = dark spots on the skin
    p.minThreshold, p.maxThreshold = float(config.min_contrast * Z_TO_GREY), 255.0
    p.thresholdStep = float(1.5 * Z_TO_GREY)  # a threshold every 1.5 z
    p.minRepeatability = 1
    p.minDistBetweenBlobs = max(2.0, min_d / 2)
    p.filterByArea, p.minArea, p.maxArea = True, float(np.pi * (min_d / 2) ** 2), float(np.pi * (max_d / 2) ** 2)
    p.filterByCircularity, p.minCircularity = True, float(config.min_circularity)
    p.filterByConvexity, p.minConvexity = True, float(config.min_convexity)
    p.filterByInertia, p.minInertiaRatio = True, float(config.min_inertia)
    return cv2.SimpleBlobDetector_create(p)


def _blob_box(z: np.ndarray, cx: float, cy: float, diameter: float, level: float) -> tuple[list[float], float]:
    """The extent of the connected dark region around a blob centre (z > ``level``), and its peak z."""
    h, w = z.shape
    r = int(diameter) + 4
    x0, y0, x1, y1 = max(0, int(cx) - r), max(0, int(cy) - r), min(w, int(cx) + r + 1), min(h, int(cy) + r + 1)
    window = z[y0:y1, x0:x1]
    # the outline sits at a fifth of the spot's own peak (when that is above ``level``): a very contrasted spot's
    # blurred halo is not part of it
    core = z[max(0, int(cy - diameter / 2)): int(cy + diameter / 2) + 1, max(0, int(cx - diameter / 2)): int(cx + diameter / 2) + 1]
    level = max(level, 0.2 * float(core.max())) if core.size else level
    n, labels, stats, _ = cv2.connectedComponentsWithStats((window > level).astype(np.uint8), connectivity=8)
    lx, ly = min(int(cx) - x0, window.shape[1] - 1), min(int(cy) - y0, window.shape[0] - 1)
    label = labels[ly, lx]
    if label == 0:
        half = diameter / 2
        return [cx - half, cy - half, cx + half, cy + half], float(z[min(int(cy), h - 1), min(int(cx), w - 1)])
    bx, by, bw, bh = stats[label, :4]
    # a component leaking far beyond the blob (into a shadow edge) is cut back to the blob's own size
    if max(bw, bh) > 2 * diameter:
        half = diameter / 2
        box = [cx - half, cy - half, cx + half, cy + half]
    else:
        box = [x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh]
    return box, float(window[labels == label].max())


def detect_candidates(rgb: np.ndarray, config: DetectorConfig = DetectorConfig()) -> list[Candidate]:
    """Candidate spots in an (h, w, 3) uint8 RGB photo, most contrasted first. Never raises on odd content: a
    tiny, flat or all-black photo simply has no candidates."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB array, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        return []
    boxes, scores = [], []
    base = min(1.0, config.work_size / max(h, w))
    for scale in config.scales:
        s = base * scale
        work = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s != 1 else rgb
        if min(work.shape[:2]) < 16:
            continue
        z = spot_map(work, config)
        # the coarse scale is there for the big, mottled lesions that break into pieces at full resolution
        min_d = config.min_diameter * scale * (2.0 if scale < 1 else 1.0)
        max_d = max(config.max_diameter_fraction * max(work.shape[:2]), 3 * min_d)  # a close-up may be all mole
        if max_d <= min_d or z.max() < config.min_contrast:
            continue
        image = np.clip(z * Z_TO_GREY, 0, 255).astype(np.uint8)
        detector = _blob_detector(min_d, max_d, config)
        for kp in detector.detect(image):
            box, peak = _blob_box(z, kp.pt[0], kp.pt[1], kp.size, config.min_contrast / 2)
            boxes.append([v / s for v in box])
            scores.append(peak)
    if not boxes:
        return []
    boxes_t = torch.tensor(boxes, dtype=torch.float32)
    keep = nms(boxes_t, torch.tensor(scores, dtype=torch.float32), config.nms_iou).tolist()
    out = []
    for i in keep:
        x0, y0, x1, y1 = boxes[i]
        pad = config.box_margin * max(x1 - x0, y1 - y0)
        box = [max(0, int(np.floor(x0 - pad))), max(0, int(np.floor(y0 - pad))),
               min(w, int(np.ceil(x1 + pad))), min(h, int(np.ceil(y1 + pad)))]
        out.append(Candidate(box=box, contrast=float(scores[i]), diameter=float(max(x1 - x0, y1 - y0))))
    return _drop_nested(out)


def _drop_nested(candidates: list[Candidate]) -> list[Candidate]:
    """A weaker box whose centre lies inside a stronger one is a piece of the same spot (blobs of a mottled mole)."""
    kept: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: -c.contrast):
        cx, cy = (c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2
        if not any(k.box[0] <= cx <= k.box[2] and k.box[1] <= cy <= k.box[3] for k in kept):
            kept.append(c)
    return kept
