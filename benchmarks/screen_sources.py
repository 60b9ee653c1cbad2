"""Lesion sources and ways of composing for the leave-one-out screening benchmark (``screen_loo.py``).

Sources, read in place from the shared data folder (never copied): HAM10000 (with masks), ISIC 2017, PH2 (with
masks) and DermNet close-ups of naevi and melanoma. A source without masks gets one estimated from the photo
(:func:`estimate_mask`: Otsu on log luminance, the component nearest the centre); a photo whose lesion is not a
whole, mid-sized spot is skipped, which also keeps only DermNet's close-ups.

Ways of composing a lesion into a wide-field photo (``WAYS``):
- ``mask``: pasted through its mask, multiplicatively (``screen_scenes.make_sprite``);
- ``disc``: cut as a soft-edged disc of 36-64 px with its own surrounding skin and blended in as it is (or partly
  matched to the new skin's brightness), as a clinician's crop pasted on a body would look;
- ``phone``: lesions pasted either way, then the whole photo blurred, shrunk to 30-50 % and JPEG-compressed as a
  phone at arm's length sees it, and brought back to the photo size (detail lost, not size).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import screen_scenes  # beside this script

SOURCES = ("ham10000", "isic2017", "ph2", "dermnet")
WAYS = ("mask", "disc", "phone")
FIT_EXCLUDED = ("ph2",)  # an external set: only ever tested on, never fitted or tuned on (helper rules)
# DermNet topics used: close-ups of naevi and of melanoma (acral, amelanotic and metastatic ones left out: not
# what a back-and-chest screen looks for, and rarely pigmented spots)
DERMNET_NEVI = ("Melanocytic naevus", "Atypical melanocytic naevus")
DERMNET_MELANOMA = ("Melanoma", "Melanoma in situ", "Nodular melanoma")
# which rows of a source are composed, per benchmark split ("test": the figures; "train": the shipped head). DermNet
# val+test hold too few usable naevi close-ups (3), so its test composites use all its splits: a source is never in
# the fitting of its own held-out figures anyway (leave-one-out), only the shipped head saw its train photos.
SPLITS = {
    "test": {"ham10000": ("test",), "isic2017": ("val",), "dermnet": None, "ph2": None},
    "train": {"ham10000": ("train",), "isic2017": ("train",), "dermnet": ("train",), "ph2": ()},
}


@dataclass
class SourceLesion:
    path: Path
    mask: Path | None  # None: estimated from the photo
    diagnosis: str  # "nv" or "mel"
    lesion_id: str
    source: str


def estimate_mask(rgb: np.ndarray, min_solidity: float = 0.0) -> np.ndarray:
    """(h, w) uint8 0/255 lesion mask of a close-up: Otsu on blurred log luminance (dark side), the connected
    component nearest the centre, holes filled; empty when that is not a spot (touches the border, elongated, or
    less solid than ``min_solidity``: a faint lesion broken into scribbles)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    log = np.log(grey + 4.0)
    log = cv2.GaussianBlur(log, (0, 0), max(1.0, 0.01 * max(grey.shape)))
    scaled = cv2.normalize(log, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, dark = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(dark)
    if n < 2:
        return np.zeros(grey.shape, np.uint8)
    h, w = grey.shape
    # the largest of the components that come near the centre
    near = [i for i in range(1, n) if np.hypot(centroids[i][0] - w / 2, centroids[i][1] - h / 2) < 0.3 * max(h, w)]
    if not near:
        return np.zeros(grey.shape, np.uint8)
    best = max(near, key=lambda i: stats[i, cv2.CC_STAT_AREA])
    mask = (labels == best).astype(np.uint8) * 255
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(mask, contours, -1, 255, -1)
    x, y, bw, bh = cv2.boundingRect(contours[0])
    touches = x == 0 or y == 0 or x + bw == w or y + bh == h
    solidity = cv2.contourArea(contours[0]) / max(cv2.contourArea(cv2.convexHull(contours[0])), 1.0)
    # a gap between legs, a shadowed fold, a faint lesion broken into scribbles: not a spot to compose with
    if touches or max(bw, bh) > 2.5 * min(bw, bh) or solidity < min_solidity:
        return np.zeros(grey.shape, np.uint8)
    return mask


MIN_SOLIDITY = 0.0  # set by screen_compose.py --min-solidity


def read_mask(lesion: SourceLesion, rgb: np.ndarray) -> np.ndarray:
    if lesion.mask is None:
        return estimate_mask(rgb, MIN_SOLIDITY)
    mask = cv2.imread(str(lesion.mask), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"{lesion.mask}: unreadable mask")
    if mask.shape != rgb.shape[:2]:
        mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask


def _rows(data: Path, source: str, splits) -> list[dict]:
    import csv

    labels = data / source / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: missing (expected the shared data folder with {source}/labels.csv)")
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if splits is None or r.get("split") in splits]


