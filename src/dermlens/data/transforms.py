"""Image transforms: the paper's augmentation, colour constancy, and the eval-time preprocessing.

Each domain step is a small class (MONAI-style) so that a pipeline reads as a list of what happens to a photo.
Train and eval share :class:`Preprocessing`, which a model's config stores, so a saved model always sees its
inputs prepared the way it was trained.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from dermlens.data.corruptions import camera_changes


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become a network input; saved in every model's config."""

    size: int = 224
    mean: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)  # EfficientNet-Lite: (x - 127) / 128
    std: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)
    color_constancy: str | None = "shades_of_gray"  # None or "shades_of_gray"
    resize: str = "shorter_side_center_crop"  # eval geometry: "shorter_side_center_crop" or "squash"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


class ShadesOfGray(torch.nn.Module):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004) on a float image in [0, 1].

    Dermoscopes and phone cameras differ in illuminant and white balance; estimating the illuminant with the
    Minkowski p-norm of each channel and dividing it out removes much of that difference, and is a standard step
    in ISIC-challenge pipelines (Barata et al. 2015). p = 6 is the value they found best.
    """

    def __init__(self, power: float = 6.0):
        super().__init__()
        self.power = power

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.flatten(-2).clamp_min(0)
        illuminant = flat.pow(self.power).mean(-1).pow(1 / self.power)  # (..., C)
        illuminant = illuminant / illuminant.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        gain = 1 / (illuminant * math.sqrt(3)).clamp_min(1e-6)
        return (image * gain[..., None, None]).clamp(0, 1)


def largest_inscribed_rectangle(width: float, height: float, angle_degrees: float) -> tuple[float, float]:
    """Width and height of the largest upright rectangle inside a ``width`` x ``height`` one rotated by the angle."""
    if width <= 0 or height <= 0:
        return 0.0, 0.0
    angle = math.radians(angle_degrees)
    width_is_longer = width >= height
    long_side, short_side = (width, height) if width_is_longer else (height, width)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if short_side <= 2 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # Half-constrained: two corners of the rectangle touch the longer sides.
        x = 0.5 * short_side
        return (x / sin_a, x / cos_a) if width_is_longer else (x / cos_a, x / sin_a)
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a


class RandomRotateInscribedCrop(torch.nn.Module):
    """Rotate by a random angle in [0, 360) and keep the largest upright rectangle inside, as Esteva et al. did.

    Lesions have no natural orientation, so every angle is a valid training image; cropping to the inscribed
    rectangle avoids the black corners that a plain rotation would teach the network to look for.
    """

    @staticmethod
    def get_angle() -> float:
        # torch's generator, not Python's `random`: torch.manual_seed seeds it, DataLoader workers re-seed it, and
        # checkpoints save it, so a resumed run draws the same angles as an uninterrupted one.
        return float(torch.empty(()).uniform_(0.0, 360.0))

    def forward(self, image: Image.Image) -> Image.Image:
        angle = self.get_angle()
        width, height = image.size
        rotated = image.rotate(angle, resample=Image.BILINEAR, expand=True)
        crop_w, crop_h = largest_inscribed_rectangle(width, height, angle)
        crop_w, crop_h = max(1, int(crop_w)), max(1, int(crop_h))
        left = (rotated.width - crop_w) // 2
        top = (rotated.height - crop_h) // 2
        return rotated.crop((left, top, left + crop_w, top + crop_h))


def _to_float_tensor() -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True)]


def _finish(pre: Preprocessing) -> list:
    steps = [ShadesOfGray()] if pre.color_constancy == "shades_of_gray" else []
    return steps + [T.Normalize(mean=list(pre.mean), std=list(pre.std))]


def eval_geometry(pre: Preprocessing) -> list:
    if pre.resize == "squash":
        return [T.Resize((pre.size, pre.size), antialias=True)]
    return [T.Resize(pre.size, antialias=True), T.CenterCrop(pre.size)]


def build_eval_transform(pre: Preprocessing) -> T.Compose:
    """PIL RGB image -> normalised float tensor (3, size, size)."""
    return T.Compose(eval_geometry(pre) + _to_float_tensor() + _finish(pre))


class RandomResolution(torch.nn.Module):
    """With probability ``p``, shrink the photo so its shorter side is ``min_side``..its own, then let the next step
    resize it back up: the model sees the softness of a low-resolution camera or a photo taken from further away
    (HAM10000 comes at 200x150, PH2 at 765x574; sealed sets at anything)."""

    def __init__(self, p: float = 0.5, min_side: int = 64):
        super().__init__()
        self.p, self.min_side = p, min_side

    def forward(self, image: Image.Image) -> Image.Image:
        shorter = min(image.size)
        if shorter <= self.min_side or float(torch.rand(())) >= self.p:
            return image
        target = int(torch.randint(self.min_side, shorter + 1, ()))
        scale = target / shorter
        small = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(small, Image.BILINEAR)


class RandomSquash(torch.nn.Module):
    """With probability ``p``, stretch one axis by up to ``max_ratio``: some sources squash photos to a square
    (ISIC 2017's 256x256 copy, SD-198's 224x224), so a lesion's shape on its own must not decide the answer."""

    def __init__(self, p: float = 0.5, max_ratio: float = 1.5):
        super().__init__()
        self.p, self.max_ratio = p, max_ratio

    def forward(self, image: Image.Image) -> Image.Image:
        if float(torch.rand(())) >= self.p:
            return image
        ratio = math.exp(float(torch.empty(()).uniform_(-math.log(self.max_ratio), math.log(self.max_ratio))))
        width, height = image.size
        return image.resize((max(1, round(width * ratio)), height), Image.BILINEAR)


