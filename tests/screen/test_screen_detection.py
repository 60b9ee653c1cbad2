"""Candidate detection on scenes the test draws itself: known dark spots on skin from very light to very dark,
with hair, a shadow and a clothing edge; and odd photos that must give sensible, empty answers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermlens.screen.detect import DetectorConfig, darkness_map, detect_candidates

LIGHT, MEDIUM, DARK = (240, 212, 192), (176, 124, 88), (70, 46, 36)


def draw_scene(skin_rgb, seed: int, hair: int = 30, shadow: bool = True, clothing: bool = True):
    """(photo, spot centres): 640x480 skin with 8 mole-like spots (radius 7-22 px, 35-60 % darker than the skin)."""
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    photo = np.empty((h, w, 3), np.float32)
    photo[:] = skin_rgb
    photo *= 1 + 0.02 * rng.standard_normal((h, w, 1)).astype(np.float32)
    centres = []
    grid = [(x, y) for x in range(80, 560, 120) for y in range(80, 330, 120)]
    for k, (gx, gy) in enumerate(rng.permutation(grid)[:8]):
        cx, cy = int(gx + rng.integers(-20, 20)), int(gy + rng.integers(-20, 20))
        r = int(rng.integers(7, 23))
        spot = np.zeros((h, w), np.float32)
        cv2.ellipse(spot, (cx, cy), (r, int(r * rng.uniform(0.7, 1.0))), float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
        spot = cv2.GaussianBlur(spot, (0, 0), 1.5) * rng.uniform(0.35, 0.6)
        photo *= (1 - spot)[..., None]
        centres.append((cx, cy))
    for _ in range(hair):  # thin dark hairs, the classic false positive
        p = rng.integers(0, (w, h))
        q = p + rng.integers(-120, 120, 2)
        cv2.line(photo, tuple(int(v) for v in p), tuple(int(v) for v in q), (35, 25, 20), 1, cv2.LINE_AA)
    if shadow:  # a soft shadow over the right third
        ramp = 1 - 0.4 / (1 + np.exp(-(np.arange(w) - 0.7 * w) / 30))
        photo *= ramp[None, :, None].astype(np.float32)
    if clothing:  # dark fabric along the bottom edge
        photo[400:] = (30, 30, 60)
    return np.clip(photo, 0, 255).astype(np.uint8), centres


def found(centres, candidates) -> list[bool]:
    return [any(c.box[0] <= x <= c.box[2] and c.box[1] <= y <= c.box[3] for c in candidates) for x, y in centres]


@pytest.mark.parametrize("skin", [LIGHT, MEDIUM, DARK], ids=["light", "medium", "dark"])
def test_every_spot_is_found_on_any_skin_tone_with_few_false_candidates(skin):
    photo, centres = draw_scene(skin, seed=0)
    candidates = detect_candidates(photo)
    assert all(found(centres, candidates)), f"missed spots at {[c for c, f in zip(centres, found(centres, candidates)) if not f]}"
    assert len(candidates) <= len(centres) + 4, [c.box for c in candidates]


def test_boxes_are_in_input_pixels_when_the_photo_is_downscaled_for_work():
    photo, centres = draw_scene(MEDIUM, seed=1, hair=0, shadow=False, clothing=False)
    big = cv2.resize(photo, (1920, 1440), interpolation=cv2.INTER_CUBIC)  # 3x: worked on at 1024 px
    candidates = detect_candidates(big)
    assert all(found([(3 * x, 3 * y) for x, y in centres], candidates))
    for c in candidates:
        x0, y0, x1, y1 = c.box
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1440
        assert 3 * 10 <= max(x1 - x0, y1 - y0) <= 3 * 80  # the spots are 14-44 px across at 640 px, plus margin


def test_candidates_are_sorted_by_contrast_and_do_not_overlap_heavily():
    photo, _ = draw_scene(LIGHT, seed=2)
    candidates = detect_candidates(photo)
    contrasts = [c.contrast for c in candidates]
    assert contrasts == sorted(contrasts, reverse=True)
    for i, a in enumerate(candidates):
        for b in candidates[i + 1:]:
            ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
            assert not (b.box[0] <= ax <= b.box[2] and b.box[1] <= ay <= b.box[3]), "nested boxes survived"


def test_hair_alone_gives_no_candidates():
    photo, _ = draw_scene(LIGHT, seed=3, hair=80, shadow=False, clothing=False)
    skin_only, _ = draw_scene(LIGHT, seed=3, hair=0, shadow=False, clothing=False)
    # same spots in both; the hair must not add candidates
    assert len(detect_candidates(photo)) <= len(detect_candidates(skin_only)) + 1


def test_a_shadow_edge_and_clothing_alone_give_no_candidates():
    rng = np.random.default_rng(4)
    photo = np.full((480, 640, 3), MEDIUM, np.float32) * (1 + 0.02 * rng.standard_normal((480, 640, 1)))
    photo *= (1 - 0.45 / (1 + np.exp(-(np.arange(640) - 300) / 8)))[None, :, None]
    photo[380:] = (20, 20, 20)
    assert detect_candidates(np.clip(photo, 0, 255).astype(np.uint8)) == []


@pytest.mark.parametrize("photo", [
    np.zeros((600, 800, 3), np.uint8),  # all black
    np.full((600, 800, 3), 255, np.uint8),  # all white
    np.full((600, 800, 3), (200, 160, 130), np.uint8),  # bare skin
    np.zeros((8, 8, 3), np.uint8),  # tiny
    np.zeros((1, 2000, 3), np.uint8),  # one row
], ids=["black", "white", "bare-skin", "tiny", "one-row"])
def test_photos_without_lesions_give_no_candidates(photo):
    assert detect_candidates(photo) == []
    assert np.isfinite(darkness_map(photo)).all()


def test_a_small_photo_still_finds_its_spot():
    photo = np.full((64, 64, 3), (210, 170, 140), np.uint8)
    cv2.circle(photo, (32, 30), 9, (110, 75, 55), -1, cv2.LINE_AA)
    candidates = detect_candidates(photo)
    assert found([(32, 30)], candidates) == [True]


def test_a_grey_or_alpha_array_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="RGB"):
        detect_candidates(np.zeros((100, 100), np.uint8))


def test_a_higher_contrast_threshold_keeps_only_the_strong_spots():
    photo = np.full((300, 400, 3), (200, 160, 130), np.float32)
    photo *= 1 + 0.03 * np.random.default_rng(6).standard_normal((300, 400, 1)).astype(np.float32)
    strong, faint = np.zeros((300, 400), np.float32), np.zeros((300, 400), np.float32)
    cv2.circle(strong, (100, 150), 15, 0.6, -1, cv2.LINE_AA)
    cv2.circle(faint, (300, 150), 15, 0.12, -1, cv2.LINE_AA)
    photo = np.clip(photo * (1 - strong - faint)[..., None], 0, 255).astype(np.uint8)
    loose = detect_candidates(photo, DetectorConfig(min_contrast=2.0, colour_weight=0))
    strict = detect_candidates(photo, DetectorConfig(min_contrast=20.0, colour_weight=0))
    assert found([(100, 150), (300, 150)], loose) == [True, True]
    assert found([(100, 150), (300, 150)], strict) == [True, False]


def test_an_impossible_setting_is_refused():
    with pytest.raises(ValueError, match="min_contrast"):
        DetectorConfig(min_contrast=1000.0)
