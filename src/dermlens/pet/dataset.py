"""Simulated PET datasets on disk: ``images.npy`` and ``fractions.npy`` (N, grid, grid) float32, ``meta.json``
(one record per image: diameter, dose, noise, TBR...) and ``config.json`` (the SimulatorConfig and seed).

``relative_noise`` in meta is the s.d. of (image - noise-free image) over the body divided by the body's mean
activity; with OSEM it includes the reconstruction's own error, which does not vanish at high dose."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dermlens.pet.simulator import SimulatorConfig, simulate_images

IMAGES, FRACTIONS, META, CONFIG = "images.npy", "fractions.npy", "meta.json", "config.json"


@dataclass
class PETDataset:
    images: np.ndarray
    fractions: np.ndarray
    meta: list[dict]
    config: SimulatorConfig
    seed: int

    def __len__(self) -> int:
        return len(self.images)


def simulate_dataset(out_dir: str | Path, n: int, seed: int = 0, cfg: SimulatorConfig | None = None,
                     progress: bool = True, chunk: int = 64) -> Path:
    """Draw ``n`` images and write them to ``out_dir``; returns the folder."""
    if n < 1:
        raise ValueError(f"simulate_dataset: n must be at least 1, got {n}")
    cfg = cfg or SimulatorConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.empty((n, cfg.grid, cfg.grid), np.float32)
    fractions = np.empty_like(images)
    meta = []
    with tqdm(total=n, desc="simulating PET", unit="img", disable=not progress) as bar:
        for start in range(0, n, chunk):
            for i, sample in enumerate(simulate_images(cfg, seed, range(start, min(n, start + chunk))), start):
                images[i], fractions[i] = sample.image, sample.fraction
                meta.append(sample.meta)
            bar.update(min(n, start + chunk) - start)
    np.save(out_dir / IMAGES, images)
    np.save(out_dir / FRACTIONS, fractions)
    (out_dir / META).write_text(json.dumps(meta, indent=0) + "\n")
    (out_dir / CONFIG).write_text(json.dumps({"seed": seed, "n": n, "simulator": cfg.to_dict()}, indent=1) + "\n")
    return out_dir


def load_dataset(directory: str | Path) -> PETDataset:
    directory = Path(directory)
    missing = [name for name in (IMAGES, FRACTIONS, META, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: not a simulated PET dataset (missing {', '.join(missing)}); "
                                "make one with `dermlens pet simulate --out DIR`")
    images = np.load(directory / IMAGES, allow_pickle=False)
    fractions = np.load(directory / FRACTIONS, allow_pickle=False)
    meta = json.loads((directory / META).read_text())
    config = json.loads((directory / CONFIG).read_text())
    if images.shape != fractions.shape or images.ndim != 3 or len(meta) != len(images):
        raise ValueError(f"{directory}: images {images.shape}, fractions {fractions.shape} and {len(meta)} meta "
                         "records do not match")
    return PETDataset(images, fractions, meta, SimulatorConfig.from_dict(config["simulator"]), int(config["seed"]))