AUGMENTATIONS = ("paper", "light", "robust", "camera")
# Share of training photos that each everyday change of `robust` is applied to (about one in four photos unchanged).
ROBUST_P = 0.2


def build_train_transform(pre: Preprocessing, strength: str = "paper") -> T.Compose:
    """The paper's augmentation (rotation, inscribed crop, flips), with more or less on top.

    ``"light"`` keeps only rotation and flips. ``"paper"`` adds a random-resized crop (scale and aspect) and mild
    colour jitter. ``"robust"`` is ``"paper"`` on a photo first changed the everyday ways a photo arrives
    (``data.corruptions.camera_changes``: lower resolution, blur, brightness, white balance, sensor noise, a
    phone's sharpening, JPEG re-compression at quality 30-95), each on a share ``ROBUST_P`` of photos, at the
    photo's own resolution as ``benchmarks/robustness.py`` changes them, so the model learns to answer alike.
    ``"camera"`` is for photos from cameras, clinics and resolutions the model never saw: wider zoom,
    aspect squash, a lower resolution, stronger colour and white-balance shifts, blur and JPEG re-compression.
    """
    if strength not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {strength!r}")
    steps: list = [RandomRotateInscribedCrop()]
    if strength == "robust":
        steps += list(camera_changes(p=ROBUST_P))
    if strength == "light":
        steps += [T.Resize((pre.size, pre.size), antialias=True)]
    elif strength in ("paper", "robust"):
        steps += [
            T.RandomResizedCrop(pre.size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
    else:
        steps += [
            RandomSquash(p=0.5, max_ratio=1.5),
            RandomResolution(p=0.4, min_side=max(32, pre.size // 3)),
            T.RandomResizedCrop(pre.size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.04),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.25),
        ]
    steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip()]
    if strength == "camera":
        # JPEG works on uint8 images: re-compress between decoding to a tensor and scaling to float.
        steps += [T.ToImage(), T.RandomApply([T.JPEG((30, 95))], p=0.4), T.ToDtype(torch.float32, scale=True)]
        return T.Compose(steps + _finish(pre))
    return T.Compose(steps + _to_float_tensor() + _finish(pre))
