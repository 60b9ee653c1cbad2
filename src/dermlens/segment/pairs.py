"""Image/mask pairs for lesion segmentation, read from a dataset's ``labels.csv`` (columns ``image``, ``mask`` and,
when the dataset fixes one, ``split``; paths relative to the CSV), as in ``../shared/data/ham10000`` and ``ph2``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermlens.data.io import load_image


@dataclass(frozen=True)
class MaskedImage:
    image: Path
    mask: Path
    split: str | None = None


def load_pairs(dataset: str | Path, split: str | None = None) -> list[MaskedImage]:
    """Every row of ``dataset``/labels.csv with a mask; only ``split`` rows when given."""
    dataset = Path(dataset)
    csv_path = dataset if dataset.suffix == ".csv" else dataset / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no labels.csv (need columns image, mask[, split])")
    root = csv_path.parent
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and ("image" not in rows[0] or "mask" not in rows[0]):
        raise ValueError(f"{csv_path}: needs columns 'image' and 'mask', has {list(rows[0])}")
    pairs = [
        MaskedImage(root / row["image"], root / row["mask"], row.get("split") or None)
        for row in rows
        if row.get("mask")
    ]
    if split is not None:
        splits = {p.split for p in pairs}
        if split not in splits:
            raise ValueError(f"{csv_path}: no split {split!r} (has {sorted(s for s in splits if s)})")
        pairs = [p for p in pairs if p.split == split]
    if not pairs:
        raise ValueError(f"{csv_path}: no rows with a mask")
    return pairs


def load_mask(path: str | Path) -> np.ndarray:
    """A mask file as float32 in [0, 1] (any 8-bit or 16-bit gray/RGB encoding; lesion = bright)."""
    return np.asarray(load_image(path).convert("L"), dtype=np.float32) / 255.0


def load_pair(pair: MaskedImage) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) uint8 image and (1, H, W) float mask of the same size (the mask is resized when it differs)."""
    image = load_image(pair.image)
    mask = load_mask(pair.mask)
    if mask.shape != (image.height, image.width):
        from dermlens.segment.targets import area_fraction

        mask = area_fraction(mask, (image.width, image.height))
    return (
        torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1),
        torch.from_numpy(mask)[None],
    )