def source_lesions(data: str | Path, source: str, split: str = "test", max_nevi: int = 300, max_melanoma: int = 120,
                   seed: int = 0) -> list[SourceLesion]:
    """Usable nevi and melanomas of ``source`` for benchmark split ``split``; a random subset when many."""
    from dermlens.data.io import load_image

    data = Path(data)
    splits = SPLITS[split][source]
    if splits == ():
        return []
    out = []
    for r in _rows(data, source, splits):
        d = r["diagnosis"]
        if source == "dermnet":
            kind = "nv" if d in DERMNET_NEVI else "mel" if d in DERMNET_MELANOMA else None
        else:
            kind = {"nv": "nv", "nevus": "nv", "mel": "mel", "melanoma": "mel"}.get(d)
        if kind is None:
            continue
        mask = data / source / r["mask"] if r.get("mask") else None
        lesion_id = r.get("lesion_id") or r.get("image_id") or r["image"]
        out.append(SourceLesion(data / source / r["image"], mask, kind, f"{source}:{lesion_id}", source))
    rng = np.random.default_rng(seed)
    picked = []
    for kind, cap in (("nv", max_nevi), ("mel", max_melanoma)):
        pool = [s for s in out if s.diagnosis == kind]
        for i in rng.permutation(len(pool)):
            if sum(p.diagnosis == kind for p in picked) >= cap:
                break
            s = pool[int(i)]
            rgb = np.asarray(load_image(s.path))
            if screen_scenes.usable_mask(read_mask(s, rgb)):
                picked.append(s)
    return picked


# ------------------------------------------------------------------------------------------------------------
# Ways of composing
# ------------------------------------------------------------------------------------------------------------

@dataclass
class DiscSprite:
    """A lesion with its own skin: RGB pixels, a soft round alpha and the lesion's box inside the disc."""

    rgb: np.ndarray  # (s, s, 3) float32
    alpha: np.ndarray  # (s, s) float32
    lesion_box: tuple[int, int, int, int]  # x0, y0, x1, y1 within the disc


def make_disc_sprite(rgb: np.ndarray, mask: np.ndarray, disc_diameter: float, rng: np.random.Generator) -> DiscSprite:
    """A square around the lesion (1.3-1.8x its extent, so its own skin shows), scaled to ``disc_diameter`` px,
    with a soft-edged round alpha."""
    fg = mask > 127
    ys, xs = np.nonzero(fg)
    if len(ys) < 16:
        raise ValueError("the lesion mask is (nearly) empty")
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    extent = max(np.ptp(xs), np.ptp(ys)) + 1
    side = int(round(extent * rng.uniform(1.3, 1.8)))
    half = side // 2
    pad = max(0, half - int(cx), half - int(cy), int(cx) + half - rgb.shape[1] + 1, int(cy) + half - rgb.shape[0] + 1)
    src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else rgb
    x0, y0 = int(cx) - half + pad, int(cy) - half + pad
    square = src[y0:y0 + 2 * half, x0:x0 + 2 * half].astype(np.float32)
    size = max(8, int(round(disc_diameter)))
    scale = size / square.shape[0]
    square = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2) / (size / 2)
    feather = rng.uniform(0.12, 0.3)
    alpha = np.clip((1 - r) / feather, 0, 1)
    k = int(rng.integers(0, 4))
    square, alpha = np.rot90(square, k), np.rot90(alpha, k)
    lx0, lx1 = (xs.min() - (int(cx) - half)) * scale, (xs.max() + 1 - (int(cx) - half)) * scale
    ly0, ly1 = (ys.min() - (int(cy) - half)) * scale, (ys.max() + 1 - (int(cy) - half)) * scale
    box = (lx0, ly0, lx1, ly1)
    for _ in range(k):  # np.rot90 turns counter-clockwise: (x, y) -> (y, size - x)
        bx0, by0, bx1, by1 = box
        box = (by0, size - bx1, by1, size - bx0)
    return DiscSprite(np.ascontiguousarray(square), np.ascontiguousarray(alpha),
                      tuple(int(round(v)) for v in box))


