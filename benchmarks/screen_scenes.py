"""Generated wide-field skin: backgrounds of any tone with the things that fool a spot detector, and lesion pasting.

No public wide-field photo set is at hand, so the screening benchmark (``screen_benchmark.py``, which also makes
the lesion/not-lesion head's training photos) is composed from these pieces: a skin background whose tone runs from
very light to very dark, with pores, blotchy redness, freckles, hair, a tattoo, a clothing edge and shadows; real
dermoscopic lesion crops are pasted onto it through their segmentation masks.

A lesion is pasted *multiplicatively*: each pixel's ratio to the skin around the lesion in its dermoscopic photo is
applied to the new skin. Pigment absorbs a share of the light, so a mole stays a mole of the same contrast on light
and on dark skin instead of turning into a brown sticker. Everything is numpy + OpenCV and CPU-cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# sRGB anchors from very light to very dark skin (roughly Fitzpatrick I to VI); a tone is drawn between neighbours.
SKIN_TONES = np.array(
    [(247, 224, 208), (236, 200, 176), (220, 172, 140), (190, 136, 100), (150, 100, 70), (104, 68, 48), (66, 44, 34)],
    dtype=np.float32,
)


def skin_tone(t: float) -> np.ndarray:
    """RGB of the skin tone at ``t`` in [0, 1] (0 very light, 1 very dark), interpolated between the anchors."""
    x = float(np.clip(t, 0, 1)) * (len(SKIN_TONES) - 1)
    i = min(int(x), len(SKIN_TONES) - 2)
    return SKIN_TONES[i] * (1 - (x - i)) + SKIN_TONES[i + 1] * (x - i)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-s.d. noise with features about ``scale`` pixels wide (upsampled coarse noise: cheap)."""
    h, w = shape
    coarse = rng.standard_normal((max(2, int(h / scale) + 2), max(2, int(w / scale) + 2))).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


@dataclass
class Distractors:
    """Where the non-lesion clutter went, so lesions can be kept off it."""

    blocked: np.ndarray  # (h, w) bool: clothing and tattoo areas


