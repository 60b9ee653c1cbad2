"""Everyday changes of a photo: turned, mirrored, recompressed, taken from further away, blurred, in other light.

Each change is a small transform (PIL RGB image in, PIL RGB image out, torchvision / MONAI style) whose strength
is a number (always that strength: what ``benchmarks/robustness.py`` applies) or a ``(low, high)`` range (drawn
anew for each photo: a training augmentation). They compose with ``torchvision.transforms.v2.Compose`` and
``RandomApply`` like any transform, and ``p`` applies one to that share of photos.

Random draws come from ``torch``'s generator, as every other augmentation of the project: ``torch.manual_seed``
seeds it, DataLoader workers re-seed it, checkpoints save it. ``seed=`` (or :func:`reseed` on a whole pipeline)
gives a transform its own generator instead, so that the same photo and seed always give the same pixels; leave it
unset in a DataLoader with workers (each worker would copy the same generator and draw the same changes).

    QuarterTurn     k right angles counter-clockwise (a lesion has no up)
    Mirror          left-right or top-bottom
    JpegQuality     re-encoded as JPEG at a quality (messaging apps use 30-50)
    Downscale       fewer pixels (photo taken from further away, or a thumbnail); kept small unless ``restore``
    GaussianBlur    out of focus or shaken, sigma in pixels of the photo
    Brightness      every channel times a factor (0.7: 30% darker)
    WhiteBalance    red up and blue down (warmer, shift > 0) or the reverse (cooler)
    Sharpen         a phone's unsharp mask
    GaussianNoise   sensor noise, sigma in 8-bit levels
    PhonePipeline   a phone's processing: downscale, sharpen, JPEG
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

Strength = float | tuple[float, float]


def _check_strength(name: str, value: Strength, low: float, high: float) -> None:
    values = value if isinstance(value, (tuple, list)) else (value,)
    if len(values) not in (1, 2) or any(not low <= float(v) <= high for v in values) or (
            len(values) == 2 and values[0] > values[1]):
        raise ValueError(f"{name} must be a number or a (low, high) range within [{low}, {high}]; got {value!r}")


class Corruption(torch.nn.Module):
    """One change of a photo, applied with probability ``p``; subclasses say what ``draw`` and ``apply`` do."""

    def __init__(self, p: float = 1.0, seed: int | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        self.p = p
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.set_seed(seed)

    def set_seed(self, seed: int) -> "Corruption":
        """Draw from an own generator seeded with ``seed`` from now on (the same photos then change alike)."""
        self.generator = torch.Generator().manual_seed(int(seed))
        return self

    # -- draws ---------------------------------------------------------------------------------------------------
    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _uniform(self, value: Strength) -> float:
        if isinstance(value, (tuple, list)):
            low, high = float(value[0]), float(value[1])
            return low if low == high else low + (high - low) * self._rand()
        return float(value)

    def _integer(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.generator))

    def draw(self) -> dict:
        """The parameters of one application (strengths drawn from their ranges)."""
        return {}

    def apply(self, image: Image.Image, **params) -> Image.Image:
        raise NotImplementedError

    def forward(self, image: Image.Image) -> Image.Image:
        if self.p < 1.0 and self._rand() >= self.p:
            return image
        return self.apply(_rgb(image), **self.draw())

    def extra_repr(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("training", "generator")}
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"corruptions take PIL images; got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def _from_float(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "RGB")


class QuarterTurn(Corruption):
    """Turn by ``turns`` right angles counter-clockwise (1: 90 degrees); None draws 0-3 turns."""

    _TURNS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)

    def __init__(self, turns: int | None = 1, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        if turns is not None and turns not in (0, 1, 2, 3):
            raise ValueError(f"turns must be 0-3 or None (random); got {turns!r}")
        self.turns = turns

    def draw(self) -> dict:
        return {"turns": self._integer(4) if self.turns is None else self.turns}

    def apply(self, image, turns: int = 1):
        return image if turns == 0 else image.transpose(self._TURNS[turns])


class Mirror(Corruption):
    """Mirror ``"horizontal"`` (left-right) or ``"vertical"`` (top-bottom); None draws one of the two."""

    AXES = ("horizontal", "vertical")

    def __init__(self, axis: str | None = "horizontal", p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        if axis is not None and axis not in self.AXES:
            raise ValueError(f"axis must be horizontal, vertical or None (random); got {axis!r}")
        self.axis = axis

    def draw(self) -> dict:
        return {"axis": self.AXES[self._integer(2)] if self.axis is None else self.axis}

    def apply(self, image, axis: str = "horizontal"):
        flip = Image.Transpose.FLIP_LEFT_RIGHT if axis == "horizontal" else Image.Transpose.FLIP_TOP_BOTTOM
        return image.transpose(flip)


class JpegQuality(Corruption):
    """Encode as JPEG at ``quality`` (1-100; libjpeg's scale, as PIL and most apps) and decode again."""

    def __init__(self, quality: Strength = 30, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("quality", quality, 1, 100)
        self.quality = quality

    def draw(self) -> dict:
        return {"quality": int(round(self._uniform(self.quality)))}

    def apply(self, image, quality: int = 30):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)  # 4:2:0 chroma, as cameras and apps
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")


class Downscale(Corruption):
    """Keep ``scale`` of the width and height (0.5: half the resolution), with an antialiasing filter.

    The photo stays small, as one taken from further away or sent as a thumbnail would arrive; ``restore=True``
    resizes it back to its size (the same detail lost, the pixel count kept)."""

    def __init__(self, scale: Strength = 0.5, restore: bool = False, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("scale", scale, 0.01, 1.0)
        self.scale, self.restore = scale, restore

    def draw(self) -> dict:
        return {"scale": self._uniform(self.scale)}

    def apply(self, image, scale: float = 0.5):
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None) if size != image.size else image
        return small.resize(image.size, Image.Resampling.BICUBIC) if self.restore else small


class GaussianBlur(Corruption):
    """Gaussian blur with standard deviation ``sigma`` in the photo's pixels (PIL's GaussianBlur radius is sigma)."""

    def __init__(self, sigma: Strength = 1.5, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("sigma", sigma, 0.0, 100.0)
        self.sigma = sigma

    def draw(self) -> dict:
        return {"sigma": self._uniform(self.sigma)}

    def apply(self, image, sigma: float = 1.5):
        return image if sigma <= 0 else image.filter(ImageFilter.GaussianBlur(radius=sigma))


class Brightness(Corruption):
    """Every channel times ``factor`` (0.7: 30% darker, 1.3: 30% brighter; clipped at white)."""

    def __init__(self, factor: Strength = 0.7, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("factor", factor, 0.0, 10.0)
        self.factor = factor

    def draw(self) -> dict:
        return {"factor": self._uniform(self.factor)}

    def apply(self, image, factor: float = 0.7):
        return ImageEnhance.Brightness(image).enhance(factor)


class WhiteBalance(Corruption):
    """Red times (1 + shift) and blue times (1 - shift): ``shift`` > 0 is warmer (indoor light, a warm camera
    setting), < 0 cooler (shade, daylight balance under a lamp)."""

    def __init__(self, shift: Strength = 0.15, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("shift", shift, -0.9, 0.9)
        self.shift = shift

    def draw(self) -> dict:
        return {"shift": self._uniform(self.shift)}

    def apply(self, image, shift: float = 0.15):
        gains = np.array([1.0 + shift, 1.0, 1.0 - shift], dtype=np.float32)
        return _from_float(np.asarray(image, dtype=np.float32) * gains)


class Sharpen(Corruption):
    """An unsharp mask as phone pipelines apply: ``percent`` strength (100: edges doubled) at ``radius`` px."""

    def __init__(self, percent: Strength = 100, radius: float = 1.5, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("percent", percent, 0, 500)
        self.percent, self.radius = percent, radius

    def draw(self) -> dict:
        return {"percent": int(round(self._uniform(self.percent)))}

    def apply(self, image, percent: int = 100):
        return image.filter(ImageFilter.UnsharpMask(radius=self.radius, percent=percent, threshold=2))


class GaussianNoise(Corruption):
    """Independent Gaussian noise per pixel and channel, ``sigma`` in 8-bit levels (sensor noise in dim light)."""

    def __init__(self, sigma: Strength = 5.0, p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        _check_strength("sigma", sigma, 0.0, 255.0)
        self.sigma = sigma

    def draw(self) -> dict:
        return {"sigma": self._uniform(self.sigma)}

    def apply(self, image, sigma: float = 5.0):
        pixels = np.asarray(image, dtype=np.float32)
        noise = torch.randn(pixels.shape, generator=self.generator).numpy() * sigma
        return _from_float(pixels + noise)


class PhonePipeline(Corruption):
    """What a phone or a messaging app does to a photo: downscale, sharpen (unsharp mask), JPEG."""

    def __init__(self, scale: Strength = 0.5, percent: Strength = 80, quality: Strength = 70, p: float = 1.0,
                 seed: int | None = None):
        super().__init__(p, seed)
        self.downscale = Downscale(scale)
        self.sharpen = Sharpen(percent, radius=1.0)
        self.jpeg = JpegQuality(quality)

    def set_seed(self, seed: int) -> "PhonePipeline":
        super().set_seed(seed)
        for step in self._steps():  # one generator for the whole pipeline: one seed, one sequence of draws
            step.generator = self.generator
        return self

    def _steps(self):
        return (self.downscale, self.sharpen, self.jpeg)

    def draw(self) -> dict:
        return {name: step.draw() for name, step in zip(("downscale", "sharpen", "jpeg"), self._steps())}

    def apply(self, image, downscale: dict | None = None, sharpen: dict | None = None, jpeg: dict | None = None):
        image = self.downscale.apply(image, **(downscale or {}))
        image = self.sharpen.apply(image, **(sharpen or {}))
        return self.jpeg.apply(image, **(jpeg or {}))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def reseed(transform, seed: int):
    """Give every corruption inside ``transform`` (a Compose, RandomApply, a list, ... or one corruption) its own
    generator, seeded from ``seed`` in order, so the whole pipeline is reproducible from one number. torchvision's
    own random steps (``RandomApply``'s coin, ``RandomChoice``) still draw from torch's global generator."""
    for index, corruption in enumerate(_corruptions_in(transform)):
        corruption.set_seed(int(seed) * 1000 + index)
    return transform


def _corruptions_in(transform) -> list[Corruption]:
    """Corruptions in order, looking inside torchvision's containers (which hold plain lists, not submodules); a
    PhonePipeline's steps share its generator, so it counts as one."""
    if isinstance(transform, Corruption):
        return [transform]
    children = transform if isinstance(transform, (list, tuple)) else getattr(transform, "transforms", None)
    if children is None and isinstance(transform, torch.nn.Module):
        children = list(transform.children())
    return [c for child in (children or []) for c in _corruptions_in(child)]


# The benchmark's changes (benchmarks/robustness.py, docs/robustness.md): each way a photo changes, at two
# strengths, by name. Fixed strengths, so no seed is needed; a training augmentation draws ranges around them.
EVERYDAY_CHANGES: dict[str, tuple[str, str, Corruption]] = {
    "turn_90": ("quarter turn", "90 degrees", QuarterTurn(1)),
    "turn_180": ("quarter turn", "180 degrees", QuarterTurn(2)),
    "mirror_lr": ("mirror", "left-right", Mirror("horizontal")),
    "mirror_tb": ("mirror", "top-bottom", Mirror("vertical")),
    "jpeg_50": ("JPEG", "quality 50", JpegQuality(50)),
    "jpeg_30": ("JPEG", "quality 30", JpegQuality(30)),
    "half_resolution": ("resolution", "half", Downscale(0.5)),
    "quarter_resolution": ("resolution", "quarter", Downscale(0.25)),
    "blur_1.5": ("blur", "sigma 1.5 px", GaussianBlur(1.5)),
    "blur_3": ("blur", "sigma 3 px", GaussianBlur(3.0)),
    "darker_30": ("brightness", "-30%", Brightness(0.7)),
    "brighter_30": ("brightness", "+30%", Brightness(1.3)),
    "warmer": ("white balance", "warmer (R +15%, B -15%)", WhiteBalance(0.15)),
    "cooler": ("white balance", "cooler (R -15%, B +15%)", WhiteBalance(-0.15)),
    "phone_mild": ("phone pipeline", "1/2 size, sharpen 80%, JPEG 70", PhonePipeline(0.5, 80, 70)),
    "phone_strong": ("phone pipeline", "1/4 size, sharpen 150%, JPEG 40", PhonePipeline(0.25, 150, 40)),
}


def everyday_change(name: str) -> Corruption:
    """One of :data:`EVERYDAY_CHANGES` by name, with a clear error naming the known ones."""
    try:
        return EVERYDAY_CHANGES[name][2]
    except KeyError:
        raise ValueError(f"unknown change {name!r}; known: {', '.join(EVERYDAY_CHANGES)}") from None


def camera_changes(p: float = 0.3) -> Sequence[Corruption]:
    """The same changes as random training augmentations, each applied to a share ``p`` of photos, with ranges that
    cover the benchmark's strengths (orientation is left to the recipe's own rotations and flips)."""
    return [
        Downscale((0.25, 1.0), restore=False, p=p),
        GaussianBlur((0.0, 2.0), p=p),
        Brightness((0.7, 1.3), p=p),
        WhiteBalance((-0.15, 0.15), p=p),
        GaussianNoise((0.0, 8.0), p=p),
        Sharpen((0, 150), p=p / 2),
        JpegQuality((30, 95), p=p),
    ]


__all__ = ["Brightness", "Corruption", "Downscale", "EVERYDAY_CHANGES", "GaussianBlur", "GaussianNoise",
           "JpegQuality", "Mirror", "PhonePipeline", "QuarterTurn", "Sharpen", "WhiteBalance", "camera_changes",
           "everyday_change", "reseed"]
