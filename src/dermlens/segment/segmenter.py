"""The dermoscopy segmenter: a tissue-fraction U-Net plus the geometry its inputs need; saved as safetensors + JSON.

    photo ─► data.io.load_image ─► resize to the model grid ─► (x - mean) / std ─► U-Net ─► sigmoid = lesion fraction
          ─► resize back to the photo's size ─► fraction map (and mask = fraction >= 0.5) ─► measurements
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dermlens.data.io import load_image
from dermlens.models.saved import CONFIG_FILE, load_weights, save_weights
from dermlens.models.segmentation import create_network

BUNDLED_SEGMENTER_DIR = Path(__file__).resolve().parent.parent / "weights" / "segmenter"


@dataclass
class SegmenterConfig:
    network: str = "lite_unet"
    input_size: tuple[int, int] = (192, 144)  # (width, height) of the model grid; photos are resized to it
    mean: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)  # EfficientNet-Lite: (x - 127) / 128
    std: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)
    target: str = "fraction"  # "fraction" (soft-label CE) or "binary"
    training: dict = field(default_factory=dict)  # data, recipe and validation scores: provenance for the card

    @classmethod
    def from_dict(cls, d: dict) -> "SegmenterConfig":
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def normalise(images: torch.Tensor, config: SegmenterConfig) -> torch.Tensor:
    """uint8 (0..255) or float in [0, 1], (N, 3, H, W), to the network's input scale."""
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (images - mean) / std


def save_segmenter(directory: str | Path, model: torch.nn.Module, config: SegmenterConfig) -> Path:
    return save_weights(directory, model.state_dict(), asdict(config))


def load_segmenter(directory: str | Path | None = None) -> tuple[torch.nn.Module, SegmenterConfig]:
    """A saved segmenter (default: the one bundled with dermlens), in eval mode."""
    directory = Path(directory) if directory is not None else BUNDLED_SEGMENTER_DIR
    if not (directory / CONFIG_FILE).is_file():
        hint = (
            "no bundled segmenter in this installation; train one with "
            "`dermlens segment train --data DATASET --out runs/seg` and pass `--model runs/seg/model`"
            if directory == BUNDLED_SEGMENTER_DIR else "not a dermlens segmenter folder"
        )
        raise FileNotFoundError(f"{directory / CONFIG_FILE}: missing ({hint})")
    state_dict, config_dict = load_weights(directory)
    config = SegmenterConfig.from_dict(config_dict)
    model = create_network(config.network, **({"pretrained": False} if config.network == "lite_unet" else {}))
    model.load_state_dict(state_dict)
    return model.eval(), config


class Segmenter:
    """Load once, segment many: ``Segmenter().fraction(image)`` is an (H, W) float map in [0, 1] at the image's size."""

    def __init__(self, model_dir: str | Path | None = None, tta: bool = True):
        self.model, self.config = load_segmenter(model_dir)
        self.tta = tta  # average over horizontal/vertical flips: cheap and smooths the edges

    @classmethod
    def from_model(cls, model: torch.nn.Module, config: SegmenterConfig, tta: bool = False) -> "Segmenter":
        """Wrap a network in memory (e.g. one being trained, for its validation scores)."""
        segmenter = cls.__new__(cls)
        segmenter.model, segmenter.config, segmenter.tta = model, config, tta
        return segmenter

    @torch.inference_mode()
    def fractions_on_grid(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) images already on the model grid -> (N, h, w) fractions."""
        x = normalise(batch, self.config).contiguous(memory_format=torch.channels_last)
        flips = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        total = 0
        for dims in flips:
            view = x.flip(dims) if dims else x
            out = torch.sigmoid(self.model(view))
            total = total + (out.flip(dims) if dims else out)
        return (total / len(flips))[:, 0]

    def to_grid(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """(1, 3, h, w) float in [0, 1] on the model grid, and the photo's (width, height)."""
        pil = load_image(image)
        tensor = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float() / 255.0
        width, height = self.config.input_size
        grid = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return grid, pil.size

    def fraction(self, image) -> np.ndarray:
        """Lesion fraction of every pixel of ``image`` (path, bytes, PIL image or array), at the image's size."""
        grid, (width, height) = self.to_grid(image)
        fractions = self.fractions_on_grid(grid)
        full = F.interpolate(fractions[:, None], size=(height, width), mode="bilinear", align_corners=False)
        return full[0, 0].clamp(0, 1).numpy()