def make_skin(h: int, w: int, tone: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 RGB skin in [0, 255]: tone, blotchy redness, pores. No hair or spots yet."""
    base = skin_tone(tone + rng.normal(0, 0.03))
    skin = np.empty((h, w, 3), np.float32)
    skin[:] = base
    skin *= (1 + 0.05 * _smooth_noise(rng, (h, w), 120))[..., None]  # uneven tone over the body
    redness = np.clip(_smooth_noise(rng, (h, w), 60), 0, None) * rng.uniform(0, 0.05)
    skin[..., 1:] *= (1 - redness)[..., None]
    pores = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
    skin *= (1 + 0.025 * pores)[..., None]
    return skin


def add_freckles(skin: np.ndarray, tone: float, rng: np.random.Generator) -> None:
    """Small, faint brown spots (1-4 px radius at 1024 px), more of them on light skin; in place."""
    h, w = skin.shape[:2]
    n = int(rng.integers(0, int(60 * (1.2 - tone)) + 2))
    layer = np.zeros((h, w), np.float32)
    for _ in range(n):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = float(rng.uniform(1.0, 4.0))
        cv2.circle(layer, (cx, cy), int(round(r)), float(rng.uniform(0.08, 0.25)), -1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.8)
    skin *= (1 - layer)[..., None] * np.array([1.0, 0.97, 0.95], np.float32) + layer[..., None] * np.array([0.75, 0.68, 0.62], np.float32)


def add_hair(image: np.ndarray, rng: np.random.Generator, n: int | None = None) -> None:
    """Thin dark curved hairs (1-2 px); in place. ``n`` defaults to a random count from none to dense."""
    h, w = image.shape[:2]
    n = int(rng.choice([0, 10, 40, 120])) if n is None else n
    layer = np.zeros((h, w), np.float32)
    for _ in range(n):
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(30, 220)
        bend = rng.normal(0, 0.4)
        t = np.linspace(0, 1, 24)
        a = angle + bend * t
        pts = p0 + np.cumsum(np.stack([np.cos(a), np.sin(a)], 1) * length / len(t), axis=0)
        cv2.polylines(layer, [np.round(pts * 4).astype(np.int32)], False, float(rng.uniform(0.5, 0.9)),
                      int(rng.choice([1, 1, 2])), cv2.LINE_AA, shift=2)
    hair_colour = np.array([38, 28, 22], np.float32) * rng.uniform(0.6, 1.4)
    image[:] = image * (1 - layer[..., None]) + hair_colour * layer[..., None]


def add_tattoo(image: np.ndarray, rng: np.random.Generator, blocked: np.ndarray) -> None:
    """A patch of thick ink strokes (lines, arcs, filled shapes) in blue-black or coloured ink; in place."""
    h, w = image.shape[:2]
    size = int(rng.uniform(0.12, 0.25) * min(h, w))
    x0, y0 = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
    layer = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.integers(0, 3)
        p = (int(x0 + rng.uniform(0, size)), int(y0 + rng.uniform(0, size)))
        q = (int(x0 + rng.uniform(0, size)), int(y0 + rng.uniform(0, size)))
        thickness = int(rng.integers(2, 7))
        if kind == 0:
            cv2.line(layer, p, q, 1.0, thickness, cv2.LINE_AA)
        elif kind == 1:
            cv2.ellipse(layer, p, (int(rng.uniform(10, size / 2)), int(rng.uniform(8, size / 3))),
                        float(rng.uniform(0, 180)), 0, float(rng.uniform(90, 360)), 1.0, thickness, cv2.LINE_AA)
        else:
            star = np.array([p, q, (int(x0 + rng.uniform(0, size)), int(y0 + rng.uniform(0, size)))], np.int32)
            cv2.fillPoly(layer, [star], 1.0, cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.7) * rng.uniform(0.6, 0.9)
    ink = np.array([(40, 50, 80), (30, 30, 35), (40, 90, 60), (140, 40, 40)][int(rng.integers(0, 4))], np.float32)
    image[:] = image * (1 - layer[..., None]) + (image * ink / 255.0) * layer[..., None]  # ink sits under the skin
    blocked[max(0, y0 - 40): y0 + size + 40, max(0, x0 - 40): x0 + size + 40] = True


def add_clothing(image: np.ndarray, rng: np.random.Generator, blocked: np.ndarray) -> None:
    """Fabric over one border of the photo, with a wavy hard edge and a weave texture; in place."""
    h, w = image.shape[:2]
    side = int(rng.integers(0, 4))
    depth = rng.uniform(0.1, 0.25)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along, across, extent = [(xx, yy, h), (xx, h - 1 - yy, h), (yy, xx, w), (yy, w - 1 - xx, w)][side]
    edge = depth * extent + 12 * np.sin(along / rng.uniform(40, 120) + rng.uniform(0, 6))
    cloth = across < edge
    colour = rng.uniform(10, 240, 3).astype(np.float32)
    weave = 1 + 0.06 * np.sin(xx * 1.3) * np.sin(yy * 1.3) + 0.05 * _smooth_noise(rng, (h, w), 30)
    fold_shadow = 1 - 0.25 * np.clip(_smooth_noise(rng, (h, w), 80), 0, None)
    image[cloth] = (colour * (weave * fold_shadow)[..., None])[cloth]
    blocked |= cv2.dilate(cloth.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)


def add_shadow(image: np.ndarray, rng: np.random.Generator) -> None:
    """A soft cast shadow (body curvature or an arm) darkening part of the photo by 15-50 %; in place."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    signed = (xx - rng.uniform(0.2, 0.8) * w) * np.cos(angle) + (yy - rng.uniform(0.2, 0.8) * h) * np.sin(angle)
    softness = rng.uniform(15, 150)
    shade = 1 - rng.uniform(0.15, 0.5) / (1 + np.exp(-signed / softness))
    image *= shade[..., None]


def make_background(h: int, w: int, tone: float, rng: np.random.Generator, clutter: bool = True) -> tuple[np.ndarray, Distractors]:
    """Skin with freckles and (when ``clutter``) maybe a tattoo and clothing; hair and shadows come after lesions."""
    skin = make_skin(h, w, tone, rng)
    add_freckles(skin, tone, rng)
    blocked = np.zeros((h, w), bool)
    if clutter and rng.random() < 0.3:
        add_tattoo(skin, rng, blocked)
    if clutter and rng.random() < 0.4:
        add_clothing(skin, rng, blocked)
    return skin, Distractors(blocked)


def finish_photo(image: np.ndarray, rng: np.random.Generator, clutter: bool = True) -> np.ndarray:
    """Hair, shadow, camera blur and noise on top of skin and lesions; returns uint8 RGB."""
    if clutter:
        add_hair(image, rng)
        if rng.random() < 0.7:
            add_shadow(image, rng)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.9))
    image += rng.normal(0, 1.5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------
# Lesion sprites
# ------------------------------------------------------------------------------------------------------------

@dataclass
class Sprite:
    """A lesion ready to paste: per-pixel ratio to the surrounding skin, and a soft alpha mask."""

    ratio: np.ndarray  # (h, w, 3) float32, ~1 at the skin, < 1 where pigmented
    alpha: np.ndarray  # (h, w) float32 in [0, 1]


def usable_mask(mask: np.ndarray) -> bool:
    """A segmentation worth pasting: a lesion that covers 3-60 % of the photo and is not cut off by its borders."""
    fg = mask > 127
    if not 0.03 <= fg.mean() <= 0.6:
        return False
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    return border.mean() < 0.1


def make_sprite(image: np.ndarray, mask: np.ndarray, diameter: float, rng: np.random.Generator | None = None) -> Sprite:
    """Cut the masked lesion out of a dermoscopic RGB photo and scale it so its longer side is ``diameter`` px."""
    fg = mask > 127
    if fg.sum() < 16:
        raise ValueError("the lesion mask is (nearly) empty")
    skin_ref = np.median(image[~fg].reshape(-1, 3), axis=0).astype(np.float32) if (~fg).any() else np.full(3, 200, np.float32)
    ys, xs = np.nonzero(fg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = int(0.15 * max(y1 - y0, x1 - x0)) + 2
    y0, x0 = max(0, y0 - pad), max(0, x0 - pad)
    y1, x1 = min(image.shape[0], y1 + pad), min(image.shape[1], x1 + pad)
    ratio = np.clip(image[y0:y1, x0:x1].astype(np.float32) / np.maximum(skin_ref, 1), 0.03, 1.15)
    alpha = fg[y0:y1, x0:x1].astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.03 * max(alpha.shape)))  # soft edge, like a real mole
    scale = diameter / max(int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1)
    size = (max(3, round(alpha.shape[1] * scale)), max(3, round(alpha.shape[0] * scale)))
    ratio = cv2.resize(ratio, size, interpolation=cv2.INTER_AREA)
    alpha = np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_AREA), 0, 1)
    if rng is not None:  # moles have no up: any right-angle turn or mirror image is as real as the original
        k = int(rng.integers(0, 4))
        ratio, alpha = np.rot90(ratio, k), np.rot90(alpha, k)
        if rng.random() < 0.5:
            ratio, alpha = ratio[:, ::-1], alpha[:, ::-1]
    return Sprite(np.ascontiguousarray(ratio), np.ascontiguousarray(alpha))


