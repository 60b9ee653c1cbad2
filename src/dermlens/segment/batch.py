"""``dermlens segment IMAGE...``: fraction and mask PNGs at each photo's size, and one measurements.csv.

A file that cannot be read gets a row with its problem in ``error``; the batch goes on.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dermlens.data.io import ImageDecodeError, find_images, output_stems
from dermlens.segment.measurements import COLUMNS, measure
from dermlens.segment.segmenter import Segmenter


def _output_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (two folders may both hold ``lesion.jpg``): the rule ``screen`` follows too."""
    return output_stems(paths)


def segment_images(inputs, out: str | Path, segmenter: Segmenter, mm_per_pixel: float | None = None,
                   progress: bool = True) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    rows = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(find_images([item]))
        else:
            paths.append(item)  # a missing or broken file is reported by load_image, in its row
    columns = ["image", *COLUMNS, *(["area_mm2", "longest_diameter_mm"] if mm_per_pixel else []),
               "fraction_png", "mask_png", "error"]
    with open(out / "measurements.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for path, stem in tqdm(list(zip(paths, _output_stems(paths))), desc="segmenting", disable=not progress):
            row = {"image": str(path), "error": ""}
            try:
                fraction = segmenter.fraction(path)
            except ImageDecodeError as e:
                row["error"] = str(e)
            else:
                fraction_png, mask_png = out / f"{stem}_fraction.png", out / f"{stem}_mask.png"
                Image.fromarray(np.round(fraction * 255).astype(np.uint8), mode="L").save(fraction_png)
                Image.fromarray(((fraction >= 0.5) * 255).astype(np.uint8), mode="L").save(mask_png)
                row.update(measure(fraction, mm_per_pixel), fraction_png=fraction_png.name, mask_png=mask_png.name)
            writer.writerow(row)
            f.flush()
            rows.append(row)
    return rows
