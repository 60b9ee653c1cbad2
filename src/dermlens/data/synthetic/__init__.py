"""A small, embedded, SYNTHETIC skin-lesion dataset.

The rest of the test suite (and anyone without access to real data) needs images whose classes differ the way real
lesion classes do, so that a model has something to learn. This module draws them with numpy and Pillow from a seed:
no downloads, no real patients.

The five classes are real taxonomy node ids and are drawn after the dermoscopic ABCD cues (asymmetry, border,
colour, diameter) and each class's hallmark structure:

- ``melanoma``: large, asymmetric, irregular border, several colours (light and dark brown plus black, blue-grey,
  sometimes white regression or red), peripheral dark globules.
- ``melanocytic_nevus``: small to medium, round and symmetric, smooth border, one uniform brown, faint network.
- ``seborrheic_keratosis``: waxy tan-brown, sharply demarcated "stuck-on" plaque with cerebriform fissures,
  milia-like cysts (white-yellow dots) and comedo-like openings (dark dots).
- ``basal_cell_carcinoma``: pink, pearly, translucent, with a brighter rolled rim, arborizing red vessels,
  sometimes blue-grey ovoid nests or a central crust.
- ``dermatofibroma``: small, soft-edged, central white scar-like patch with a faint brown peripheral ring.

The classes overlap on purpose (sizes and colours are drawn from overlapping ranges, every class has some
atypical draws) so the task is learnable but not trivial. Skin tone, lighting, noise and hair are drawn
independently of the class, so they carry no label information.

A "lesion" (group) is drawn once and photographed 2-3 times with small changes of position, rotation, scale,
lighting, noise and hair, so that group-aware splits are meaningful.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from dermlens.data.synthetic.drawing import render, render_lesion
from dermlens.data.synthetic.lesions import SYNTHETIC_CLASSES, sample_lesion, sample_view

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "make_synthetic_dataset",
    "render_lesion",
]


# Bumped whenever the drawing changes, so that a stored dataset says which generator made it.
GENERATOR_VERSION = "1"

_README = """\
SYNTHETIC DATA - NOT REAL PATIENTS
==================================

Every image in this folder is SYNTHETIC. It was drawn by a program (dermlens.data.synthetic, generator
version {version}) from random numbers. No image shows a real person, a real lesion or a real diagnosis.

Use it only to test software and to check that training code can learn something. Do not use it to judge
how well a model works on real skin, and never for any clinical purpose.

Contents
--------
images/<label>/<name>.{ext}   the images ({n_images} in total, {size}x{size} pixels)
labels.csv                    columns path,label,group,synthetic
                              path:      relative to this folder
                              label:     taxonomy node id ({labels})
                              group:     a synthetic "lesion id"; images of one group are the same drawn lesion
                                         photographed again with small changes. Split by group.
                              synthetic: always "true"

Generated with: seed={seed}, n_per_class={n_per_class}, n_groups_per_class={n_groups}, size={size}.
The same arguments give the same files.
"""


def _group_sizes(n_per_class: int, n_groups: int) -> list[int]:
    base, extra = divmod(n_per_class, n_groups)
    return [base + 1 if index < extra else base for index in range(n_groups)]


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    n_per_class: int = 60,
    size: int = 128,
    seed: int = 0,
    n_groups_per_class: int | None = None,
    *,
    image_format: str = "png",
) -> Path:
    """Write a synthetic dataset and return the path of its ``labels.csv``.

    Layout: ``out_dir/images/<label>/<name>.png`` (or ``.jpg`` with ``image_format="jpeg"``, quality 92),
    ``out_dir/labels.csv`` with columns ``path,label,group,synthetic`` (path relative to ``out_dir``, with "/"),
    and ``out_dir/README.txt`` which says the data is synthetic.

    Each class has ``n_groups_per_class`` lesions (default: about one per 2.5 images, so groups hold 2-3 images),
    each photographed one or more times. The same arguments give byte-identical files. Files of an earlier run
    with other arguments are not deleted; ``labels.csv`` lists exactly the images of this run.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_groups_per_class is None:
        n_groups_per_class = max(1, round(n_per_class / 2.5))
    if not 1 <= n_groups_per_class <= n_per_class:
        raise ValueError(
            f"n_groups_per_class must be between 1 and n_per_class ({n_per_class}), got {n_groups_per_class}"
        )
    image_format = image_format.lower()
    if image_format not in ("png", "jpeg", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    extension = "png" if image_format == "png" else "jpg"

    root = Path(out_dir)
    rows: list[tuple[str, str, str, str]] = []
    for class_index, label in enumerate(SYNTHETIC_CLASSES):
        folder = root / "images" / label
        folder.mkdir(parents=True, exist_ok=True)
        for group_index, views in enumerate(_group_sizes(n_per_class, n_groups_per_class)):
            # Seeds derive from (seed, class, group, view) so each image does not depend on how many came before.
            lesion_rng = np.random.default_rng([seed, class_index, group_index])
            lesion = sample_lesion(label, lesion_rng)
            first_view = sample_view(lesion_rng)
            group = f"syn{seed}-{label}-{group_index:04d}"
            for view_index in range(views):
                view_rng = np.random.default_rng([seed, class_index, group_index, view_index + 1])
                view = first_view if view_index == 0 else sample_view(view_rng, base=first_view)
                image = render(lesion, view, view_rng, size)
                name = f"{group}-v{view_index}.{extension}"
                if extension == "png":
                    image.save(folder / name, format="PNG")
                else:
                    image.save(folder / name, format="JPEG", quality=92)
                rows.append((f"images/{label}/{name}", label, group, "true"))

    labels_path = root / "labels.csv"
    with open(labels_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "label", "group", "synthetic"))
        writer.writerows(rows)
    (root / "README.txt").write_text(
        _README.format(
            version=GENERATOR_VERSION,
            ext=extension,
            n_images=len(rows),
            size=size,
            labels=", ".join(SYNTHETIC_CLASSES),
            seed=seed,
            n_per_class=n_per_class,
            n_groups=n_groups_per_class,
        ),
        encoding="utf-8",
    )
    return labels_path
