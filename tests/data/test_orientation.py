"""The orientation-exact preprocessing: turning or flipping a photo turns or flips the model input, exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dermlens.data.orientation import (
    OrientationExactResize, block_mean, build_orientation_exact_transform, even_margin_size,
)
from dermlens.data.synthetic import SYNTHETIC_CLASSES
from dermlens.data.synthetic.drawing import render_lesion
from dermlens.data.transforms import Preprocessing, build_eval_transform

# each PIL operation and the same operation on a (C, H, W) tensor
OPERATIONS = [
    (Image.Transpose.ROTATE_90, lambda x: x.rot90(1, (-2, -1))),
    (Image.Transpose.ROTATE_180, lambda x: x.rot90(2, (-2, -1))),
    (Image.Transpose.ROTATE_270, lambda x: x.rot90(3, (-2, -1))),
    (Image.Transpose.FLIP_LEFT_RIGHT, lambda x: x.flip(-1)),
    (Image.Transpose.FLIP_TOP_BOTTOM, lambda x: x.flip(-2)),
    (Image.Transpose.TRANSPOSE, lambda x: x.transpose(-1, -2)),
    (Image.Transpose.TRANSVERSE, lambda x: x.rot90(2, (-2, -1)).transpose(-1, -2)),
]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    lesion = render_lesion(SYNTHETIC_CLASSES[seed % len(SYNTHETIC_CLASSES)], np.random.default_rng(seed),
                           size=min(max(width, height), 128))
    return lesion.resize((width, height), Image.BILINEAR)


# odd and even margins, portrait, square at another size, and one large enough to be block-averaged first
SIZES = [(101, 75), (75, 101), (90, 90), (64, 64), (203, 150), (700, 523)]


@pytest.mark.parametrize("width, height", SIZES)
@pytest.mark.parametrize("resize", ["shorter_side_center_crop", "squash"])
def test_turning_the_photo_turns_the_model_input(width, height, resize):
    transform = build_orientation_exact_transform(Preprocessing(size=64, resize=resize))
    image = photo(width, height)
    reference = transform(image)
    assert reference.shape == (3, 64, 64)
    for operation, on_tensor in OPERATIONS:
        assert torch.allclose(transform(image.transpose(operation)), on_tensor(reference), atol=1e-6), operation


def test_the_eval_transform_is_not_exact_which_is_why_this_exists():
    transform = build_eval_transform(Preprocessing(size=64))
    image = photo(101, 75)  # an odd margin, resized in two 8-bit passes
    turned = transform(image.transpose(Image.Transpose.ROTATE_90))
    assert (turned - transform(image).rot90(1, (-2, -1))).abs().max() > 1e-3


def test_it_matches_the_eval_transform_where_that_is_already_exact():
    pre = Preprocessing(size=64)
    image = photo(96, 64)  # landscape, margin 16 on each side: the eval transform's own geometry
    assert torch.allclose(build_orientation_exact_transform(pre)(image), build_eval_transform(pre)(image), atol=1e-6)


def test_even_margin_size_keeps_the_aspect_within_a_pixel():
    for width, height in [(200, 150), (150, 200), (765, 574), (4032, 3024), (224, 224)]:
        out_w, out_h = even_margin_size(width, height, 224)
        assert min(out_w, out_h) == 224 and (max(out_w, out_h) - 224) % 2 == 0
        assert abs(max(out_w, out_h) - 224 * max(width, height) / min(width, height)) <= 1
        assert (out_w >= out_h) == (width >= height)


def test_block_mean_is_the_integer_mean_of_centred_blocks():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    reduced = np.asarray(block_mean(Image.fromarray(pixels), 3))
    # 17 = 5 blocks of 3 + margins 1|1; 23 = 7 blocks + 1|1
    assert reduced.shape == (5, 7, 3)
    expected = pixels[1:16, 1:22].reshape(5, 3, 7, 3, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(reduced - expected).max() < 1  # PIL's integer mean (its rounding is its own; exact all the same)
    assert block_mean(Image.fromarray(pixels), 1).size == (23, 17)
    with pytest.raises(ValueError, match="odd"):
        block_mean(Image.fromarray(pixels), 2)


def test_a_large_photo_is_block_averaged_before_resizing():
    resize = OrientationExactResize(64)
    image = photo(700, 523)  # 523 // 128 = 4 -> blocks of 3
    assert resize(image).shape == (3, 64, 86)