def paste(image: np.ndarray, sprite: Sprite, cx: int, cy: int) -> list[int] | None:
    """Paste ``sprite`` centred at (cx, cy) into float RGB ``image`` in place; returns the lesion's box
    [x0, y0, x1, y1] (where alpha > 0.5) or None when it would not fit inside the photo."""
    h, w = sprite.alpha.shape
    x0, y0 = cx - w // 2, cy - h // 2
    if x0 < 0 or y0 < 0 or x0 + w > image.shape[1] or y0 + h > image.shape[0]:
        return None
    a = sprite.alpha[..., None]
    region = image[y0:y0 + h, x0:x0 + w]
    region[:] = region * (1 - a + a * sprite.ratio)
    ys, xs = np.nonzero(sprite.alpha > 0.5)
    return [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)]


def free_spot(occupied: np.ndarray, radius: int, rng: np.random.Generator, tries: int = 200) -> tuple[int, int] | None:
    """A centre whose disc of ``radius`` (plus a margin) touches nothing already ``occupied``; marks it taken."""
    h, w = occupied.shape
    margin = radius + 6
    for _ in range(tries):
        cx, cy = int(rng.integers(margin, w - margin)), int(rng.integers(margin, h - margin))
        if not occupied[cy - margin: cy + margin, cx - margin: cx + margin].any():
            occupied[cy - margin: cy + margin, cx - margin: cx + margin] = True
            return cx, cy
    return None