def paste_disc(image: np.ndarray, sprite: DiscSprite, cx: int, cy: int, match: float) -> list[int] | None:
    """Blend the disc into float RGB ``image`` at (cx, cy); ``match`` in [0, 1] moves the disc's skin brightness
    towards the new skin's (0: as photographed). Returns the lesion's box in the photo, or None off the photo."""
    s = sprite.alpha.shape[0]
    x0, y0 = cx - s // 2, cy - s // 2
    if x0 < 0 or y0 < 0 or x0 + s > image.shape[1] or y0 + s > image.shape[0]:
        return None
    region = image[y0:y0 + s, x0:x0 + s]
    ring = sprite.alpha < 0.5
    disc_skin = np.median(sprite.rgb[~ring].reshape(-1, 3), axis=0) if (~ring).any() else sprite.rgb.reshape(-1, 3).mean(0)
    local_skin = np.median(region[ring].reshape(-1, 3), axis=0) if ring.any() else region.reshape(-1, 3).mean(0)
    gain = (local_skin / np.maximum(disc_skin, 1.0)) ** match
    a = sprite.alpha[..., None]
    region[:] = region * (1 - a) + np.clip(sprite.rgb * gain, 0, 255) * a
    bx0, by0, bx1, by1 = sprite.lesion_box
    return [x0 + max(0, bx0), y0 + max(0, by0), x0 + min(s, bx1), y0 + min(s, by1)]


def phone_degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB as a phone at arm's length: defocus, shrunk to 30-50 %, JPEG 55-80, back to the same size."""
    h, w = image.shape[:2]
    s = rng.uniform(0.3, 0.5)
    small = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 1.4))
    small = cv2.resize(small, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 81))])
    small = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def compose_lesion(image: np.ndarray, occupied: np.ndarray, rgb: np.ndarray, mask: np.ndarray, way: str,
                   rng: np.random.Generator) -> list[int] | None:
    """Place one lesion into ``image`` (float RGB, in place) the given way; its true box, or None if no room."""
    if way == "phone":
        way = "mask" if rng.random() < 0.5 else "disc"
    if way == "mask":
        sprite = screen_scenes.make_sprite(rgb, mask, float(rng.uniform(24, 64)), rng)
        spot = screen_scenes.free_spot(occupied, int(max(sprite.alpha.shape) / 2) + 2, rng)
        return None if spot is None else screen_scenes.paste(image, sprite, *spot)
    if way == "disc":
        disc = make_disc_sprite(rgb, mask, float(rng.uniform(36, 64)), rng)
        spot = screen_scenes.free_spot(occupied, disc.alpha.shape[0] // 2 + 2, rng)
        return None if spot is None else paste_disc(image, disc, *spot, match=float(rng.uniform(0, 1)))
    raise ValueError(f"way must be one of {WAYS}, got {way!r}")


def compose_photo(lesions: list[tuple[np.ndarray, np.ndarray]], way: str, tone: float, clutter: bool,
                  rng: np.random.Generator, size: tuple[int, int] = (1024, 768)) -> tuple[np.ndarray, list]:
    """(uint8 RGB photo, [box or None per lesion]) from (rgb, mask) pairs: skin of ``tone``, with freckles always
    and (``clutter``) hair, shadows, maybe a tattoo and clothing."""
    w, h = size
    image, distractors = screen_scenes.make_background(h, w, tone, rng, clutter=clutter)
    occupied = distractors.blocked.copy()
    boxes = [compose_lesion(image, occupied, rgb, mask, way, rng) for rgb, mask in lesions]
    photo = screen_scenes.finish_photo(image, rng, clutter=clutter)
    if way == "phone":
        photo = phone_degrade(photo, rng)
    return photo, boxes
