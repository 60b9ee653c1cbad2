"""The everyday changes of a photo: each does what its name says, at the strength asked, reproducibly from a seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from dermlens.data.corruptions import (
    EVERYDAY_CHANGES, Brightness, Downscale, GaussianBlur, GaussianNoise, JpegQuality, Mirror, PhonePipeline,
    QuarterTurn, Sharpen, WhiteBalance, camera_changes, everyday_change, reseed,
)
from dermlens.data.synthetic import SYNTHETIC_CLASSES
from dermlens.data.synthetic.drawing import render_lesion


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A generated lesion photo, not square (so turns and mirrors are told apart)."""
    square = render_lesion(SYNTHETIC_CLASSES[0], np.random.default_rng(3), size=96)
    return square.crop((0, 8, 96, 80))  # 96 x 72


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def laplacian_energy(image: Image.Image) -> float:
    grey = pixels(image).mean(2)
    return float(np.abs(grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]).mean())


def random_versions() -> list:
    """Each corruption with its strength as a range (or its choice left open): a training augmentation."""
    return [QuarterTurn(None), Mirror(None), JpegQuality((20, 90)), Downscale((0.3, 0.9)), GaussianBlur((0.5, 3.0)),
            Brightness((0.6, 1.4)), WhiteBalance((-0.3, 0.3)), Sharpen((20, 200)), GaussianNoise((2.0, 10.0)),
            PhonePipeline((0.3, 0.8), (20, 150), (30, 90))]


@pytest.mark.parametrize("make", random_versions(), ids=lambda c: type(c).__name__)
def test_each_change_is_reproducible_from_a_seed(photo, make):
    def run(seed: int) -> list[bytes]:
        change = type(make)(**_arguments(make)).set_seed(seed)
        return [change(photo).tobytes() for _ in range(6)]

    assert run(7) == run(7)  # the same seed, the same six changed photos
    assert run(7) != run(8)  # another seed draws other strengths (or turns, or noise)


def _arguments(change) -> dict:
    names = {"QuarterTurn": ["turns"], "Mirror": ["axis"], "JpegQuality": ["quality"], "Downscale": ["scale"],
             "GaussianBlur": ["sigma"], "Brightness": ["factor"], "WhiteBalance": ["shift"], "Sharpen": ["percent"],
             "GaussianNoise": ["sigma"]}
    if isinstance(change, PhonePipeline):
        return {"scale": change.downscale.scale, "percent": change.sharpen.percent, "quality": change.jpeg.quality}
    return {name: getattr(change, name) for name in names[type(change).__name__]}


def test_global_torch_seed_reproduces_an_unseeded_change(photo):
    change = GaussianNoise((1.0, 9.0))
    torch.manual_seed(11)
    first = [change(photo).tobytes() for _ in range(3)]
    torch.manual_seed(11)
    assert [change(photo).tobytes() for _ in range(3)] == first


@pytest.mark.parametrize("name", list(EVERYDAY_CHANGES))
def test_benchmark_changes_are_fixed_and_change_the_photo(photo, name):
    change = everyday_change(name)
    once, again = change(photo), change(photo)
    assert once.tobytes() == again.tobytes()  # fixed strength: no seed needed
    assert once.mode == "RGB"
    assert once.size != photo.size or not np.array_equal(pixels(once), pixels(photo))


def test_turns_and_mirrors_are_exact_pixel_rearrangements(photo):
    original = np.asarray(photo)
    assert np.array_equal(np.asarray(QuarterTurn(1)(photo)), np.rot90(original, 1))
    assert np.array_equal(np.asarray(QuarterTurn(2)(photo)), np.rot90(original, 2))
    assert np.array_equal(np.asarray(QuarterTurn(3)(photo)), np.rot90(original, 3))
    assert np.array_equal(np.asarray(Mirror("horizontal")(photo)), original[:, ::-1])
    assert np.array_equal(np.asarray(Mirror("vertical")(photo)), original[::-1])


def test_strengths_mean_what_they_say(photo):
    assert Downscale(0.5)(photo).size == (48, 36)
    assert Downscale(0.25)(photo).size == (24, 18)
    assert Downscale(0.5, restore=True)(photo).size == photo.size
    assert pixels(Brightness(0.7)(photo)).mean() == pytest.approx(0.7 * pixels(photo).mean(), rel=0.01)
    warm, cool = pixels(WhiteBalance(0.15)(photo)), pixels(WhiteBalance(-0.15)(photo))
    ratio = lambda a: a[..., 0].mean() / a[..., 2].mean()  # noqa: E731
    assert ratio(warm) > ratio(pixels(photo)) > ratio(cool)
    error = lambda q: np.abs(pixels(JpegQuality(q)(photo)) - pixels(photo)).mean()  # noqa: E731
    assert error(30) > error(50) > error(95)
    assert laplacian_energy(GaussianBlur(3.0)(photo)) < laplacian_energy(GaussianBlur(1.5)(photo)) < laplacian_energy(photo)
    assert laplacian_energy(Sharpen(150)(photo)) > laplacian_energy(photo)
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    assert pixels(GaussianNoise(6.0, seed=0)(flat)).std() == pytest.approx(6.0, rel=0.1)
    assert PhonePipeline(0.25, 150, 40)(photo).size == (24, 18)


def test_p_applies_the_change_to_that_share_of_photos(photo):
    assert Brightness(0.5, p=0.0)(photo) is photo
    change = Brightness(0.5, p=0.5, seed=0)
    applied = sum(change(photo) is not photo for _ in range(400))
    assert 160 < applied < 240


def test_reseed_makes_a_composed_pipeline_reproducible(photo):
    def pipeline():
        # torchvision's own random steps (RandomApply, ...) draw from torch's global generator; p= does not
        return T.Compose([Downscale((0.4, 0.9)), *camera_changes(p=0.7)])

    first = reseed(pipeline(), 5)
    again = reseed(pipeline(), 5)
    outputs = [first(photo).tobytes() for _ in range(4)]
    assert [again(photo).tobytes() for _ in range(4)] == outputs
    assert [reseed(pipeline(), 6)(photo).tobytes() for _ in range(4)] != outputs


@pytest.mark.parametrize("make, message", [
    (lambda: JpegQuality(0), "quality"), (lambda: JpegQuality((90, 30)), "quality"), (lambda: Downscale(2.0), "scale"),
    (lambda: QuarterTurn(5), "turns"), (lambda: Mirror("diagonal"), "axis"), (lambda: Brightness(0.5, p=1.5), "p"),
])
def test_bad_strength_is_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_change_names_the_known_ones():
    with pytest.raises(ValueError, match="jpeg_30"):
        everyday_change("jpeg_31")
