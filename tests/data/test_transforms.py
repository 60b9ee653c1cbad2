"""The paper's augmentation (rotation + inscribed crop + flips), colour constancy and eval preprocessing."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2 as T

from dermlens.data.corruptions import Corruption, Downscale, GaussianBlur, GaussianNoise, JpegQuality, WhiteBalance
from dermlens.data.synthetic import render_lesion
from dermlens.data.transforms import (
    ROBUST_P,
    Preprocessing,
    RandomResolution,
    RandomRotateInscribedCrop,
    RandomSquash,
    ShadesOfGray,
    build_eval_transform,
    build_train_transform,
    largest_inscribed_rectangle,
)


def corners_inside(width, height, angle_degrees, w, h, slack=1e-9) -> bool:
    """Do the corners of a centred upright w x h rectangle lie inside a width x height one rotated by the angle?"""
    a = math.radians(angle_degrees)
    u = (math.cos(a), math.sin(a))  # the rotated rectangle's own axes
    v = (-math.sin(a), math.cos(a))
    for x in (-w / 2, w / 2):
        for y in (-h / 2, h / 2):
            if abs(x * u[0] + y * u[1]) > width / 2 * (1 + slack) + slack:
                return False
            if abs(x * v[0] + y * v[1]) > height / 2 * (1 + slack) + slack:
                return False
    return True


def brute_force_largest_area(width, height, angle_degrees, steps=4000) -> float:
    """Largest area of a centred upright rectangle inside the rotated one, by scanning its width."""
    a = math.radians(angle_degrees)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    best = 0.0
    for i in range(1, steps + 1):
        w = i / steps * (width + height)
        limits = []
        if s > 1e-12:
            limits.append((width - w * c) / s)
        elif w * c > width:
            limits.append(-1)
        if c > 1e-12:
            limits.append((height - w * s) / c)
        elif w * s > height:
            limits.append(-1)
        h = min(limits) if limits else float("inf")
        if h > 0:
            best = max(best, w * h)
    return best


def test_inscribed_rectangle_at_right_angles():
    assert largest_inscribed_rectangle(200, 150, 0) == pytest.approx((200, 150))
    assert largest_inscribed_rectangle(200, 150, 180) == pytest.approx((200, 150))
    assert largest_inscribed_rectangle(200, 150, 360) == pytest.approx((200, 150))
    assert largest_inscribed_rectangle(200, 150, 90) == pytest.approx((150, 200))  # 90 degrees swaps the sides
    assert largest_inscribed_rectangle(200, 150, 270) == pytest.approx((150, 200))
    # A square at 45 degrees holds a square of side s / sqrt(2).
    assert largest_inscribed_rectangle(100, 100, 45) == pytest.approx((100 / math.sqrt(2), 100 / math.sqrt(2)))
    assert largest_inscribed_rectangle(0, 10, 30) == (0.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(
    width=st.floats(8, 1000), height=st.floats(8, 1000), angle=st.floats(0, 360, exclude_max=True),
)
def test_inscribed_rectangle_lies_inside_the_rotated_image(width, height, angle):
    w, h = largest_inscribed_rectangle(width, height, angle)
    assert 0 < w and 0 < h
    assert corners_inside(width, height, angle, w, h, slack=1e-7)
    # ...and is the largest one there: 1% larger in both directions already pokes out.
    assert not corners_inside(width, height, angle, w * 1.01, h * 1.01)


@settings(max_examples=40, deadline=None)
@given(width=st.floats(10, 400), height=st.floats(10, 400), angle=st.floats(0, 360, exclude_max=True))
def test_inscribed_rectangle_has_the_largest_area(width, height, angle):
    w, h = largest_inscribed_rectangle(width, height, angle)
    assert w * h >= brute_force_largest_area(width, height, angle) * (1 - 1e-3)


@pytest.mark.parametrize("size", [(64, 64), (200, 150), (150, 200), (31, 97)])
def test_rotate_and_crop_of_a_white_image_has_no_black_corners(size):
    white = Image.new("RGB", size, (255, 255, 255))
    crop = RandomRotateInscribedCrop()
    for seed in range(60):
        torch.manual_seed(seed)
        out = np.asarray(crop(white))
        assert out.min() >= 250, f"dark pixels after rotation (seed {seed}, size {size})"
        assert 0 < out.shape[0] <= max(size) and 0 < out.shape[1] <= max(size)
    # The check can fail: a plain rotation of the same image has black corners.
    assert np.asarray(white.rotate(30, expand=True)).min() == 0


def test_rotation_angles_cover_the_whole_circle_and_follow_torch_seeding():
    crop = RandomRotateInscribedCrop()
    torch.manual_seed(0)
    angles = [crop.get_angle() for _ in range(400)]
    assert all(0 <= a < 360 for a in angles)
    assert {int(a // 90) for a in angles} == {0, 1, 2, 3}
    # Seeded by torch (which DataLoader workers and checkpoints handle), so a resumed run draws the same angles.
    image = render_lesion("melanoma", np.random.default_rng(0), size=64)
    torch.manual_seed(5)
    a = np.asarray(crop(image))
    torch.manual_seed(5)
    b = np.asarray(crop(image))
    np.testing.assert_array_equal(a, b)


def test_train_transform_is_the_papers_augmentation_and_reproducible_under_a_torch_seed():
    pre = Preprocessing(size=48)
    transform = build_train_transform(pre)
    kinds = [type(t) for t in transform.transforms]
    assert kinds[0] is RandomRotateInscribedCrop
    for kind in (T.RandomHorizontalFlip, T.RandomVerticalFlip, T.ColorJitter, T.Normalize, ShadesOfGray):
        assert kind in kinds
    jitter = next(t for t in transform.transforms if isinstance(t, T.ColorJitter))
    assert max(jitter.brightness) <= 1.25 and max(jitter.saturation) <= 1.25 and max(jitter.hue) <= 0.05  # mild

    image = render_lesion("basal_cell_carcinoma", np.random.default_rng(1), size=80).crop((0, 0, 80, 60))
    torch.manual_seed(11)
    a = transform(image)
    torch.manual_seed(11)
    b = transform(image)
    torch.manual_seed(12)
    c = transform(image)
    assert a.shape == (3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)

    light = build_train_transform(pre, strength="light")
    assert T.ColorJitter not in [type(t) for t in light.transforms]
    assert light(image).shape == (3, 48, 48)


def test_camera_augmentation_sees_other_resolutions_aspects_and_jpeg_and_stays_reproducible():
    pre = Preprocessing(size=48)
    transform = build_train_transform(pre, strength="camera")
    kinds = [type(t) for t in transform.transforms]
    for kind in (RandomRotateInscribedCrop, RandomSquash, RandomResolution, T.RandomResizedCrop, T.ColorJitter,
                 T.RandomApply, T.Normalize, ShadesOfGray):
        assert kind in kinds
    image = render_lesion("melanoma", np.random.default_rng(2), size=120).crop((0, 0, 120, 90))
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(transform(image))
    assert outputs[0].shape == (3, 48, 48) and outputs[0].dtype == torch.float32
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    with pytest.raises(ValueError, match="augment must be one of paper, light, robust, camera; got 'heavy'"):
        build_train_transform(pre, strength="heavy")


def test_robust_augmentation_is_paper_on_a_photo_changed_the_everyday_ways_and_stays_reproducible(monkeypatch):
    pre = Preprocessing(size=48)
    robust, paper = build_train_transform(pre, strength="robust"), build_train_transform(pre, strength="paper")
    kinds = [type(t) for t in robust.transforms]
    changes = [t for t in robust.transforms if isinstance(t, Corruption)]
    for kind in (Downscale, GaussianBlur, GaussianNoise, WhiteBalance, JpegQuality):
        assert kind in kinds
    # The photo is changed at its own resolution, as the robustness benchmark changes it, before the paper's crop;
    # after the changes the steps are the paper's, with the paper's settings.
    assert kinds.index(T.RandomResizedCrop) > max(kinds.index(type(c)) for c in changes)
    assert [repr(t) for t in robust.transforms if not isinstance(t, Corruption)] == [repr(t) for t in paper.transforms]
    jpeg = next(c for c in changes if isinstance(c, JpegQuality))
    assert jpeg.quality == (30, 95) and all(c.p <= ROBUST_P for c in changes)

    image = render_lesion("melanoma", np.random.default_rng(3), size=120).crop((0, 0, 120, 90))
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(robust(image))
    assert outputs[0].shape == (3, 48, 48) and outputs[0].dtype == torch.float32
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])

    # Each change reaches about ROBUST_P of the photos: most photos keep the paper's augmentation alone or one change.
    applied = {type(c).__name__: 0 for c in changes}
    for change in changes:
        def counting(img, _name=type(change).__name__, _apply=change.apply, **params):
            applied[_name] += 1
            return _apply(img, **params)
        monkeypatch.setattr(change, "apply", counting)
    torch.manual_seed(0)
    small = image.resize((40, 30))
    for _ in range(400):
        robust(small)
    for name, count in applied.items():
        share = [c.p for c in changes if type(c).__name__ == name][0]
        assert abs(count / 400 - share) < 0.07, (name, count)


def test_random_squash_stretches_one_axis_and_random_resolution_shrinks_within_bounds():
    image = Image.new("RGB", (200, 150))
    torch.manual_seed(0)
    squashed = [RandomSquash(p=1.0, max_ratio=1.5)(image).size for _ in range(50)]
    assert all(h == 150 and 200 / 1.5 - 1 <= w <= 200 * 1.5 + 1 for w, h in squashed)
    assert len({w for w, _ in squashed}) > 10  # a spread of ratios, both ways
    assert min(w for w, _ in squashed) < 200 < max(w for w, _ in squashed)
    shrunk = [RandomResolution(p=1.0, min_side=50)(image).size for _ in range(50)]
    assert all(50 <= min(size) <= 150 and abs(size[0] / size[1] - 4 / 3) < 0.05 for size in shrunk)
    assert RandomResolution(p=0.0)(image).size == (200, 150)
    assert RandomResolution(p=1.0, min_side=200)(image).size == (200, 150)  # never upscales


def test_eval_transform_is_deterministic_and_square():
    image = render_lesion("melanoma", np.random.default_rng(2), size=90).crop((0, 0, 90, 60))
    for resize in ("shorter_side_center_crop", "squash"):
        transform = build_eval_transform(Preprocessing(size=40, resize=resize))
        out = transform(image)
        assert out.shape == (3, 40, 40)
        assert torch.equal(out, transform(image))
    # Normalisation follows the stored mean and std: a mid-grey pixel maps near zero under Lite0's (x-127)/128.
    grey = Image.new("RGB", (20, 20), (127, 127, 127))
    out = build_eval_transform(Preprocessing(size=20, color_constancy=None))(grey)
    assert out.abs().max() < 1e-6


def test_preprocessing_round_trips_through_json():
    pre = Preprocessing(size=96, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), color_constancy=None, resize="squash")
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_shades_of_gray_neutralises_a_colour_cast():
    image = torch.from_numpy(np.array(render_lesion("melanocytic_nevus", np.random.default_rng(3), size=64)))
    image = image.permute(2, 0, 1).float() / 255 * 0.8  # headroom, so no channel clips after correction
    cast = image * torch.tensor([1.0, 0.8, 0.55])[:, None, None]  # a warm illuminant
    sog = ShadesOfGray()

    def p_norms(x):
        return x.flatten(1).pow(6).mean(1).pow(1 / 6)

    before = p_norms(cast)
    assert before.max() / before.min() > 1.5
    after = p_norms(sog(cast))
    assert after.max() / after.min() < 1.01  # the estimated illuminant is now grey

    # Corrected, the cast and the original differ only in overall brightness, not in colour.
    corrected_cast, corrected = sog(cast), sog(image)
    ratio = corrected_cast / corrected.clamp_min(1e-3)
    mask = (corrected > 0.05) & (corrected < 0.95) & (corrected_cast < 0.95)
    assert ratio[mask].std() / ratio[mask].mean() < 0.01

    batch = torch.stack([cast, image])  # works on batches too
    assert torch.allclose(sog(batch)[0], sog(cast), atol=1e-6)
