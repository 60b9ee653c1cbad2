"""A tiny generated segmentation dataset: dark ellipses on skin-coloured noise, with their masks."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def make_lesion_pair(rng: np.random.Generator, size=(80, 60)) -> tuple[Image.Image, Image.Image]:
    width, height = size
    skin = np.array([205, 160, 135]) + rng.normal(0, 6, (height, width, 3))
    mask = Image.new("L", size, 0)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    rx, ry = rng.uniform(0.12, 0.3) * width, rng.uniform(0.12, 0.3) * height
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    inside = np.asarray(mask)[..., None] / 255.0
    lesion = np.array([95, 60, 45]) + rng.normal(0, 8, (height, width, 3))
    image = np.clip(skin * (1 - inside) + lesion * inside, 0, 255).astype(np.uint8)
    return Image.fromarray(image), mask


@pytest.fixture(scope="session")
def lesion_pair_maker():
    """``make(rng, size)`` -> (image, mask): a generated lesion photo and its mask."""
    return make_lesion_pair


@pytest.fixture(scope="session")
def lesion_masks_dataset(tmp_path_factory) -> Path:
    """labels.csv with image, mask and split columns (24 train, 8 val, 8 test), like ../shared/data/ham10000."""
    root = tmp_path_factory.mktemp("lesion-masks")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        image, mask = make_lesion_pair(rng)
        image.save(root / "images" / f"L{i:03d}.jpg", quality=95)
        mask.save(root / "masks" / f"L{i:03d}_segmentation.png")
        split = "train" if i < 24 else "val" if i < 32 else "test"
        rows.append({"image": f"images/L{i:03d}.jpg", "mask": f"masks/L{i:03d}_segmentation.png", "split": split})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root
