"""Classical photo-quality measures, computed on exactly what the network sees (the model's input tensor).

Measured on the model input rather than the file, so a threshold means the same thing for a 12-megapixel phone
photo and a 200x150 dermoscopy image: is the picture the classifier reads sharp and exposed well enough? The one
measure that needs the file is its resolution (its shorter side, as a share of the model's input side: a photo
smaller than what the network reads is upscaled into blur), which callers pass when they know it.

    focus        std of the second derivative / std of the image (grey, model input), in the weaker of the
                 horizontal and vertical directions (so motion blur along either counts): a contrast-free variance
                 of the Laplacian. (A re-blur ratio was tried: 8-bit quantisation noise makes blurred photos look
                 sharp to it.)
    overexposed  share of the central region (half the width and height, where a lesion is framed) clipped white:
                 every channel within 3% of its brightest value in the photo, and one at full scale (colour
                 constancy scales each channel, so a clipped pixel ends at each channel's maximum, not at white)
    underexposed share of the central region with every channel at 3% or less: clipped black
    brightness   mean grey level of the central region (a dark photo need not clip)
    contrast     std of the grey image / its mean (relative, so a dark photo is not blank); a blank picture (one
                 flat colour) has none
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLIP_HIGH, CLIP_LOW = 0.97, 0.03
QUALITY_SIDE = 112  # measured on a copy of the model input area-averaged to this side: a quarter of the pixels
_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _second_derivative_std(grey: torch.Tensor, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """std of the [1, -2, 1] second difference along x and along y, away from the replicated border. Slices, not
    a convolution: a one-channel 3-tap conv2d costs 70 times as much on a CPU."""
    inner = grey[..., border:-border, border:-border]
    d2x = inner[..., :, 2:] - 2 * inner[..., :, 1:-1] + inner[..., :, :-2]
    d2y = inner[..., 2:, :] - 2 * inner[..., 1:-1, :] + inner[..., :-2, :]
    return d2x.flatten(1).std(1), d2y.flatten(1).std(1)


def downscaled(pixels: torch.Tensor, side: int | None = QUALITY_SIDE) -> torch.Tensor:
    """The batch area-averaged by a whole factor so its shorter side is about ``side`` (unchanged when smaller)."""
    factor = max(1, round(min(pixels.shape[-2:]) / side)) if side else 1
    if factor == 2:  # four strided views: a quarter of avg_pool2d's time on a CPU
        h, w = pixels.shape[-2] // 2 * 2, pixels.shape[-1] // 2 * 2
        p = pixels[..., :h, :w]
        return (p[..., ::2, ::2] + p[..., 1::2, ::2] + p[..., ::2, 1::2] + p[..., 1::2, 1::2]) * 0.25
    return F.avg_pool2d(pixels, factor) if factor > 1 else pixels


@dataclass
class QualityMeasures:
    focus: float
    overexposed: float
    underexposed: float
    contrast: float
    brightness: float = 0.5
    resolution: float | None = None  # decoded photo's shorter side / the model's input side; None: not known

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QualityThresholds:
    """Below/above these a photo is poor. Defaults are deliberately lenient; ``dermlens gate fit`` chooses them on
    real photos of the model's data so that at most a set share of good photos is stopped."""

    min_focus: float = 0.02
    max_overexposed: float = 0.5
    max_underexposed: float = 0.5
    min_contrast: float = 0.02  # relative; below: a blank picture, not a photo of anything
    min_brightness: float = 0.08
    min_resolution: float = 0.4  # shorter side of the photo / the model's input side (0.4: 90 px for 224 px)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QualityThresholds":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def unnormalise(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """The model input back in [0, 1] pixels (after colour constancy, which rescales colour, not brightness)."""
    mean = torch.as_tensor(mean, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch * std + mean).clamp(0, 1)


@torch.inference_mode()
def measure(pixels: torch.Tensor, shorter_sides=None, side: int | None = QUALITY_SIDE,
            model_side: int | None = None) -> list[QualityMeasures]:
    """Measures for a batch of [0, 1] images (batch, 3, H, W), taken on a copy downscaled to ``side`` (None: the
    pixels as given; thresholds are fitted for one or the other). ``model_side``: the model input's side when
    ``pixels`` were downscaled already (resolution is relative to it)."""
    model_side = model_side or min(pixels.shape[-2:])
    pixels = downscaled(pixels.float(), side)
    grey = (pixels * _GREY).sum(1, keepdim=True)
    contrast = grey.flatten(1).std(1)
    relative_contrast = contrast / grey.flatten(1).mean(1).clamp_min(0.02)
    sharp_x, sharp_y = _second_derivative_std(grey, max(1, 4 * min(pixels.shape[-2:]) // model_side))
    focus = torch.minimum(sharp_x, sharp_y) / contrast.clamp_min(1e-3)
    h, w = pixels.shape[-2:]
    centre = pixels[..., h // 4: h - h // 4, w // 4: w - w // 4]
    channel_max = pixels.flatten(2).max(2).values[..., None, None]  # (batch, 3, 1, 1)
    at_max = (centre >= CLIP_HIGH * channel_max).all(1) & (centre.max(1).values >= CLIP_HIGH)
    over = at_max.flatten(1).float().mean(1)
    under = (centre.max(1).values <= CLIP_LOW).flatten(1).float().mean(1)
    brightness = (centre * _GREY).sum(1).flatten(1).mean(1)
    sides = list(shorter_sides) if shorter_sides is not None else [None] * len(pixels)
    return [QualityMeasures(float(f), float(o), float(u), float(c), float(b), None if s is None else round(s / model_side, 4))
            for f, o, u, c, b, s in zip(focus, over, under, relative_contrast, brightness, sides)]


def measure_inputs(batch: torch.Tensor, mean, std, shorter_sides=None, side: int | None = QUALITY_SIDE) -> list[QualityMeasures]:
    """The measures of normalised model inputs: downscaled first (unnormalising is affine, so the order does not
    matter and the cheap way round touches a quarter of the pixels)."""
    return measure(unnormalise(downscaled(batch, side), mean, std), shorter_sides, None, min(batch.shape[-2:]))


def exposure_problem(m: QualityMeasures, t: QualityThresholds) -> str:
    """Resolution and exposure: what the photo itself shows, whatever it is a photo of ("" when fine)."""
    if m.resolution is not None and m.resolution < t.min_resolution:
        return "low_resolution"
    if m.overexposed > t.max_overexposed:
        return "overexposed"
    if m.underexposed > t.max_underexposed or m.brightness < t.min_brightness:
        return "underexposed"
    return ""


def problem(m: QualityMeasures, t: QualityThresholds) -> str:
    """The first reason a photo is poor, or "" when it is fine. Resolution first: a tiny photo is also blurred."""
    if reason := exposure_problem(m, t):
        return reason
    if m.focus < t.min_focus:
        return "out_of_focus"
    return ""


def choose_threshold(values: np.ndarray, stop_share: float, below: bool) -> float:
    """The threshold that stops ``stop_share`` of ``values`` (good photos): a low quantile when small values are
    bad (focus), a high one when large values are (clipped share)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.quantile(values, stop_share if below else 1 - stop_share))


__all__ = ["QUALITY_SIDE", "QualityMeasures", "QualityThresholds", "downscaled", "exposure_problem", "measure", "measure_inputs", "problem", "unnormalise", "choose_threshold"]
